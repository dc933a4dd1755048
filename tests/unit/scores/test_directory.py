"""Identity directory, model allow-list (pipeline.scores.directory) and the simulator's export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from pipeline.events.schemas import CONFIDENTIALITY_RANK, RANK_NAMES
from pipeline.scores.agent_models import (
    AgentModelRegistry,
    RegisteredModel,
    load_agent_model_registry,
)
from pipeline.scores.directory import Directory, DirectoryEntry, write_entries
from pipeline.simulate.catalogue import (
    AGENT,
    HUMAN,
    RANK_CONFIDENTIALITY,
    agent_config_hash,
    catalogue,
)
from pipeline.simulate.directory import directory_entries, write_directory
from pipeline.simulate.profiles import build_population

DIGEST = "sha256:" + "0123456789abcdef" * 4


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "directory.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---- the directory -------------------------------------------------------------------------------


def test_rank_scale() -> None:
    assert RANK_NAMES[0] == "Not Confidential" and RANK_NAMES[4] == "Top Secret"
    # OCSF ids: 1 Not Confidential, 2 Confidential, 5 Private, 6 Restricted, 3 Secret, 4 Top Secret
    assert CONFIDENTIALITY_RANK == {1: 0, 2: 1, 5: 1, 6: 2, 3: 3, 4: 4}


def test_load_and_lookup(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"uid": "usr-1", "kind": "human", "peer_group": "human/sales/team-01",'
        ' "sensitivity_ceiling": 1}',
        "",
        f'{{"uid": "agt-1", "kind": "agent", "approved_digests": ["{DIGEST}"],'
        ' "home_environment": "prod-eu", "extra": "ignored"}',
        '{"uid": "svc-1", "kind": "service"}',
    )
    d = Directory.load(path)
    assert len(d) == 3 and "agt-1" in d and "nobody" not in d
    assert d.lookup("usr-1") == DirectoryEntry("usr-1", "human", "human/sales/team-01", 1)
    agent = d.lookup("agt-1")
    assert agent is not None
    assert agent.approved_digests == (DIGEST,) and agent.home_environment == "prod-eu"
    svc = d.lookup("svc-1")
    assert svc is not None and svc.sensitivity_ceiling is None and svc.approved_digests == ()
    assert d.lookup("nobody") is None
    assert {e.uid for e in d} == {"usr-1", "agt-1", "svc-1"}


@pytest.mark.parametrize(
    "line",
    [
        '{"uid": "x", "kind": "robot"}',
        '{"uid": "x", "kind": "human", "sensitivity_ceiling": 5}',
        '{"uid": "x", "kind": "agent", "approved_digests": ["sha256:ABC"]}',
        '{"uid": "x", "kind": "agent", "approved_tool_manifests": ["sha256:abc"]}',
        '{"uid": "x", "kind": "agent", "approved_system_prompts": "sha256:' + "0" * 64 + '"}',
        '{"kind": "human"}',
        "not json",
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, '{"uid": "ok", "kind": "human"}', line)
    with pytest.raises(ValueError, match=r"directory\.jsonl:2: "):
        Directory.load(path)


def test_duplicate_uid_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"uid": "a", "kind": "human"}', '{"uid": "a", "kind": "agent"}')
    with pytest.raises(ValueError, match="duplicate directory entry for 'a'"):
        Directory.load(path)
    with pytest.raises(ValueError, match="duplicate"):
        Directory([DirectoryEntry("a", "human"), DirectoryEntry("a", "human")])


def test_repeated_strings_are_shared() -> None:
    a = DirectoryEntry("a", "agent", "agent/" + "coding", 1, (DIGEST,), "prod-" + "eu")
    b = DirectoryEntry("b", "agent", "agent/" + "coding", 1, (DIGEST,), "prod-" + "eu")
    d = Directory([a, b])
    ea, eb = d.lookup("a"), d.lookup("b")
    assert ea is not None and eb is not None and eb == b
    assert ea.peer_group is eb.peer_group
    assert ea.home_environment is eb.home_environment
    assert ea.approved_digests is eb.approved_digests


def test_write_entries_round_trip(tmp_path: Path) -> None:
    entries = [
        DirectoryEntry("usr-1", "human", "human/x/team-00", 2),
        DirectoryEntry("agt-1", "agent", "agent/ops", 1, (DIGEST,), "prod-us"),
        DirectoryEntry(
            "agt-2", "agent", approved_tool_manifests=(DIGEST,), approved_system_prompts=(DIGEST,)
        ),
    ]
    path = tmp_path / "d.jsonl"
    assert write_entries(entries, path) == 3
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {
        "uid": "usr-1",
        "kind": "human",
        "peer_group": "human/x/team-00",
        "sensitivity_ceiling": 2,
    }
    assert list(Directory.load(path)) == entries


# ---- the model allow-list ------------------------------------------------------------------------


def test_repository_allowlist_matches_the_simulator_models() -> None:
    allow = load_agent_model_registry(REPO_ROOT / "models" / "examples" / "agent-models.yaml")
    cat = catalogue()
    assert len(allow) == len(cat.model_name)
    for name, version, digest in zip(
        cat.model_name, cat.model_version, cat.model_digest, strict=True
    ):
        assert allow.digests_for(name, version) == frozenset({digest})


def test_allowlist_formats_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"- {{name: m, version: 3.10, digest: {DIGEST}}}\n"
        f"- {{name: m, version: 3.10, digest: sha256:{'f' * 64}}}\n",
        encoding="utf-8",
    )
    allow = load_agent_model_registry(path)
    assert allow.digests_for("m", "3.10") == frozenset({DIGEST, "sha256:" + "f" * 64})  # not 3.1
    assert allow.digests_for("m", "3.1") is None
    assert allow.digests_for(None, "3.10") is None and len(allow) == 2
    path.write_text("", encoding="utf-8")
    assert len(load_agent_model_registry(path)) == 0


@pytest.mark.parametrize(
    "text",
    [
        "models:\n  - {name: m, version: '1', digest: sha256:abc}\n",
        f"models:\n  - {{name: m, version: '1', digest: {DIGEST}, note: x}}\n",
        f"models:\n  - {{name: m, digest: {DIGEST}}}\n",
        "nothing: here\n",
    ],
)
def test_allowlist_rejects_bad_entries(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.yaml"):
        load_agent_model_registry(path)


def test_allowlist_from_models() -> None:
    allow = AgentModelRegistry([RegisteredModel("a", "1", DIGEST)])
    assert (
        allow.digests_for("a", "1") == frozenset({DIGEST}) and allow.digests_for("a", "2") is None
    )


# ---- the simulator's export ----------------------------------------------------------------------


def test_simulated_directory(tmp_path: Path) -> None:
    pop = build_population(300, seed=4)
    cat = catalogue()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert write_directory(pop, a) == pop.n
    write_directory(build_population(300, seed=4), b)
    assert a.read_bytes() == b.read_bytes()  # deterministic
    d = Directory.load(a)
    assert len(d) == pop.n
    for i, entry in enumerate(directory_entries(pop)):
        assert d.lookup(pop.uid(i)) == entry
        kind, group = int(pop.kind[i]), cat.group_name[int(pop.group[i])]
        assert entry.kind == ("human", "service", "agent")[kind]
        assert (
            entry.sensitivity_ceiling
            == CONFIDENTIALITY_RANK[RANK_CONFIDENTIALITY[int(pop.ceiling[i])]]
        )
        if kind == HUMAN:
            assert entry.peer_group == f"human/{group}/team-{int(pop.team[i]):02d}"
            assert entry.home_environment is None and entry.approved_digests == ()
        else:
            assert entry.peer_group == f"{entry.kind}/{group}"
            assert entry.home_environment == cat.env_name[int(pop.env[i])]
        if kind == AGENT:
            assert entry.approved_digests == (cat.model_digest[int(pop.model[i])],)
            assert entry.approved_tool_manifests == (agent_config_hash(entry.uid, "tools"),)
            assert entry.approved_system_prompts == (agent_config_hash(entry.uid, "prompt"),)
        else:
            assert entry.approved_digests == ()
            assert entry.approved_tool_manifests == entry.approved_system_prompts == ()
