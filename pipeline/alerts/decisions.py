"""What the alerting policy says to emit: :class:`Decision`, and the finding uids.

A decision carries everything :func:`~pipeline.alerts.findings.build_finding` needs for one
OCSF Detection Finding (create, update or close); :func:`inventory_decision` is the one-off
informational kind that belongs to no incident.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal

import msgspec

from pipeline.alerts.state import STATUS_NEW, Counters
from pipeline.scores.explanations import Contribution, RuleHit

__all__ = [
    "ACTIVITY_IDS",
    "MAX_CONTAIN_MS",
    "Action",
    "Decision",
    "finding_uid",
    "inventory_decision",
]

Action = Literal["create", "update", "close"]
#: OCSF Detection Finding activity_id per action.
ACTIVITY_IDS: Final[dict[str, int]] = {"create": 1, "update": 2, "close": 3}
#: The longest quarantine one contain command may ask for (responders refuse longer ones).
MAX_CONTAIN_MS: Final = 90 * 86_400_000
# Stable namespace: finding uids are uuid5(identity, first event uid), identical on replay.
_FINDING_NS: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://custos.invalid/finding")


class Decision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What to emit for one incident: all :func:`~pipeline.alerts.findings.build_finding` needs.

    ``risk`` is the current (decayed) risk; ``risk_level_id``/``severity_id`` follow the
    incident's *peak* risk (and its rules), so a finding never looks milder while it is open.
    ``closed`` is set in one rare case: an event found the previous incident overdue for closing
    and opened a new one; emit ``closed`` first (:meth:`flatten` gives the order).
    """

    action: Action
    activity_id: int
    identity_uid: str
    identity_kind: str
    finding_uid: str
    time_ms: int
    first_seen_ms: int
    last_seen_ms: int
    risk: float
    peak_risk: float
    risk_level_id: int
    severity_id: int
    status_id: int
    is_alert: bool
    quarantine: bool
    confidence: float
    reason: str  # why this decision, in words (for the audit)
    related_events: tuple[str, ...] = ()
    contributions: tuple[Contribution, ...] = ()
    rules: tuple[RuleHit, ...] = ()
    rationales: tuple[str, ...] = ()
    counters: Counters = msgspec.field(default_factory=Counters)
    suppressed_by: str | None = None  # reason of the identity suppression, if any
    closed: Decision | None = None
    credentials: tuple[str, ...] = ()  # credential uids in the evidence (quarantine targets)
    # (Re)issue the incident's one contain command now: on becoming quarantine-worthy, then only
    # shortly before the last one lapses while new evidence keeps coming (never per re-detection).
    contain: bool = False
    contain_duration_ms: int = 0  # its duration: quarantine_duration_s, doubled per renewal
    # The command waits for an analyst whatever its severity: the identity's last automatic
    # quarantine ended without confirmation (RiskPolicy ask_window_s).
    ask_first: bool = False
    # Closed because it stayed open past habituate_after_s unconfirmed: the baseline failed to
    # learn; the caller learns the held events (its evidence is suppressed for a while).
    habituated: bool = False

    def flatten(self) -> tuple[Decision, ...]:
        """The decisions to emit, in order (the overdue close first, if any)."""
        return (*self.closed.flatten(), self) if self.closed is not None else (self,)


def inventory_decision(hit: RuleHit, *, key: str, identity_uid: str, identity_kind: str,
                       time_ms: int, event_uid: str) -> Decision:
    """A one-off informational finding (no incident, no risk, never an alert or a quarantine).

    For facts an analyst should know once across the fleet - a model build Custos has not seen
    before - rather than per identity and event. ``key`` names the fact: its finding uid is
    ``finding_uid("inventory", key)``, the same in every worker that sees it first.

    >>> h = RuleHit("model_inventory", 2, "first sighting of gpt-x 1")
    >>> d = inventory_decision(h, key="sha256:ab", identity_uid="agt-1", identity_kind="agent",
    ...                        time_ms=5, event_uid="e-1")
    >>> d.severity_id, d.is_alert, d.quarantine, d.finding_uid == finding_uid("inventory",
    ...                                                                       "sha256:ab")
    (2, False, False, True)
    """
    return Decision(
        action="create",
        activity_id=ACTIVITY_IDS["create"],
        identity_uid=identity_uid,
        identity_kind=identity_kind,
        finding_uid=finding_uid("inventory", key),
        time_ms=time_ms,
        first_seen_ms=time_ms,
        last_seen_ms=time_ms,
        risk=0.0,
        peak_risk=0.0,
        risk_level_id=0,
        severity_id=hit.severity_id,
        status_id=STATUS_NEW,
        is_alert=False,
        quarantine=False,
        confidence=1.0,
        reason="inventory: " + hit.text,
        related_events=(event_uid,),
        rules=(hit,),
    )


def finding_uid(identity_uid: str, first_event_uid: str) -> str:
    """Stable finding uid of an incident: uuid5 of the identity and its first event uid.

    >>> finding_uid("alice", "e-1") == finding_uid("alice", "e-1") != finding_uid("bob", "e-1")
    True
    """
    return str(uuid.uuid5(_FINDING_NS, identity_uid + "\x00" + first_event_uid))
