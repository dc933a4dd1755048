"""How the package may depend on itself (issue 13): checks that guard the boundaries.

- No import cycles among modules, counting imports inside functions too (a lazy import that
  closes a loop is still a tie both ways); ``if TYPE_CHECKING:`` imports never run and are not
  counted.
- The pure core (the engine and everything it runs) imports no Kafka client: the worker,
  replay, evaluate and notebooks share it, and only ``stream/`` and ``kafka/`` talk to Kafka.
- Nor does it import JWS code or the model registry: signed messages reach it verified
  (``control/signing.py``), models as a ``SignedModel`` (``scores/detectors.py``).
- Only ``kafka/`` builds confluent-kafka clients (its factories); everything else asks them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "pipeline"


def _imports(nodes: list[ast.stmt], lazy: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run: module level, and with ``lazy`` those inside functions
    too; never ``if TYPE_CHECKING:`` blocks (annotations only, they never execute)."""
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif lazy or isinstance(node, ast.If | ast.Try | ast.With):
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _imports(getattr(node, field, []) or [], lazy)


def _module_graph(lazy: bool = False) -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        deps: set[str] = set()
        for node in _imports(ast.parse(f.read_text()).body, lazy):
            if isinstance(node, ast.ImportFrom) and node.module and node.module in mods:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in mods)  # fmt: skip
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = deps - {name}
    return graph


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "function-level too"])
def test_no_import_cycles(lazy: bool) -> None:
    graph = _module_graph(lazy)
    assert len(graph) > 50
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m):], m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


def test_folders_tie_one_way() -> None:
    """No two folders of pipeline/ import each other (function-level imports included)."""

    def folder(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else "."

    uses: dict[str, set[str]] = {}
    for m, deps in _module_graph(lazy=True).items():
        for d in deps:
            if folder(m) != folder(d) and "." not in (folder(m), folder(d)):
                uses.setdefault(folder(m), set()).add(folder(d))
    both = sorted({tuple(sorted((a, b))) for a, bs in uses.items() for b in bs
                   if a in uses.get(b, set())})  # fmt: skip
    assert both == [], f"folders that import each other: {both}"


def test_the_cycle_check_sees_imports_inside_functions() -> None:
    tree = ast.parse("def f():\n    if x:\n        from a import b\n"
                     "if TYPE_CHECKING:\n    import c\n")  # fmt: skip
    assert [n.module for n in _imports(tree.body, True) if isinstance(n, ast.ImportFrom)] == ["a"]
    assert list(_imports(tree.body, False)) == []


@pytest.mark.parametrize(
    "module",
    ["pipeline.engine", "pipeline.detection", "pipeline.events.schemas",
     "pipeline.baselines.features", "pipeline.baselines.baselines", "pipeline.alerts.policy",
     "pipeline.alerts.state", "pipeline.alerts.decisions", "pipeline.scores.rules",
     "pipeline.alerts.findings", "pipeline.scores.detectors", "pipeline.offline.replay",
     "pipeline.offline.evaluate"],
)  # fmt: skip
def test_the_core_imports_no_kafka_client(module: str) -> None:
    code = (f"import sys, {module}; print(sorted(m for m in ('faust', 'confluent_kafka', "
            "'aiokafka', 'mode') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]", f"{module} pulls in {out}"


CORE = ["pipeline.engine", "pipeline.detection", "pipeline.events.schemas",
        "pipeline.baselines.features", "pipeline.baselines.baselines", "pipeline.alerts.policy",
        "pipeline.alerts.state", "pipeline.alerts.decisions", "pipeline.scores.rules",
        "pipeline.scores.agent_models", "pipeline.alerts.findings",
        "pipeline.scores.detectors", "pipeline.control.feedback",
        "pipeline.offline.evaluate"]  # fmt: skip


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_jws_code_and_no_model_registry(module: str) -> None:
    banned = ("joserfc", "pipeline.control.signing", "pipeline.models.registry",
              "pipeline.models.artifacts", "pipeline.models.runtime")  # fmt: skip
    code = f"import sys, {module}; print(sorted(m for m in {banned!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]", f"{module} pulls in {out}"


_CLIENTS = frozenset({"Producer", "Consumer", "AdminClient"})


def _is_confluent(module: str) -> bool:
    return module.split(".")[0] == "confluent_kafka"


def _hand_built_clients(source: str) -> list[str]:
    """Where ``source`` imports a confluent-kafka client class or calls one through the module.

    Importing the class is what building one by hand needs; exceptions, offsets and
    ``TopicPartition`` stay importable anywhere.
    """
    found: list[str] = []
    modules: set[str] = set()  # local names bound to confluent_kafka or one of its submodules
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_confluent(node.module or ""):
            found += [f"line {node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if a.name in _CLIENTS]  # fmt: skip
        elif isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names
                           if _is_confluent(a.name))  # fmt: skip
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _CLIENTS):  # fmt: skip
            root = node.func.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}(...)")
    return found


def test_only_kafka_package_builds_confluent_kafka_clients() -> None:
    """Every client comes from ``pipeline/kafka/clients.py``, so the TLS/SCRAM settings and the
    tuned defaults reach all of them."""
    offenders = {
        str(f.relative_to(ROOT.parent)): hits
        for f in sorted(ROOT.rglob("*.py"))
        if f.relative_to(ROOT).parts[0] != "kafka"
        if (hits := _hand_built_clients(f.read_text()))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        # How pipeline/audit/auditor.py built its consumer before the factories took it over.
        "def run(settings):\n    from confluent_kafka import Consumer, KafkaError\n"
        "    conf = settings.client_config()\n    return Consumer(conf)\n",
        "from confluent_kafka.admin import AdminClient\n",
        "import confluent_kafka as ck\nck.Producer({})\n",
        "import confluent_kafka.admin\nconfluent_kafka.admin.AdminClient({})\n",
    ],
)
def test_the_client_check_catches_a_hand_built_client(source: str) -> None:
    assert _hand_built_clients(source)


def test_the_client_check_allows_the_rest_of_confluent_kafka() -> None:
    assert _hand_built_clients("from confluent_kafka import KafkaException, TopicPartition\n") == []
