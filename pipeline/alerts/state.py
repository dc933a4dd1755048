"""Per-identity alerting state: what :class:`~pipeline.alerts.policy.RiskPolicy` keeps and persists.

:class:`RiskState` (a decaying risk, at most one :class:`Incident`, the identity's own
suppressions) is stored per identity in the worker's table as compact msgpack; the incident's
``status_id`` is a :data:`CANDIDATE` until it alerts, then the OCSF status last emitted.
:class:`Suppression` and :func:`load_suppressions` describe the analysts' known-benign behaviour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from pipeline.errors import ConfigError
from pipeline.scores.explanations import Contribution, RuleHit

__all__ = [
    "CANDIDATE",
    "MAX_STATE_SUPPRESSIONS",
    "STATE_VERSION",
    "STATUS_IN_PROGRESS",
    "STATUS_NEW",
    "STATUS_RESOLVED",
    "STATUS_SUPPRESSED",
    "Counters",
    "Incident",
    "RiskState",
    "Suppression",
    "load_suppressions",
]

#: Version of the serialised :class:`RiskState` layout (first array element).
STATE_VERSION: Final = 1

# OCSF Detection Finding status_id. 0 marks a candidate incident that has not alerted yet.
CANDIDATE: Final = 0
STATUS_NEW: Final = 1
STATUS_IN_PROGRESS: Final = 2
STATUS_SUPPRESSED: Final = 3
STATUS_RESOLVED: Final = 4
MAX_STATE_SUPPRESSIONS: Final = 8  # analyst suppressions kept in one identity's state


# --- Persistent state -------------------------------------------------------------------------
# array_like + msgpack: field names are not stored, so a state with no incident is ~15 bytes.
# New fields must be appended with defaults: older payloads then still decode.
# gc=False: these structs only ever hold strings, numbers and other gc=False structs (no cycles).


class Suppression(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Silence known-benign behaviour.

    - ``identity`` only: the identity's findings are still emitted (so the audit trail shows
      what would have alerted) but with status Suppressed (3), ``is_alert`` false and never
      ``quarantine``; risk still accumulates.
    - ``feature`` (a contribution feature or a rule name), for one identity or, with no
      identity, for everyone: matching contributions and rules add no risk and are left out of
      the finding.
    - ``until_ms``: the rule applies to events strictly before this event time (ms); None = forever.

    >>> Suppression(identity="svc-backup", feature="bytes_out").applies(0)
    True
    >>> Suppression(identity="svc-backup", until_ms=10).applies(10)
    False
    """

    identity: str | None = None
    feature: str | None = None
    until_ms: int | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.identity is None and self.feature is None:
            raise ValueError("a suppression needs an identity, a feature, or both")

    def applies(self, time_ms: int) -> bool:
        """True while the suppression has not expired at ``time_ms``."""
        return self.until_ms is None or time_ms < self.until_ms


class Counters(msgspec.Struct, array_like=True, gc=False):
    """Scenario-agnostic tallies of one incident."""

    events: int = 0  # events that added risk or fired a rule
    anomalous: int = 0  # of those, scored at or above the noise floor
    rule_hits: int = 0  # unsuppressed rule hits
    suppressed: int = 0  # events with at least one suppressed contribution or rule
    updates: int = 0  # update decisions emitted


class Incident(msgspec.Struct, array_like=True, gc=False):
    """The one open incident of an identity (``status_id`` 0 = candidate, not alerted yet).

    Bounded: the first event (whose uid anchors the finding uid) plus the most recent ones,
    the strongest contribution per feature, the latest hit per rule, the latest rationales.
    """

    identity_uid: str
    identity_kind: str
    first_seen_ms: int
    last_seen_ms: int
    quiet_ms: int  # event time risk fell (or will fall) below the close threshold
    uid: str = ""  # finding uid, set on create
    status_id: int = CANDIDATE  # last emitted status
    peak_risk: float = 0.0
    confidence: float = 0.0  # max over the incident: calibrated score, 1.0 for a rule
    quarantine: bool = False  # sticky: quarantine-worthy at some point of the incident
    events: list[str] = []
    contributions: list[Contribution] = []  # strongest first, one per feature
    rules: list[RuleHit] = []  # one per rule name
    rationales: list[str] = []  # the agent's stated reasons, most recent last
    counters: Counters = msgspec.field(default_factory=Counters)
    pending: bool = False  # evidence merged since the last emitted decision
    last_emit_ms: int = 0
    emitted_level: int = 0  # risk level of the last emitted decision
    emitted_quarantine: bool = False
    credentials: list[str] = []  # credential uids seen in the evidence, most recent last
    contain_ms: int = -1  # event time the incident's contain command was last (re)issued
    released: bool = False  # an analyst released the quarantine: no command until new evidence
    confirmed: bool = False  # an analyst confirmed the compromise: never habituated
    evidence_ms: int = -1  # event time of the latest evidence (risk added or a rule fired)
    periodic: int = 0  # periodic updates emitted: each doubles the interval to the next
    contains: int = 0  # contain commands issued: each renewal doubles the quarantine's duration


class RiskState(msgspec.Struct, array_like=True, gc=False):
    """Per-identity policy state, updated in place by :class:`~pipeline.alerts.policy.RiskPolicy`.

    ``risk`` is the value at ``updated_ms`` (event time); decay is applied lazily. ``rev``
    increases on every change, so a caller can skip writing back an unchanged state.

    >>> s = RiskState(risk=12.5, updated_ms=1_700_000_000_000)
    >>> len(s.to_bytes()), RiskState.from_bytes(s.to_bytes()).risk
    (26, 12.5)
    """

    v: int = STATE_VERSION
    risk: float = 0.0
    updated_ms: int = 0
    rev: int = 0
    incident: Incident | None = None
    # Time-bounded suppressions an analyst set for this identity (feedback), at most
    # MAX_STATE_SUPPRESSIONS, expired ones dropped when a new one is added.
    suppressions: list[Suppression] = []
    # Evidence (feature and rule names) of the identity's last alerted incidents that closed
    # unconfirmed, and until when a new incident made only of it is a recurrence.
    recurring: list[str] = []
    recurring_until_ms: int = 0
    # Until when a new contain of this identity waits for an analyst: its last automatic
    # quarantine ended without confirmation (a second one would be on the same guess).
    ask_until_ms: int = 0

    def to_bytes(self) -> bytes:
        """Compact msgpack encoding (field order, no names)."""
        return _STATE_ENCODER.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> RiskState:
        """Decode :meth:`to_bytes` output; raises ``ValueError`` for a newer layout version."""
        state = _STATE_DECODER.decode(data)
        if state.v > STATE_VERSION:
            raise ValueError(f"risk state version {state.v} is newer than {STATE_VERSION}")
        # Migrations from older versions go here; version 1 is the first.
        return state


_STATE_ENCODER: Final = msgspec.msgpack.Encoder()
_STATE_DECODER: Final = msgspec.msgpack.Decoder(RiskState)


# --- Suppression files ------------------------------------------------------------------------


def _to_ms(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: until must be a time, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: until {value!r} is not ISO 8601") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive times are UTC, like every time in Custos
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, date):  # YAML turns 2026-01-01 into a date: midnight UTC
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() * 1000)
    raise ConfigError(f"{where}: until must be ms since epoch or ISO 8601, not {value!r}")


def load_suppressions(path: str | Path) -> tuple[Suppression, ...]:
    """Read a YAML (or JSON) list of ``{identity, feature, until | until_ms, reason}``.

    ``until`` is ISO 8601 (naive = UTC) or ms since epoch. Raises :class:`ConfigError`.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    ...     _ = f.write("- {identity: svc-backup, feature: bytes_out, until: 2030-01-01}\\n")
    >>> load_suppressions(f.name)[0].until_ms
    1893456000000
    >>> os.unlink(f.name)
    """
    import yaml  # only when a file is configured: keeps worker start-up lean

    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"suppressions file {p}: {exc}") from None
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"suppressions file {p}: expected a list of suppressions")
    out = []
    for i, item in enumerate(raw):
        where = f"suppressions file {p} item {i}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        item = dict(item)
        if "until" in item:
            if "until_ms" in item:
                raise ConfigError(f"{where}: give until or until_ms, not both")
            item["until_ms"] = item.pop("until")
        item["until_ms"] = _to_ms(item.get("until_ms"), where)
        try:
            out.append(msgspec.convert(item, Suppression))
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(out)
