from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.alerts.policy import RiskPolicy
from pipeline.detection import STATE_BUDGET, Detection
from pipeline.events.schemas import Credential, Event
from pipeline.scores.directory import Directory, DirectoryEntry
from pipeline.scores.explanations import RuleHit
from pipeline.scores.rules import _FP

T0 = 1_790_000_000_000


def _call(i: int, uid: str = "agt-1", issued_to: str = "agt-1") -> Event:
    return Event(
        uid=f"e{i}", class_uid=6003, activity_id=2, time_ms=T0 + i * 30_000,
        identity_uid=uid, identity_kind="agent", service="crm", operation="crm.read",
        bytes_in=2000, bytes_out=300, environment="prod-eu", status_id=1,
        credential=Credential(uid=f"c-{issued_to}", issued_to=issued_to, task_uid="t1", step=1,
                              expires_at=T0 + 10**9),
    )  # fmt: skip


def test_state_lives_in_the_store_and_another_instance_resumes_from_it() -> None:
    store: dict[str, bytes] = {}
    first = Detection()
    out = first.process([_call(i) for i in range(200)], store)
    assert out.scores[0].peer_weight == 1.0  # brand new: scored against its peers only
    assert set(store) == {"agt-1"}
    again = Detection(state_cache_size=0).process([_call(300)], store)
    assert again.scores[0].peer_weight < 0.05  # own baseline restored from the bytes


def test_cached_state_is_not_used_once_the_stored_bytes_changed() -> None:
    store: dict[str, bytes] = {}
    det = Detection()
    det.process([_call(i) for i in range(200)], store)
    del store["agt-1"]  # e.g. another worker owns it now, or the state expired
    out = det.process([_call(300)], store)
    assert out.scores[0].peer_weight == 1.0


def test_rule_hits_are_not_learned_and_unreadable_state_starts_afresh() -> None:
    store: dict[str, bytes] = {"agt-1": b"\x93garbage"}
    det = Detection()
    out = det.process([_call(0), _call(1, issued_to="agt-2")], store)
    assert det.state_resets == 1
    normal, misuse = out.scores
    assert normal.learned and not misuse.learned
    assert [h.rule for h in misuse.rules] == ["credential_misuse"]
    assert all(0.0 <= s.score <= 1.0 for s in out.scores)
    assert any(d.quarantine for d in out.decisions)  # Critical rule: alert with quarantine


def test_shared_state_round_trips_and_a_bad_file_is_ignored(tmp_path: Path) -> None:
    det = Detection()
    det.process([_call(i, uid=f"agt-{i % 7}") for i in range(400)], {})
    path = tmp_path / "shared.msgpack"
    det.save_shared(path)
    other = Detection()
    assert other.load_shared(path) is True
    assert set(other.peers) == set(det.peers)
    assert other.cold_calibrator.n_ == det.cold_calibrator.n_ > 0
    assert (other.detector.counts_ == det.detector.counts_).all()
    path.write_bytes(b"not msgpack at all")
    assert Detection().load_shared(path) is False


def _warm(det: Detection, store: dict[str, bytes], n: int = 400) -> None:
    # Several identities, so the calibrators have a reference; agt-1 is the one under test.
    det.process([_call(i, uid=f"agt-{i % 4}", issued_to=f"agt-{i % 4}") for i in range(n)], store)


def test_events_are_scored_and_learned_in_order_within_a_batch() -> None:
    store: dict[str, bytes] = {}
    det = Detection()
    batch = [_call(i, uid=f"agt-{i % 3}", issued_to=f"agt-{i % 3}") for i in range(30)]
    out = det.process(batch, store)
    assert [s.event_uid for s in out.scores] == [e.uid for e in batch]  # input order kept
    n_learned = det.state_of("agt-0", store).baseline.n
    assert n_learned == sum(1 for s in out.scores if s.identity_uid == "agt-0" and s.learned)


def _novel_ops(start: int) -> list[Event]:
    return [
        Event(uid=f"n{i}", class_uid=6003, activity_id=2, time_ms=T0 + (start + i) * 30_000,
              identity_uid="agt-1", identity_kind="agent", service="crm",
              operation="crm.search", bytes_in=2000, bytes_out=300, environment="prod-eu",
              status_id=1)
        for i in range(3)
    ]  # fmt: skip


def test_only_scores_a_decision_can_read_are_explained_unless_all_are_asked_for() -> None:
    # Calls that vary (sizes, one new operation now and then) across warm and new identities:
    # some dimensions stand out in many events, few of them above the noise floor.
    batch = [
        msgspec.structs.replace(
            _call(i, uid=f"agt-{i % 5}", issued_to=f"agt-{i % 5}"),
            bytes_out=300 + (i * 7919) % 90_000,
            operation="crm.read" if i % 37 else f"crm.op{i % 11}")
        for i in range(1_200)
    ]  # fmt: skip

    def run(det: Detection) -> list:  # type: ignore[type-arg]
        store: dict[str, bytes] = {}
        return [det.process(batch[k:k + 300], store) for k in range(0, len(batch), 300)]

    lean, full = run(Detection()), run(Detection(explain_all=True))
    floor = Detection().policy.noise_floor
    lean_scores = [s for out in lean for s in out.scores]
    full_scores = [s for out in full for s in out.scores]
    # The same scores, decisions and learning; only the unread texts are left out.
    strip = [msgspec.structs.replace(s, contributions=()) for s in full_scores]
    assert [msgspec.structs.replace(s, contributions=()) for s in lean_scores] == strip
    assert [d for out in lean for d in out.decisions] == [d for out in full for d in out.decisions]
    above = [(a, b) for a, b in zip(lean_scores, full_scores, strict=True) if b.score >= floor]
    assert all(a.contributions == b.contributions for a, b in above)
    below = [(a, b) for a, b in zip(lean_scores, full_scores, strict=True) if b.score < floor]
    assert sum(bool(b.contributions) for _, b in below) > 50  # explained when asked for
    assert not any(a.contributions for a, _ in below)
    # Whoever publishes every score (the scores topic) gets every score explained.
    from pipeline.config import Settings

    assert Detection(Settings(emit_scores=True)).explain_all


def test_below_the_gate_a_novelty_is_learned_once_above_it_never() -> None:
    def novelty_flags(det: Detection) -> list[tuple[bool, str]]:
        store: dict[str, bytes] = {}
        _warm(det, store)
        out = det.process(_novel_ops(400), store)
        return [(s.learned, next(c.text for c in s.contributions if c.feature == "operation"))
                for s in out.scores]  # fmt: skip

    # A gate above every score (and a policy that adds no risk): the first use is learned,
    # and the same operation is merely rare from then on.
    lenient = novelty_flags(Detection(learn_gate=1.01, policy=RiskPolicy(gain=0.0)))
    assert [learned for learned, _ in lenient] == [True, True, True]
    assert lenient[0][1].startswith("first use of operation")
    assert all("rarely used" in text for _, text in lenient[1:])
    # The default gate (the policy's noise floor): this novelty scores above it, so it stays
    # out of the baseline and keeps counting as a first use.
    strict = novelty_flags(Detection())
    assert [learned for learned, _ in strict] == [False, False, False]
    assert all(text.startswith("first use of operation") for _, text in strict)


def test_nothing_is_learned_while_an_incident_builds_up() -> None:
    store: dict[str, bytes] = {}
    det = Detection()
    _warm(det, store)
    # A Critical rule opens an incident; the identity's later, ordinary events are not learned.
    out = det.process([_call(500, issued_to="agt-2"), _call(501), _call(502)], store)
    assert det.state_of("agt-1", store).risk.incident is not None
    assert [s.learned for s in out.scores] == [False, False, False]


def test_without_a_directory_a_delegator_reaching_two_agents_that_never_worked_for_it_is_evidence(
) -> None:
    det = Detection()  # no directory: who may delegate to an agent is learned from its history
    store: dict[str, bytes] = {}

    def calls(uid: str, start: int, n: int, by: str) -> list[Event]:
        return [msgspec.structs.replace(_call(start + i, uid=uid, issued_to=uid), delegated_by=by)
                for i in range(n)]  # fmt: skip

    out = det.process([*calls("agt-1", 0, 300, "agt-orch-1"),
                       *calls("agt-3", 0, 300, "agt-orch-1")], store)  # fmt: skip
    # Their usual orchestrator (and the agents while they were new): nothing about anyone else.
    assert out.signals == []
    out = det.process(calls("agt-1", 400, 3, "agt-orch-9"), store)
    [sig] = out.signals  # one per (delegator, agent) and batch
    assert (sig.identity_uid, sig.source_uid, sig.rule.rule) == (
        "agt-orch-9", "agt-1", "delegated_to_stranger")
    assert sig.rule.severity_id == 4 and "never worked for it" in sig.rule.text
    # One new delegate is how fleets grow: remembered on the delegator, not yet evidence, and
    # the same signal applied again (a replay) is not a second stranger.
    assert det.apply_signals(out.signals, store) == []
    assert det.apply_signals(out.signals, store) == []
    assert len(det.state_of("agt-orch-9", store).rules.strangers) == 1
    # A second agent that never worked for it, 20 minutes later: fanning out, evidence.
    out2 = det.process(calls("agt-3", 440, 3, "agt-orch-9"), store)
    decisions = det.apply_signals(out2.signals, store)
    assert [(d.identity_uid, d.action) for d in decisions] == [("agt-orch-9", "create")]
    [hit] = decisions[0].rules
    assert hit.rule == "delegated_to_stranger" and hit.evidence["strangers"] == 2
    assert "2 agents that never worked for it" in hit.text
    # A brand-new agent has no delegators to compare with: no signal.
    assert det.process(calls("agt-2", 500, 3, "agt-orch-9"), store).signals == []


def test_strangers_hours_apart_do_not_corroborate_each_other() -> None:
    from pipeline.detection import STRANGER_WINDOW_MS
    from pipeline.scores.explanations import Signal

    det = Detection()
    store: dict[str, bytes] = {}

    def sig(agent: str, t: int) -> Signal:
        hit = RuleHit("delegated_to_stranger", 4, f"agt-orch-9 handed a task to {agent}",
                      {"delegate": agent})  # fmt: skip
        return Signal("agt-orch-9", "unknown", t, f"e-{agent}-{t}", agent, hit)

    assert det.apply_signals([sig("agt-1", T0)], store) == []
    assert det.apply_signals([sig("agt-2", T0 + 2 * STRANGER_WINDOW_MS)], store) == []
    # A late signal counts at its event time: within the hour of agt-2's, not of agt-1's.
    [d] = det.apply_signals([sig("agt-3", T0 + 3 * STRANGER_WINDOW_MS // 2)], store)
    assert d.action == "create"
    assert len(det.state_of("agt-orch-9", store).rules.strangers) == 3


def test_an_unauthorised_delegation_becomes_evidence_about_the_delegator() -> None:
    directory = Directory(
        [
            DirectoryEntry("agt-1", "agent", "agent/crm", delegators=("agt-orch-1",)),
            DirectoryEntry("agt-orch-9", "agent", "agent/orchestrator"),
        ]
    )
    det = Detection(directory=directory)
    store: dict[str, bytes] = {}
    calls = [msgspec.structs.replace(_call(i), delegated_by="agt-orch-1") for i in range(50)]
    assert det.process(calls, store).signals == []  # the allowed orchestrator: nothing
    stranger = [msgspec.structs.replace(_call(60 + i), delegated_by="agt-orch-9") for i in range(3)]
    out = det.process(stranger, store)
    assert [h.rule for h in out.scores[0].rules] == ["unauthorised_delegation"]
    # Three steps of one task: one signal, about the delegator, naming the revealing event.
    [sig] = out.signals
    assert (sig.identity_uid, sig.identity_kind, sig.source_uid) == ("agt-orch-9", "agent", "agt-1")
    assert sig.event_uid == "e60" and sig.rule.rule == "delegated_outside_team"
    decisions = det.apply_signals(out.signals, store)
    assert [(d.identity_uid, d.action) for d in decisions] == [("agt-orch-9", "create")]
    assert decisions[0].related_events == ("e60",)
    assert "agt-orch-9" in det.open_incidents
    # The delegator's state now holds the incident; applying the same evidence again updates it.
    assert det.state_of("agt-orch-9", store).risk.incident is not None
    assert all(d.action != "create" for d in det.apply_signals(out.signals, store))


def _with_model(i: int, uid: str, digest: str) -> Event:
    from pipeline.events.schemas import ModelRef

    return msgspec.structs.replace(_call(i, uid=uid, issued_to=uid),
                                   model=ModelRef("gpt-x", "1", digest))  # fmt: skip


D_A, D_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_a_build_nobody_registered_is_one_inventory_finding_across_the_fleet() -> None:
    from pipeline.config import Settings

    det = Detection(Settings())  # default settings: no registry, no directory
    store: dict[str, bytes] = {}
    out = det.process([_with_model(i, f"agt-{i % 5}", D_A) for i in range(50)], store)
    inv = [d for d in out.decisions if d.rules and d.rules[0].rule == "model_inventory"]
    assert len(inv) == 1 and not inv[0].is_alert and not inv[0].quarantine
    assert inv[0].severity_id == 2 and not [d for d in out.decisions if d.is_alert]
    # The same build again (another batch): nothing; a new build under a pinned agent: a hit
    # on that agent, and one more inventory finding for the new build.
    out = det.process([_with_model(60, "agt-1", D_A), _with_model(61, "agt-2", D_B)], store)
    rules = [r.rule for s in out.scores for r in s.rules]
    assert rules == ["model_provenance"]
    inv2 = [d for d in out.decisions if d.rules and d.rules[0].rule == "model_inventory"]
    assert len(inv2) == 1 and inv2[0].finding_uid != inv[0].finding_uid


def test_a_registered_build_is_no_inventory_and_enforcement_makes_unknown_ones_violations(
    tmp_path: Path,
) -> None:
    from pipeline.config import Settings

    reg = tmp_path / "agent-models.yaml"
    reg.write_text(f"models:\n  - {{name: gpt-x, version: '1', digest: '{D_A}'}}\n")
    det = Detection.from_settings(Settings(model_allowlist_file=str(reg)))
    out = det.process([_with_model(i, "agt-1", D_A) for i in range(5)], {})
    assert not out.decisions and not any(s.rules for s in out.scores)
    strict = Detection.from_settings(
        Settings(model_allowlist_file=str(reg), agent_models_enforce=True)
    )
    out = strict.process([_with_model(0, "agt-9", D_B)], {})
    assert [r.evidence["reason"] for s in out.scores for r in s.rules] == ["unregistered"]


def test_busy_identities_need_rarer_events_to_add_risk() -> None:
    from pipeline.config import Settings

    def run(busy: float) -> list[float]:
        det = Detection(Settings(busy_events_per_hour=busy))
        store: dict[str, bytes] = {}
        # agt-busy: 1 call every 15 s (240/h); agt-calm: 1 every 10 min; both for 2 days.
        events = [_call(i, uid="agt-busy", issued_to="agt-busy") for i in range(0, 11_520)]
        events = [msgspec.structs.replace(e, time_ms=T0 + k * 15_000) for k, e in enumerate(events)]
        calm = [msgspec.structs.replace(_call(i, uid="agt-calm", issued_to="agt-calm"),
                                        time_ms=T0 + i * 600_000) for i in range(288)]  # fmt: skip
        allev = sorted(events + calm, key=lambda e: e.time_ms)
        for k in range(0, len(allev), 2000):
            det.process(allev[k : k + 2000], store)
        t = T0 + 3 * 86_400_000
        odd = [msgspec.structs.replace(_call(0, uid=u, issued_to=u), uid=f"odd-{u}", time_ms=t,
                                       bytes_in=50_000_000, service="vault")
               for u in ("agt-busy", "agt-calm")]  # fmt: skip
        return [s.score for s in det.process(odd, store).scores]

    busy_off, calm_off = run(0.0)
    busy_on, calm_on = run(20.0)
    assert calm_on == calm_off  # below the reference rate: untouched
    assert busy_on < busy_off  # 240 events/h: the same event says less


def test_the_constructor_reads_no_file_and_refuses_settings_that_name_one(tmp_path: Path) -> None:
    import pytest

    from pipeline.config import Settings
    from pipeline.errors import ConfigError

    reg = tmp_path / "agent-models.yaml"
    reg.write_text(f"models:\n  - {{name: gpt-x, version: '1', digest: '{D_A}'}}\n")
    supp = tmp_path / "suppressions.yaml"
    supp.write_text("- {identity: agt-1, reason: lab agent}\n")
    settings = Settings(model_allowlist_file=str(reg), suppressions_file=str(supp))
    with pytest.raises(ConfigError, match="model_allowlist_file, suppressions_file"):
        Detection(settings)  # a core that silently ignored its registry would misjudge agents
    det = Detection.from_settings(settings)
    assert det.rules.agent_models is not None and len(det.rules.agent_models) == 1
    assert [s.identity for s in det.policy.suppressions] == ["agt-1"]


def test_an_agent_whose_model_changed_version_keeps_its_state() -> None:
    """The drift hit's evidence holds a boolean (``version_changed``); the identity's stored
    state (its incident's evidence) must still decode, or the agent would start afresh,
    baseline and incident gone, on its next batch."""
    from pipeline.events.schemas import ModelRef

    det, store = Detection(state_cache_size=0), {}  # no cache: every batch decodes the state
    det.process([_with_model(i, "agt-1", D_A) for i in range(5)], store)
    moved = msgspec.structs.replace(_call(10, uid="agt-1", issued_to="agt-1"),
                                    model=ModelRef("gpt-x", "2", D_B))  # fmt: skip
    out = det.process([moved], store)
    assert [r.evidence.get("version_changed") for s in out.scores for r in s.rules] == [True]
    det.process([_with_model(20, "agt-1", D_B)], store)
    assert det.state_resets == 0
    assert det.state_of("agt-1", store).risk.incident is not None


def test_a_baseline_of_an_older_layout_is_relearned_but_the_incident_is_kept() -> None:
    """An upgrade that changes the baseline's layout must not forget open incidents."""
    store: dict[str, bytes] = {}
    det = Detection()
    _warm(det, store)
    det.process([_call(500, issued_to="agt-2")], store)  # a Critical rule: an incident opens
    version, base, rules, risk, *extra = msgspec.msgpack.decode(store["agt-1"])
    old = bytes([1]) + base[1:]  # the layout before steps
    store["agt-1"] = msgspec.msgpack.encode((version, old, rules, risk, *extra))
    st = Detection().state_of("agt-1", store)
    assert st.baseline.n == 0 and st.risk.incident is not None
    assert st.rules.to_bytes() == rules



def test_describe_names_values_finds_the_peer_group_and_tells_the_agents_model(
    tmp_path: Path,
) -> None:
    """What the console's identity page shows: value names beyond the usual one (from the
    process's name book), the identity's peer group baseline, and for an agent the model it is
    pinned to with the registry's provenance of that build."""
    from pipeline.config import Settings
    from pipeline.events.schemas import ModelRef

    reg = tmp_path / "agent-models.yaml"
    reg.write_text(f"models:\n  - {{name: gpt-x, version: '2', digest: '{D_B}',"
                   " trained_by: vendor-a, approved_by: alice}\n")  # fmt: skip
    det = Detection.from_settings(Settings(model_allowlist_file=str(reg)))
    store: dict[str, bytes] = {}
    events = [_with_model(i, "agt-1", D_A) for i in range(40)]
    long_op = "crm.records.export-to-quarterly-finance-archive"  # longer than a state's name
    events += [msgspec.structs.replace(_call(50 + i), operation="crm.write") for i in range(3)]
    events += [msgspec.structs.replace(_call(55), operation=long_op)]
    det.process(events, store)
    det.process([msgspec.structs.replace(_call(60), model=ModelRef("gpt-x", "2", D_B))], store)

    d = det.describe("agt-1", store, "agent")
    ops = {c["feature"]: c for c in d["baseline"]["categorical"]}["operation"]
    assert ops["usual"] == "crm.read"
    assert {v["name"] for v in ops["values"]} == {"crm.read", "crm.write", long_op}  # all named
    det.process([msgspec.structs.replace(_call(100 + i, uid="agt-9", issued_to="agt-9"),
                                         operation=long_op) for i in range(5)], store)  # fmt: skip
    described = det.describe("agt-9", store)  # no kind given: its peer group's
    assert described["kind"] == "agent" and described["peers"]["group"] == "agent:svc:crm"
    nine = {c["feature"]: c for c in described["baseline"]["categorical"]}
    assert nine["operation"]["usual"] == long_op  # whole, not the state's shortened copy
    assert "…" in det.state_of("agt-9", store).baseline.name_text[4]
    assert d["peers"]["group"] == "agent:svc:crm" and not d["peers"]["from_directory"]
    assert d["peers"]["baseline"]["events_learned"] > 0
    pinned = d["agent"]["pinned_models"]
    assert [p["digest"] for p in pinned] == [D_B]  # a registered build: the pin follows it
    assert pinned[0]["registry"] == "approved"
    assert pinned[0]["builds"][0]["trained_by"] == "vendor-a"
    d_c = "sha256:" + "c" * 64
    det.process([msgspec.structs.replace(_call(61), model=ModelRef("gpt-x", "3", d_c))], store)
    pinned = det.describe("agt-1", store, "agent")["agent"]["pinned_models"]
    assert [(p["digest"], p["pin"], p["registry"]) for p in pinned] == [
        (d_c, "current", "unregistered"), (D_B, "previous", "approved")]
    assert d["risk"]["risk"] >= 0 and d["kind"] == "agent"
    assert det.describe("nobody", store, None)["baseline"]["events_learned"] == 0


# --- the state's byte budget (issue 14) ---------------------------------------------------------


def _busy_agent(i: int, uid: str = "agt-b") -> Event:
    """A busy agent without a directory, as the simulator's busiest: many tools, resources,
    parties, hosts and tasks of eight steps each (credentials per step), a tool manifest that
    changes now and then, a location. Every name of its most used values is long."""
    from pipeline.events.schemas import ModelRef, Resource

    task, step = divmod(i, 8)
    cfg = (i // 300) % 3
    return Event(
        uid=f"b{i}", class_uid=6003, activity_id=(1, 2, 3)[i % 3], time_ms=T0 + i * 20_000,
        identity_uid=uid, identity_kind="agent", service=f"service-{i % 7:02d}-long",
        operation=f"operation.{i % 9}.long-name", country=("IE", "DE")[i % 5 == 0],
        asn=64_500 + i % 3, src_ip=f"10.{i % 4}.{i % 5}.7", delegated_by=f"usr-{i % 6:07d}",
        environment="prod-eu-west", auth_protocol="OAUTH 2.0-long",
        resources=(Resource(f"kb:page-{i % 11:05d}-archive", "page", 3),
                   *((Resource(f"mailbox-{i % 5}@example.org", "email_address"),)
                     if i % 3 == 0 else ())),
        lat=53.33, long=-6.25, bytes_in=2000 + 37 * (i % 50), bytes_out=300 + 11 * (i % 70),
        status_id=1,
        model=ModelRef("gpt-x", "1", "sha256:" + "a" * 64),
        tool_manifest_hash="sha256:" + "123"[cfg] * 64,
        system_prompt_hash="sha256:" + "4" * 64,
        credential=Credential(uid=f"cred-{task}-{step}", issued_to=uid, task_uid=f"task-{task}",
                              step=step + 1, expires_at=T0 + i * 20_000 + 600_000),
    )  # fmt: skip


def _run_busy(n: int = 2400) -> tuple[Detection, dict[str, bytes], list[tuple[object, ...]]]:
    det, store = Detection(state_cache_size=0), {}  # no cache: every batch decodes the states
    outcome: list[tuple[object, ...]] = []
    for start in range(0, n, 200):
        out = det.process([_busy_agent(i) for i in range(start, start + 200)], store)
        outcome += [(s.event_uid, s.score, s.raw, s.rules, s.learned,
                     [(c.feature, c.weight) for c in s.contributions])
                    for s in out.scores]  # fmt: skip
        outcome += [msgspec.to_builtins(d) for d in out.decisions]
    return det, store, outcome


def test_a_busy_agent_state_stays_within_the_budget_and_detects_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.detection as detection

    det, store, outcome = _run_busy()
    assert 900 < len(store["agt-b"]) <= detection.STATE_BUDGET <= 1024
    assert det.names_shed > 0 and det.states_over_budget == 0
    monkeypatch.setattr(detection, "STATE_BUDGET", 10**6)  # as before the budget
    unbounded, ustore, same = _run_busy()
    assert len(ustore["agt-b"]) > 1024 and unbounded.names_shed == 0  # the case it is for
    assert outcome == same  # scores, rule hits, decisions: the budget changes none of them
    kept = det.state_of("agt-b", store).baseline
    whole = unbounded.state_of("agt-b", ustore).baseline
    assert kept.name_slot.tolist() == whole.name_slot.tolist()
    assert 0 < sum(t is None for t in kept.name_text) and all(whole.name_text[:-1])
    assert kept.name_text[0] == whole.name_text[0] == "IE"  # the country goes last


def test_an_explanation_names_the_usual_value_while_there_is_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.detection as detection

    def text_of_new_country(det: Detection) -> str:
        store: dict[str, bytes] = {}
        _warm(det, store)
        away = msgspec.structs.replace(_call(900), country="BR", uid="away")
        (score,) = det.process([away], store).scores
        return " ".join(c.text for c in score.contributions)

    assert "usually" not in text_of_new_country(Detection())  # learnt no country yet
    events = [msgspec.structs.replace(_call(i), country="DE") for i in range(300)]
    for budget, named in ((detection.STATE_BUDGET, True), (300, False)):
        monkeypatch.setattr(detection, "STATE_BUDGET", budget)
        det, store = Detection(state_cache_size=0), {}
        det.process(events, store)
        away = msgspec.structs.replace(_call(400), country="BR")
        (score,) = det.process([away], store).scores
        texts = " ".join(c.text for c in score.contributions)
        assert "country BR never seen" in texts
        assert ("usually DE" in texts) is named, texts
        assert (det.names_shed > 0) is not named


def test_a_state_written_before_the_budget_still_decodes() -> None:
    """A restored changelog: states whose rule facts hold whole previous pins and an
    absolute home time (and names never shed) decode and keep working."""
    det, store = Detection(state_cache_size=0), {}
    det.process([_busy_agent(i) for i in range(700)], store)
    version, base, rules, risk = msgspec.msgpack.decode(store["agt-b"])
    st = det.state_of("agt-b", store)
    fields = msgspec.msgpack.decode(rules)
    assert fields[6] == -2 and len(fields[9]) == 32 + _FP  # relative home time, fingerprint
    fields[6] = st.rules.env_ms  # as the old code wrote them: absolute, previous pins whole
    fields[7] = fields[7][:36] + bytes.fromhex("b" * 64) + bytes(4)
    fields[9] = fields[9][:32] + bytes.fromhex("1" * 64)
    old = msgspec.msgpack.encode((version, base, msgspec.msgpack.encode(fields), risk))
    store["agt-b"] = old
    back = Detection(state_cache_size=0)
    restored = back.state_of("agt-b", store)
    assert back.state_resets == 0 and restored.baseline.name_text == st.baseline.name_text
    assert restored.rules.env_ms == st.rules.env_ms and restored.rules.loc_ms == st.rules.loc_ms
    assert restored.rules.model == fields[7][:36] + bytes.fromhex("b" * 2 * _FP)
    assert restored.rules.tools == fields[9][:32] + bytes.fromhex("1" * 2 * _FP)
    old_rules = msgspec.msgpack.encode(fields)
    # 8: the home time; the previous model pin loses its CRC and the digest's tail; the
    # manifest's its tail
    assert len(restored.rules.to_bytes()) == len(old_rules) - 8 - (36 - _FP) - (32 - _FP)
    assert len(back.dump_state(restored)) <= STATE_BUDGET < len(old)
    # Rolling back to the old previous build and manifest is still no new finding.
    from pipeline.events.schemas import ModelRef

    back_to = ModelRef("gpt-x", "1", "sha256:" + "b" * 64)
    rollback = msgspec.structs.replace(_busy_agent(700), model=back_to,
                                       tool_manifest_hash="sha256:" + "1" * 64)  # fmt: skip
    (score,) = back.process([rollback], store).scores
    assert not [r for r in score.rules if r.rule in ("model_provenance", "agent_config_drift")]


def _misuse_run(det: Detection, store: dict[str, bytes]) -> None:
    """A warm agent, then a credential issued to another agent: an incident opens."""
    det.process([_call(i) for i in range(200)], store)
    det.process([_call(200), _call(201, issued_to="agt-2")], store)


def test_deferred_writes_stay_in_memory_until_flushed_and_then_equal_written_through() -> None:
    through, through_store = Detection(), {}
    _misuse_run(through, through_store)
    det, store = Detection(), {}
    det.defer_writes = True
    _misuse_run(det, store)
    assert store == {} and det.unwritten == 1  # nothing encoded yet, nothing lost either
    out = det.process([_call(202)], store)  # the next batch reads the state in memory
    assert out.scores[0].peer_weight < 0.05  # its own warm baseline, not a fresh one
    assert det.flush_states(store) == 1 and det.unwritten == 0
    through.process([_call(202)], through_store)
    assert store == through_store  # states and side parts (the open incident) byte for byte
    assert det.flush_states(store) == 0


def test_every_other_entry_point_sees_the_deferred_state_and_writes_it() -> None:
    det, store = Detection(), {}
    det.defer_writes = True
    _misuse_run(det, store)
    assert "agt-1" in det.open_incidents and store == {}
    assert det.state_of("agt-1", store).risk.incident is not None  # describe, tick
    # A tick long after: the quiet incident closes on the state in memory, which is written.
    closed = det.tick(T0 + 30 * 86_400_000, store, ["agt-1"])
    assert [d.action for d in closed] == ["close"]
    assert det.unwritten == 0 and "agt-1" in store
    assert det.state_of("agt-1", store).risk.incident is None


def test_a_deferred_state_leaving_the_cache_is_written_first_and_forgotten_ones_are_not() -> None:
    det, store = Detection(state_cache_size=1), {}
    det.defer_writes = True
    det.process([_call(i) for i in range(50)], store)
    det.process([_call(100 + i, uid="agt-2") for i in range(5)], store)  # evicts agt-1
    assert set(store) == {"agt-1"} and det.unwritten == 1
    det.forget_states(["agt-2"])  # another worker owns it now: it replays, we drop
    assert det.unwritten == 0 and det.flush_states(store) == 0 and "agt-2" not in store
