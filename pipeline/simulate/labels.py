"""Ground truth: which emitted events each campaign caused, per identity.

The label book is filled while events are serialised, so every row describes events that really
are in the stream (first/last ``metadata.uid`` and times, count). It is written as JSONL, one
row per (campaign, identity), sorted by campaign then identity. See ``docs/EVENTS.md`` (Labels).

>>> book = LabelBook(lambda c: ("cmp-0001", "model_swap"), lambda i: f"agt-{i}")
>>> book.add(0, 7, "u1", 1000)
>>> book.add(0, 7, "u2", 2000)
>>> [(r.identity_uid, r.first_event_uid, r.last_event_uid, r.event_count) for r in book.rows()]
[('agt-7', 'u1', 'u2', 2)]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

__all__ = ["LabelBook", "LabelRow", "read_labels", "write_labels"]


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


class _Span:
    """Mutable running summary of one (campaign, identity)."""

    __slots__ = ("count", "first_time", "first_uid", "last_time", "last_uid")

    def __init__(self, uid: str, time_ms: int) -> None:
        self.first_uid = self.last_uid = uid
        self.first_time = self.last_time = time_ms
        self.count = 1


class LabelBook:
    """Accumulates (campaign, identity) → first/last event, in emission (= time) order."""

    __slots__ = ("_campaign", "_spans", "_uid")

    def __init__(
        self, campaign: Callable[[int], tuple[str, str]], identity_uid: Callable[[int], str]
    ) -> None:
        self._campaign = campaign  # campaign index -> (campaign_id, scenario)
        self._uid = identity_uid
        self._spans: dict[tuple[int, int], _Span] = {}

    def add(self, camp: int, ident: int, event_uid: str, time_ms: int) -> None:
        span = self._spans.get((camp, ident))
        if span is None:
            self._spans[(camp, ident)] = _Span(event_uid, time_ms)
        else:
            span.last_uid = event_uid
            span.last_time = time_ms
            span.count += 1

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
