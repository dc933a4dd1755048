"""How the package may depend on itself (issue 13): checks that guard the boundaries.

- No import cycles among modules at module level (function-level imports that break one
  are listed in the note of the issue that added them).
- The pure core (the engine and everything it runs) imports no Kafka client: the worker,
  replay, evaluate and notebooks share it, and only ``stream/`` and ``kafka/`` talk to Kafka.
- Nor does it import JWS code or the model registry: signed messages reach it verified
  (``control/signing.py``), models as a ``SignedModel`` (``scores/detectors.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "pipeline"


def _module_graph() -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        deps: set[str] = set()
        for node in ast.parse(f.read_text()).body:  # module level only; TYPE_CHECKING skipped
            if isinstance(node, ast.ImportFrom) and node.module and node.module in mods:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in mods)  # fmt: skip
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = deps - {name}
    return graph


def test_no_module_level_import_cycles() -> None:
    graph = _module_graph()
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


@pytest.mark.parametrize(
    "module",
    ["pipeline.engine", "pipeline.scores.scoring", "pipeline.events.schemas",
     "pipeline.baselines.features", "pipeline.baselines.baselines", "pipeline.alerts.policy",
     "pipeline.scores.rules", "pipeline.alerts.findings",
     "pipeline.scores.detectors", "pipeline.offline.replay", "pipeline.offline.evaluate"],
)  # fmt: skip
def test_the_core_imports_no_kafka_client(module: str) -> None:
    code = (f"import sys, {module}; print(sorted(m for m in ('faust', 'confluent_kafka', "
            "'aiokafka', 'mode') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]", f"{module} pulls in {out}"


CORE = ["pipeline.engine", "pipeline.scores.scoring", "pipeline.events.schemas",
        "pipeline.baselines.features", "pipeline.baselines.baselines", "pipeline.alerts.policy",
        "pipeline.scores.rules", "pipeline.scores.agent_models", "pipeline.alerts.findings",
        "pipeline.scores.detectors", "pipeline.control.feedback", "pipeline.offline.evaluate"]  # fmt: skip


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_jws_code_and_no_model_registry(module: str) -> None:
    banned = ("joserfc", "pipeline.control.signing", "pipeline.models.registry",
              "pipeline.models.artifacts", "pipeline.models.runtime")  # fmt: skip
    code = f"import sys, {module}; print(sorted(m for m in {banned!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]", f"{module} pulls in {out}"
