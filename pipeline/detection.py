"""(baseline, features, detector, rules) → explained score → risk decision, per micro-batch.

This is the one code path every consumer runs: the worker, ``custos replay``,
``custos evaluate`` and the notebooks. It imports neither Kafka nor faust. Per-identity state
lives in any ``MutableMapping[str, bytes]`` — a faust table backed by RocksDB in the worker,
a plain dict offline — and is read once and written back once per identity per batch.

Shared state (peer-group baselines, the detector and its calibrator) belongs to the process:
it is learned from everything the process sees, and :meth:`Detection.save_shared` /
:meth:`load_shared` persist it beside the worker's tables.

>>> from pipeline.events.schemas import Event
>>> det = Detection()
>>> ev = Event(uid="e1", class_uid=3002, activity_id=1, time_ms=1_790_000_000_000,
...            identity_uid="usr-1", identity_kind="human", country="DE", status_id=1)
>>> out = det.process([ev], {})
>>> len(out.scores), 0.0 <= out.scores[0].score <= 1.0, out.decisions
(1, True, [])
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import msgspec
import numpy as np

from pipeline.alerts.decisions import Decision, inventory_decision
from pipeline.alerts.policy import RiskPolicy
from pipeline.alerts.state import Incident, RiskState, Suppression, load_suppressions
from pipeline.baselines import kernel
from pipeline.baselines.baselines import BaselineModel, blend_winners, peer_group_key
from pipeline.baselines.codec import StateFormatError, shed_names
from pipeline.baselines.features import Features, extract_rows
from pipeline.baselines.layout import _I_N, DEVIATION_INDEX, DEVIATIONS, BaselineState
from pipeline.baselines.learning import round_arrays
from pipeline.baselines.names import NameBook
from pipeline.config import Settings
from pipeline.control.feedback import Feedback, FeedbackOutcome
from pipeline.errors import ConfigError
from pipeline.events.schemas import Event, ModelRef
from pipeline.scores.agent_models import load_agent_model_registry
from pipeline.scores.detectors import Detector, Loda, SignedModel, TailCalibrator
from pipeline.scores.directory import Directory, DirectoryEntry
from pipeline.scores.explanations import Contribution, RuleHit, Score, Signal
from pipeline.scores.rules import RULES, RuleState, ZeroTrustRules

STATE_VERSION = 1
#: Bytes an identity's state (:meth:`Detection.dump_state`) is kept within (issue 14: 1 KB).
#: A busy agent without a directory needs up to ~1,170 B with every name of its most used
#: values; without them, at most ~1,020 in the worlds measured (more with previous pins).
STATE_BUDGET: Final = 1_024
log = logging.getLogger("custos.scoring")
_FEATURES_ENCODER: Final = msgspec.msgpack.Encoder()
_STATE_ENCODE: Final = msgspec.msgpack.Encoder().encode
_FEATURES_DECODER: Final = msgspec.msgpack.Decoder(Features)


# Deviations that move together: a new network shows as a new country, ASN and IP prefix at
# once, a new tool as a new service, operation and resource. Counting each group's members as
# independent evidence would make one harmless change (a trip, a new API) look like three.
_GROUPS: Final = tuple(
    np.array([DEVIATION_INDEX[name] for name in group])
    for group in (("country", "asn", "ip_prefix"),
                  ("service", "operation", "resource", "combo", "step"))
)
_GROUPED: Final = np.concatenate(_GROUPS)
_ECHO: Final = 0.25  # weight of a group's weaker members beside its strongest
# z-scored dimensions keep growing with z (an exponential tail: -log p = (z - offset) / scale);
# the others are shares and saturate at "never seen".
_ZDIMS: Final = np.array([DEVIATION_INDEX[d] for d in (
    "bytes_out", "bytes_in", "n_resources", "burst", "task_volume", "task_resources",
    "hour_volume", "drift", "sensitivity")])  # fmt: skip
_Z_CAP: Final = 1e-12


def surprise(rows: np.ndarray) -> np.ndarray:
    """Sum of -log(1 - deviation): each deviation read as an independent tail probability.

    Within a group of correlated deviations, the strongest counts fully and the others by
    ``_ECHO``.

    >>> row = np.zeros((1, len(DEVIATIONS)))
    >>> row[0, [DEVIATION_INDEX["asn"], DEVIATION_INDEX["ip_prefix"]]] = 0.9
    >>> one = row.copy(); one[0, DEVIATION_INDEX["ip_prefix"]] = 0.0
    >>> bool(surprise(one)[0] < surprise(row)[0] < 2 * surprise(one)[0])
    True

    Shares saturate at "never seen"; a z-scored volume keeps growing with z:

    >>> seen, huge = np.zeros((1, len(DEVIATIONS))), np.zeros((1, len(DEVIATIONS)))
    >>> seen[0, DEVIATION_INDEX["service"]] = 1.0
    >>> huge[0, DEVIATION_INDEX["bytes_out"]] = 1.0 - 1e-6  # z = offset + 13.8 scales
    >>> round(float(surprise(seen)[0]), 1), round(float(surprise(huge)[0]), 1)
    (6.9, 13.8)
    """
    tails = -np.log1p(-0.999 * rows)
    tails[:, _ZDIMS] = -np.log(np.maximum(1.0 - rows[:, _ZDIMS], _Z_CAP))
    total = tails.sum(axis=1) - tails[:, _GROUPED].sum(axis=1)
    for g in _GROUPS:
        part = tails[:, g]
        strongest = part.max(axis=1)
        total += strongest + _ECHO * (part.sum(axis=1) - strongest)
    return np.asarray(total, dtype=np.float64)


INVENTORY_MAX: Final = 4096  # model builds remembered for inventory findings
#: Delegator deviation of a warm agent at which its delegator counts as a stranger to it.
STRANGER_DEVIATION: Final = 0.9
#: A delegator's second stranger within this much event time corroborates the first (one new
#: delegate is how fleets grow; an attacker reaching out fans out). The risk half-life.
STRANGER_WINDOW_MS: Final = 3_600_000
STRANGERS_MAX: Final = 4  # strangers remembered per delegator (RuleState.strangers)
_DELEGATOR: Final = DEVIATION_INDEX["delegator"]
HELD_MAX: Final = 8  # features of recent events kept out of the baseline, per identity
FEEDBACK_SEEN_MAX: Final = 16  # feedback uids remembered per identity (idempotency)
#: Suffix of the key an identity's side part is stored under, beside its state. Identity uids
#: are printable (the decoder refuses others), so no uid is ever taken for a side key.
SIDE_SUFFIX: Final = "\x00side"


def side_key(uid: str) -> str:
    """The store key of ``uid``'s side part.

    >>> side_owner(side_key("agt-1")), side_owner("agt-1")
    ('agt-1', None)
    """
    return uid + SIDE_SUFFIX


def side_owner(key: str) -> str | None:
    """The identity whose side part ``key`` is, or None for an identity's own state key."""
    return key[: -len(SIDE_SUFFIX)] if key.endswith(SIDE_SUFFIX) else None


class SidePart(msgspec.Struct, array_like=True, gc=False):
    """What only the slow path needs, stored apart from the state every event reads: the open
    incident, analysts' suppressions, recurring evidence, held events and applied feedback.

    Most identities have none, so their state stays small and of fixed size (issue 14); the
    few with an incident carry its evidence here.
    """

    incident: Incident | None = None
    suppressions: list[Suppression] = []
    recurring: list[str] = []
    held: list[bytes] = []
    feedback: list[str] = []


_SIDE_ENCODER: Final = msgspec.msgpack.Encoder()
_SIDE_DECODER: Final = msgspec.msgpack.Decoder(SidePart)


class IdentityState:
    """Everything Custos keeps per identity: baseline, rule facts, risk.

    Stored as two values: the state (:meth:`Detection.dump_state`) and, only when there is
    any, its :class:`SidePart` under :func:`side_key` (:meth:`Detection.dump_side`).
    ``held``: the encoded features of the most recent events kept out of the baseline (at
    most :data:`HELD_MAX`), so an analyst's "false positive, learn this as normal" can still
    teach them. ``feedback``: uids of feedback already applied. ``side``: the side part as
    read or last written (None: none), so an unchanged one is not written again.
    """

    __slots__ = ("baseline", "feedback", "held", "risk", "rules", "side")

    def __init__(
        self,
        baseline: BaselineState,
        rules: RuleState,
        risk: RiskState,
        held: list[bytes] | None = None,
        feedback: list[str] | None = None,
    ) -> None:
        self.baseline = baseline
        self.rules = rules
        self.risk = risk
        self.held = held if held is not None else []
        self.feedback = feedback if feedback is not None else []
        self.side: bytes | None = None


@dataclass
class BatchResult:
    scores: list[Score] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    # Evidence about other identities, to be applied where their state lives (apply_signals).
    signals: list[Signal] = field(default_factory=list)
    # The deviation vectors that fed the detector, one row per score (``keep_rows`` only):
    # the features data scientists train detectors on.
    rows: np.ndarray | None = None


class Detection:
    """The detection core with its hyperparameters; see the module docstring.

    ``learn_gate``: an event whose calibrated score reaches this value (default: the policy's
    noise floor, where events start to count as evidence), that fired a rule, or whose identity
    has an incident building up, is not learned into the baselines (nor the detector): a
    compromised identity must not teach Custos that its compromise is normal. A harmless novelty
    that scores below the gate is learned at once, so it is "first use" once, not forever.
    ``cold_gate``: a new identity (mostly scored against its peers) learns every event whose
    strongest deviation from its *own* young baseline stays below this value.
    Analyst feedback can release gated events later.
    ``explain_all``: write every score's contributions (default: only where the scores topic
    is on, ``emit_scores``). Otherwise only scores at or above the lower of the noise floor
    and the learn gate are explained: no decision reads the others' explanations.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        directory: Directory | None = None,
        baseline_model: BaselineModel | None = None,
        peer_model: BaselineModel | None = None,
        detector: Detector | None = None,
        calibrator: TailCalibrator | None = None,
        model: SignedModel | None = None,
        rules: ZeroTrustRules | None = None,
        policy: RiskPolicy | None = None,
        learn_gate: float | None = None,
        cold_gate: float = 0.85,
        busy_events_per_hour: float | None = None,
        state_cache_size: int | None = None,
        keep_rows: bool = False,
        explain_all: bool | None = None,
    ) -> None:
        settings = settings or Settings()
        # The constructor stores; from_settings reads. A file the settings name but nobody
        # read would silently run without its directory, registry or suppressions.
        unread = [name for name, given in (("directory_file", directory),
                                           ("model_allowlist_file", rules),
                                           ("suppressions_file", policy))
                  if getattr(settings, name) and given is None]  # fmt: skip
        if unread:
            raise ConfigError(f"settings name {', '.join(unread)}: build the core with "
                              "Detection.from_settings, which reads them")  # fmt: skip
        self.keep_rows = keep_rows
        # Explanations are text for people; below the noise floor (and the learn gate) no
        # decision reads them. Written for every event only where people read every score:
        # the scores topic (emit_scores), replay and notebooks.
        self.explain_all = settings.emit_scores if explain_all is None else explain_all
        self.settings = settings
        self.directory = directory
        self.baseline_model = baseline_model or BaselineModel()
        # A group's volumes spread wider than any one member's: its z-scores get a softer tail.
        self.peer_model = peer_model or BaselineModel(cat_slots=16, scope="peer", z_scale=3.0)
        self.detector: Detector = detector or Loda(n_features=len(DEVIATIONS))
        self.calibrator = calibrator or TailCalibrator(size=settings.calibration_window)
        self.cold_calibrator = TailCalibrator(size=settings.calibration_window)
        # Which signed model the shared detector started from (None: the built-in cold start).
        self.model_ref: dict[str, str] | None = None
        # The model a saved shared state said it ran (load_shared); the worker re-verifies it.
        self.saved_model_ref: dict[str, str] | None = None
        if model is not None:
            self.swap_model(model)
        self.rules = rules or ZeroTrustRules(enforce_registry=settings.agent_models_enforce)
        # Agent model builds (digests) seen by this process: a build no registry approves is
        # reported once, as inventory, not as a violation on every agent that runs it.
        self.model_inventory: dict[str, None] = {}
        self.policy = policy or RiskPolicy.from_settings(settings)
        self.learn_gate = learn_gate
        self.cold_gate = cold_gate
        self.busy_events_per_hour = (
            settings.busy_events_per_hour if busy_events_per_hour is None
            else busy_events_per_hour
        )  # fmt: skip
        self.peers: dict[str, BaselineState] = {}
        self.names = NameBook()  # names of the hashed values seen (people read baselines)
        self.open_incidents: set[str] = set()  # identities whose risk state has an incident
        self.watermark_ms = 0  # latest event time processed: the clock incidents age by
        self.events_seen = 0  # events processed since the shared state began (saved with it)
        self.state_resets = 0
        self.names_shed = 0  # names forgotten to keep states within STATE_BUDGET (dump_state)
        self.states_over_budget = 0  # state writes over it with no name left to forget
        # LRU of decoded identity states, validated by their stored bytes: decoding a state
        # costs more than scoring an event, and active identities come back batch after batch.
        self.state_cache_size = (
            settings.state_cache_size if state_cache_size is None else state_cache_size
        )
        self._decoded: OrderedDict[str, tuple[bytes | None, IdentityState]] = OrderedDict()
        # Deferred writes (``defer_writes``): identities whose state in ``_decoded`` is newer
        # than the store's (an insertion-ordered set: flushes write in a stable order).
        self.defer_writes = False
        self._unwritten: dict[str, None] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, directory: Directory | None = None, **kwargs: Any
    ) -> Detection:
        """The core as configured: reads the files ``settings`` name, then builds.

        The identity directory (``directory_file``, unless ``directory`` is given), the
        agent-model registry (``model_allowlist_file``) and the analysts' standing suppressions
        (``suppressions_file``); ``kwargs`` go to the constructor and win over the files.
        """
        if directory is None and settings.directory_file:
            directory = Directory.load(settings.directory_file)
        if "rules" not in kwargs and settings.model_allowlist_file:
            kwargs["rules"] = ZeroTrustRules(
                agent_models=load_agent_model_registry(settings.model_allowlist_file),
                enforce_registry=settings.agent_models_enforce,
            )
        if "policy" not in kwargs and settings.suppressions_file:
            kwargs["policy"] = RiskPolicy.from_settings(
                settings, suppressions=load_suppressions(settings.suppressions_file)
            )
        return cls(settings, directory=directory, **kwargs)

    # --- state (de)serialisation ---------------------------------------------------------------
    def load_state(self, data: bytes | None, side: bytes | None = None) -> IdentityState:
        """Decode a stored state and its side part; an unreadable state (older layout,
        corruption) starts afresh, an unreadable side part is dropped.

        Starting afresh costs that identity its history (it is scored against its peers
        again), which beats stopping the worker for everyone; ``state_resets`` counts it.
        A state written before side parts existed carries its incident, held events and
        feedback ids inside; they move to the side part at its next write.
        """
        st = self._load(data)
        if side is not None:
            try:
                part = _SIDE_DECODER.decode(side)
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                log.warning("unreadable side part of an identity state (%s): dropped", exc)
                self.state_resets += 1
            else:
                st.risk.incident = part.incident
                st.risk.suppressions = part.suppressions
                st.risk.recurring = part.recurring
                st.held, st.feedback = part.held, part.feedback
                st.side = side
        return st

    def _load(self, data: bytes | None) -> IdentityState:
        if data:
            try:
                version, base, rules, risk, *extra = msgspec.msgpack.decode(data)
                if version == STATE_VERSION:
                    held, seen = extra[0] if extra else ([], [])
                    try:
                        baseline = self.baseline_model.from_bytes(base)
                    except StateFormatError as exc:
                        # A baseline of another layout or feature schema (an upgrade): it is
                        # relearned, but the identity keeps its rules' memory and its incident.
                        log.warning("baseline not readable (%s): relearning it", exc)
                        self.state_resets += 1
                        baseline = self.baseline_model.new_state()
                    return IdentityState(
                        baseline,
                        RuleState.from_bytes(rules),
                        RiskState.from_bytes(risk),
                        list(held),
                        list(seen),
                    )
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                log.warning("unreadable identity state (%s): starting afresh", exc)
            self.state_resets += 1
        return IdentityState(self.baseline_model.new_state(), RuleState(), RiskState())

    def dump_state(self, st: IdentityState) -> bytes:
        """The state every event reads: baseline, rule facts and the risk's scalars.

        At most :data:`STATE_BUDGET` bytes where shedding names can make it so: a state over
        it forgets the names of its most used values (explanations only, least telling first:
        :func:`~pipeline.baselines.codec.shed_names`) in ``st`` itself, so that the state
        cached in memory is the one stored. ``names_shed`` counts them, ``states_over_budget``
        the writes still over it with no name left.
        """
        risk = st.risk
        if risk.incident is not None or risk.suppressions or risk.recurring:
            risk = msgspec.structs.replace(risk, incident=None, suppressions=[], recurring=[])
        rules, scalars = st.rules.to_bytes(), risk.to_bytes()
        encode_baseline = self.baseline_model.to_bytes
        while True:
            data = _STATE_ENCODE((STATE_VERSION, encode_baseline(st.baseline), rules, scalars))
            over = len(data) - STATE_BUDGET
            if over <= 0:
                return data
            shed = shed_names(st.baseline, over)
            if not shed:
                self.states_over_budget += 1
                return data
            self.names_shed += shed

    @staticmethod
    def dump_side(st: IdentityState) -> bytes | None:
        """The side part (:class:`SidePart`), or None when the identity has nothing in it."""
        r = st.risk
        if r.incident is None and not (r.suppressions or r.recurring or st.held or st.feedback):
            return None
        return _SIDE_ENCODER.encode(
            SidePart(r.incident, r.suppressions, r.recurring, st.held, st.feedback)
        )

    def _put(self, uid: str, st: IdentityState, store: MutableMapping[str, bytes]) -> bytes:
        """Write ``uid``'s state, and its side part when that changed; returns the state."""
        self._unwritten.pop(uid, None)
        data = store[uid] = self.dump_state(st)
        side = self.dump_side(st)
        if side != st.side:
            if side is None:
                store.pop(side_key(uid), None)
            else:
                store[side_key(uid)] = side
            st.side = side
        return data

    def state_of(self, uid: str, store: MutableMapping[str, bytes]) -> IdentityState:
        """``uid``'s stored state with its side part, decoded (a new one if none is stored);
        its state in memory when that is newer (a deferred write)."""
        if uid in self._unwritten:
            return self._decoded[uid][1]
        return self.load_state(store.get(uid), store.get(side_key(uid)))

    # --- deferred writes --------------------------------------------------------------------------
    # With ``defer_writes``, process() keeps the identities it changed in memory (the decoded-
    # state cache) instead of encoding each one into the store after every batch: encoding
    # costs as much as several events' scoring, and a worker that snapshots its store
    # periodically, or a replay that reads the states at its end, needs them only then.
    # Every other entry point (signals, feedback, ticks, describe) works on the state in memory
    # and writes it through; an identity evicted from the cache is written first.

    def flush_states(
        self, store: MutableMapping[str, bytes], uids: Iterable[str] | None = None
    ) -> int:
        """Write the deferred states (``uids``: only those of them) to ``store``; returns how
        many were written."""
        pending = self._unwritten
        todo = list(pending) if uids is None else [u for u in uids if u in pending]
        decoded = self._decoded
        for uid in todo:
            st = decoded[uid][1]
            decoded[uid] = (self._put(uid, st, store), st)
        return len(todo)

    @contextmanager
    def deferring(self, on: bool) -> Iterator[None]:
        """``defer_writes`` set to ``on`` for a while, then back as it was."""
        was, self.defer_writes = self.defer_writes, on
        try:
            yield
        finally:
            self.defer_writes = was

    def forget_states(self, uids: Iterable[str]) -> None:
        """Drop these identities' states from memory, written or not (another process owns
        them now: it replays what was not written)."""
        for uid in uids:
            self._decoded.pop(uid, None)
            self._unwritten.pop(uid, None)

    @property
    def unwritten(self) -> int:
        """How many identities' states are newer in memory than in the store."""
        return len(self._unwritten)

    def describe(
        self, uid: str, store: MutableMapping[str, bytes], kind: str | None = None
    ) -> dict[str, Any]:
        """What this process's state says about ``uid``, for people (the analyst console's
        identity page): its baseline with value names, its peer group's, its risk, the rules'
        facts, and for an agent the model it is pinned to with that build's provenance.
        ``kind`` (human / service / agent) picks the peer group when no directory does."""
        from pipeline.baselines.profile import summary

        st = self.state_of(uid, store)
        entry = self.directory.lookup(uid) if self.directory is not None else None
        base = summary(self.baseline_model, st.baseline, self.names)
        # Its own kind's group only; unknown kind (no directory, no hint): the first that exists.
        kinds = [entry.kind] if entry is not None else [kind] if kind else [
            "agent", "service", "human"]
        service = next((c["usual"] for c in base["categorical"] if c["feature"] == "service"),
                       None)  # fmt: skip
        group, peer, found = None, None, kind
        for k in kinds:
            key = peer_group_key(SimpleNamespace(identity_kind=k, service=service),
                                 entry.peer_group if entry is not None else None)  # fmt: skip
            if key in self.peers:
                group, peer, found = key, self.peers[key], k
                break
        inc = st.risk.incident
        out: dict[str, Any] = {
            "identity": uid,
            "kind": entry.kind if entry is not None else found,  # else: its peer group's kind
            "baseline": base,
            "peers": None if peer is None else {
                "group": group, "from_directory": bool(entry and entry.peer_group),
                "baseline": summary(self.peer_model, peer, self.names),
            },
            "risk": {"risk": round(st.risk.risk, 2), "updated_ms": st.risk.updated_ms,
                     "incident": inc.uid if inc is not None and inc.uid else None,
                     "asks_first_until_ms": st.risk.ask_until_ms},
            "rules": {"last_country": st.rules.loc_cc, "environment": st.rules.env,
                      "recent_tasks": len(st.rules.tasks),
                      "model_pinned": st.rules.model is not None},
        }  # fmt: skip
        out["agent"] = self._agent_facts(st, entry)
        return out

    def _agent_facts(self, st: IdentityState, entry: DirectoryEntry | None) -> dict[str, Any]:
        """The model an agent runs and where it came from: the rules' pin (current, previous),
        the registry's record of each build, what the directory approves."""
        pin = st.rules.model or b""
        pins = [pin[:32], pin[36:]] if len(pin) > 36 else [pin[:32]] if pin else []
        registry = self.rules.agent_models
        builds = []
        for n, raw in enumerate(pins):
            digest = "sha256:" + raw.hex()
            if len(raw) < 32:  # the previous pin's fingerprint: the registry's build, if any
                digest = next((b.digest for b in registry or () if b.digest.startswith(digest)),
                              digest + "…")  # fmt: skip
            known = registry.builds(digest) if registry is not None else ()
            builds.append({
                "digest": digest, "pin": "current" if n == 0 else "previous",
                "registry": registry.status(digest) if registry is not None else None,
                "builds": [msgspec.to_builtins(b) for b in known],
            })  # fmt: skip
        tools, prompt = st.rules.tools or b"", st.rules.prompt or b""
        return {
            "pinned_models": builds,
            "approved_digests": list(entry.approved_digests) if entry is not None else [],
            "delegators_allowed": list(entry.delegators) if entry is not None else [],
            "tool_manifest": tools[:32].hex() or None,
            "tool_manifest_changed": len(tools) > 32,
            "system_prompt": prompt[:32].hex() or None,
            "system_prompt_changed": len(prompt) > 32,
            "delegated_to_strangers": len(st.rules.strangers),
        }

    # --- the hot path --------------------------------------------------------------------------
    def process(self, events: Sequence[Event], store: MutableMapping[str, bytes]) -> BatchResult:
        """Score a micro-batch and decide; each identity's state is read and written once.

        The batch runs in *rounds*: round k holds the k-th event of every identity in it, so an
        identity's events are scored and learned in order while the detector and calibrator
        still work on whole rounds (vectorised). Learning waits for the calibrated score: an
        event is learned only when it fired no rule, scored below ``learn_gate`` and its
        identity has no incident building up.
        """
        result = BatchResult()
        if not events:
            return result
        # Event-time order inside the batch: an identity's sign-ins and API calls arrive on
        # different topics and partitions, interleaved by chance; its baseline, rules (travel,
        # clones, step order) and risk must see them as they happened. Ties: sign-ins before
        # API calls, then arrival order (stable) - which is the order of one identity's
        # partition of one topic, the same in the worker and in `custos replay`; how the
        # two topics interleaved is not. Scores (and rows) come back in this order.
        if any((events[i].time_ms, events[i].class_uid) > (events[i + 1].time_ms,
                                                           events[i + 1].class_uid)
               for i in range(len(events) - 1)):  # fmt: skip
            events = sorted(events, key=lambda e: (e.time_ms, e.class_uid))
        cache: dict[str, IdentityState] = {}
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, ev in enumerate(events):
            uid = ev.identity_uid
            k = seen.get(uid, 0)
            seen[uid] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
            if k == 0:
                cache[uid] = self._fetch(uid, ev.time_ms, store)
        # A canonical order inside each round: what identities learn into shared state (peer
        # groups) must not depend on how partitions interleaved on the way in, so the worker
        # and `custos replay` agree on the same input.
        for idx in rounds:
            idx.sort(key=lambda i: events[i].identity_uid)
        scores: list[Score | None] = [None] * len(events)
        if self.keep_rows:
            result.rows = np.empty((len(events), len(DEVIATIONS)))
        params = self.baseline_model.kernel_params(), self.peer_model.kernel_params()
        for idx in rounds:
            self._round([events[i] for i in idx], idx, cache, scores, result, params)
        result.scores = [s for s in scores if s is not None]

        decoded = self._decoded
        if self.defer_writes and self.state_cache_size:
            unwritten = self._unwritten
            for uid, st in cache.items():
                decoded[uid] = (None, st)  # newer than the store: see flush_states
                decoded.move_to_end(uid)
                unwritten[uid] = None
        else:
            for uid, st in cache.items():
                data = self._put(uid, st, store)
                if self.state_cache_size:
                    decoded[uid] = (data, st)
                    decoded.move_to_end(uid)
        while len(decoded) > self.state_cache_size:
            uid, (_, st) = decoded.popitem(last=False)
            if uid in self._unwritten:  # leaving memory: its only copy goes to the store
                self._put(uid, st, store)
        self.watermark_ms = max(self.watermark_ms, max(ev.time_ms for ev in events))
        self.events_seen += len(events)
        return result

    def adopt(self, key: str, data: bytes) -> bool:
        """A stored value this process did not write (restored from elsewhere), by its store
        key: note an open incident, so ticks close it once quiet even if the identity sends
        nothing more."""
        owner = side_owner(key)
        try:
            if owner is not None:
                open_ = _SIDE_DECODER.decode(data).incident is not None
            else:  # a state written before side parts may hold its incident inside
                owner = key
                version, _base, _rules, risk, *_ = msgspec.msgpack.decode(data)
                open_ = (version == STATE_VERSION
                         and RiskState.from_bytes(risk).incident is not None)  # fmt: skip
        except (ValueError, TypeError, msgspec.DecodeError):
            return False  # unreadable: the next event starts it afresh (load_state)
        if open_:
            self.open_incidents.add(owner)
        return open_

    def _fetch(self, uid: str, time_ms: int, store: MutableMapping[str, bytes]) -> IdentityState:
        if uid in self._unwritten:  # newer in memory than in the store
            st = self._decoded[uid][1]
            self._decoded.move_to_end(uid)
            if self.baseline_model.expired(st.baseline, time_ms):
                st.baseline = self.baseline_model.new_state()
            return st
        data = store.get(uid)
        side = store.get(uid + SIDE_SUFFIX)  # side_key(uid), inline
        hot = self._decoded.get(uid)
        # Reuse the decoded object when the stored bytes are still the ones we wrote
        # (a rebalance or another writer changes them, and then we decode again).
        if hot is not None and data is not None and hot[0] == data and hot[1].side == side:
            st = hot[1]
            self._decoded.move_to_end(uid)
        else:
            st = self.load_state(data, side)
        if self.baseline_model.expired(st.baseline, time_ms):
            st.baseline = self.baseline_model.new_state()  # dormant past the TTL: start afresh
        return st

    def _round(
        self,
        events: list[Event],
        index: list[int],
        cache: dict[str, IdentityState],
        scores: list[Score | None],
        result: BatchResult,
        params: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Score, decide and learn one round (at most one event per identity). ``params``:
        the baseline and peer models' :meth:`~BaselineModel.kernel_params`."""
        bm, pm = self.baseline_model, self.peer_model
        op, pp = params
        names = self.names
        directory = self.directory
        n = len(events)
        nd = len(DEVIATIONS)
        # The round's features once, flat, as the kernels' matrices (one conversion per round,
        # not two per event and state); a Features object only for the events that need one.
        feats = extract_rows(events)
        X, E = round_arrays(feats)
        # The round's value names up front: nothing in the loop below reads them.
        names.note_many(feats.hashes, feats.values)
        bm.remember_operations(feats)
        rows = np.empty((n, nd))
        own_rows = np.empty((n, nd))
        peer_rows = np.empty((n, nd))
        tops = np.empty((n, 2, nd), dtype=np.int64)
        peer_ws: list[float] = []
        own_max = np.zeros(n)
        activity = np.empty((n, 3), dtype=np.int64)  # the own states' (n, first_ms, last_ms)
        warmup = bm.warmup_events
        score_kernel = kernel.score
        # Per event: what the second loop needs, with the peer group's state when it was looked
        # up for scoring (None: warm, not looked up).
        partial: list[tuple[Event, IdentityState, DirectoryEntry | None, BaselineState | None,
                            tuple[RuleHit, ...]]] = []  # fmt: skip
        founds: list[int] = []  # per event, how many dimensions stand out: own | peer << 8
        w_owns: list[float] = []
        for i, ev in enumerate(events):
            st = cache[ev.identity_uid]
            base = st.baseline
            entry = directory.lookup(ev.identity_uid) if directory is not None else None
            # own_weight, inlined (hot path)
            w_own = 1.0 - math.exp(-3.0 * base.iv.item(_I_N) / warmup) if warmup > 0 else 1.0
            is_cold = w_own < 0.99
            # Cold start: lean on the peer group until the identity has its own evidence.
            peer = self._peer_state(ev, entry) if is_cold else base
            # observe (task / hour totals count every event, learned or not), own and peer
            # deviations, their blend: one kernel call.
            found = score_kernel(base.fv, base.iv, base.slot_hash, base.slot_count, peer.fv,
                                 peer.iv, peer.slot_hash, peer.slot_count, X, E, i, w_own,
                                 is_cold, op, pp, rows, own_rows, peer_rows, tops,
                                 own_max, activity)  # fmt: skip
            hits = self.rules.check(st.rules, ev, entry)
            if (ev.delegated_by and w_own >= 0.99 and own_rows[i, _DELEGATOR] >= STRANGER_DEVIATION
                    and (entry is None or not entry.delegators)):  # fmt: skip
                # No directory says who may delegate: what the agent's history says instead.
                self._stranger(ev, float(own_rows[i, _DELEGATOR]), result)
            drift = bm.drift_report(base)
            if drift is not None:  # a day closed with the identity's volume drifting up
                hits = (*hits, RuleHit("volume_drift", RULES["volume_drift"], drift))
            if hits:
                self._signals(ev, hits, result)
            model = ev.model
            if model is not None and model.digest and model.digest not in self.model_inventory:
                self._inventory(ev, model, result)
            partial.append((ev, st, entry, peer if is_cold else None, hits))
            peer_ws.append(1.0 - w_own)
            founds.append(found)
            w_owns.append(w_own)

        # LODA averages over projections, which dilutes one extreme deviation (48x bytes_out
        # seen by few projections); the independent-tails surprise keeps it visible.
        raw = self.detector.score_many(rows) + surprise(rows)
        # New identities are judged among new identities: everything about them is "first
        # seen" to some degree, which would otherwise set the bar that warm identities'
        # genuinely rare events have to clear.
        peer_w = np.array(peer_ws)
        cold = peer_w > 0.5
        calibrated = self.calibrator.transform_many(raw)
        if cold.any():
            calibrated[cold] = self.cold_calibrator.transform_many(raw[cold])
            self.cold_calibrator.learn_many(raw[cold])
        # The calibrator sees every raw score: its job is to say how rare a score is among all
        # events. Learning only the "normal" ones would truncate the reference and make every
        # gated event look maximally rare. A few anomalies barely move its quantiles. (A busy
        # identity's persistent one does - which is why drift is a once-a-day finding, not
        # evidence on every call. Leaving alerted identities' events out instead doubled false
        # incidents on held-out worlds: measured, reverted.)
        self.calibrator.learn_many(raw[~cold])

        if self.busy_events_per_hour > 0:
            calibrated = np.maximum(0.0, calibrated - self._busy_discount(activity))
        learned = np.zeros(n, dtype=bool)
        policy = self.policy
        gate = self.learn_gate if self.learn_gate is not None else policy.noise_floor
        # The second loop reads Python numbers: one conversion per round, not one per element.
        scored, raws, colds, own_maxes = (calibrated.tolist(), raw.tolist(), cold.tolist(),
                                          own_max.tolist())  # fmt: skip
        # Explain the strongest dimensions (the slow path), now that the scores are known:
        # only where a decision can read it, unless every score is published. No state an
        # explanation reads changed since its event was scored: loop one writes only each
        # event's own state, and the learning below has not started.
        explain_from = -math.inf if self.explain_all else min(gate, policy.noise_floor)
        whys: list[list[Contribution]] = [[] for _ in range(n)]
        for i, found in enumerate(founds):
            if not found or not scored[i] >= explain_from:
                continue
            _ev, st, _entry, group, _hits = partial[i]
            base = st.baseline
            f = feats.features(i)
            rate = bm.current_rate(base, f)
            own_top = tops[i, 0, : found & 0xFF].tolist()
            if group is not None:  # cold: the blend of own and peer group's, as scored
                peer_rate = 1.0 if rate < 1.0 else rate
                whys[i] = [
                    bm._explain(base, f, d, w, rate) if own
                    else pm._explain(group, f, d, w, peer_rate)
                    for own, d, w in blend_winners(
                        own_top, own_rows[i], tops[i, 1, : found >> 8].tolist(),
                        peer_rows[i], rows[i], w_owns[i])
                ]  # fmt: skip
            else:
                whys[i] = [bm._explain(base, f, d, float(own_rows[i, d]), rate) for d in own_top]
        cold_gate = self.cold_gate
        for i, (ev, st, entry, group, hits) in enumerate(partial):
            uid = ev.identity_uid
            score = scored[i]
            sc = Score(
                event_uid=ev.uid,
                identity_uid=uid,
                identity_kind=ev.identity_kind,
                time_ms=ev.time_ms,
                score=score,
                raw=raws[i],
                contributions=tuple(whys[i]),
                rules=hits,
                peer_weight=peer_ws[i],
                rationale=ev.rationale,
                credential_uid=ev.credential.uid if ev.credential is not None else None,
            )
            decision = policy.decide(st.risk, sc)
            if decision is not None:
                result.decisions.extend(decision.flatten())
                if any(d.habituated for d in decision.flatten()):
                    self._learn_held(st, 0)
            if st.risk.incident is not None:
                self.open_incidents.add(uid)
            else:
                self.open_incidents.discard(uid)
            # Poisoning protection: what looks like (part of) an attack is not learned. While an
            # incident builds up, nothing is: the attacker's quieter events are not normal either.
            # A new identity differs from its peers in harmless ways (its own address, owner,
            # environment) and must still build a baseline: it is gated on its own deviations.
            if colds[i]:
                accept = own_maxes[i] < cold_gate
            else:
                # Anomalous only where the identity habituated (an incident that stayed open
                # unconfirmed): learned, so the baseline catches up instead of alerting forever.
                accept = st.risk.incident is None and (
                    score < gate or policy.habituated(st.risk, sc)
                )
            if accept and not hits:
                # Peer groups learn from new members and, one event in 8, established ones -
                # chosen by the event's uid, so the choice does not depend on arrival order.
                # Both learn in one kernel call, the group at the identity's current rate.
                base = st.baseline
                to_peer = peer_ws[i] > 0.01 or zlib.crc32(ev.uid.encode()) % 8 == 0
                peer = base if not to_peer else group or self._peer_state(ev, entry)
                named = kernel.learn_pair(
                    base.fv, base.iv, base.slot_hash, base.slot_count, base.slot_hour, peer.fv,
                    peer.iv, peer.slot_hash, peer.slot_count, peer.slot_hour, X, E, i, to_peer,
                    op, pp)  # fmt: skip
                if named & 0xFFFF:
                    bm.note_names(base, feats.values[i], named & 0xFFFF)
                if named >> 16:
                    pm.note_names(peer, feats.values[i], named >> 16)
                learned[i] = True
            else:
                sc = msgspec.structs.replace(sc, learned=False)
                bm.taint(st.baseline)
                if st.risk.incident is not None:
                    # Part of an incident: kept for a "false positive, learn as normal".
                    st.held.append(_FEATURES_ENCODER.encode(feats.features(i)))
                    if len(st.held) > HELD_MAX:
                        del st.held[0]
            scores[index[i]] = sc
        if learned.any():
            self.detector.learn_many(rows[learned])
        if result.rows is not None:
            result.rows[index] = rows

    def _busy_discount(self, activity: np.ndarray) -> np.ndarray:
        """How much less one tail event says about an identity busier than
        ``busy_events_per_hour``: a score is a tail probability per *event*, and an identity
        with 100x the events meets 100x the tail events per hour without being attacked.
        Half the log of the excess (a square root: busy identities still alert), on the
        calibrator's scale. ``activity``: per event, its identity's ``(n, first_ms, last_ms)``
        (:meth:`BaselineState.activity`)."""
        out = np.zeros(len(activity))
        ref = self.busy_events_per_hour
        scale = 0.5 / math.log10(max(10.0, float(self.calibrator.size)))
        # Only identities active for an hour or more can be busy (the rest: no discount).
        busy = np.flatnonzero(activity[:, 2] - activity[:, 1] >= 3_600_000)
        for i, (n, first_ms, last_ms) in zip(busy.tolist(), activity[busy].tolist(),
                                             strict=True):  # fmt: skip
            hours = (last_ms - first_ms) / 3_600_000
            if hours >= 1.0:
                rate = n / hours
                if rate > ref:
                    out[i] = scale * math.log10(rate / ref)
        return out

    def _inventory(self, ev: Event, model: ModelRef, result: BatchResult) -> None:
        """First sighting of a model build in this process: one inventory finding unless the
        registry approves the build (approved builds are inventory already)."""
        digest = str(model.digest)
        inv = self.model_inventory
        inv[digest] = None
        if len(inv) > INVENTORY_MAX:
            del inv[next(iter(inv))]
        reg = self.rules.agent_models
        if reg is not None and len(reg) and reg.status(digest) == "approved":
            return
        name = f"{model.name or '?'} {model.version or '?'}"
        hit = RuleHit(
            "model_inventory",
            2,
            f"first sighting of agent model {name} ({digest[:19]}…), on {ev.identity_uid}; "
            f"no registry approves it (each agent is pinned to the build it runs)",
            {"model_name": model.name, "model_version": model.version,
             "observed_digest": digest, "first_agent": ev.identity_uid},
        )  # fmt: skip
        result.decisions.append(
            inventory_decision(hit, key=digest, identity_uid=ev.identity_uid,
                               identity_kind=ev.identity_kind, time_ms=ev.time_ms,
                               event_uid=ev.uid)
        )  # fmt: skip

    def _signals(self, ev: Event, hits: tuple[RuleHit, ...], result: BatchResult) -> None:
        """Derive evidence about other identities from this event's rule hits."""
        for h in hits:
            if h.rule != "unauthorised_delegation":
                continue
            delegator = str(h.evidence.get("delegated_by") or "")
            self._signal_delegator(ev, delegator, result, RuleHit(
                "delegated_outside_team", RULES["delegated_outside_team"],
                f"{delegator} handed a task to {ev.identity_uid}, which the directory "
                f"does not allow it to delegate to (lateral movement?)",
                {"delegate": ev.identity_uid, "event_uid": ev.uid},
            ))  # fmt: skip

    def _stranger(self, ev: Event, dev: float, result: BatchResult) -> None:
        """An agent with a known set of delegators got a task from one it never worked for:
        evidence on the delegator, which reached outside the chains it is part of."""
        delegator = str(ev.delegated_by)
        self._signal_delegator(ev, delegator, result, RuleHit(
            "delegated_to_stranger", RULES["delegated_to_stranger"],
            f"{delegator} handed a task to {ev.identity_uid}, which never worked for it before "
            f"(learned from {ev.identity_uid}'s delegators; lateral movement?)",
            {"delegate": ev.identity_uid, "event_uid": ev.uid, "deviation": round(dev, 3)},
        ))  # fmt: skip

    def _signal_delegator(self, ev: Event, delegator: str, result: BatchResult,
                          hit: RuleHit) -> None:  # fmt: skip
        if not delegator or delegator == ev.identity_uid or any(
            s.identity_uid == delegator and s.source_uid == ev.identity_uid
            for s in result.signals
        ):  # one signal per (delegator, agent) and batch: the task's steps repeat it
            return
        entry = self.directory.lookup(delegator) if self.directory is not None else None
        result.signals.append(
            Signal(
                identity_uid=delegator,
                identity_kind=entry.kind if entry is not None else "unknown",
                time_ms=ev.time_ms,
                event_uid=ev.uid,
                source_uid=ev.identity_uid,
                rule=hit,
            )
        )

    def apply_signals(
        self, signals: Sequence[Signal], store: MutableMapping[str, bytes]
    ) -> list[Decision]:
        """Fold signals about identities whose state is in ``store`` into their risk.

        A signal is a rule hit without an event of the identity's own: it adds risk and
        evidence to the incident (the revealing event's uid becomes a related event), and
        changes no baseline. A ``delegated_to_stranger`` signal is remembered in the rule state
        and becomes evidence only with a second stranger (:meth:`_corroborated`).
        """
        out: list[Decision] = []
        touched: dict[str, IdentityState] = {}
        for sig in signals:
            uid = sig.identity_uid
            st = touched.get(uid)
            if st is None:
                st = touched[uid] = self._fetch(uid, sig.time_ms, store)
            rule = sig.rule
            if rule.rule == "delegated_to_stranger":
                corroborated = self._corroborated(st.rules, sig)
                if corroborated is None:
                    continue
                rule = corroborated
            score = Score(
                event_uid=sig.event_uid,
                identity_uid=uid,
                identity_kind=sig.identity_kind,
                time_ms=sig.time_ms,
                score=0.0,
                raw=0.0,
                rules=(rule,),
                learned=False,
            )
            decision = self.policy.decide(st.risk, score)
            if decision is not None:
                out.extend(decision.flatten())
            if st.risk.incident is not None:
                self.open_incidents.add(uid)
        for uid, st in touched.items():
            self._put(uid, st, store)
            self._decoded.pop(uid, None)
        return out

    @staticmethod
    def _corroborated(rs: RuleState, sig: Signal) -> RuleHit | None:
        """The stranger signal as evidence once another stranger of the same delegator lies
        within :data:`STRANGER_WINDOW_MS` of it (either order: signals arrive late); else
        ``None``, the stranger remembered. The same agent again is not a second stranger, so a
        re-applied signal changes nothing."""
        delegate = str(sig.rule.evidence.get("delegate") or sig.source_uid)
        key, t = zlib.crc32(delegate.encode()), sig.time_ms
        recent = {k for k, when in rs.strangers if abs(t - when) < STRANGER_WINDOW_MS}
        if key not in recent:
            rs.strangers = [*rs.strangers, [key, t]][-STRANGERS_MAX:]
        others = recent - {key}
        if not others:
            return None
        hit = sig.rule
        n = len(others) + 1
        return RuleHit(hit.rule, hit.severity_id,
                       f"{hit.text}; {n} agents that never worked for it got a task from it "
                       f"within the hour", {**hit.evidence, "strangers": n})  # fmt: skip

    def apply_feedback(
        self, fb: Feedback, store: MutableMapping[str, bytes]
    ) -> tuple[FeedbackOutcome, list[Decision]]:
        """Apply one analyst decision to its identity's state; see :mod:`pipeline.control.feedback`.

        Idempotent: a feedback uid already applied to the identity changes nothing. The
        caller publishes the decisions (findings) and acts on ``release_command``.
        """
        from pipeline.quarantine.commands import command_id_for

        uid = fb.identity
        st = self._fetch(uid, fb.at_ms, store)
        t = max(fb.at_ms, st.risk.updated_ms)

        def outcome(kind: str, detail: str, **kw: Any) -> FeedbackOutcome:
            return FeedbackOutcome(fb.uid, fb.action, uid, kind, detail, **kw)

        if fb.uid in st.feedback:
            return outcome("duplicate", f"feedback {fb.uid} was already applied"), []
        inc = st.risk.incident
        decisions: list[Decision] = []
        if fb.action == "suppress":
            sup = Suppression(identity=uid, feature=fb.feature, until_ms=fb.until_ms,
                              reason=f"{fb.by}: {fb.reason}")  # fmt: skip
            self.policy.suppress(st.risk, sup, t)
            decisions = [d for d in [self.policy.tick(st.risk, t)] if d is not None]
            done = outcome("applied", f"suppressed {fb.feature or 'the whole identity'} until "
                           f"{fb.until_ms}", finding_uid=inc.uid if inc else None)  # fmt: skip
        elif inc is None or (inc.status_id == 0 and fb.action != "confirm"):
            if not (fb.action == "release" and fb.finding_uid):
                return outcome("no_incident", f"{uid} has no open incident"), []
            # Nothing alerted to act on; a release still cancels the finding's command.
            done = outcome("applied", "no open incident; cancelling the finding's command",
                           finding_uid=fb.finding_uid,
                           release_command=command_id_for(fb.finding_uid))  # fmt: skip
        elif fb.finding_uid and inc.uid and fb.finding_uid != inc.uid:
            return outcome("finding_mismatch", f"open incident is {inc.uid}, not "
                           f"{fb.finding_uid}", finding_uid=inc.uid), []  # fmt: skip
        elif fb.action == "confirm":
            d = self.policy.confirm(st.risk, t, f"compromise confirmed by {fb.by}: {fb.reason}")
            decisions = [d] if d is not None else []
            after = st.risk.incident
            done = outcome("applied", "incident quarantine-worthy, approved by the analyst",
                           finding_uid=after.uid if after else None)  # fmt: skip
        elif fb.action == "false_positive":
            d = self.policy.dismiss(st.risk, t, f"false positive ({fb.by}): {fb.reason}")
            decisions = [d] if d is not None else []
            learned = self._learn_held(st, inc.first_seen_ms) if fb.learn_as_normal else 0
            detail = "incident closed as a false positive"
            if fb.learn_as_normal:
                detail += f"; {learned} held event(s) learned as normal"
            done = outcome("applied", detail, finding_uid=inc.uid, learned=learned,
                           release_command=command_id_for(inc.uid)
                           if inc.quarantine and inc.uid else None)  # fmt: skip
        else:  # release
            self.policy.release(st.risk)
            done = outcome("applied", "quarantine released; a new kind of rule can quarantine "
                           "again",
                           finding_uid=inc.uid,
                           release_command=command_id_for(inc.uid))  # fmt: skip
        st.feedback.append(fb.uid)
        if len(st.feedback) > FEEDBACK_SEEN_MAX:
            del st.feedback[0]
        if st.risk.incident is None:
            self.open_incidents.discard(uid)
        else:
            self.open_incidents.add(uid)
        self._put(uid, st, store)
        self._decoded.pop(uid, None)
        return done, decisions

    def _learn_held(self, st: IdentityState, since_ms: int) -> int:
        """Learn the held events from ``since_ms`` on into the baseline; keep the older ones."""
        keep, learned = [], 0
        for raw in st.held:
            f = _FEATURES_DECODER.decode(raw)
            if f.time_ms >= since_ms:
                self.baseline_model.learn_one(st.baseline, f)
                learned += 1
            else:
                keep.append(raw)
        st.held = keep
        return learned

    def _peer_state(self, ev: Event, entry: DirectoryEntry | None) -> BaselineState:
        group = peer_group_key(ev, entry.peer_group if entry is not None else None)
        peer = self.peers.get(group)
        if peer is None:
            peer = self.peers[group] = self.peer_model.new_state()
        return peer

    def tick(
        self, now_ms: int, store: MutableMapping[str, bytes], uids: Iterable[str] | None = None
    ) -> list[Decision]:
        """Let time pass for open incidents (closing quiet ones); call it periodically.

        ``uids``: only those of them still open (the worker ticks a bounded slice at a time,
        so a pass over many incidents never holds its event loop for long); default: all.
        """
        out: list[Decision] = []
        open_ = self.open_incidents
        for uid in list(open_) if uids is None else [u for u in uids if u in open_]:
            if self._tick_idle(uid, now_ms, store):
                continue
            st = self.state_of(uid, store)
            decision = self.policy.tick(st.risk, now_ms)
            if decision is not None:
                out.extend(decision.flatten())
                if decision.habituated:
                    self._learn_held(st, 0)
                self._put(uid, st, store)
            if st.risk.incident is None:
                self.open_incidents.discard(uid)
        return out

    def _tick_idle(self, uid: str, now_ms: int, store: MutableMapping[str, bytes]) -> bool:
        """True when a tick at ``now_ms`` would change nothing for ``uid``, decided on its side
        part alone: all the policy's tick reads is the incident and the suppressions there.

        Most open incidents are not due at any given tick; decoding each one's whole state
        (its baseline above all) to find that out cost ~40 µs an incident, a second per tick
        with 24k open. The policy runs on a throwaway copy; False (decode the state and tick
        it for real) whenever in doubt: no side part (a state from before side parts holds
        its incident inside), an unreadable one, or the copy decided or closed something.
        """
        if uid in self._unwritten:  # the stored side part may be older: tick the real state
            return False
        side = store.get(side_key(uid))
        if side is None:
            return False
        try:
            part = _SIDE_DECODER.decode(side)
        except (ValueError, TypeError, msgspec.DecodeError):
            return False
        if part.incident is None:
            return False
        risk = RiskState(incident=part.incident, suppressions=part.suppressions,
                         recurring=part.recurring)  # fmt: skip
        return self.policy.tick(risk, now_ms) is None and risk.incident is not None

    # --- shared state --------------------------------------------------------------------------
    def swap_model(self, model: SignedModel) -> dict[str, str] | None:
        """Run on a verified model's detector and calibrator from now on; returns the old ref.

        Per-identity baselines, peer baselines, rule and risk state are untouched: a swap
        changes how deviation vectors are scored, not what Custos knows about identities.
        """
        previous = self.model_ref
        self.detector = model.detector
        self.calibrator = model.calibrator
        self.model_ref = model.ref
        return previous

    def save_shared(self, path: Path) -> None:
        """Persist :meth:`shared_bytes` (atomically: write, then rename)."""
        blob = self.shared_bytes()
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)

    def shared_bytes(self) -> bytes:
        """Peer baselines, detector and calibrators as bytes (what :meth:`load_shared_bytes` reads).

        A frozen (scikit-learn) detector is not written: only its model reference is, and the
        worker reloads and re-verifies it from the registry on start.
        """
        from pipeline.scores.detectors import dumps

        return msgspec.msgpack.encode(
            {
                "version": STATE_VERSION,
                "peers": {k: self.peer_model.to_bytes(v) for k, v in self.peers.items()},
                "detector": dumps(self.detector) if isinstance(self.detector, Loda) else None,
                "calibrator": dumps(self.calibrator),
                "cold_calibrator": dumps(self.cold_calibrator),
                "model": self.model_ref,
                "events_seen": self.events_seen,
                "inventory": list(self.model_inventory),
            }
        )

    def load_shared(self, path: Path) -> bool:
        """Restore :meth:`save_shared`'s file; False (and nothing changed) if absent or unusable."""
        if not path.exists():
            return False
        return self.load_shared_bytes(path.read_bytes(), str(path))

    def load_shared_bytes(self, blob: bytes, where: str = "shared state") -> bool:
        """Restore :meth:`shared_bytes`; False (and nothing changed) if unusable.

        ``saved_model_ref`` is set to the model the state was learned with; when the detector
        itself was not saved (a frozen model), the current one is left for the caller to
        replace by that model.
        """
        from pipeline.scores.detectors import loads

        try:
            d = msgspec.msgpack.decode(blob)
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"version {d.get('version')}")
            peers = {k: self.peer_model.from_bytes(v) for k, v in d["peers"].items()}
            det = loads(d["detector"]) if d["detector"] is not None else None
            cal = loads(d["calibrator"])
            cold: Loda | TailCalibrator = (
                loads(d["cold_calibrator"]) if "cold_calibrator" in d else TailCalibrator()
            )
            ref = d.get("model")
            seen = int(d.get("events_seen", 0))
            inventory = {str(x): None for x in d.get("inventory", ())}
        except (ValueError, TypeError, KeyError, msgspec.DecodeError) as exc:
            # Shared state is re-learned within minutes; a stale file must not stop the worker.
            log.warning("ignoring unreadable shared state %s (%s)", where, exc)
            return False
        if not (
            (det is None or isinstance(det, Loda))
            and isinstance(cal, TailCalibrator)
            and isinstance(cold, TailCalibrator)
        ):
            return False
        self.peers = peers
        if det is not None:
            self.detector = det
            self.model_ref = ref
        self.calibrator, self.cold_calibrator = cal, cold
        self.saved_model_ref = ref
        self.events_seen = seen
        self.model_inventory = inventory
        return True
