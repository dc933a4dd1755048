"""(baseline, features, detector, rules) → explained score → risk decision, per micro-batch.

This is the one code path every consumer runs: the faust worker, ``custos replay``,
``custos evaluate`` and the notebooks. It imports neither Kafka nor faust. Per-identity state
lives in any ``MutableMapping[str, bytes]`` — a faust table backed by RocksDB in the worker,
a plain dict offline — and is read once and written back once per identity per batch.

Shared state (peer-group baselines, the detector and its calibrator) belongs to the process:
it is learned from everything the process sees, and :meth:`Detection.save_shared` /
:meth:`load_shared` persist it beside the worker's tables.

>>> from pipeline.schemas import Event
>>> det = Detection()
>>> ev = Event(uid="e1", class_uid=3002, activity_id=1, time_ms=1_790_000_000_000,
...            identity_uid="usr-1", identity_kind="human", country="DE", status_id=1)
>>> out = det.process([ev], {})
>>> len(out.scores), 0.0 <= out.scores[0].score <= 1.0, out.decisions
(1, True, [])
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from pipeline.baselines import (
    DEVIATIONS,
    BaselineModel,
    BaselineState,
    blend,
    blend_contributions,
    peer_group_key,
)
from pipeline.config import Settings
from pipeline.detectors import Loda, TailCalibrator
from pipeline.directory import Directory, DirectoryEntry, load_model_allowlist
from pipeline.explanations import Score
from pipeline.features import extract
from pipeline.policy import Decision, RiskPolicy, RiskState, load_suppressions
from pipeline.rules import RuleState, ZeroTrustRules
from pipeline.schemas import Event

STATE_VERSION = 1
log = logging.getLogger("custos.scoring")


def surprise(rows: np.ndarray) -> np.ndarray:
    """Sum of -log(1 - deviation): each deviation read as an independent tail probability."""
    return np.asarray(-np.log1p(-0.999 * rows).sum(axis=1), dtype=np.float64)


class IdentityState:
    """Everything Custos keeps per identity: baseline, rule facts, risk. One table value."""

    __slots__ = ("baseline", "risk", "rules")

    def __init__(self, baseline: BaselineState, rules: RuleState, risk: RiskState) -> None:
        self.baseline = baseline
        self.rules = rules
        self.risk = risk


@dataclass
class BatchResult:
    scores: list[Score] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class Detection:
    """The detection core with its hyperparameters; see the module docstring.

    ``learn_gate``: an event whose strongest deviation reaches this value, or that fired a
    rule, is not learned into the baselines (nor the detector): a compromised identity must not
    teach Custos that its compromise is normal. Analyst feedback can release such events later.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        directory: Directory | None = None,
        baseline_model: BaselineModel | None = None,
        peer_model: BaselineModel | None = None,
        detector: Loda | None = None,
        calibrator: TailCalibrator | None = None,
        rules: ZeroTrustRules | None = None,
        policy: RiskPolicy | None = None,
        learn_gate: float = 0.85,
        state_cache_size: int | None = None,
    ) -> None:
        settings = settings or Settings()
        self.settings = settings
        if directory is None and settings.directory_file:
            directory = Directory.load(settings.directory_file)
        self.directory = directory
        self.baseline_model = baseline_model or BaselineModel()
        self.peer_model = peer_model or BaselineModel(cat_slots=16, scope="peer")
        self.detector = detector or Loda(n_features=len(DEVIATIONS))
        self.calibrator = calibrator or TailCalibrator()
        self.cold_calibrator = TailCalibrator()
        allowlist = (
            load_model_allowlist(settings.model_allowlist_file)
            if settings.model_allowlist_file
            else None
        )
        self.rules = rules or ZeroTrustRules(model_allowlist=allowlist)
        if policy is None:
            supp = (
                load_suppressions(settings.suppressions_file) if settings.suppressions_file else ()
            )
            policy = RiskPolicy.from_settings(settings, suppressions=supp)
        self.policy = policy
        self.learn_gate = learn_gate
        self.peers: dict[str, BaselineState] = {}
        self.open_incidents: set[str] = set()  # identities whose risk state has an incident
        self.watermark_ms = 0  # latest event time processed: the clock incidents age by
        self.state_resets = 0
        # LRU of decoded identity states, validated by their stored bytes: decoding a state
        # costs more than scoring an event, and active identities come back batch after batch.
        self.state_cache_size = (
            settings.state_cache_size if state_cache_size is None else state_cache_size
        )
        self._decoded: OrderedDict[str, tuple[bytes, IdentityState]] = OrderedDict()
        self._peer_tick = 0

    # --- state (de)serialisation ---------------------------------------------------------------
    def load_state(self, data: bytes | None) -> IdentityState:
        """Decode a stored state; an unreadable one (older layout, corruption) starts afresh.

        Starting afresh costs that identity its history (it is scored against its peers
        again), which beats stopping the worker for everyone; ``state_resets`` counts it.
        """
        if data:
            try:
                version, base, rules, risk = msgspec.msgpack.decode(data)
                if version == STATE_VERSION:
                    return IdentityState(
                        self.baseline_model.from_bytes(base),
                        RuleState.from_bytes(rules),
                        RiskState.from_bytes(risk),
                    )
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                log.warning("unreadable identity state (%s): starting afresh", exc)
            self.state_resets += 1
        return IdentityState(self.baseline_model.new_state(), RuleState(), RiskState())

    def dump_state(self, st: IdentityState) -> bytes:
        return msgspec.msgpack.encode(
            (
                STATE_VERSION,
                self.baseline_model.to_bytes(st.baseline),
                st.rules.to_bytes(),
                st.risk.to_bytes(),
            )
        )

    # --- the hot path --------------------------------------------------------------------------
    def process(self, events: Sequence[Event], store: MutableMapping[str, bytes]) -> BatchResult:
        """Score a micro-batch (in the given order) and decide; state read and written once."""
        result = BatchResult()
        if not events:
            return result
        cache: dict[str, IdentityState] = {}
        bm, pm = self.baseline_model, self.peer_model
        directory = self.directory
        n = len(events)
        rows = np.empty((n, len(DEVIATIONS)))
        learned = np.zeros(n, dtype=bool)
        peer_w_arr = np.zeros(n)
        partial = []
        for i, ev in enumerate(events):
            uid = ev.identity_uid
            st = cache.get(uid)
            if st is None:
                data = store.get(uid)
                hot = self._decoded.get(uid)
                # Reuse the decoded object when the stored bytes are still the ones we wrote
                # (a rebalance or another writer changes them, and then we decode again).
                if hot is not None and data is not None and hot[0] == data:
                    st = hot[1]
                    self._decoded.move_to_end(uid)
                else:
                    st = self.load_state(data)
                cache[uid] = st
                if bm.expired(st.baseline, ev.time_ms):
                    st.baseline = bm.new_state()  # dormant past the TTL: start afresh
            f = extract(ev)
            entry = directory.lookup(uid) if directory is not None else None
            w_own = bm.own_weight(st.baseline)
            own_dev, own_why = bm.deviations(st.baseline, f)
            peer = None
            if w_own < 0.99:
                # Cold start: lean on the peer group until the identity has its own evidence.
                peer = self._peer_state(ev, entry)
                rate = bm.current_rate(st.baseline, f)
                peer_dev, peer_why = pm.deviations(peer, f, rate)
                dev = blend(own_dev, peer_dev, w_own)
                why = blend_contributions(own_why, peer_why, dev, w_own)
            else:
                dev, why = own_dev, own_why
            hits = self.rules.check(st.rules, ev, entry)
            rows[i] = dev
            # Gate on the identity's *own* deviations: a new identity differs from its peers in
            # harmless ways (its own IP, owner, environment) and must still build a baseline.
            if not hits and max(own_dev) < self.learn_gate:
                bm.learn_one(st.baseline, f)
                learned[i] = True
                self._peer_tick += 1
                # Peer groups learn from established members too (1 event in 8 keeps it cheap).
                if peer is None and self._peer_tick % 8 == 0:
                    peer = self._peer_state(ev, entry)
                if peer is not None:
                    pm.learn_one(peer, f, bm.current_rate(st.baseline, f))
            partial.append((ev, why, hits, 1.0 - w_own))
            peer_w_arr[i] = 1.0 - w_own

        # LODA averages over projections, which dilutes one extreme deviation (48x bytes_out
        # seen by few projections); the independent-tails surprise keeps it visible.
        raw = self.detector.score_many(rows) + surprise(rows)
        # New identities are judged among new identities: everything about them is "first
        # seen" to some degree, which would otherwise set the bar that warm identities'
        # genuinely rare events have to clear.
        cold = peer_w_arr > 0.5
        calibrated = self.calibrator.transform_many(raw)
        if cold.any():
            calibrated[cold] = self.cold_calibrator.transform_many(raw[cold])
            self.cold_calibrator.learn_many(raw[cold])
        if learned.any():
            self.detector.learn_many(rows[learned])
        # The calibrator sees every raw score: its job is to say how rare a score is among all
        # events. Learning only the "normal" ones would truncate the reference and make every
        # gated event look maximally rare. A few anomalies barely move its quantiles.
        self.calibrator.learn_many(raw[~cold])

        policy = self.policy
        for i, (ev, why, hits, peer_w) in enumerate(partial):
            score = Score(
                event_uid=ev.uid,
                identity_uid=ev.identity_uid,
                identity_kind=ev.identity_kind,
                time_ms=ev.time_ms,
                score=float(calibrated[i]),
                raw=float(raw[i]),
                contributions=tuple(why),
                rules=hits,
                learned=bool(learned[i]),
                peer_weight=peer_w,
                rationale=ev.rationale,
            )
            result.scores.append(score)
            st = cache[ev.identity_uid]
            decision = policy.decide(st.risk, score)
            if decision is not None:
                result.decisions.extend(decision.flatten())
            if st.risk.incident is not None:
                self.open_incidents.add(ev.identity_uid)
            else:
                self.open_incidents.discard(ev.identity_uid)

        decoded = self._decoded
        for uid, st in cache.items():
            data = store[uid] = self.dump_state(st)
            if self.state_cache_size:
                decoded[uid] = (data, st)
                decoded.move_to_end(uid)
        while len(decoded) > self.state_cache_size:
            decoded.popitem(last=False)
        self.watermark_ms = max(self.watermark_ms, max(ev.time_ms for ev in events))
        return result

    def _peer_state(self, ev: Event, entry: DirectoryEntry | None) -> BaselineState:
        group = peer_group_key(ev, entry.peer_group if entry is not None else None)
        peer = self.peers.get(group)
        if peer is None:
            peer = self.peers[group] = self.peer_model.new_state()
        return peer

    def tick(self, now_ms: int, store: MutableMapping[str, bytes]) -> list[Decision]:
        """Let time pass for open incidents (closing quiet ones); call it periodically."""
        out: list[Decision] = []
        for uid in list(self.open_incidents):
            st = self.load_state(store.get(uid))
            decision = self.policy.tick(st.risk, now_ms)
            if decision is not None:
                out.extend(decision.flatten())
                store[uid] = self.dump_state(st)
            if st.risk.incident is None:
                self.open_incidents.discard(uid)
        return out

    # --- shared state --------------------------------------------------------------------------
    def save_shared(self, path: Path) -> None:
        """Persist peer baselines, detector and calibrator (atomically: write, then rename)."""
        from pipeline.detectors import dumps

        blob = msgspec.msgpack.encode(
            {
                "version": STATE_VERSION,
                "peers": {k: self.peer_model.to_bytes(v) for k, v in self.peers.items()},
                "detector": dumps(self.detector),
                "calibrator": dumps(self.calibrator),
                "cold_calibrator": dumps(self.cold_calibrator),
            }
        )
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)

    def load_shared(self, path: Path) -> bool:
        from pipeline.detectors import loads

        if not path.exists():
            return False
        try:
            d = msgspec.msgpack.decode(path.read_bytes())
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"version {d.get('version')}")
            peers = {k: self.peer_model.from_bytes(v) for k, v in d["peers"].items()}
            det, cal = loads(d["detector"]), loads(d["calibrator"])
            cold: Loda | TailCalibrator = (
                loads(d["cold_calibrator"]) if "cold_calibrator" in d else TailCalibrator()
            )
        except (ValueError, TypeError, KeyError, msgspec.DecodeError) as exc:
            # Shared state is re-learned within minutes; a stale file must not stop the worker.
            log.warning("ignoring unreadable shared state %s (%s)", path, exc)
            return False
        if not (
            isinstance(det, Loda)
            and isinstance(cal, TailCalibrator)
            and isinstance(cold, TailCalibrator)
        ):
            return False
        self.peers, self.detector = peers, det
        self.calibrator, self.cold_calibrator = cal, cold
        return True
