"""Ground truth: which emitted events each campaign caused, per identity.

The label book is filled while events are serialised, so every row describes events that really
are in the stream (first/last ``metadata.uid`` and times, count). It is written as JSONL, one
row per (campaign, identity), sorted by campaign then identity. See ``docs/EVENTS.md`` (Labels).

Optionally (``keep_events=True``) the book also remembers every malicious event's uid, for exact
event-level evaluation; that goes to a separate *event labels* file (one line per malicious event,
in emission order) and leaves the labels file unchanged.

>>> book = LabelBook(lambda c: ("cmp-0001", "model_swap"), lambda i: f"agt-{i}")
>>> book.add(0, 7, "u1", 1000)
>>> book.add(0, 7, "u2", 2000)
>>> [(r.identity_uid, r.first_event_uid, r.last_event_uid, r.event_count) for r in book.rows()]
[('agt-7', 'u1', 'u2', 2)]
>>> book = LabelBook(lambda c: ("cmp-0001", "model_swap"), lambda i: f"agt-{i}", keep_events=True)
>>> book.add(0, 7, "u1", 1000)
>>> [(e.event_uid, e.campaign_id) for e in book.event_labels()]
[('u1', 'cmp-0001')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

__all__ = [
    "EventLabel",
    "LabelBook",
    "LabelRow",
    "read_event_labels",
    "read_labels",
    "write_event_labels",
    "write_labels",
]


class LabelRow(msgspec.Struct, frozen=True):
    """One labels-file row: a campaign's events by one identity."""

    campaign_id: str
    scenario: str
    identity_uid: str
    first_event_uid: str
    last_event_uid: str
    first_time_ms: int
    last_time_ms: int
    event_count: int


class EventLabel(msgspec.Struct, frozen=True):
    """One event-labels-file row: a malicious event (``metadata.uid``) and its campaign."""

    event_uid: str
    campaign_id: str


class _Span:
    """Mutable running summary of one (campaign, identity)."""

    __slots__ = ("count", "first_time", "first_uid", "last_time", "last_uid")

    def __init__(self, uid: str, time_ms: int) -> None:
        self.first_uid = self.last_uid = uid
        self.first_time = self.last_time = time_ms
        self.count = 1


class LabelBook:
    """Accumulates (campaign, identity) → first/last event, in emission (= time) order."""

    __slots__ = ("_campaign", "_events", "_spans", "_uid")

    def __init__(
        self,
        campaign: Callable[[int], tuple[str, str]],
        identity_uid: Callable[[int], str],
        *,
        keep_events: bool = False,
    ) -> None:
        self._campaign = campaign  # campaign index -> (campaign_id, scenario)
        self._uid = identity_uid
        self._spans: dict[tuple[int, int], _Span] = {}
        # (campaign index, event uid) of every malicious event, when asked to keep them
        self._events: list[tuple[int, str]] | None = [] if keep_events else None

    def add(self, camp: int, ident: int, event_uid: str, time_ms: int) -> None:
        span = self._spans.get((camp, ident))
        if span is None:
            self._spans[(camp, ident)] = _Span(event_uid, time_ms)
        else:
            span.last_uid = event_uid
            span.last_time = time_ms
            span.count += 1
        if self._events is not None:
            self._events.append((camp, event_uid))

    @property
    def keeps_events(self) -> bool:
        return self._events is not None

    def event_labels(self) -> list[EventLabel]:
        """Every malicious event so far, in emission order (needs ``keep_events=True``)."""
        if self._events is None:
            raise ValueError("this LabelBook does not keep events (keep_events=False)")
        ids: dict[int, str] = {}
        out = []
        for camp, uid in self._events:
            cid = ids.get(camp)
            if cid is None:
                cid = ids[camp] = self._campaign(camp)[0]
            out.append(EventLabel(event_uid=uid, campaign_id=cid))
        return out

    def rows(self) -> list[LabelRow]:
        """All rows, sorted by campaign id then identity uid."""
        out = []
        for (camp, ident), span in self._spans.items():
            campaign_id, scenario = self._campaign(camp)
            out.append(
                LabelRow(
                    campaign_id=campaign_id,
                    scenario=scenario,
                    identity_uid=self._uid(ident),
                    first_event_uid=span.first_uid,
                    last_event_uid=span.last_uid,
                    first_time_ms=span.first_time,
                    last_time_ms=span.last_time,
                    event_count=span.count,
                )
            )
        out.sort(key=lambda r: (r.campaign_id, r.identity_uid))
        return out


def write_labels(path: Path, rows: list[LabelRow]) -> None:
    """Write rows as JSONL (one JSON object per line, UTF-8)."""
    enc = msgspec.json.Encoder()
    with path.open("wb") as fh:
        for row in rows:
            fh.write(enc.encode(row))
            fh.write(b"\n")


def read_labels(path: Path) -> list[LabelRow]:
    """Read a labels file back."""
    dec = msgspec.json.Decoder(LabelRow)
    with path.open("rb") as fh:
        return [dec.decode(line) for line in fh if line.strip()]


def write_event_labels(path: Path, rows: Iterable[EventLabel]) -> None:
    """Write the event labels as JSONL (one malicious event per line, UTF-8)."""
    enc = msgspec.json.Encoder()
    with path.open("wb") as fh:
        for row in rows:
            fh.write(enc.encode(row))
            fh.write(b"\n")


def read_event_labels(path: Path) -> list[EventLabel]:
    """Read an event labels file back."""
    dec = msgspec.json.Decoder(EventLabel)
    with path.open("rb") as fh:
        return [dec.decode(line) for line in fh if line.strip()]
