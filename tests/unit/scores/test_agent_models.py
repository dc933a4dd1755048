"""The agent-model registry (pipeline.scores.agent_models): file format, lookups, control."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.config import REPO_ROOT
from pipeline.control.signing import (
    SigningKey,
    apply_signed_agent_model_updates,
    sign_agent_model_update,
)
from pipeline.errors import CustosError
from pipeline.scores.agent_models import (
    REASONS,
    AgentModelRegistry,
    AgentModelUpdate,
    InvalidAgentModelUpdate,
    RegisteredModel,
    decode_update,
    encode_update,
    load_agent_model_registry,
)
from pipeline.simulate.catalogue import catalogue

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def update(**kw: Any) -> bytes:
    msg: dict[str, Any] = {"action": "register", "name": "m", "version": "1", "digest": D1}
    msg.update(kw)
    return json.dumps({k: v for k, v in msg.items() if v is not None}).encode()


# ---- the file ------------------------------------------------------------------------------------


def test_repository_registry_has_provenance_for_every_simulated_model() -> None:
    reg = load_agent_model_registry(REPO_ROOT / "models" / "examples" / "agent-models.yaml")
    cat = catalogue()
    assert len(reg) == len(cat.model_name) == 8
    for name, version, digest in zip(
        cat.model_name, cat.model_version, cat.model_digest, strict=True
    ):
        build = reg.get(name, version, digest)
        assert build is not None and build.status == "approved"
        assert build.trained_by and build.lineage and build.approved_by
        assert reg.status(digest) == "approved"
        assert reg.digests_for(name, version) == frozenset({digest})


def test_old_format_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"models:\n  - {{name: m, version: 3.10, digest: {D1}}}\n", encoding="utf-8")
    (build,) = load_agent_model_registry(path)
    assert build == RegisteredModel("m", "3.10", D1)
    assert build.status == "approved" and build.trained_by is None and build.lineage is None


def test_provenance_fields_and_revoked_builds(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"""models:
  - name: m
    version: "1"
    digest: {D1}
    trained_by: ml-platform
    lineage: {{data: support tickets 2023, cutoff: 2023-12}}
    approved_by: ai-board
  - name: m
    version: "1"
    digest: {D2}
    trained_by: contractor
    lineage: unknown scrape
    status: revoked
    revoked_reason: training data not licensed
    revoked_by: legal
""",
        encoding="utf-8",
    )
    reg = load_agent_model_registry(path)
    good = reg.get("m", "1", D1)
    assert good is not None and good.lineage == {
        "data": "support tickets 2023",
        "cutoff": "2023-12",
    }
    assert reg.status(D1) == "approved" and reg.status(D2) == "revoked"
    assert reg.status(D3) == "unregistered"
    assert reg.digests_for("m", "1") == frozenset({D1})
    (bad,) = reg.builds(D2)
    assert bad.revoked_reason == "training data not licensed" and bad.revoked_by == "legal"


@pytest.mark.parametrize(
    "entry",
    [
        f"{{name: m, version: '1', digest: {D1}, status: pending}}",
        f"{{name: m, version: '1', digest: {D1}, lineage: [a, b]}}",
        f"{{name: m, version: '1', digest: {D1}, trained_by: {{x: y}}}}",
    ],
)
def test_bad_entries_are_rejected(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"models:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"m\.yaml"):
        load_agent_model_registry(path)


def test_duplicate_builds_must_agree() -> None:
    a = RegisteredModel("m", "1", D1, trained_by="x")
    assert len(AgentModelRegistry([a, a])) == 1
    with pytest.raises(ValueError, match="conflicting"):
        AgentModelRegistry([a, RegisteredModel("m", "1", D1, status="revoked")])


def test_revoked_anywhere_wins() -> None:
    # One digest registered under two names: revoked under one means revoked.
    reg = AgentModelRegistry(
        [RegisteredModel("m", "1", D1), RegisteredModel("alias", "1", D1, status="revoked")]
    )
    assert reg.status(D1) == "revoked"
    assert reg.digests_for("m", "1") == frozenset({D1}) and reg.digests_for("alias", "1") == set()
    assert reg.digests_for(None, "1") is None and reg.digests_for("x", "1") is None


# ---- control messages: decoding ------------------------------------------------------------------


def test_decode_round_trip() -> None:
    up = AgentModelUpdate(
        action="register", name="m", version="1", digest=D1, trained_by="ml",
        lineage={"data": "x"}, approved_by="board",
    )  # fmt: skip
    assert decode_update(encode_update(up)) == up
    assert json.loads(encode_update(up)) == {
        "action": "register", "name": "m", "version": "1", "digest": D1, "trained_by": "ml",
        "lineage": {"data": "x"}, "approved_by": "board",
    }  # fmt: skip
    assert up.key() == f"m@1@{D1}".encode()


@pytest.mark.parametrize(
    ("reason", "data"),
    [
        ("oversized", b"{" + b" " * 70_000 + b"}"),
        ("invalid_json", b""),
        ("invalid_json", b"{"),
        ("invalid_json", b'{"action": "register", "name": "\xff"}'),
        ("invalid_json", update() + b" {}"),  # trailing data
        ("invalid_value", b"[1, 2]"),
        ("invalid_value", b'"register"'),
        ("missing_field", b"{}"),
        ("missing_field", b'{"action": "register", "name": "m", "version": "1"}'),
        ("invalid_value", update(action="delete")),
        ("invalid_value", update(action="Register")),
        ("invalid_value", update(digest="sha256:abc")),
        ("invalid_value", update(digest="sha256:" + "AB" * 32)),
        ("invalid_value", update(digest=D1 + "\n")),
        ("invalid_value", update(name="")),
        ("invalid_value", update(version="v" * 300)),
        ("invalid_value", update(name=7)),
        ("invalid_value", update(lineage={})),
        ("invalid_value", update(lineage={"data": ["a"]})),
        ("invalid_value", update(lineage=["a"])),
        ("invalid_value", update(reson="typo")),  # unknown fields are refused
        ("invalid_value", update(action="revoke")),  # no reason
        ("invalid_value", update(action="revoke", reason="")),
        ("invalid_value", update(action="revoke", reason="r", approved_by="x")),
        ("invalid_value", update(action="approve", reason="because")),
        ("invalid_value", update(action="register", revoked_by="x")),
    ],
)
def test_decode_errors(reason: str, data: bytes) -> None:
    with pytest.raises(InvalidAgentModelUpdate) as info:
        decode_update(data)
    err = info.value
    assert isinstance(err, CustosError)
    assert err.reason == reason and err.reason in REASONS
    assert str(err).startswith(reason + ": ") and len(err.detail) <= 300


def test_decode_error_names_the_field() -> None:
    with pytest.raises(InvalidAgentModelUpdate, match=r"\$\.digest"):
        decode_update(update(digest="md5:0"))
    with pytest.raises(InvalidAgentModelUpdate, match="revoke needs a reason"):
        decode_update(update(action="revoke"))


def test_decode_tombstone() -> None:
    with pytest.raises(InvalidAgentModelUpdate, match="tombstone"):
        decode_update(None)  # type: ignore[arg-type]


# ---- control messages: applying ------------------------------------------------------------------


def snapshot(reg: AgentModelRegistry) -> list[RegisteredModel]:
    return list(reg)


@pytest.mark.parametrize(
    "message",
    [
        update(trained_by="ml", lineage="tickets", approved_by="board"),
        update(action="approve", approved_by="board"),
        update(action="revoke", reason="leaked", revoked_by="secops"),
    ],
    ids=["register", "approve", "revoke"],
)
def test_apply_is_idempotent(message: bytes) -> None:
    reg = AgentModelRegistry([RegisteredModel("m", "1", D2)])
    first = reg.apply(decode_update(message))
    after_first = snapshot(reg)
    again = reg.apply(decode_update(message))
    assert first.changed and first.before is None
    assert not again.changed and "nothing changed" in again.detail
    assert again.before == again.after == first.after
    assert snapshot(reg) == after_first and len(reg) == 2


def test_apply_transitions() -> None:
    reg = AgentModelRegistry()
    ch = reg.apply(decode_update(update(trained_by="ml", lineage={"data": "x"})))
    assert (ch.before, ch.after, ch.detail) == (None, "approved", "registered m 1 (approved)")
    assert reg.status(D1) == "approved" and ch.entry.trained_by == "ml"

    ch = reg.apply(decode_update(update(action="revoke", reason="leaked", revoked_by="secops")))
    assert (ch.before, ch.after, ch.changed) == ("approved", "revoked", True)
    assert ch.detail == "revoked m 1: leaked" and reg.status(D1) == "revoked"
    assert ch.entry.trained_by == "ml"  # provenance kept

    # A new reason updates the revocation; register updates provenance but never reinstates.
    ch = reg.apply(decode_update(update(action="revoke", reason="leaked twice")))
    assert ch.changed and ch.entry.revoked_reason == "leaked twice"
    assert ch.entry.revoked_by == "secops"  # left out: kept
    ch = reg.apply(decode_update(update(trained_by="ml-2")))
    assert ch.changed and ch.after == "revoked" and "approve it to reinstate" in ch.detail
    assert reg.status(D1) == "revoked"

    ch = reg.apply(decode_update(update(action="approve", approved_by="board")))
    assert (ch.before, ch.after, ch.detail) == ("revoked", "approved", "reinstated m 1 (approved)")
    assert ch.entry.revoked_reason is None and ch.entry.revoked_by is None
    assert ch.entry.trained_by == "ml-2" and reg.digests_for("m", "1") == frozenset({D1})


def test_revoking_an_unknown_build_deny_lists_it() -> None:
    reg = AgentModelRegistry()
    ch = reg.apply(decode_update(update(action="revoke", reason="known bad", digest=D3)))
    assert ch.changed and ch.before is None and ch.after == "revoked"
    assert "was not registered" in ch.detail
    assert reg.status(D3) == "revoked" and reg.digests_for("m", "1") == frozenset()


def test_change_is_serialisable() -> None:
    ch = AgentModelRegistry().apply(decode_update(update(lineage={"data": "x"})))
    out = json.loads(msgspec.json.encode(ch))
    assert out["changed"] is True and out["entry"]["lineage"] == {"data": "x"}
    assert "before" in out and out["before"] is None


def test_only_signed_updates_apply_and_the_rest_are_counted() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    d = "sha256:" + "e" * 64
    register = AgentModelUpdate(action="register", name="m", version="1", digest=d,
                                approved_by="alice")  # fmt: skip
    revoke = AgentModelUpdate(action="revoke", name="m", version="1", digest=d,
                              revoked_by="bob", reason="leaked")  # fmt: skip
    reg = AgentModelRegistry()
    values = [sign_agent_model_update(register, key), encode_update(revoke),
              sign_agent_model_update(revoke, other), b"{not json"]  # fmt: skip
    assert apply_signed_agent_model_updates(reg, values, key.public_keys()) == 3
    assert reg.status(d) == "approved"  # the unsigned and the untrusted revocations refused
    signed = [sign_agent_model_update(revoke, key)]
    assert apply_signed_agent_model_updates(reg, signed, key.public_keys()) == 0
    assert reg.status(d) == "revoked"
