"""What every score carries: the reasons, in words an analyst can act on.

These small immutable records flow from baselines and rules through scoring and policy into
the OCSF findings, where their ``text`` is reused verbatim.

>>> c = Contribution("bytes_out", "zscore", 0.8, "48.0 MB", "typical 1.2 MB ± 0.4 MB",
...                  "bytes_out 48.0 MB vs typical 1.2 MB ± 0.4 MB")
>>> c.text
'bytes_out 48.0 MB vs typical 1.2 MB ± 0.4 MB'
"""

from __future__ import annotations

import msgspec


class Contribution(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One feature's share of an event's anomaly score.

    ``kind``: ``zscore`` (numeric deviation), ``first_seen`` (value never seen for this identity),
    ``rare`` (seen, but seldom), ``off_hours`` (outside the identity's active hours),
    ``burst`` (request rate), ``peer`` (unusual for the identity's peer group).
    ``weight`` is the normalised deviation in [0, 1] that fed the detector.
    """

    feature: str
    kind: str
    weight: float
    observed: str
    baseline: str
    text: str


class RuleHit(msgspec.Struct, frozen=True, gc=False):
    """A Zero Trust rule that fired: fixed severity, independent of any baseline.

    ``rule`` names: ``credential_misuse``, ``credential_expired``, ``model_provenance``,
    ``agent_config_drift``, ``sensitivity_ceiling``, ``clone``, ``impossible_travel``,
    ``unauthorised_delegation``, ``delegated_outside_team`` (raised on the delegator by a
    :class:`Signal`), and ``volume_drift`` (not a rule but the baseline's slow-ramp finding,
    once per day that closes above the drift line: a fact about days, not one event).
    ``severity_id`` is OCSF's (4 High, 5 Critical). ``evidence`` holds the observed values.
    """

    rule: str
    severity_id: int
    text: str
    # bool before int: a flag (version_changed) must survive the state codec as a flag.
    evidence: dict[str, str | bool | int | float | None] = {}


class Score(msgspec.Struct, frozen=True, gc=False):
    """The explained verdict on one event."""

    event_uid: str
    identity_uid: str
    identity_kind: str
    time_ms: int
    score: float  # calibrated anomaly score in [0, 1]; high = anomalous
    raw: float  # the detector's raw score before calibration
    contributions: tuple[Contribution, ...] = ()  # top contributors, strongest first
    rules: tuple[RuleHit, ...] = ()
    learned: bool = True  # False when the event was kept out of the baseline (anomalous)
    peer_weight: float = 0.0  # how much of the baseline was the peer group's (cold start)
    rationale: str | None = None  # the agent's own stated reason, kept for the audit "why"
    credential_uid: str | None = None  # the credential the event used (quarantine revokes it)


class Signal(msgspec.Struct, frozen=True, gc=False):
    """Evidence about *another* identity found while scoring one identity's event.

    An agent acting on a task from a delegator the directory does not allow is also a fact
    about the delegator (it handed work outside its team: lateral movement). The delegator's
    state may live on another worker, so the signal travels keyed by ``identity_uid`` and is
    applied where that identity's state lives
    (:meth:`pipeline.detection.Detection.apply_signals`).

    >>> hit = RuleHit("delegated_outside_team", 4, "agt-1 handed a task to agt-9")
    >>> sig = Signal("agt-1", "agent", 1_000, "e-7", "agt-9", hit)
    >>> msgspec.msgpack.decode(msgspec.msgpack.encode(sig), type=Signal) == sig
    True
    """

    identity_uid: str  # whom the evidence is about
    identity_kind: str
    time_ms: int
    event_uid: str  # the event that revealed it
    source_uid: str  # the identity whose event it was
    rule: RuleHit
