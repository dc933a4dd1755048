"""Zero Trust rules: fixed-severity facts checked on every event, independent of any baseline.

Behavioural baselines score how unusual an event is; these rules say that something is *not
allowed*, whatever the identity usually does. They are pure code: :meth:`ZeroTrustRules.check`
reads one decoded :class:`~pipeline.events.schemas.Event`, the identity's
:class:`~pipeline.scores.directory.DirectoryEntry` (or None) and its compact :class:`RuleState`,
updates
the state in place and returns the :class:`~pipeline.scores.explanations.RuleHit` s that fired.

======================= ======== ==============================================================
rule                    severity fires when
======================= ======== ==============================================================
``credential_misuse``   5        ``credential.issued_to`` is not the acting identity
``credential_expired``  4        the credential is used after ``expires_at`` + ``grace_ms``, or
                                 a step credential the holder already used is used again after
                                 the holder's task moved on to a later step
``model_provenance``    4        an agent runs a model digest that the model registry revoked,
                                 that the directory does not approve for this agent, or - only
                                 with ``enforce_registry`` - that the registry does not list
                                 (for the event's name + version, or at all); otherwise one
                                 other than the digest the agent is pinned to, once per change
                                 (the pin moves; Medium, 3, when the version changed too).
                                 Evidence ``reason``: ``revoked`` | ``not_approved_for_agent``
                                 | ``unregistered`` | ``changed_since_first_seen``
``agent_config_drift``  4        an agent's tool manifest or system prompt hash is not one the
                                 directory approves for it, or (none approved) differs from the
                                 last two it ran with; the pin then moves, so one redeploy is
                                 one hit. Evidence ``which``: ``tool_manifest`` |
                                 ``system_prompt``; ``reason``: ``not_approved_for_agent`` |
                                 ``changed``
``sensitivity_ceiling`` 4        a resource is more sensitive than the identity's ceiling in
                                 the directory (no directory ceiling: no rule; sensitivity is
                                 then learned like any behaviour, see :mod:`~.baselines`)
``clone``               5        an agent / service is active outside its home environment
                                 (directory, else the first one seen) while it was active at
                                 home less than ``clone_window_ms`` before
``impossible_travel``   4        two located events (not failed) are >= ``travel_min_km`` apart
                                 and the implied speed exceeds ``travel_speed_kmh``
``unauthorised_         4        an agent acts on a task handed over by an identity that the
delegation``                     directory does not list among its ``delegators``
``delegated_outside_    4        (derived by :mod:`~.scoring`, not by :meth:`check`) the
team``                           delegator of an ``unauthorised_delegation``
``delegated_to_         4        (derived, no directory rule for the agent) the delegator of
stranger``                       agents with learned sets of delegators that never showed
                                 this one (``delegator`` deviation >= 0.9): a second such
                                 agent within the hour (one alone is remembered, not raised)
======================= ======== ==============================================================

State is one small msgpack array per identity (``RuleState.to_bytes``), typically 20-60 bytes
for humans and services and at most ~400 bytes for the busiest agents, bounded by construction.

>>> from pipeline.events.schemas import Credential, Event
>>> rules = ZeroTrustRules()
>>> state = RuleState()
>>> ev = Event(uid="e-1", class_uid=6003, activity_id=2, time_ms=1_000, identity_uid="agt-2",
...            identity_kind="agent", credential=Credential(uid="c-1", issued_to="agt-1"))
>>> [(h.rule, h.severity_id) for h in rules.check(state, ev, None)]
[('credential_misuse', 5)]
>>> RuleState.from_bytes(state.to_bytes()) == state
True
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from typing import Final

import msgspec

from pipeline.events.schemas import CONFIDENTIALITY_RANK, RANK_NAMES, Credential, Event, ModelRef
from pipeline.scores.agent_models import AgentModelRegistry
from pipeline.scores.directory import DirectoryEntry
from pipeline.scores.explanations import RuleHit

__all__ = [
    "RULES",
    "STATE_VERSION",
    "RuleState",
    "ZeroTrustRules",
    "haversine_km",
]

#: Rule name -> fixed OCSF severity_id (4 High, 5 Critical).
RULES: Final[dict[str, int]] = {
    "credential_misuse": 5,
    "credential_expired": 4,
    "model_provenance": 4,
    "agent_config_drift": 4,
    "sensitivity_ceiling": 4,
    "clone": 5,
    "impossible_travel": 4,
    "unauthorised_delegation": 4,
    # Derived, not checked here: raised on the delegator of an unauthorised delegation.
    "delegated_outside_team": 4,
    # Derived too, without a directory: the delegator of an agent whose own history has never
    # shown that delegator, once a second such agent follows within the hour
    # (pipeline.detection, STRANGER_DEVIATION, STRANGER_WINDOW_MS).
    "delegated_to_stranger": 4,
    # Not checked here: the baseline's slow-ramp finding, once per UTC day that closes with the
    # identity's daily volume drifting above the line (pipeline.detection, drift_report).
    "volume_drift": 4,
    # Not checked here either: one informational finding per new agent model build
    # (pipeline.detection, decisions.inventory_decision), never risk.
    "model_inventory": 2,
}
STATE_VERSION: Final = 1
_EARTH_KM: Final = 6371.0088  # mean Earth radius
_HOUR_MS: Final = 3_600_000
_E4: Final = 10_000  # coordinates are kept as int 1e-4 degrees (~11 m): 5 msgpack bytes each
_FAILED: Final = 2  # OCSF status_id Failure
# confidentiality_id (0..99) -> rank, -1 for none: a tuple index is cheaper than a dict lookup.
_RANK_OF: Final[tuple[int, ...]] = tuple(CONFIDENTIALITY_RANK.get(i, -1) for i in range(100))
_NO_HITS: Final[tuple[RuleHit, ...]] = ()


class RuleState(msgspec.Struct, array_like=True, gc=False):
    """What the rules remember about one identity: facts, not learned behaviour.

    Encoded as a msgpack array whose first element is :data:`STATE_VERSION`. Fields:

    * ``loc_ms``, ``lat_e4``, ``lon_e4``, ``loc_cc`` - last located event (time, 1e-4 degrees,
      country) for ``impossible_travel``; ``loc_ms`` -1 = none yet.
    * ``env`` - learned home environment (only when the directory gives none); ``env_ms`` - last
      time the identity was active in its home environment (``clone``), -1 = never. Stored
      relative to ``loc_ms`` when both are set (:func:`_relative_ms`: usually the same event,
      1 byte instead of 9).
    * ``model`` - pinned model: 32 digest bytes + a CRC-32 of its name and version, then the
      previous pin's fingerprint (:data:`_FP` bytes of its digest; only when neither the
      directory nor the model registry decides).
    * ``tasks`` - the holder's most recent tasks, oldest first, each
      ``[task key, highest step seen, token fingerprint, ...]`` (CRC-32s; bounded).
    * ``tools`` / ``prompt`` - the agent's pinned tool-manifest / system-prompt hash: 32 raw
      bytes, then the previous hash's fingerprint (:data:`_FP` bytes) once it changed (only
      when the directory approves none). States written with whole previous pins decode.
    * ``strangers`` - as a delegator: the latest agents it handed a task to that had never
      worked for it, ``[CRC-32 of the agent, event time]`` (bounded; ``delegated_to_stranger``).
    * ``packed_tasks`` - ``tasks`` as stored (:func:`pack_tasks`); empty in memory, and
      ``tasks`` empty in what is stored.

    Fields are only ever appended (with defaults): a state written before a field existed is
    a shorter array and still decodes, so :data:`STATE_VERSION` stays 1.

    >>> s = RuleState(loc_ms=5, lat_e4=525200, lon_e4=134050, loc_cc="DE")
    >>> RuleState.from_bytes(s.to_bytes()).lat_e4, len(RuleState().to_bytes())
    (525200, 15)
    """

    v: int = STATE_VERSION
    loc_ms: int = -1
    lat_e4: int = 0
    lon_e4: int = 0
    loc_cc: str | None = None
    env: str | None = None
    env_ms: int = -1
    model: bytes | None = None
    tasks: list[list[int]] = []
    tools: bytes | None = None
    prompt: bytes | None = None
    strangers: list[list[int]] = []
    #: ``tasks`` as stored (:func:`pack_tasks`: 4 bytes per CRC instead of msgpack's 5, about
    #: a sixth of a busy agent's rule state); always empty in memory.
    packed_tasks: bytes = b""

    def to_bytes(self) -> bytes:
        """Serialise (msgpack array) for the state store."""
        packed = pack_tasks(self.tasks) if self.tasks else None
        env_ms = _relative_ms(self.env_ms, self.loc_ms)
        if packed is not None:
            return _ENCODE(msgspec.structs.replace(self, tasks=[], packed_tasks=packed,
                                                   env_ms=env_ms))  # fmt: skip
        if env_ms != self.env_ms:
            return _ENCODE(msgspec.structs.replace(self, env_ms=env_ms))
        return _ENCODE(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> RuleState:
        """Deserialise; raises ``ValueError`` on garbage or a state version this code can't read.

        >>> RuleState.from_bytes(b"\\x91\\x09")
        Traceback (most recent call last):
        ...
        ValueError: unsupported RuleState version 9 (this code reads 1)
        """
        try:
            state = _DECODE(data)
        except msgspec.MsgspecError as exc:
            raise ValueError(f"corrupt RuleState: {exc}") from None
        if state.v != STATE_VERSION:
            raise ValueError(
                f"unsupported RuleState version {state.v} (this code reads {STATE_VERSION})"
            )
        if state.packed_tasks:
            if state.tasks:
                raise ValueError("corrupt RuleState: tasks stored twice")
            state.tasks = unpack_tasks(state.packed_tasks)
            state.packed_tasks = b""
        if state.env_ms < -1:
            state.env_ms = _absolute_ms(state.env_ms, state.loc_ms)
        # Written before previous pins were fingerprints: keep the fingerprint (a digest's
        # first bytes; an old model pin's CRC after its digest was never read).
        model, tools, prompt = state.model, state.tools, state.prompt
        if model is not None and len(model) > _PIN + _FP:
            state.model = model[: _PIN + _FP]
        if tools is not None and len(tools) > 32 + _FP:
            state.tools = tools[: 32 + _FP]
        if prompt is not None and len(prompt) > 32 + _FP:
            state.prompt = prompt[: 32 + _FP]
        return state


_ENCODE: Final = msgspec.msgpack.Encoder().encode
_DECODE: Final = msgspec.msgpack.Decoder(RuleState).decode
_U32: Final = struct.Struct("<I")
_PIN: Final = 36  # a pinned model: digest (32 bytes) + CRC-32 of its name and version
#: Bytes kept of a previous pin (model digest, tool-manifest or system-prompt hash). The current
#: pin stays whole: it alone decides whether an agent's model or configuration changed, and
#: every change away from it is a hit. The previous one only spares a second hit when the agent
#: goes back to it (a rollback, an old replica of a rolling redeploy): a change reported once
#: already. A match still pins the observed digest whole. 16 bytes: passing a build off as that
#: rollback takes a second preimage of SHA-256 cut to 128 bits (2^128 work), or, for an attacker
#: who authors both builds, a collision (2^64) - and then hides only the return to a build whose
#: replacement was reported. 24 bytes would put a busy agent with pin history over 1 KB.
_FP: Final = 16


def _relative_ms(env_ms: int, loc_ms: int) -> int:
    """``env_ms`` as stored: relative to ``loc_ms`` when both are set (-2 - zigzag of
    ``loc_ms - env_ms``: usually -2, one msgpack byte instead of nine), else as it is.

    >>> [_relative_ms(e, 5_000) for e in (5_000, 4_000, 6_000, -1)], _relative_ms(5_000, -1)
    ([-2, -2002, -2001, -1], 5000)
    >>> _absolute_ms(-2002, 5_000), _absolute_ms(-2001, 5_000)
    (4000, 6000)
    """
    if env_ms < 0 or loc_ms < 0:
        return env_ms
    d = loc_ms - env_ms
    return -2 - (2 * d if d >= 0 else -2 * d - 1)


def _absolute_ms(stored: int, loc_ms: int) -> int:
    """Inverse of :func:`_relative_ms` for a stored value below -1."""
    z = -2 - stored
    env_ms = loc_ms - (z >> 1 if not z & 1 else -((z + 1) >> 1))
    if loc_ms < 0 or env_ms < 0:
        raise ValueError("corrupt RuleState: home time relative to no location")
    return env_ms


def pack_tasks(tasks: list[list[int]]) -> bytes | None:
    """The task memory as bytes: per task its key (u32), highest step (LEB128), the number
    of tokens (u8) and the tokens (u32 each); None if a value does not fit (kept as lists).

    >>> t = [[0xDEADBEEF, 3, 1, 2], [7, 300, 9]]
    >>> unpack_tasks(pack_tasks(t)) == t, len(pack_tasks(t))
    (True, 25)
    """
    out = bytearray()
    for rec in tasks:
        if len(rec) < 2 or len(rec) - 2 > 255 or rec[1] < 0:
            return None
        if not all(0 <= v <= 0xFFFFFFFF for v in (rec[0], *rec[2:])):
            return None
        out += _U32.pack(rec[0])
        step = rec[1]
        while step >= 0x80:
            out.append(step & 0x7F | 0x80)
            step >>= 7
        out.append(step)
        out.append(len(rec) - 2)
        for fp in rec[2:]:
            out += _U32.pack(fp)
    return bytes(out)


def unpack_tasks(data: bytes) -> list[list[int]]:
    """Inverse of :func:`pack_tasks`; ``ValueError`` on bytes it did not write."""
    tasks: list[list[int]] = []
    i, n = 0, len(data)
    try:
        while i < n:
            rec = [_U32.unpack_from(data, i)[0]]
            i += 4
            step = shift = 0
            while True:
                b = data[i]
                i += 1
                step |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 63:
                    raise ValueError("corrupt RuleState: task step too long")
            rec.append(step)
            count = data[i]
            i += 1
            rec.extend(_U32.unpack_from(data, i + 4 * j)[0] for j in range(count))
            i += 4 * count
            tasks.append(rec)
    except (IndexError, struct.error):
        raise ValueError("corrupt RuleState: task memory truncated") from None
    if i != n:
        raise ValueError("corrupt RuleState: task memory truncated")
    return tasks


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km.

    >>> round(haversine_km(52.52, 13.405, 40.7128, -74.006))  # Berlin - New York
    6385
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _span(ms: int) -> str:
    """A duration for analysts: ``800 ms``, ``45 s``, ``12 min``, ``3.4 h``, ``2.1 d``."""
    ms = abs(ms)
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms // 1000} s"
    if ms < _HOUR_MS:
        return f"{ms // 60_000} min"
    if ms < 24 * _HOUR_MS:
        return f"{ms / _HOUR_MS:.1f} h"
    return f"{ms / (24 * _HOUR_MS):.1f} d"


def _version_crc(model: ModelRef) -> bytes:
    return zlib.crc32(f"{model.name}\x00{model.version}".encode()).to_bytes(4, "little")


def _short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest  # "sha256:" + 12 hex


class ZeroTrustRules:
    """The rules with their hyperparameters; stateless itself (state is per identity).

    ``travel_speed_kmh`` - fastest plausible travel (airliner); ``travel_min_km`` - shorter hops
    are ignored (geo-IP noise, mobile networks); ``clone_window_ms`` - how recently the
    identity must have been active at home for activity elsewhere to be a clone;
    ``grace_ms`` - clock-skew leeway after ``expires_at``; ``default_ceilings`` - sensitivity
    ceiling (rank) per identity kind when the directory has none (default: none, so hard
    ceilings come only from a directory); ``agent_models`` - the
    agent-model registry (:class:`~pipeline.scores.agent_models.AgentModelRegistry`);
    ``enforce_registry`` - a digest
    the registry does not list is a violation (else it is pinned per agent like any other).
    The registry object is read on every event, so
    :meth:`~pipeline.scores.agent_models.AgentModelRegistry.apply` on it takes effect at once;
    ``max_tasks`` / ``max_tokens`` - how many recent tasks, and step credentials per task, the
    state remembers.

    >>> ZeroTrustRules(travel_speed_kmh=1000).travel_speed_kmh
    1000.0
    """

    __slots__ = (
        "agent_models",
        "clone_window_ms",
        "default_ceilings",
        "enforce_registry",
        "grace_ms",
        "max_tasks",
        "max_tokens",
        "travel_min_km",
        "travel_speed_kmh",
    )

    def __init__(
        self,
        *,
        travel_speed_kmh: float = 900.0,
        travel_min_km: float = 500.0,
        clone_window_ms: int = 30 * 60_000,
        grace_ms: int = 10_000,
        default_ceilings: Mapping[str, int] | None = None,
        agent_models: AgentModelRegistry | None = None,
        max_tasks: int = 4,
        max_tokens: int = 8,
        enforce_registry: bool = False,
    ) -> None:
        if travel_speed_kmh <= 0 or travel_min_km < 0 or clone_window_ms < 0 or grace_ms < 0:
            raise ValueError("travel speed must be positive; distances and windows >= 0")
        if max_tasks < 1 or max_tokens < 1:
            raise ValueError("max_tasks and max_tokens must be >= 1")
        # No default ceilings: a per-kind guess quarantined every service that reads Secret
        # data by design. Without a directory, sensitivity is a learned behaviour.
        ceilings = dict(default_ceilings or {})
        top = len(RANK_NAMES) - 1
        if not set(ceilings) <= {"human", "service", "agent"} or not all(
            0 <= c <= top for c in ceilings.values()
        ):
            raise ValueError(f"default_ceilings takes human/service/agent ranks 0..{top}")
        self.travel_speed_kmh = float(travel_speed_kmh)
        self.travel_min_km = float(travel_min_km)
        self.clone_window_ms = int(clone_window_ms)
        self.grace_ms = int(grace_ms)
        self.default_ceilings: dict[str, int] = ceilings
        self.agent_models = agent_models
        self.max_tasks = max_tasks
        self.max_tokens = max_tokens
        self.enforce_registry = bool(enforce_registry)

    # ---- the hot path ------------------------------------------------------------------------
    def check(
        self, state: RuleState, event: Event, entry: DirectoryEntry | None
    ) -> tuple[RuleHit, ...]:
        """Check one event of ``state``'s identity; update ``state``; return the hits.

        Events must be of the identity the state belongs to (the table is keyed by it).
        """
        hits: list[RuleHit] | None = None
        # The directory is authoritative about what an identity is; the event as a fallback.
        kind = entry.kind if entry is not None else event.identity_kind

        cred = event.credential
        if cred is not None:
            found = self._credential(state, event, cred)
            if found:
                hits = found

        if kind == "agent":
            model = event.model
            if model is not None and model.digest is not None:
                hit = self._model(state, event, model, model.digest, entry)
                if hit is not None:
                    hits = [hit] if hits is None else [*hits, hit]
            tools = event.tool_manifest_hash
            if tools is not None:
                hit = self._drift(
                    state, event, "tool_manifest", tools,
                    entry.approved_tool_manifests if entry is not None else (),
                )  # fmt: skip
                if hit is not None:
                    hits = [hit] if hits is None else [*hits, hit]
            prompt = event.system_prompt_hash
            if prompt is not None:
                hit = self._drift(
                    state, event, "system_prompt", prompt,
                    entry.approved_system_prompts if entry is not None else (),
                )  # fmt: skip
                if hit is not None:
                    hits = [hit] if hits is None else [*hits, hit]

        if event.resources:
            hit = self._ceiling(event, kind, entry)
            if hit is not None:
                hits = [hit] if hits is None else [*hits, hit]

        cloned = False
        env = event.environment
        if env is not None and kind != "human":
            hit = self._clone(state, event, env, entry)
            if hit is not None:
                cloned = True
                hits = [hit] if hits is None else [*hits, hit]

        deleg = event.delegated_by
        if deleg is not None and entry is not None and entry.delegators:
            if deleg not in entry.delegators:
                hit = RuleHit(
                    "unauthorised_delegation",
                    4,
                    f"{event.identity_uid} acted on a task from {deleg}, which the directory "
                    f"does not allow to delegate to it (allowed: {', '.join(entry.delegators)})",
                    {"delegated_by": deleg, "allowed": ", ".join(entry.delegators)},
                )
                hits = [hit] if hits is None else [*hits, hit]

        lat, lon = event.lat, event.long
        if lat is not None and lon is not None and event.status_id != _FAILED:
            hit = self._travel(state, event, lat, lon)
            # A clone in another region is also "travel": one alert for one cause.
            if hit is not None and not cloned:
                hits = [hit] if hits is None else [*hits, hit]

        return _NO_HITS if hits is None else tuple(hits)

    # ---- credentials -------------------------------------------------------------------------
    def _credential(self, state: RuleState, event: Event, cred: Credential) -> list[RuleHit] | None:
        uid = event.identity_uid
        t = event.time_ms
        issued = cred.issued_to
        exp = cred.expires_at
        misused = issued is not None and issued != uid
        expired = exp is not None and t > exp + self.grace_ms
        ended: int | None = None
        task, step = cred.task_uid, cred.step
        # Step order is only known for the holder's own credentials (another holder's task
        # progress lives in that holder's state, on another key).
        if task is not None and step is not None and not misused:
            ended = self._steps(state, task, step, cred)
        if not misused and not expired and ended is None:
            return None  # the common case: nothing below allocates
        out: list[RuleHit] = []
        name = cred.uid or "(no uid)"
        if misused:
            out.append(
                RuleHit(
                    "credential_misuse",
                    5,
                    f"{uid} used credential {name} issued to {issued}"
                    + (f" for task {task}" if task else "")
                    + (f" step {step}" if step is not None else ""),
                    {
                        "credential_uid": cred.uid,
                        "issued_to": issued,
                        "actor": uid,
                        "task_uid": task,
                        "step": step,
                        "delegated_by": event.delegated_by,
                    },
                )
            )
        if expired and exp is not None:
            late = int(t - exp)  # expires_at is an int after decoding; hand-built ones may differ
            out.append(
                RuleHit(
                    "credential_expired",
                    4,
                    f"{uid} used credential {name} {_span(late)} after it expired",
                    {
                        "credential_uid": cred.uid,
                        "issued_to": issued,
                        "expires_at": exp,
                        "used_at": t,
                        "late_ms": late,
                        "reason": "expired",
                    },
                )
            )
        elif ended is not None:  # one credential_expired hit per event: expiry says it all
            out.append(
                RuleHit(
                    "credential_expired",
                    4,
                    f"{uid} reused its step-{step} credential {name} after task {task} had "
                    f"moved on to step {ended}",
                    {
                        "credential_uid": cred.uid,
                        "task_uid": task,
                        "step": step,
                        "current_step": ended,
                        "used_at": t,
                        "reason": "step_ended",
                    },
                )
            )
        return out

    def _steps(self, state: RuleState, task: str, step: int, cred: Credential) -> int | None:
        """Track the task's highest step and the step tokens used; the later step if this ended.

        A token is identified by its uid and expiry (a re-issued credential has a new expiry).
        Only a token *already used* for a step below the current one counts as "after its step
        ended": one agent can legitimately run several overlapping sub-tasks of one task whose
        step numbers interleave, each with fresh credentials.
        """
        key = zlib.crc32(task.encode())
        # CRC of the uid, seeded with expiry and step: no string formatting on the hot path.
        exp = int(cred.expires_at) if cred.expires_at is not None else 0
        seed = (exp * 1_000_003 + step) & 0xFFFFFFFF
        fp = zlib.crc32(cred.uid.encode(), seed) if cred.uid is not None else seed
        tasks = state.tasks
        rec: list[int] | None = None
        for i in range(len(tasks) - 1, -1, -1):
            if tasks[i][0] == key:
                rec = tasks[i]
                if i != len(tasks) - 1:  # most recently used last: eviction drops the oldest
                    del tasks[i]
                    tasks.append(rec)
                break
        if rec is None:
            tasks.append([key, step, fp])
            if len(tasks) > self.max_tasks:
                del tasks[0]
            return None
        seen = fp in rec
        if seen and (rec[0] == fp or rec[1] == fp):  # rare: matched the key or step slot
            seen = fp in rec[2:]
        highest = rec[1]
        ended = highest if seen and step < highest else None
        if step > highest:
            rec[1] = step
        if not seen:
            rec.append(fp)
            if len(rec) - 2 > self.max_tokens:
                del rec[2]
        return ended

    # ---- models ------------------------------------------------------------------------------
    def _model(
        self,
        state: RuleState,
        event: Event,
        model: ModelRef,
        digest: str,
        entry: DirectoryEntry | None,
    ) -> RuleHit | None:
        """Check one agent event's model digest; the first case that applies wins:

        1. ``revoked`` - the registry revoked the digest (under any name): nothing overrides it;
        2. ``not_approved_for_agent`` - the directory lists the agent's approved digests and
           this is not one of them (it may be a fine model - for another agent);
        3. ``unregistered`` - only with ``enforce_registry``: the registry knows the event's
           (name, version) but does not approve this digest for it, or knows neither that
           model nor the digest;
        4. ``changed_since_first_seen`` - no directory digests and the registry does not approve
           the digest: the first digest seen is pinned, any other one fires. A deployment
           Custos knows nothing about runs models no registry lists; what is a violation there
           is a model changing under an agent, not the model being new to Custos.
        """
        reg = self.agent_models
        if reg is not None and not len(reg):
            reg = None  # nothing registered yet: no basis to call a digest unregistered
        approved = entry.approved_digests if entry is not None else ()
        listed: frozenset[str] | None = None
        status = "unregistered"
        reason: str | None = None
        expected: str | None
        if reg is not None:
            status = reg.status(digest)
            listed = reg.digests_for(model.name, model.version)
            if status == "revoked":
                reason = "revoked"
        if reason is None and approved and digest not in approved:
            reason = "not_approved_for_agent"
        registered = False
        severity = 4
        if reason is None and reg is not None:
            # Known model, unknown build - or a digest no build of any model has.
            unknown = (listed is not None and digest not in listed) or (
                listed is None and status == "unregistered"
            )
            registered = not unknown
            if unknown and self.enforce_registry:
                reason = "unregistered"
        if reason is None:
            if approved:
                return None  # the common case: approved for this agent by the directory
            # The pin: 32 digest bytes + a CRC of (name, version), then the previous pin.
            key = bytes.fromhex(digest[7:]) + _version_crc(model)
            pinned = state.model
            if registered:
                # Registered and approved: the pin follows it, so a later switch to a build
                # nobody registered is still a change under a pinned agent.
                if pinned is None or pinned[:32] != key[:32]:
                    state.model = key
                return None
            if pinned is None:
                state.model = key
                return None
            current, previous = pinned[:_PIN], pinned[_PIN:]
            if current[:32] == key[:32]:
                return None  # the common case: the build it runs
            # One hit per change: the pin moves (the replaced build's fingerprint is kept, so
            # a rollback or an old replica in a rolling redeploy is not a second hit).
            state.model = key + current[:_FP]
            if previous and previous == key[:_FP]:
                return None
            reason, source, expected = (
                "changed_since_first_seen",
                "first seen",
                "sha256:" + current[:32].hex(),
            )
            # Same name and version, other bytes: a tampered or swapped build (High). A new
            # version is an upgrade nobody registered: evidence (Medium), not an alert alone.
            if len(current) == _PIN and current[32:] != key[32:]:
                severity = 3
        elif reason == "not_approved_for_agent":
            source, expected = "directory", ", ".join(approved)
        else:
            # The registry decided; expected: its approved builds of this model, else whatever
            # else the directory approves for the agent.
            source = "registry"
            others = sorted(listed) if listed else [d for d in approved if d != digest]
            expected = ", ".join(others) or None
        name = f"{model.name or '?'} {model.version or '?'}"
        uid = event.identity_uid
        evidence: dict[str, str | bool | int | float | None] = {
            "model_name": model.name,
            "model_version": model.version,
            "observed_digest": digest,
            "expected_digest": expected,
            "source": source,
            "reason": reason,
        }
        want = f"expected {_short(expected)} ({source})" if expected else "no approved build"
        if reason == "revoked":
            builds = reg.builds(digest) if reg is not None else ()
            build = next((b for b in builds if b.status == "revoked"), None)
            why = build.revoked_reason if build is not None else None
            evidence["revoked_reason"] = why
            evidence["revoked_by"] = build.revoked_by if build is not None else None
            text = (
                f"agent {uid} runs {name} with digest {_short(digest)}, which the model "
                f"registry revoked" + (f" ({why})" if why else "") + f"; {want}"
            )
        elif reason == "not_approved_for_agent":
            text = (
                f"agent {uid} runs {name} with digest {_short(digest)}, not approved for this "
                f"agent; {want}"
            )
        elif reason == "unregistered":
            where = "for that model" if listed is not None else "at all"
            text = (
                f"agent {uid} runs {name} with digest {_short(digest)}, which the model "
                f"registry does not list {where}; {want}"
            )
        else:
            what = "a new version" if severity == 3 else "the same model and version"
            text = (
                f"agent {uid} runs {name} with digest {_short(digest)}, changed since first "
                f"seen ({what}); {want}"
            )
        if reason == "changed_since_first_seen":
            evidence["version_changed"] = severity == 3
        return RuleHit("model_provenance", severity, text, evidence)

    # ---- agent configuration -------------------------------------------------------------------
    def _drift(
        self,
        state: RuleState,
        event: Event,
        which: str,
        value: str,
        approved: tuple[str, ...],
    ) -> RuleHit | None:
        """``agent_config_drift``: the tool manifest or system prompt an agent runs with changed.

        Severity 4 (High, as ``model_provenance``): a new tool manifest is new capability and
        a new system prompt new instructions - the two things an attacker who owns an agent's
        deployment changes, and a prompt injection that persists. One hit alerts on its own;
        it becomes quarantine-worthy only with corroboration (a second High rule such as a
        swapped model, or anomalous behaviour), so a legitimate redeploy costs one alert.

        With the directory's approved hashes the check is strict: every event with another
        hash fires (like an unapproved model digest). Without them the first hash seen is
        pinned and a change fires *once*: the pin then moves to the new hash (the incident /
        risk policy takes it from there), and the previous hash is kept beside it, so a rolling
        redeploy (old and new replicas interleaving) or a rollback is still one hit.
        """
        if approved:
            if value in approved:
                return None
            old = ", ".join(approved)
            return self._drift_hit(event, which, old, value, "directory", "not_approved_for_agent")
        raw = bytes.fromhex(value[7:])
        pinned = state.tools if which == "tool_manifest" else state.prompt
        if pinned is not None and pinned.startswith(raw):
            return None  # the common case: unchanged
        hit = None
        if pinned is None:
            pinned = raw
        elif len(pinned) > 32 and pinned[32:] == raw[:_FP]:
            pinned = raw + pinned[:_FP]  # back to the previous one (rollback, old replica)
        else:
            old = "sha256:" + pinned[:32].hex()
            hit = self._drift_hit(event, which, old, value, "pinned", "changed")
            pinned = raw + pinned[:_FP]  # re-pin; the replaced hash's fingerprint is kept
        if which == "tool_manifest":
            state.tools = pinned
        else:
            state.prompt = pinned
        return hit

    @staticmethod
    def _drift_hit(
        event: Event, which: str, old: str, new: str, source: str, reason: str
    ) -> RuleHit:
        what = "tool manifest" if which == "tool_manifest" else "system prompt"
        if reason == "changed":
            text = (
                f"agent {event.identity_uid}'s {what} changed from {_short(old)} to {_short(new)}"
            )
        else:
            text = (
                f"agent {event.identity_uid} runs with {what} {_short(new)}, not approved for "
                f"this agent; expected {_short(old)} (directory)"
            )
        return RuleHit(
            "agent_config_drift",
            4,
            text,
            {"which": which, "old_hash": old, "new_hash": new, "source": source, "reason": reason},
        )

    # ---- sensitivity ---------------------------------------------------------------------------
    def _ceiling(self, event: Event, kind: str, entry: DirectoryEntry | None) -> RuleHit | None:
        if entry is not None and entry.sensitivity_ceiling is not None:
            ceiling, source = entry.sensitivity_ceiling, "directory"
        elif kind in self.default_ceilings:
            ceiling, source = self.default_ceilings[kind], "default"
        else:
            return None
        worst, worst_res, above = -1, None, 0
        rank_of = _RANK_OF
        for res in event.resources:
            cid = res.confidentiality_id
            if cid is None or not 0 <= cid < 100:
                continue
            rank = rank_of[cid]
            if rank > ceiling:
                above += 1
                if rank > worst:
                    worst, worst_res = rank, res
        if worst_res is None:
            return None
        failed = event.status_id == _FAILED
        return RuleHit(
            "sensitivity_ceiling",
            4,
            f"{event.identity_uid} {'tried to access' if failed else 'accessed'} "
            f"{worst_res.uid or 'a resource'} classified {RANK_NAMES[worst]}, above its ceiling "
            f"{RANK_NAMES[ceiling]} ({source})",
            {
                "resource_uid": worst_res.uid,
                "confidentiality_id": worst_res.confidentiality_id,
                "rank": worst,
                "ceiling": ceiling,
                "ceiling_source": source,
                "resources_above": above,
                "status_id": event.status_id,
            },
        )

    # ---- clones --------------------------------------------------------------------------------
    def _clone(
        self, state: RuleState, event: Event, env: str, entry: DirectoryEntry | None
    ) -> RuleHit | None:
        t = event.time_ms
        home = entry.home_environment if entry is not None else None
        if home is not None:
            if state.env is not None:  # the directory now decides: forget the learned home
                if state.env != home:
                    state.env_ms = -1
                state.env = None
            source = "directory"
        else:
            if state.env is None:
                state.env, state.env_ms = env, -1
            home = state.env
            source = "first seen"
        if env == home:
            if t > state.env_ms:
                state.env_ms = t
            return None
        last = state.env_ms
        if last < 0 or abs(t - last) > self.clone_window_ms:
            return None  # not active at home lately: a move or failover, not two copies
        return RuleHit(
            "clone",
            5,
            f"{event.identity_uid} is active in {env} while it was active in its home "
            f"environment {home} {_span(t - last)} {'earlier' if t >= last else 'later'}",
            {
                "environment": env,
                "home_environment": home,
                "home_source": source,
                "home_seen_ms": last,
                "gap_ms": t - last,
                "src_ip": event.src_ip,
                "asn": event.asn,
            },
        )

    # ---- travel --------------------------------------------------------------------------------
    def _travel(self, state: RuleState, event: Event, lat: float, lon: float) -> RuleHit | None:
        t = event.time_ms
        la, lo = round(lat * _E4), round(lon * _E4)
        last = state.loc_ms
        hit: RuleHit | None = None
        if last >= 0 and (la != state.lat_e4 or lo != state.lon_e4):
            plat, plon = state.lat_e4 / _E4, state.lon_e4 / _E4
            km = haversine_km(plat, plon, la / _E4, lo / _E4)
            dt = abs(t - last)
            if km >= self.travel_min_km and km * _HOUR_MS > self.travel_speed_kmh * dt:
                speed = km * _HOUR_MS / dt if dt else None
                prev = state.loc_cc or f"({plat:.2f}, {plon:.2f})"
                here = event.country or f"({lat:.2f}, {lon:.2f})"
                hit = RuleHit(
                    "impossible_travel",
                    4,
                    f"{event.identity_uid} appeared in {here} {_span(t - last)} after {prev}: "
                    f"{km:,.0f} km"
                    + (f" at {speed:,.0f} km/h" if speed is not None else " at the same time")
                    + f" (limit {self.travel_speed_kmh:,.0f} km/h)",
                    {
                        "from_country": state.loc_cc,
                        "to_country": event.country,
                        "from_lat": plat,
                        "from_long": plon,
                        "to_lat": lat,
                        "to_long": lon,
                        "distance_km": round(km, 1),
                        "elapsed_ms": dt,
                        "speed_kmh": None if speed is None else round(speed, 1),
                        "src_ip": event.src_ip,
                        "asn": event.asn,
                    },
                )
        if t >= last:  # an out-of-order (older) event is compared but does not move the anchor
            state.loc_ms, state.lat_e4, state.lon_e4, state.loc_cc = t, la, lo, event.country
        return hit
