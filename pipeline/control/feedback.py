"""Analyst feedback (``custos.feedback``): what a SOC analyst decided about an identity.

* ``confirm`` - the compromise is real: the incident becomes quarantine-worthy at once, and
  the contain command goes out already approved by the analyst;
* ``false_positive`` - close the incident, risk back to zero, lift a quarantine it caused;
  with ``learn_as_normal`` the events that were kept out of the baseline during the incident
  are learned now (the new country *was* the trip the analyst knows about);
* ``release`` - cancel the incident's quarantine (a ``cancel`` of its contain command);
* ``suppress`` - silence the identity (``feature`` None) or one feature / rule of it until
  ``until_ms``: suppressions from feedback are always time-bounded.

Messages are keyed by identity and go to the worker that owns that identity's state. On the
topic they are signed (:mod:`pipeline.control.signing`: compact JWS by an analyst's key, as
quarantine approvals and releases are) and fresh (``at_ms`` within five minutes): a release or
a "false positive" lifts a quarantine, so the right to write the topic must not be enough. Each
is applied once (``uid``: a repeat changes nothing), answered on ``custos.reports`` and recorded
by the auditor. ``verify_feedback`` and :func:`decode` turn bad bytes into
:class:`~pipeline.errors.InvalidEvent` (a reason such as ``invalid_feedback``, ``unsigned``,
``bad_signature``, ``expired_feedback``), so they are dead-lettered like any bad input.
Files of feedback for ``custos replay`` / ``custos evaluate`` are plain JSONL (:func:`decode`).

>>> fb = Feedback(uid="fb-1", action="suppress", identity="svc-backup", by="analyst:alice",
...               reason="nightly export moved to 02:00", feature="off_hours",
...               until_ms=1_800_000_000_000, at_ms=1_790_000_000_000)
>>> decode(encode(fb)) == fb
True
>>> decode(b'{"action": "suppress", "identity": "x", "by": "a", "reason": "r", "uid": "u", '
...        b'"at_ms": 1}')
Traceback (most recent call last):
...
pipeline.errors.InvalidEvent: invalid_feedback: a suppression from feedback needs until_ms
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from pipeline.errors import InvalidEvent

__all__ = [
    "Feedback",
    "FeedbackOutcome",
    "Schedule",
    "decode",
    "encode",
    "new_uid",
    "read",
]

Action = Literal["confirm", "false_positive", "release", "suppress"]
_Text = Annotated[str, Meta(min_length=1, max_length=1000)]
_Name = Annotated[str, Meta(min_length=1, max_length=256)]
MAX_BYTES: Final = 16 * 1024


class Feedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
               omit_defaults=True):  # fmt: skip
    uid: _Name  # idempotency key
    action: Action
    identity: _Name
    by: _Name  # the analyst
    reason: _Text
    at_ms: int
    finding_uid: _Name | None = None  # the finding it is about (default: the open incident)
    learn_as_normal: bool = False  # false_positive only
    feature: _Name | None = None  # suppress: one feature or rule; None = the whole identity
    until_ms: int | None = None  # suppress: required

    def __post_init__(self) -> None:
        if self.action == "suppress":
            if self.until_ms is None:
                raise ValueError("a suppression from feedback needs until_ms")
            if self.until_ms <= self.at_ms:
                raise ValueError("until_ms must be after at_ms")
        elif self.feature is not None or self.until_ms is not None:
            raise ValueError("feature and until_ms are for suppress")
        if self.learn_as_normal and self.action != "false_positive":
            raise ValueError("learn_as_normal is for false_positive")


class FeedbackOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What applying one feedback did (reported on ``custos.reports``, audited)."""

    uid: str
    action: str
    identity: str
    outcome: str  # applied | no_incident | finding_mismatch | duplicate
    detail: str
    finding_uid: str | None = None
    learned: int = 0  # events learned as normal
    release_command: str | None = None  # contain command to cancel


class Schedule:
    """Feedback in ``at_ms`` order, handed out as event time passes (replay, evaluation).

    >>> fb = [Feedback(uid=str(t), action="release", identity="a", by="b", reason="r", at_ms=t)
    ...       for t in (30, 10, 20)]
    >>> s = Schedule(fb)
    >>> [f.at_ms for f in s.due(20)], [f.at_ms for f in s.due(None)]
    ([10, 20], [30])
    """

    def __init__(self, feedback: Iterable[Feedback] = ()) -> None:
        self._left = sorted(feedback, key=lambda f: f.at_ms, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._left)

    def due(self, until_ms: int | None) -> Iterator[Feedback]:
        """Feedback at or before ``until_ms`` (None: all that is left), oldest first."""
        while self._left and (until_ms is None or self._left[-1].at_ms <= until_ms):
            yield self._left.pop()


def read(path: Path | str) -> list[Feedback]:
    """A feedback file for ``custos replay`` / ``custos evaluate`` (plain JSONL)."""
    with open(path, "rb") as fh:
        return [decode(line) for line in fh if line.strip()]


def new_uid() -> str:
    return str(uuid.uuid4())


_DECODE: Final = msgspec.json.Decoder(Feedback).decode


def decode(data: bytes) -> Feedback:
    if len(data) > MAX_BYTES:
        raise InvalidEvent("invalid_feedback", f"{len(data)} bytes, at most {MAX_BYTES}")
    try:
        return _DECODE(data)
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidEvent("invalid_feedback", str(exc)[:300]) from None


def encode(fb: Feedback) -> bytes:
    return msgspec.json.encode(fb)
