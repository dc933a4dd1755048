"""Which input records a piece of state already includes: exactly-once effects on restart.

Kafka gives the worker at-least-once input: after a kill it re-reads everything since the last
committed offset, although identity states (written to the table's changelog) and the shared
models may already include some of it. Applying those events again double-counts them - volumes,
rule counters, risk, a finding that lists one event twice. So each piece of state records the
source records it includes:

* an identity's table value carries, in a small envelope, the last offset applied from each
  source (input topic, partition) - written in the same table write as the state, so the two
  can never disagree (:func:`wrap` / :func:`unwrap`);
* the shared models' checkpoint carries the offsets of everything they learned
  (:class:`SharedCheckpoint`), saved whenever the worker commits offsets.

A re-read record at or below its identity's mark is not applied to the identity again; if it
is above the shared checkpoint's mark too, only the shared models learn it (once).

Sources are ``(topic index, partition)``; a re-keyed event counts under the record it was
first read from (its ``custos.source`` header; index + 128, apart from the identity's direct
records of that partition, which it may trail), so re-keying it twice after a crash still
applies it once.

The envelope also carries the number of the unit of work that wrote the value (``unit``), so
that values written by the same unit can be recognised on restore (an identity's side part and
its state: :class:`~pipeline.stream.store.PartitionStore`).

>>> value = wrap(b"\\x94state", {(1, 0): 41, (2, 3): 7}, unit=12)
>>> unwrap(value), unit_of(value)
((b'\\x94state', {(1, 0): 41, (2, 3): 7}), 12)
>>> unwrap(b"\\x94legacy"), unit_of(b"\\x94legacy")  # written before envelopes
((b'\\x94legacy', {}), 0)
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

__all__ = [
    "SOURCE_HEADER", "SharedCheckpoint", "Source", "envelope", "parse_source", "unit_of", "unwrap",
    "wrap",
]

Source = tuple[int, int]  # (topic index, partition)

#: Header on a re-keyed record: where it was first read ("<topic index>:<partition>:<offset>").
SOURCE_HEADER: Final = "custos.source"

# 0xc1 is the one byte msgpack never uses: a core state (a msgpack array) cannot start with it.
_MAGIC: Final = b"\xc1"
_M: Final = _MAGIC[0]
_ENTRY: Final = struct.Struct("<BHQ")
_MAX_ENTRIES: Final = 255
#: The entry that holds the writing unit's number (no topic index reaches 255).
_UNIT: Final[Source] = (255, 65535)


def wrap(core: bytes, applied: dict[Source, int], unit: int = 0) -> bytes:
    """The table value: ``core`` state behind the offsets it includes (and the number of the
    unit of work that wrote it, if any)."""
    if unit and len(applied) < _MAX_ENTRIES and _UNIT not in applied:
        # The worker's write (nearly one per event): the unit's entry sorts last, so it is
        # packed after the sorted offsets without building a merged dict; an identity read
        # from one or two sources (nearly all) is packed without a list either.
        n = len(applied)
        # One concatenation (the magic byte is packed with the header): the core is copied once.
        if n == 1:
            ((t, p), o), = applied.items()
            return _ONE.pack(_M, 2, t, p, o, 255, 65535, unit) + core  # (255, 65535): _UNIT
        if n == 2:
            ((t, p), o), ((t2, p2), o2) = sorted(applied.items())
            return _TWO.pack(_M, 3, t, p, o, t2, p2, o2, 255, 65535, unit) + core
        flat: list[int] = []
        for (t, p), o in sorted(applied.items()):
            flat += (t, p, o)
        return _MAGIC + _head(n + 1).pack(n + 1, *flat, *_UNIT, unit) + core
    if unit:
        applied = {**applied, _UNIT: unit}
    if not applied:
        return core
    items = sorted(applied.items())[-_MAX_ENTRIES:]
    flat = []
    for (t, p), o in items:
        flat += (t, p, o)
    return _MAGIC + _head(len(items)).pack(len(items), *flat) + core


@functools.cache
def _head(n: int) -> struct.Struct:
    """The entry count and ``n`` entries (one pack call per write, not one per entry)."""
    return struct.Struct("<B" + _ENTRY.format[1:] * n)


# _MAGIC, the entry count, then one source and the unit's entry / two sources and the unit's.
_ONE: Final = struct.Struct("<B" + _head(2).format[1:])
_TWO: Final = struct.Struct("<B" + _head(3).format[1:])


def _entries(value: bytes) -> tuple[int, dict[Source, int]]:
    if not value.startswith(_MAGIC) or len(value) < 2:
        return 0, {}
    end = 2 + value[1] * _ENTRY.size
    if len(value) < end:  # damaged: refused as before (iter_unpack alone could read it short)
        raise struct.error(f"a table value's header needs {end} bytes, it has {len(value)}")
    # One iter_unpack over the header: half the cost of an unpack_from per entry, and it runs
    # for the state of every event's identity.
    return end, {(t, p): o for t, p, o in _ENTRY.iter_unpack(value[2:end])}


def envelope(value: bytes) -> tuple[int, dict[Source, int]]:
    """Where a table value's core state starts, and the offsets applied (without slicing the
    core out: a caller that only needs the offsets does not copy it)."""
    end, applied = _entries(value)
    applied.pop(_UNIT, None)
    return end, applied


def unwrap(value: bytes) -> tuple[bytes, dict[Source, int]]:
    """(core state, offsets applied) of a table value."""
    end, applied = envelope(value)
    return value[end:], applied


def unit_of(value: bytes) -> int:
    """The number of the unit of work that wrote a table value (0: not recorded)."""
    return _entries(value)[1].get(_UNIT, 0)


def parse_source(header: bytes | None) -> tuple[Source, int] | None:
    """The ``custos.source`` header of a re-keyed record, or None."""
    if not header:
        return None
    try:
        t, p, o = (int(x) for x in header.decode("ascii").split(":"))
    except ValueError:
        return None
    if not (0 <= t < 256 and 0 <= p < 65536 and o >= 0):
        return None
    return (t, p), o


class SharedCheckpoint:
    """The shared models' bytes with the input offsets they include, saved atomically.

    A snapshot is taken after every unit of work, but serialised only when saved (every
    commit, a few seconds apart): serialising the peer groups, detector and calibrators took
    about 2.5 % of a worker with an identity directory (its many peer groups) when done per
    unit. Units of work and saves run one at a time (the units' lock), so the models
    serialised at a save are exactly those the latest snapshot's offsets describe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blob: bytes | None = None  # the shared models as last serialised (or loaded)
        self.offsets: dict[Source, int] = {}
        self._serialise: Callable[[], bytes] | None = None  # pending: the models changed
        self._saved: bytes | None = None

    def snapshot(self, offsets: dict[Source, int], shared: Callable[[], bytes] | None) -> None:
        """The offsets the shared models now include. ``shared`` serialises the models, called
        at the next :meth:`save` (not now); None: they did not change since the last one."""
        if shared is not None:
            self._serialise = shared
        self.offsets = dict(offsets)

    def holds(self) -> bool:
        """Whether a snapshot (serialised or pending) or a loaded checkpoint is held."""
        return self.blob is not None or self._serialise is not None

    def current(self) -> bytes | None:
        """The latest snapshot's bytes, serialised now if pending."""
        if self._serialise is not None:
            self.blob, self._serialise = self._serialise(), None
        return self.blob

    def save(self) -> bool:
        """Write the latest snapshot (fsync, then rename); False when nothing changed."""
        # The hot loop saves from a thread, holding the units' lock: no snapshot() meanwhile.
        blob, offsets = self.current(), self.offsets
        if blob is None:
            return False
        data = msgspec.msgpack.encode(
            {"shared": blob, "offsets": [[t, p, o] for (t, p), o in offsets.items()]}
        )
        if data == self._saved:
            return False
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        self._saved = data
        return True

    def load(self) -> tuple[bytes, dict[Source, int]] | None:
        """(shared bytes, offsets) of the saved checkpoint, or None."""
        if not self.path.exists():
            return None
        try:
            d = msgspec.msgpack.decode(self.path.read_bytes())
            blob = d["shared"]
            offsets = {(int(t), int(p)): int(o) for t, p, o in d["offsets"]}
        except (ValueError, TypeError, KeyError, msgspec.DecodeError):
            return None
        if not isinstance(blob, bytes):
            return None
        self.blob, self.offsets, self._serialise = blob, offsets, None
        return blob, offsets
