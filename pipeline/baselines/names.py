"""Names for the hashes a baseline keeps: one bounded book per process, shared by all identities.

A baseline remembers each categorical value as a 32-bit hash and keeps only its most used value's
name (for explanations), so an identity's state stays small. People reading the baseline want
names: countries, ASNs, services, operations, resources, models. The book maps hash -> name for
the values this process has seen, per feature, and forgets the oldest entry when a feature's
page is full: memory is bounded by ``per_feature`` names per feature, not by identities.

>>> from pipeline.baselines.features import CATEGORICAL, cat_hash
>>> book = NameBook(per_feature=2)
>>> i = CATEGORICAL.index("country")
>>> for cc in ("DE", "FR", "NL"):
...     book.note(i, cat_hash("country", cc), cc)
>>> book.name(i, cat_hash("country", "NL")), book.name(i, cat_hash("country", "DE"))
('NL', None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pipeline.baselines.features import CATEGORICAL

__all__ = ["NameBook"]

# Per feature: countries (~250) and ASNs fit whole; counterparties and resources keep the most
# recently first-seen ones. 4,096 x 12 features x ~100 B is about 5 MB at most.
PER_FEATURE: Final = 4096
# Every feature but combo (a hash of other values: no name of its own), which is the last.
_NAMED: Final = tuple(i for i, n in enumerate(CATEGORICAL) if n != "combo")
if _NAMED != tuple(range(len(_NAMED))):
    raise ImportError("names.py reads the named features as a prefix: combo must be last")
_N_NAMED: Final = len(_NAMED)


class NameBook:
    """hash -> name per categorical feature, bounded (oldest first out)."""

    __slots__ = ("_pages", "_seen", "per_feature")

    def __init__(self, per_feature: int = PER_FEATURE) -> None:
        self.per_feature = per_feature
        self._pages: list[dict[int, str]] = [{} for _ in CATEGORICAL]
        # Every hash on any page, and 0 (absent): an event whose values are all known passes
        # with one set operation instead of a lookup per feature (~2.3 -> 0.8 µs). Hashes are
        # per feature, so a value can pass because another feature's page holds its hash: it
        # then goes unnamed (about 1 in 10^5 values: a hash shown instead of a name).
        self._seen: set[int] = {0}

    def note(self, feature: int, h: int, value: str | None) -> None:
        """Remember one value (cheap when already known: one dict lookup)."""
        page = self._pages[feature]
        if not h or value is None or h in page:
            return
        if len(page) >= self.per_feature:
            old = next(iter(page))
            del page[old]
            self._seen.discard(old)
        page[h] = value
        self._seen.add(h)

    def note_all(self, hashes: Sequence[int], values: Sequence[str | None]) -> None:
        """Remember an event's categorical values (``Features.cat_hashes`` / ``cat_values``).
        On the hot path: a known value costs an index and a dict lookup, nothing more."""
        named = hashes[:_N_NAMED]
        if self._seen.issuperset(named):
            return
        pages = self._pages
        for i in _NAMED:
            h = named[i]
            if h and h not in pages[i]:
                self.note(i, h, values[i])

    def note_many(
        self, hashes: Sequence[Sequence[int]], values: Sequence[Sequence[str | None]]
    ) -> None:
        """:meth:`note_all` for several events in order (``FeatureRows.hashes`` /
        ``values``): one call per detection round."""
        seen = self._seen
        for hs, vs in zip(hashes, values, strict=True):
            if not seen.issuperset(hs[:_N_NAMED]):
                self.note_all(hs, vs)

    def name(self, feature: int, h: int) -> str | None:
        return self._pages[feature].get(h)

    def __len__(self) -> int:
        return sum(len(p) for p in self._pages)
