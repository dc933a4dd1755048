"""Zero Trust rules (pipeline.scores.rules): each rule's boundaries, state, simulated traffic."""

from __future__ import annotations

import dataclasses
import gc
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pipeline.config import REPO_ROOT, Settings
from pipeline.events.schemas import Credential, Event, EventDecoder, ModelRef, Resource
from pipeline.scores.agent_models import (
    AgentModelRegistry,
    AgentModelUpdate,
    RegisteredModel,
    load_agent_model_registry,
)
from pipeline.scores.directory import Directory, DirectoryEntry
from pipeline.scores.explanations import RuleHit
from pipeline.scores.rules import (
    _FP,
    RULES,
    STATE_VERSION,
    RuleState,
    ZeroTrustRules,
    haversine_km,
)
from pipeline.simulate import LabelRow, Simulation
from pipeline.simulate.directory import write_directory

T0 = 1_700_000_000_000
MIN = 60_000
HOUR = 3_600_000
D_OK = "sha256:" + "a" * 64
D_BAD = "sha256:" + "b" * 64
D_OTHER = "sha256:" + "c" * 64
BERLIN = (52.52, 13.405)
PRAGUE = (50.0755, 14.4378)  # ~280 km from Berlin
NEW_YORK = (40.7128, -74.006)  # ~6,385 km from Berlin


def ev(uid: str = "agt-1", kind: str = "agent", t: int = T0, **kw: Any) -> Event:
    fields: dict[str, Any] = {
        "uid": f"e-{t}",
        "class_uid": 6003,
        "activity_id": 2,
        "time_ms": t,
        "identity_uid": uid,
        "identity_kind": kind,
        "status_id": 1,
    }
    fields.update(kw)
    return Event(**fields)


def cred(
    uid: str = "c-1",
    issued_to: str | None = "agt-1",
    task: str | None = "task-1",
    step: int | None = 1,
    expires_at: int | None = T0 + MIN,
) -> Credential:
    return Credential(uid=uid, issued_to=issued_to, task_uid=task, step=step, expires_at=expires_at)


def rules_of(hits: tuple[RuleHit, ...]) -> list[str]:
    return [h.rule for h in hits]


def agent_entry(**kw: Any) -> DirectoryEntry:
    fields: dict[str, Any] = {
        "uid": "agt-1",
        "kind": "agent",
        "peer_group": "agent/coding",
        "sensitivity_ceiling": 1,
        "approved_digests": (D_OK,),
        "home_environment": "prod-eu",
    }
    fields.update(kw)
    return DirectoryEntry(**fields)


def test_rule_table_names_and_severities() -> None:
    assert RULES == {
        "credential_misuse": 5,
        "credential_expired": 4,
        "model_provenance": 4,
        "agent_config_drift": 4,
        "sensitivity_ceiling": 4,
        "clone": 5,
        "impossible_travel": 4,
        "unauthorised_delegation": 4,
        "delegated_outside_team": 4,
        "delegated_to_stranger": 4,
        "volume_drift": 4,
        "model_inventory": 2,
    }


def test_nothing_fires_on_a_plain_event() -> None:
    hits = ZeroTrustRules().check(RuleState(), ev(uid="usr-1", kind="human"), None)
    assert hits == ()


# ---- unauthorised_delegation ---------------------------------------------------------------------


def test_delegation_outside_the_directory_list_fires() -> None:
    entry = agent_entry(delegators=("agt-orch-1", "usr-owner"))
    rules = ZeroTrustRules()
    assert rules.check(RuleState(), ev(delegated_by="agt-orch-1"), entry) == ()
    hits = rules.check(RuleState(), ev(delegated_by="agt-orch-9"), entry)
    assert rules_of(hits) == ["unauthorised_delegation"]
    assert hits[0].severity_id == 4 and hits[0].evidence["delegated_by"] == "agt-orch-9"
    assert "agt-orch-9" in hits[0].text


def test_delegation_not_enforced_without_a_list() -> None:
    rules = ZeroTrustRules()
    assert rules.check(RuleState(), ev(delegated_by="anyone"), agent_entry()) == ()
    assert rules.check(RuleState(), ev(delegated_by="anyone"), None) == ()
    # No delegation at all: nothing to check even when a list exists.
    assert rules.check(RuleState(), ev(), agent_entry(delegators=("x",))) == ()


# ---- credential_misuse ---------------------------------------------------------------------------


def test_misuse_fires_when_issued_to_another_identity() -> None:
    state = RuleState()
    e = ev(uid="agt-2", credential=cred(issued_to="agt-1", step=3), delegated_by="agt-0")
    (hit,) = ZeroTrustRules().check(state, e, None)
    assert (hit.rule, hit.severity_id) == ("credential_misuse", 5)
    assert hit.evidence["issued_to"] == "agt-1" and hit.evidence["actor"] == "agt-2"
    assert hit.evidence["task_uid"] == "task-1" and hit.evidence["step"] == 3
    assert "agt-2 used credential c-1 issued to agt-1" in hit.text
    assert state.tasks == []  # another holder's task progress is not this identity's


@pytest.mark.parametrize("issued_to", ["agt-1", None])
def test_misuse_silent_for_own_or_unbound_credential(issued_to: str | None) -> None:
    assert ZeroTrustRules().check(RuleState(), ev(credential=cred(issued_to=issued_to)), None) == ()


# ---- credential_expired --------------------------------------------------------------------------


def test_expired_boundary_is_expiry_plus_grace() -> None:
    rules = ZeroTrustRules(grace_ms=10_000)
    exp = T0 + MIN
    on_edge = ev(t=exp + 10_000, credential=cred(expires_at=exp))
    assert rules.check(RuleState(), on_edge, None) == ()
    (hit,) = rules.check(RuleState(), ev(t=exp + 10_001, credential=cred(expires_at=exp)), None)
    assert (hit.rule, hit.severity_id) == ("credential_expired", 4)
    assert hit.evidence["reason"] == "expired" and hit.evidence["late_ms"] == 10_001
    assert "10 s after it expired" in hit.text


def test_expired_ignores_credentials_without_expiry() -> None:
    e = ev(t=T0 + 10 * HOUR, credential=cred(expires_at=None))
    assert ZeroTrustRules().check(RuleState(), e, None) == ()


def test_misused_and_expired_both_fire() -> None:
    e = ev(uid="agt-2", t=T0 + HOUR, credential=cred(issued_to="agt-1", expires_at=T0))
    assert rules_of(ZeroTrustRules().check(RuleState(), e, None)) == [
        "credential_misuse",
        "credential_expired",
    ]


def test_step_credential_reused_after_the_task_moved_on() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    step1 = cred(uid="c-s1", step=1, expires_at=T0 + 2 * MIN)
    step2 = cred(uid="c-s2", step=2, expires_at=T0 + 2 * MIN + 5_000)
    assert rules.check(state, ev(t=T0, credential=step1), None) == ()
    assert rules.check(state, ev(t=T0 + 1_000, credential=step1), None) == ()  # retry: same step
    assert rules.check(state, ev(t=T0 + 5_000, credential=step2), None) == ()
    (hit,) = rules.check(state, ev(t=T0 + 6_000, credential=step1), None)  # not yet expired
    assert hit.rule == "credential_expired" and hit.evidence["reason"] == "step_ended"
    assert hit.evidence["step"] == 1 and hit.evidence["current_step"] == 2
    assert "moved on to step 2" in hit.text


def test_fresh_credential_for_a_lower_step_is_a_parallel_subtask() -> None:
    # One agent can run two overlapping sub-tasks of one task (step numbers interleave); each
    # step gets a freshly issued credential (new expiry): not a reuse.
    rules, state = ZeroTrustRules(), RuleState()
    assert (
        rules.check(state, ev(credential=cred(uid="c-1", step=1, expires_at=T0 + MIN)), None) == ()
    )
    assert (
        rules.check(state, ev(credential=cred(uid="c-2", step=2, expires_at=T0 + MIN)), None) == ()
    )
    again = cred(uid="c-1", step=1, expires_at=T0 + MIN + 7)  # same uid, re-issued
    assert rules.check(state, ev(t=T0 + 1_000, credential=again), None) == ()


def test_step_reuse_of_an_expired_credential_is_one_hit() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    step1 = cred(uid="c-s1", step=1, expires_at=T0 + MIN)
    rules.check(state, ev(t=T0, credential=step1), None)
    rules.check(state, ev(t=T0 + 1_000, credential=cred(uid="c-s2", step=2)), None)
    hits = rules.check(state, ev(t=T0 + HOUR, credential=step1), None)
    assert [(h.rule, h.evidence["reason"]) for h in hits] == [("credential_expired", "expired")]


def test_step_other_task_is_independent() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, ev(credential=cred(uid="a1", task="t-a", step=1)), None)
    rules.check(state, ev(credential=cred(uid="b5", task="t-b", step=5)), None)
    assert rules.check(state, ev(credential=cred(uid="a1", task="t-a", step=1)), None) == ()


def test_step_memory_is_bounded() -> None:
    rules, state = ZeroTrustRules(max_tasks=2, max_tokens=3), RuleState()
    for task in ("t-1", "t-2", "t-3"):
        for step in range(1, 6):
            rules.check(
                state, ev(credential=cred(uid=f"{task}-{step}", task=task, step=step)), None
            )
    assert len(state.tasks) == 2
    assert all(len(rec) == 2 + 3 for rec in state.tasks)  # key, highest step, 3 tokens
    assert [rec[1] for rec in state.tasks] == [5, 5]


# ---- model_provenance ----------------------------------------------------------------------------


def model(digest: str | None, name: str = "gpt-4o", version: str = "2024-08-06") -> ModelRef:
    return ModelRef(name=name, version=version, digest=digest)


def test_model_directory_digest_decides() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    assert rules.check(state, ev(model=model(D_OK)), agent_entry()) == ()
    (hit,) = rules.check(state, ev(model=model(D_BAD)), agent_entry())
    assert (hit.rule, hit.severity_id) == ("model_provenance", 4)
    assert hit.evidence["expected_digest"] == D_OK and hit.evidence["observed_digest"] == D_BAD
    assert hit.evidence["source"] == "directory"
    assert "expected sha256:aaaaaaaaaaaa" in hit.text and "gpt-4o 2024-08-06" in hit.text
    assert state.model is None  # the directory decided: nothing pinned


def test_model_allowlist_by_name_and_version() -> None:
    allow = AgentModelRegistry([RegisteredModel("gpt-4o", "2024-08-06", D_OK)])
    rules = ZeroTrustRules(agent_models=allow, enforce_registry=True)
    no_digests = agent_entry(approved_digests=())
    assert rules.check(RuleState(), ev(model=model(D_OK)), no_digests) == ()
    (hit,) = rules.check(RuleState(), ev(model=model(D_BAD)), no_digests)
    assert hit.evidence["source"] == "registry" and hit.evidence["expected_digest"] == D_OK
    assert hit.evidence["reason"] == "unregistered"
    assert rules.agent_models is allow


@pytest.mark.parametrize("registry", [None, AgentModelRegistry()], ids=["none", "empty"])
def test_model_first_digest_is_pinned_only_without_a_registry(
    registry: AgentModelRegistry | None,
) -> None:
    rules, state = ZeroTrustRules(agent_models=registry), RuleState()
    assert rules.check(state, ev(model=model(D_BAD)), None) == ()
    assert state.model is not None and state.model[:32] == bytes.fromhex("b" * 64)
    assert rules.check(state, ev(model=model(D_BAD)), None) == ()
    (hit,) = rules.check(state, ev(model=model(D_OTHER)), None)
    assert hit.evidence["source"] == "first seen" and hit.evidence["expected_digest"] == D_BAD
    assert hit.evidence["reason"] == "changed_since_first_seen"
    assert "changed since first seen" in hit.text


def registry(*models: RegisteredModel) -> AgentModelRegistry:
    return AgentModelRegistry(models)


def test_model_revoked_digest_fires_even_where_the_directory_approves_it() -> None:
    reg = registry(
        RegisteredModel("gpt-4o", "2024-08-06", D_OK),
        RegisteredModel(
            "gpt-4o", "2024-08-06", D_BAD, status="revoked", revoked_reason="leaked weights",
            revoked_by="secops",
        ),
    )  # fmt: skip
    rules = ZeroTrustRules(agent_models=reg)
    approves_bad = agent_entry(approved_digests=(D_BAD,))
    for entry in (approves_bad, agent_entry(), None):
        (hit,) = rules.check(RuleState(), ev(model=model(D_BAD)), entry)
        assert (hit.rule, hit.severity_id) == ("model_provenance", 4)
        assert hit.evidence["reason"] == "revoked" and hit.evidence["source"] == "registry"
        assert hit.evidence["revoked_reason"] == "leaked weights"
        assert hit.evidence["revoked_by"] == "secops"
        assert hit.evidence["expected_digest"] == D_OK and hit.evidence["observed_digest"] == D_BAD
        assert "revoked (leaked weights)" in hit.text and "expected sha256:aaaa" in hit.text
    # Revoked under another name and version: still revoked.
    (hit,) = rules.check(RuleState(), ev(model=model(D_BAD, "renamed", "9")), None)
    assert hit.evidence["reason"] == "revoked"


def test_model_unregistered_digest_is_pinned_unless_enforced() -> None:
    """A deployment's own models are not violations by default; a change under an agent is."""
    reg = registry(RegisteredModel("gpt-4o", "2024-08-06", D_OK))
    rules, state = ZeroTrustRules(agent_models=reg), RuleState()
    assert rules.check(state, ev(model=model(D_OTHER, "mystery", "1")), None) == ()
    assert state.model is not None and state.model[:32] == bytes.fromhex(D_OTHER[7:])
    assert rules.check(state, ev(model=model(D_OTHER, "mystery", "1")), None) == ()
    (hit,) = rules.check(state, ev(model=model(D_BAD)), None)
    assert hit.evidence["reason"] == "changed_since_first_seen"
    # Registered builds move the pin; a switch from one to an unregistered build still fires.
    state = RuleState()
    assert rules.check(state, ev(model=model(D_OK)), None) == ()
    (hit,) = rules.check(state, ev(model=model(D_BAD)), None)
    assert hit.evidence["reason"] == "changed_since_first_seen"
    assert hit.evidence["expected_digest"] == D_OK


def test_model_unregistered_digest_fires_when_enforced() -> None:
    reg = registry(RegisteredModel("gpt-4o", "2024-08-06", D_OK))
    rules = ZeroTrustRules(agent_models=reg, enforce_registry=True)
    # The registry knows the model but not this build.
    (hit,) = rules.check(RuleState(), ev(model=model(D_BAD)), None)
    assert hit.evidence["reason"] == "unregistered" and hit.evidence["expected_digest"] == D_OK
    assert "does not list for that model" in hit.text
    # ... even when the directory approves the digest for the agent.
    (hit,) = rules.check(
        RuleState(), ev(model=model(D_BAD)), agent_entry(approved_digests=(D_BAD,))
    )
    assert hit.evidence["reason"] == "unregistered"
    # Neither the model nor the digest is known.
    (hit,) = rules.check(RuleState(), ev(model=model(D_OTHER, "mystery", "1")), None)
    assert hit.evidence["reason"] == "unregistered" and hit.evidence["expected_digest"] is None
    assert "does not list at all" in hit.text and "no approved build" in hit.text
    # A registered digest reported under a model name the registry does not know: not a hit.
    assert rules.check(RuleState(), ev(model=model(D_OK, "alias", "1")), None) == ()
    state = RuleState()
    rules.check(state, ev(model=model(D_OTHER, "mystery", "1")), None)
    assert state.model is None  # an enforcing registry decides: nothing is pinned


def test_model_approved_for_another_agent_fires() -> None:
    reg = registry(
        RegisteredModel("gpt-4o", "2024-08-06", D_OK),
        RegisteredModel("gpt-4o", "2024-08-06", D_OTHER),
    )
    rules = ZeroTrustRules(agent_models=reg)
    mine = agent_entry(uid="agt-2", approved_digests=(D_OTHER,))
    assert rules.check(RuleState(), ev(uid="agt-2", model=model(D_OTHER)), mine) == ()
    # D_OK is registered and approved - for agt-1, not for agt-2.
    (hit,) = rules.check(RuleState(), ev(uid="agt-2", model=model(D_OK)), mine)
    assert hit.evidence["reason"] == "not_approved_for_agent"
    assert hit.evidence["source"] == "directory" and hit.evidence["expected_digest"] == D_OTHER
    assert "not approved for this agent" in hit.text


def test_model_register_then_revoke_through_updates() -> None:
    reg = registry(RegisteredModel("gpt-4o", "2024-08-06", D_OK))
    rules = ZeroTrustRules(agent_models=reg, enforce_registry=True)
    e = ev(model=model(D_BAD))
    assert rules_of(rules.check(RuleState(), e, None)) == ["model_provenance"]
    register = AgentModelUpdate(
        action="register", name="gpt-4o", version="2024-08-06", digest=D_BAD,
        trained_by="ml-platform", lineage={"data": "tickets-2024"}, approved_by="ai-board",
    )  # fmt: skip
    assert reg.apply(register).changed
    assert rules.check(RuleState(), e, None) == ()  # registered: no longer fires
    revoke = AgentModelUpdate(
        action="revoke", name="gpt-4o", version="2024-08-06", digest=D_BAD, reason="recalled"
    )
    assert reg.apply(revoke).changed
    (hit,) = rules.check(RuleState(), e, None)
    assert hit.evidence["reason"] == "revoked" and hit.evidence["revoked_reason"] == "recalled"
    # Registering it again does not reinstate it; approving does.
    assert not reg.apply(register).changed
    assert rules_of(rules.check(RuleState(), e, None)) == ["model_provenance"]
    reg.apply(AgentModelUpdate(action="approve", name="gpt-4o", version="2024-08-06", digest=D_BAD))
    assert rules.check(RuleState(), e, None) == ()


# ---- agent_config_drift --------------------------------------------------------------------------

H1, H2, H3 = ("sha256:" + c * 64 for c in "123")


def test_drift_fires_once_on_change_then_repins() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    assert rules.check(state, ev(tool_manifest_hash=H1), None) == ()
    assert state.tools == bytes.fromhex("1" * 64)
    assert rules.check(state, ev(tool_manifest_hash=H1), None) == ()
    (hit,) = rules.check(state, ev(tool_manifest_hash=H2), None)
    assert (hit.rule, hit.severity_id) == ("agent_config_drift", 4)
    assert hit.evidence == {
        "which": "tool_manifest",
        "old_hash": H1,
        "new_hash": H2,
        "source": "pinned",
        "reason": "changed",
    }
    assert "tool manifest changed from sha256:111111111111" in hit.text
    assert rules.check(state, ev(tool_manifest_hash=H2), None) == ()  # re-pinned: one hit
    # Old and new replicas interleaving (rolling deploy) or a rollback: still that one hit.
    assert rules.check(state, ev(tool_manifest_hash=H1), None) == ()
    assert rules.check(state, ev(tool_manifest_hash=H2), None) == ()
    # A third configuration is a new change.
    (hit,) = rules.check(state, ev(tool_manifest_hash=H3), None)
    assert hit.evidence["old_hash"] == H2 and hit.evidence["new_hash"] == H3
    assert len(state.tools or b"") == 48  # current + previous fingerprint: bounded


def test_drift_tracks_prompt_and_tools_separately() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, ev(tool_manifest_hash=H1, system_prompt_hash=H1), None)
    (hit,) = rules.check(state, ev(tool_manifest_hash=H1, system_prompt_hash=H2), None)
    assert hit.evidence["which"] == "system_prompt" and "system prompt changed" in hit.text
    hits = rules.check(state, ev(tool_manifest_hash=H3, system_prompt_hash=H3), None)
    assert [h.evidence["which"] for h in hits] == ["tool_manifest", "system_prompt"]
    assert rules.check(state, ev(), None) == ()  # absent hashes: nothing to compare


def test_drift_against_directory_approved_hashes() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    entry = agent_entry(approved_tool_manifests=(H1,), approved_system_prompts=(H1, H2))
    assert rules.check(state, ev(tool_manifest_hash=H1, system_prompt_hash=H2), entry) == ()
    for _ in range(2):  # the directory is authoritative: every unapproved event fires
        (hit,) = rules.check(state, ev(tool_manifest_hash=H3), entry)
        assert hit.evidence["reason"] == "not_approved_for_agent"
        assert hit.evidence["source"] == "directory" and hit.evidence["old_hash"] == H1
    assert state.tools is None and state.prompt is None  # nothing pinned


def test_drift_only_for_agents() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    for h in (H1, H2):
        assert rules.check(state, ev(uid="svc-1", kind="service", tool_manifest_hash=h), None) == ()
    assert state.tools is None


def test_model_only_for_agents_with_a_digest() -> None:
    rules = ZeroTrustRules()
    human = agent_entry(uid="usr-1", kind="human")
    assert rules.check(RuleState(), ev(uid="usr-1", model=model(D_BAD)), human) == ()
    assert rules.check(RuleState(), ev(kind="service", model=model(D_BAD)), None) == ()
    assert rules.check(RuleState(), ev(model=model(None)), agent_entry()) == ()


# ---- sensitivity_ceiling -------------------------------------------------------------------------


def res(*conf: int | None) -> tuple[Resource, ...]:
    return tuple(
        Resource(uid=f"r-{i}", type="object", confidentiality_id=c) for i, c in enumerate(conf)
    )


def test_ceiling_boundary_from_directory() -> None:
    rules = ZeroTrustRules()
    entry = agent_entry(sensitivity_ceiling=2)  # Restricted
    assert rules.check(RuleState(), ev(resources=res(1, 2, 5, 6)), entry) == ()  # ranks 0,1,1,2
    (hit,) = rules.check(RuleState(), ev(resources=res(6, 3, 2)), entry)  # 3 = Secret, rank 3
    assert (hit.rule, hit.severity_id) == ("sensitivity_ceiling", 4)
    assert hit.evidence["rank"] == 3 and hit.evidence["ceiling"] == 2
    assert hit.evidence["resource_uid"] == "r-1" and hit.evidence["resources_above"] == 1
    assert hit.evidence["ceiling_source"] == "directory"
    assert "accessed r-1 classified Secret, above its ceiling Restricted" in hit.text


def test_ceiling_reports_the_most_sensitive_resource() -> None:
    (hit,) = ZeroTrustRules().check(RuleState(), ev(resources=res(3, 4, 6)), agent_entry())
    assert hit.evidence["resource_uid"] == "r-1" and hit.evidence["rank"] == 4
    assert hit.evidence["resources_above"] == 3


def test_ceiling_only_from_the_directory_by_default() -> None:
    """No per-kind guess: a service reading Top Secret data by design is not a rule hit."""
    assert ZeroTrustRules().default_ceilings == {}
    for kind in ("human", "service", "agent"):
        e = ev(uid=f"{kind}-1", kind=kind, resources=res(4))
        assert ZeroTrustRules().check(RuleState(), e, None) == ()
    assert rules_of(ZeroTrustRules().check(RuleState(), ev(resources=res(4)),
                                           agent_entry(sensitivity_ceiling=2))) == [
        "sensitivity_ceiling"
    ]  # fmt: skip


def test_ceiling_defaults_per_kind_when_configured() -> None:
    rules = ZeroTrustRules(default_ceilings={"agent": 0})
    (hit,) = rules.check(RuleState(), ev(resources=res(2)), None)
    assert hit.evidence["ceiling_source"] == "default" and hit.evidence["ceiling"] == 0
    human = ev(uid="usr-1", kind="human", resources=res(4))
    assert rules.check(RuleState(), human, None) == ()  # no default for humans
    no_ceiling = agent_entry(sensitivity_ceiling=None)
    assert rules_of(rules.check(RuleState(), ev(resources=res(2)), no_ceiling)) == [
        "sensitivity_ceiling"
    ]


def test_ceiling_ignores_unknown_and_other() -> None:
    entry = agent_entry(sensitivity_ceiling=0)
    assert ZeroTrustRules().check(RuleState(), ev(resources=res(0, 99, None)), entry) == ()


def test_ceiling_denied_access_is_an_attempt() -> None:
    e = ev(resources=res(4), status_id=2)
    (hit,) = ZeroTrustRules().check(RuleState(), e, agent_entry())
    assert "tried to access" in hit.text and hit.evidence["status_id"] == 2


# ---- clone ---------------------------------------------------------------------------------------


def test_clone_boundary_with_directory_home() -> None:
    rules = ZeroTrustRules(clone_window_ms=10 * MIN)
    for gap, fires in ((10 * MIN, True), (10 * MIN + 1, False)):
        state = RuleState()
        assert rules.check(state, ev(environment="prod-eu"), agent_entry()) == ()
        hits = rules.check(state, ev(t=T0 + gap, environment="prod-us"), agent_entry())
        assert rules_of(hits) == (["clone"] if fires else [])
    state = RuleState()
    rules.check(state, ev(environment="prod-eu"), agent_entry())
    (hit,) = rules.check(
        state, ev(t=T0 + MIN, environment="prod-us", src_ip="1.2.3.4"), agent_entry()
    )
    assert hit.severity_id == 5 and hit.evidence["home_environment"] == "prod-eu"
    assert hit.evidence["environment"] == "prod-us" and hit.evidence["gap_ms"] == MIN
    assert "active in prod-us while it was active in its home environment prod-eu 1 min" in hit.text


def test_clone_never_fires_in_the_home_environment() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, ev(environment="prod-us"), agent_entry())  # the clone shows up first
    assert rules.check(state, ev(t=T0 + MIN, environment="prod-eu"), agent_entry()) == ()


def test_clone_needs_recent_home_activity() -> None:
    # Moving (or failing over) to another environment is not two copies running.
    rules, state = ZeroTrustRules(), RuleState()
    assert rules.check(state, ev(environment="prod-us"), agent_entry()) == ()
    assert rules.check(state, ev(t=T0 + MIN, environment="prod-us"), agent_entry()) == ()


def test_clone_learns_the_first_environment_without_directory() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    assert rules.check(state, ev(kind="service", environment="staging-eu"), None) == ()
    assert state.env == "staging-eu"
    (hit,) = rules.check(state, ev(kind="service", t=T0 + MIN, environment="prod-ap"), None)
    assert hit.evidence["home_source"] == "first seen"
    # The directory, once it knows the identity, replaces the learned home.
    assert rules.check(state, ev(t=T0 + 2 * MIN, environment="prod-eu"), agent_entry()) == ()
    assert state.env is None


def test_clone_ignores_humans_and_missing_environment() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, ev(uid="usr-1", kind="human", environment="corp"), None)
    assert rules.check(state, ev(uid="usr-1", kind="human", environment="home"), None) == ()
    assert state.env is None
    assert rules.check(RuleState(), ev(environment=None), agent_entry()) == ()


# ---- impossible_travel ---------------------------------------------------------------------------


def at(place: tuple[float, float], t: int, country: str, **kw: Any) -> Event:
    return ev(uid="usr-1", kind="human", t=t, lat=place[0], long=place[1], country=country, **kw)


def test_haversine() -> None:
    assert haversine_km(*BERLIN, *BERLIN) == 0.0
    assert 6_370 < haversine_km(*BERLIN, *NEW_YORK) < 6_400
    assert 270 < haversine_km(*BERLIN, *PRAGUE) < 290


def test_travel_speed_boundary() -> None:
    rules = ZeroTrustRules(travel_speed_kmh=900)
    km = haversine_km(*BERLIN, *NEW_YORK)
    limit_ms = int(km / 900 * HOUR)  # fastest allowed flight time
    for dt, fires in ((limit_ms - 1_000, True), (limit_ms + 1_000, False)):
        state = RuleState()
        assert rules.check(state, at(BERLIN, T0, "DE"), None) == ()
        hits = rules.check(state, at(NEW_YORK, T0 + dt, "US"), None)
        assert rules_of(hits) == (["impossible_travel"] if fires else [])
    state = RuleState()
    rules.check(state, at(BERLIN, T0, "DE"), None)
    (hit,) = rules.check(state, at(NEW_YORK, T0 + HOUR, "US", src_ip="198.51.100.7"), None)
    assert hit.severity_id == 4 and hit.evidence["from_country"] == "DE"
    assert hit.evidence["to_country"] == "US" and hit.evidence["elapsed_ms"] == HOUR
    assert 6_370 < float(hit.evidence["speed_kmh"] or 0) < 6_400
    assert hit.text.startswith("usr-1 appeared in US 1.0 h after DE: 6,3")


def test_travel_ignores_short_hops() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, at(BERLIN, T0, "DE"), None)
    assert rules.check(state, at(PRAGUE, T0 + 1_000, "CZ"), None) == ()  # 280 km in 1 s


def test_travel_at_the_same_instant() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, at(BERLIN, T0, "DE"), None)
    (hit,) = rules.check(state, at(NEW_YORK, T0, "US"), None)
    assert hit.evidence["speed_kmh"] is None and "at the same time" in hit.text


def test_travel_ignores_failures_and_missing_coordinates() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, at(BERLIN, T0, "DE"), None)
    assert rules.check(state, at(NEW_YORK, T0 + MIN, "US", status_id=2), None) == ()
    no_long = ev(uid="usr-1", kind="human", t=T0 + MIN, lat=NEW_YORK[0], country="US")
    assert rules.check(state, no_long, None) == ()
    assert state.loc_cc == "DE"  # neither moved the anchor


def test_travel_out_of_order_event_keeps_the_anchor() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    rules.check(state, at(BERLIN, T0, "DE"), None)
    assert rules_of(rules.check(state, at(NEW_YORK, T0 - MIN, "US"), None)) == ["impossible_travel"]
    assert (state.loc_ms, state.loc_cc) == (T0, "DE")


def test_travel_is_not_repeated_for_a_clone() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    dublin, ashburn = (53.33, -6.25), (39.04, -77.49)
    rules.check(state, ev(environment="prod-eu", lat=dublin[0], long=dublin[1]), agent_entry())
    clone = ev(t=T0 + MIN, environment="prod-us", lat=ashburn[0], long=ashburn[1])
    assert rules_of(rules.check(state, clone, agent_entry())) == ["clone"]


# ---- state ---------------------------------------------------------------------------------------


def busy_state(rules: ZeroTrustRules) -> RuleState:
    """An agent at its bounds: every task and token slot used, a pinned model, a location."""
    state = RuleState()
    t = T0
    for task in range(rules.max_tasks + 2):
        for step in range(1, rules.max_tokens + 4):
            t += 1_000
            e = ev(
                t=t,
                credential=cred(
                    uid=f"cred-{task:04d}-{step:02d}-{t}",
                    task=f"8f14e45f-ceea-467f-a0e6-{task:012d}",
                    step=step,
                    expires_at=t + 120_000,
                ),
                model=model(D_OK),
                # a configuration change now and then: both pins hold current + previous
                tool_manifest_hash=(H1, H2, H3)[task % 3],
                system_prompt_hash=(H1, H2, H3)[(task + 1) % 3],
                environment="staging-eu",
                lat=53.3331,
                long=-6.2489,
                country="IE",
            )
            rules.check(state, e, None)
    return state


def test_state_round_trip() -> None:
    rules = ZeroTrustRules()
    state = busy_state(rules)
    data = state.to_bytes()
    back = RuleState.from_bytes(data)
    assert back == state and back.v == STATE_VERSION
    assert msgspec.msgpack.decode(data)[0] == STATE_VERSION  # versioned msgpack array
    # The restored state keeps working exactly like the original.
    probe = ev(t=T0 + HOUR, credential=cred(uid="x", task="new", step=1), environment="prod-us")
    assert rules.check(back, probe, None) == rules.check(state, probe, None)
    assert back == state


def test_state_size() -> None:
    rules = ZeroTrustRules()
    assert len(RuleState().to_bytes()) == 15  # one empty array per field
    human = RuleState()
    rules.check(human, at(BERLIN, T0, "DE"), None)
    assert len(human.to_bytes()) <= 40
    # Worst case at the default bounds (4 tasks x 8 tokens, a pinned model, a learned home,
    # current and previous tool manifest and system prompt hashes).
    busy = busy_state(rules)
    assert len(busy.to_bytes()) <= 420
    # The task memory is stored packed (4 bytes per CRC, not msgpack's 5), read back as lists.
    plain = msgspec.msgpack.encode(msgspec.structs.replace(busy, packed_tasks=b""))
    assert len(busy.to_bytes()) <= len(plain) - 30
    assert RuleState.from_bytes(busy.to_bytes()).tasks == busy.tasks
    assert msgspec.msgpack.decode(busy.to_bytes())[8] == []  # the lists' own field is empty


def test_packed_task_memory_refuses_damage() -> None:
    busy = busy_state(ZeroTrustRules())
    fields = msgspec.msgpack.decode(busy.to_bytes())
    packed = fields[-1]
    for bad in (packed[:-1], packed + b"\x00", packed[:4] + b"\xff" * 10):
        with pytest.raises(ValueError, match="corrupt"):
            RuleState.from_bytes(msgspec.msgpack.encode([*fields[:-1], bad]))
    both = [*fields[:8], [[1, 2, 3]], *fields[9:]]
    with pytest.raises(ValueError, match="twice"):
        RuleState.from_bytes(msgspec.msgpack.encode(both))
    # A value that does not fit the packed form stays in the lists (never lost or wrapped).
    odd = RuleState(tasks=[[1 << 40, 2, 3]])
    assert RuleState.from_bytes(odd.to_bytes()) == odd


def test_state_written_before_the_config_pins_still_decodes() -> None:
    # Layout before tools / prompt were appended: 9 elements. A state the worker stored then.
    old = msgspec.msgpack.encode(
        [1, T0, 525200, 134050, "DE", "prod-eu", T0, bytes.fromhex("a" * 64), [[7, 2, 99]]]
    )
    assert old == bytes.fromhex(
        "99" "01" "cf0000018bcfe56800" "ce00080390" "ce00020ba2" "a2" "4445" "a7" "70726f642d6575"
        "cf0000018bcfe56800" "c420" + "aa" * 32 + "91" "93" "07" "02" "63"
    )  # fmt: skip
    state = RuleState.from_bytes(old)
    assert (state.loc_cc, state.env, state.tasks) == ("DE", "prod-eu", [[7, 2, 99]])
    assert state.model is not None and state.model[:32] == bytes.fromhex("a" * 64)
    assert state.tools is None and state.prompt is None
    # It keeps working: the first hashes are pinned, not reported as changes.
    rules = ZeroTrustRules()
    assert rules.check(state, ev(tool_manifest_hash=H1, system_prompt_hash=H2), None) == ()
    assert RuleState.from_bytes(state.to_bytes()) == state


def test_state_rejects_garbage_and_unknown_versions() -> None:
    with pytest.raises(ValueError, match="corrupt"):
        RuleState.from_bytes(b"\xc1")
    with pytest.raises(ValueError, match="version 2"):
        RuleState.from_bytes(msgspec.msgpack.encode([2]))


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        ZeroTrustRules(travel_speed_kmh=0)
    with pytest.raises(ValueError):
        ZeroTrustRules(default_ceilings={"robot": 1})
    with pytest.raises(ValueError):
        ZeroTrustRules(default_ceilings={"human": 5})
    with pytest.raises(ValueError):
        ZeroTrustRules(max_tasks=0)


# ---- simulated traffic ---------------------------------------------------------------------------

START = 1_699_920_000_000  # 2023-11-14 00:00 UTC, a Tuesday
NOW = START + 2 * 86_400_000


@dataclasses.dataclass
class SimRun:
    events: list[Event]
    labels: list[LabelRow]
    directory: Directory


def simulate(tmp: Path, attacks: bool) -> SimRun:
    sim = Simulation(
        Settings(),
        identities=400,
        duration_s=12 * 3600,
        seed=11,
        start_ms=START,
        attacks=attacks,
        campaigns_per_scenario=2,
    )
    path = tmp / f"directory-{attacks}.jsonl"
    write_directory(sim.population, path)
    decode = EventDecoder().decode
    gc.disable()  # many small objects, no cycles: the cyclic GC would dominate
    try:
        events = [decode(v, now_ms=NOW) for _, _, v, _ in sim.events()]
    finally:
        gc.enable()
    return SimRun(events, sim.label_rows(), Directory.load(path))


def run_rules(
    run: SimRun, rules: ZeroTrustRules, use_directory: bool = True
) -> list[tuple[Event, tuple[RuleHit, ...]]]:
    states: dict[str, RuleState] = {}
    out = []
    lookup = run.directory.lookup
    for e in run.events:
        state = states.get(e.identity_uid)
        if state is None:
            state = states[e.identity_uid] = RuleState()
        hits = rules.check(state, e, lookup(e.identity_uid) if use_directory else None)
        if hits:
            out.append((e, hits))
    return out


@pytest.fixture(scope="module")
def zt_rules() -> ZeroTrustRules:
    path = REPO_ROOT / "models" / "examples" / "agent-models.yaml"
    return ZeroTrustRules(agent_models=load_agent_model_registry(path), enforce_registry=True)


def test_benign_simulated_traffic_fires_nothing(
    tmp_path_factory: pytest.TempPathFactory, zt_rules: ZeroTrustRules
) -> None:
    run = simulate(tmp_path_factory.mktemp("benign"), attacks=False)
    assert len(run.events) > 50_000 and not run.labels
    assert run_rules(run, zt_rules) == []
    # Without the directory the learned fallbacks (pinned model, first environment) stay silent
    # too; only the coarse per-kind default ceilings can fire.
    fired = {h.rule for _, hits in run_rules(run, zt_rules, use_directory=False) for h in hits}
    assert fired <= {"sensitivity_ceiling"}


def test_attacks_are_caught_on_the_labelled_identities(
    tmp_path_factory: pytest.TempPathFactory, zt_rules: ZeroTrustRules
) -> None:
    run = simulate(tmp_path_factory.mktemp("attacks"), attacks=True)
    found = run_rules(run, zt_rules)
    by_identity: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e, hits in found:
        by_identity[e.identity_uid].extend((e.time_ms, h.rule) for h in hits)
    first_malicious: dict[str, int] = {}
    for row in run.labels:
        prev = first_malicious.get(row.identity_uid, row.first_time_ms)
        first_malicious[row.identity_uid] = min(prev, row.first_time_ms)

    # Precision: nothing fires on identities no campaign touched, nor before an attack began.
    assert set(by_identity) <= set(first_malicious)
    for uid, seen in by_identity.items():
        assert min(t for t, _ in seen) >= first_malicious[uid], uid

    def rules_after(row: LabelRow) -> set[str]:
        return {r for t, r in by_identity.get(row.identity_uid, []) if t >= row.first_time_ms}

    table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in run.labels:
        table[row.scenario][0] += 1
        table[row.scenario][1] += bool(rules_after(row))
    print("\nscenario: labelled identities with a rule hit")
    for scenario, (total, hit) in sorted(table.items()):
        print(f"  {scenario:24s} {hit}/{total}")

    rows: dict[str, list[LabelRow]] = defaultdict(list)
    for row in run.labels:
        rows[row.scenario].append(row)
    for scenario in ("credential_reuse", "cloned_agent", "model_swap", "stolen_credentials"):
        assert rows[scenario], f"no {scenario} campaign in the run"
    for row in rows["credential_reuse"]:  # B: misuse; A: its own credential long expired
        assert rules_after(row) & {"credential_misuse", "credential_expired"}, row
    assert {r for row in rows["credential_reuse"] for r in rules_after(row)} == {
        "credential_misuse",
        "credential_expired",
    }
    for row in rows["cloned_agent"]:
        assert "clone" in rules_after(row), row
    for row in rows["model_swap"]:
        assert {"model_provenance", "agent_config_drift"} <= rules_after(row), row
    # Lateral movement: the agents the orchestrator never used act on its tasks (the
    # orchestrator's own calls carry no such fact).
    lateral = [r for r in rows["lateral_movement"] if rules_after(r)]
    assert lateral and {r for row in lateral for r in rules_after(row)} >= {
        "unauthorised_delegation"
    }
    campaigns: dict[str, list[LabelRow]] = defaultdict(list)
    for row in rows["stolen_credentials"]:
        campaigns[row.campaign_id].append(row)
    for members in campaigns.values():  # the first victim always signed in from home first
        first = min(members, key=lambda r: r.first_time_ms)
        assert "impossible_travel" in rules_after(first), first
    # Escalation ends in reads of Secret+ resources: caught wherever that exceeds the ceiling.
    for row in rows["privilege_escalation"]:
        entry = run.directory.lookup(row.identity_uid)
        assert entry is not None and entry.sensitivity_ceiling is not None
        if entry.sensitivity_ceiling < 3:
            assert "sensitivity_ceiling" in rules_after(row), row


def test_a_changed_model_fires_once_per_change_and_a_new_version_is_medium() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    assert rules.check(state, ev(model=model(D_OK, "gpt-4o", "1")), None) == ()
    # Same name and version, other bytes: High, once; the pin moves.
    (hit,) = rules.check(state, ev(model=model(D_BAD, "gpt-4o", "1")), None)
    assert hit.severity_id == 4 and hit.evidence["version_changed"] is False
    assert rules.check(state, ev(model=model(D_BAD, "gpt-4o", "1")), None) == ()
    # Back to the previous build (rollback, old replica): no hit.
    assert rules.check(state, ev(model=model(D_OK, "gpt-4o", "1")), None) == ()
    # An upgrade to a new version nobody registered: Medium evidence, once.
    (hit,) = rules.check(state, ev(model=model(D_OTHER, "gpt-4o", "2")), None)
    assert hit.severity_id == 3 and hit.evidence["version_changed"] is True
    assert "a new version" in hit.text
    assert rules.check(state, ev(model=model(D_OTHER, "gpt-4o", "2")), None) == ()


# ---- state size: previous pins and the home time ---------------------------------------------


def test_previous_pins_are_fingerprints_that_still_spare_a_rollback() -> None:
    rules, state = ZeroTrustRules(), RuleState()
    for digest, tools in ((D_OK, H1), (D_BAD, H2)):
        rules.check(state, ev(model=model(digest), tool_manifest_hash=tools), None)
    # current whole (digest + CRC of name / version), previous: the first 16 digest bytes
    assert state.model is not None and len(state.model) == 36 + _FP
    assert state.model[36:] == bytes.fromhex("a" * 2 * _FP)
    assert state.tools == bytes.fromhex("2" * 64) + bytes.fromhex("1" * 2 * _FP)
    # Back to the previous build and manifest: no hit; the pin holds the observed one whole.
    assert rules.check(state, ev(model=model(D_OK), tool_manifest_hash=H1), None) == ()
    assert state.model[:32] == bytes.fromhex("a" * 64)
    assert state.tools == bytes.fromhex("1" * 64) + bytes.fromhex("2" * 2 * _FP)
    # A digest sharing only a shorter prefix with the previous one is a change.
    near = "sha256:" + "b" * (2 * _FP - 2) + "c" * (66 - 2 * _FP)
    (hit,) = rules.check(state, ev(model=model(near)), None)
    assert hit.evidence["reason"] == "changed_since_first_seen"


def test_state_with_whole_previous_pins_decodes_and_keeps_working() -> None:
    # As written before previous pins were fingerprints: model 72 bytes (current + previous
    # with their CRCs), tools and prompt 64 (current + previous).
    crc = bytes(4)
    old = RuleState(model=bytes.fromhex("b" * 64) + crc + bytes.fromhex("a" * 64) + crc,
                    tools=bytes.fromhex("2" * 64 + "1" * 64),
                    prompt=bytes.fromhex("3" * 64 + "1" * 64))  # fmt: skip
    data = msgspec.msgpack.encode(old)  # the old encoder: the struct as it is
    state = RuleState.from_bytes(data)
    assert state.model is not None and len(state.model) == 36 + _FP
    assert state.model[:36] == old.model[:36]  # type: ignore[index]
    assert (state.tools, state.prompt) == (old.tools[:32 + _FP],  # type: ignore[index]
                                           old.prompt[:32 + _FP])  # type: ignore[index]
    assert len(state.to_bytes()) == len(data) - (36 - _FP) - 2 * (32 - _FP)
    rules = ZeroTrustRules()
    # Rollbacks to the old previous pins are still spared; other values still fire.
    assert rules.check(state, ev(model=model(D_OK), tool_manifest_hash=H1), None) == ()
    assert rules.check(state, ev(system_prompt_hash=H1), None) == ()
    hits = rules.check(state, ev(tool_manifest_hash=H3, system_prompt_hash=H2), None)
    assert [h.evidence["which"] for h in hits] == ["tool_manifest", "system_prompt"]


def test_home_time_is_stored_relative_to_the_last_location() -> None:
    for env_ms in (T0, T0 - 5_000, T0 + 1, T0 - 40 * 24 * HOUR, -1):
        state = RuleState(loc_ms=T0, lat_e4=1, lon_e4=2, env="prod-eu", env_ms=env_ms)
        data = state.to_bytes()
        assert RuleState.from_bytes(data) == state
        if env_ms == T0:
            assert msgspec.msgpack.decode(data)[6] == -2  # one byte instead of nine
            assert len(data) == len(msgspec.msgpack.encode(state)) - 8
    alone = RuleState(env="prod-eu", env_ms=T0)  # no location: stored as it is
    assert msgspec.msgpack.decode(alone.to_bytes())[6] == T0
    assert RuleState.from_bytes(alone.to_bytes()) == alone
    # A relative time without a location to be relative to is not a state this code wrote.
    with pytest.raises(ValueError, match="corrupt"):
        RuleState.from_bytes(msgspec.msgpack.encode([1, -1, 0, 0, None, "x", -2]))
