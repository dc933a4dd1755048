"""A baseline state as bytes: the versioned little-endian layout of :class:`~.layout.BaselineState`.

:class:`Codec` is the serialisation piece of :class:`~pipeline.baselines.baselines.BaselineModel`
(``to_bytes`` / ``from_bytes``). Decoding distrusts its input: whatever decodes can be scored,
learned and written back without overflow, and anything else raises :class:`StateFormatError`.
"""

from __future__ import annotations

import struct
import threading
from typing import Final

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.features import CATEGORICAL_INDEX, FEATURE_SCHEMA_VERSION
from pipeline.baselines.layout import (
    _CP_WORDS,
    _I_NAME,
    _N_AGG,
    _N_BUCKETS,
    _N_CAT,
    _N_GROUPS,
    _N_NUM,
    _N_RANKS,
    _NAME_BYTES,
    _ST_WORDS,
    BaselineState,
    StoredNames,
)
from pipeline.errors import CustosError

__all__ = [
    "PACKED_VERSION",
    "SHED_ORDER",
    "STATE_VERSION",
    "Codec",
    "StateFormatError",
    "max_state_bytes",
    "shed_names",
]

#: Layout version of :meth:`BaselineModel.to_bytes` (its first byte; the second byte is the
#: feature schema version the state was learned on).
STATE_VERSION: Final = kernel.STATE_VERSION
#: First byte of the stored form: the :data:`STATE_VERSION` layout up to its names with the
#: zero bytes elided (:func:`~.kernel.pack_zeros`; a u16 of that part's plain length before
#: it), then the names as they are. ``to_bytes`` writes it whenever it is shorter (nearly
#: always: it saves about 40 % of the bytes); both forms decode.
PACKED_VERSION: Final = kernel.PACKED_VERSION

_NO_NAME: Final = 0xFF
_DECODE_ERRORS: Final = {
    kernel.TRUNCATED: "baseline state truncated",
    kernel.BAD_TIMES: "implausible baseline state times",
    kernel.BAD_AGGREGATES: "implausible baseline aggregates",
    kernel.UNPACK_NOT_CANONICAL: "baseline state not in canonical packed form",
}

_HEAD: Final = struct.Struct(
    "<BBBIHHqq"  # versions, K, n, recent, since_halve, first / last ms
    f"{_N_GROUPS}fffffHH"  # EW weights, rate counter / mean / var / weight, MFA counts
    f"{2 * _N_NUM}f"  # means, variances
    f"{_N_BUCKETS}H{_N_RANKS}H{_N_CAT}H{_N_CAT}H"  # hours, sensitivity ranks, present, novel
    f"{_N_CAT}B{_N_CAT}B"  # slots used, index of the named slot
    f"IQIQiBII{_N_AGG}f{_CP_WORDS + _ST_WORDS}Q"  # two tasks (key, resource sketch), hour key,
    # taint bits, the two tasks' last operations, aggregates, counterparty and step filters
)


def _stored_names(texts: tuple[str | None, ...]) -> StoredNames:
    """:attr:`~.layout.BaselineState.stored_names` of these name texts (them, a bit per
    feature, and its length byte and UTF-8, cut at :data:`_NAME_BYTES`). A feature without a
    text gets an empty one: the encoder stores it only when the feature has a named slot,
    which then survives decoding (:func:`shed_names`; the slot decides what is usual)."""
    chunks = _CHUNKS
    raw = b"".join([chunks.get(text) or _chunk(text) for text in texts])
    return texts, (1 << len(texts)) - 1, np.frombuffer(raw, np.uint8)


# The stored form of each name text seen (its length byte and UTF-8): the same names recur
# across identities and batches, and a state's names change about every other write, when
# encoding them one by one cost more than encoding the rest of the state. Bounded: cleared
# when full (a name's form is the same whenever it is made again).
_CHUNKS: Final[dict[str | None, bytes]] = {None: b"\x00"}
_CHUNKS_MAX: Final = 1 << 16


def _chunk(text: str | None) -> bytes:
    b = text.encode()[:_NAME_BYTES] if text is not None else b""
    if len(_CHUNKS) >= _CHUNKS_MAX:
        _CHUNKS.clear()
        _CHUNKS[None] = b"\x00"
    chunk = _CHUNKS[text] = bytes((len(b),)) + b
    return chunk


#: The order :func:`shed_names` forgets names in: those that say least in an explanation
#: first (a combination of values, a shortened digest, address or resource), the country and
#: service an identity usually works from and with last.
SHED_ORDER: Final[tuple[int, ...]] = tuple(CATEGORICAL_INDEX[n] for n in (
    "combo", "model", "ip_prefix", "resource", "counterparty", "auth_protocol", "environment",
    "delegator", "asn", "operation", "service", "country"))  # fmt: skip


def shed_names(state: BaselineState, nbytes: int) -> int:
    """Forget the names of ``state``'s most used values in :data:`SHED_ORDER` until their
    text makes up ``nbytes`` (or none is left); returns how many it forgot.

    Only the text goes: the named slot (which value is usual, read by scoring) stays, and is
    stored with an empty name, so scores, learning and the stored state's other bytes do not
    change. Explanations then say "usual value unknown" / leave out "most used" until the most
    used value changes and is named again. Deterministic: same state, same names forgotten.

    >>> from pipeline.baselines.baselines import BaselineModel
    >>> from pipeline.baselines.features import extract
    >>> from pipeline.events.schemas import Event
    >>> m = BaselineModel()
    >>> s = m.new_state()
    >>> m.learn_one(s, extract(Event(uid="e", class_uid=3002, activity_id=1, time_ms=0,
    ...                              identity_uid="a", identity_kind="human", country="DE",
    ...                              service="crm")))
    >>> before = m.to_bytes(s)
    >>> shed_names(s, 1), s.name_text[0], s.name_text[3]
    (1, 'DE', None)
    >>> len(m.to_bytes(s)) == len(before) - 3, int(m.from_bytes(m.to_bytes(s)).name_slot[3])
    (True, 18)
    """
    texts, slots = state.name_text, state.name_slot
    shed = freed = 0
    for c in SHED_ORDER:
        if freed >= nbytes:
            break
        text = texts[c]
        if text is None or slots[c] < 0:
            continue  # no name stored: nothing to free
        texts[c] = None
        freed += len(text.encode()[:_NAME_BYTES])
        shed += 1
    return shed


class _Scratch(threading.local):
    """The codec's work buffers, per thread: allocating them took longer than encoding a
    state. ``by_slots``: the encoder's per ``len(slot_hash)`` (its two rows, plain layout and
    stored form, and a view of the stored form); ``raw``, ``names``: the decoder's
    (:func:`~.kernel.decode_stored`)."""

    def __init__(self) -> None:
        self.by_slots: dict[int, tuple[np.ndarray, memoryview]] = {}
        self.raw = np.empty(0x10000 + 4096, dtype=np.uint8)
        self.names = np.empty(_N_CAT, dtype=np.int64)

    def raw_for(self, data: bytes) -> np.ndarray:
        """``raw``, long enough for ``data`` unpacked (a plain length is a u16) and its names."""
        if len(self.raw) < 0x10000 + len(data):
            self.raw = np.empty(0x10000 + len(data), dtype=np.uint8)
        return self.raw

    def make(self, slots: int) -> tuple[np.ndarray, memoryview]:
        plain = _HEAD.size + 8 * slots
        rows = np.empty((2, kernel.PACKED_HEAD + plain + plain // 8 + 1
                         + _N_CAT * (1 + _NAME_BYTES)), dtype=np.uint8)  # fmt: skip
        self.by_slots[slots] = got = (rows, rows[1].data)
        return got


_SCRATCH: Final = _Scratch()


def _failure(code: int, data: bytes) -> str:
    """Why :func:`~.kernel.decode_stored` refused ``data`` (its error ``code``)."""
    if code == kernel.SHORT_PACKED:
        size = int.from_bytes(data[2:4], "little")
        return f"packed baseline state of {size} B: shorter than its header"
    if code == kernel.BAD_SCHEMA:
        return f"baseline learned on feature schema {data[1]}, expected {FEATURE_SCHEMA_VERSION}"
    return _DECODE_ERRORS[code]


def _read_names(s: BaselineState, indices: list[int], tail: bytes) -> None:
    """Set ``s``'s names from ``tail`` (``indices``: the named slot per feature in the data,
    :data:`_NO_NAME` for none) and, when they are stored as :meth:`Codec.to_bytes` would store
    them (none cut, none of a dropped slot), keep their bytes as ``s.stored_names``."""
    named = 0
    as_written = True
    try:
        at = 0
        kept = s.iv[_I_NAME : _I_NAME + _N_CAT].tolist()
        for c, idx in enumerate(indices):
            if idx == _NO_NAME:
                continue
            size = tail[at]
            text = tail[at + 1 : at + 1 + size].decode()
            at += 1 + size
            if kept[c] >= 0:
                s.name_text[c] = text or None  # empty: the slot is named, its text shed
                named |= 1 << c
            as_written = as_written and kept[c] >= 0 and size <= _NAME_BYTES
    except (IndexError, UnicodeDecodeError) as exc:
        raise StateFormatError(f"corrupt baseline state: {exc}") from None
    if at != len(tail):
        raise StateFormatError(f"baseline state has {len(tail) - at} trailing bytes")
    if as_written:  # spares the next to_bytes encoding them again
        s.stored_names = (tuple(s.name_text), named, np.frombuffer(tail, np.uint8))


class StateFormatError(CustosError, ValueError):
    """Bytes that are not a baseline state this code can read (version, truncation)."""


def max_state_bytes(cat_slots: int) -> int:
    """Upper bound of ``len(to_bytes(state))`` for a model with ``cat_slots`` (every slot
    used, every name at its longest).

    >>> max_state_bytes(6)
    1234
    """
    return _HEAD.size + _N_CAT * (8 * cat_slots + 1 + _NAME_BYTES)


class Codec:
    """``to_bytes`` / ``from_bytes`` of a baseline model; reads only the attributes below."""

    __slots__ = ()
    cat_slots: int
    half_life_events: int

    def to_bytes(self, state: BaselineState, *, pack: bool = True) -> bytes:
        """Compact, versioned binary form (≤ :attr:`max_bytes`: 1,234 B with the defaults).

        Layout (little-endian): a fixed header (versions, counters, float32 means /
        variances, the count vectors, slots used and named slot per feature), then the used
        slots of all features: hashes (u32), counts (u16), age in hours before ``last_ms``
        (u16), then the names (u8 length + UTF-8). Counts are exact and floats float32, so
        re-encoding a decoded state gives the same bytes.

        Stored zero-elided (:data:`PACKED_VERSION`) when that is shorter; ``pack=False``
        gives the plain layout (:data:`STATE_VERSION`).

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> m = BaselineModel()
        >>> b = m.to_bytes(m.new_state())
        >>> b[0] == PACKED_VERSION, m.to_bytes(m.from_bytes(b)) == b, len(b)
        (True, True, 80)
        >>> plain = m.to_bytes(m.new_state(), pack=False)
        >>> plain[0] == STATE_VERSION, len(plain), m.to_bytes(m.from_bytes(plain)) == b
        (True, 502, True)
        """
        names = state.stored_names
        texts = tuple(state.name_text)
        if names is None or names[0] != texts:
            names = state.stored_names = _stored_names(texts)
        slots = state.slot_hash  # the kernel reads the state's cat_slots from its length
        rows, view = _SCRATCH.by_slots.get(len(slots)) or _SCRATCH.make(len(slots))
        n = kernel.encode_stored(state.fv, state.iv, slots, state.slot_count,
                                 state.slot_hour, names[1] if pack else names[1] | kernel.PLAIN,
                                 names[2], rows)  # fmt: skip
        return view[:n].tobytes()

    def _cap(self) -> int:
        """Largest count a valid state can hold (see ``_MAX_HALF_LIFE``)."""
        return 3 * self.half_life_events

    def from_bytes(self, data: bytes) -> BaselineState:
        """Inverse of :meth:`to_bytes`; raises :class:`StateFormatError` on foreign bytes.

        A state written with more ``cat_slots`` keeps its most used values.

        >>> from pipeline.baselines.baselines import BaselineModel
        >>> BaselineModel().from_bytes(b"\\x09")
        Traceback (most recent call last):
        ...
        pipeline.baselines.codec.StateFormatError: baseline state version 9, expected 3 or 4
        """
        if not data or data[0] not in (STATE_VERSION, PACKED_VERSION):
            raise StateFormatError(f"baseline state version {data[0] if data else None}, "
                                   f"expected {STATE_VERSION} or {PACKED_VERSION}")  # fmt: skip
        k = self.cat_slots
        s = BaselineState(k)
        scratch = _SCRATCH
        names = scratch.names
        off, n, top = kernel.decode_stored(
            np.frombuffer(data, np.uint8), k, s.fv, s.iv, s.slot_hash, s.slot_count,
            s.slot_hour, names, scratch.raw_for(data), STATE_VERSION, PACKED_VERSION,
            FEATURE_SCHEMA_VERSION, _HEAD.size)  # fmt: skip
        if off < 0:
            raise StateFormatError(_failure(off, data))
        # The names follow the groups: in data, or a packed state's in the scratch buffer.
        tail = data[off:] if data[0] == STATE_VERSION else scratch.raw[off:n].tobytes()
        _read_names(s, names.tolist(), tail)
        # Reject values no model could have learned; decay counts into this model's range:
        # whatever decodes can then be scored, learned and written back without overflow.
        if top < 0:
            raise StateFormatError("implausible baseline state values")
        cap = self._cap()
        if top > cap:
            # Not written by a model with this half-life: decay into range, so that learning
            # can never overflow a u16 count.
            np.minimum(s.slot_count, cap, out=s.slot_count)
            while max(s.recent, s.mfa_known, s.mfa_no, *s.hours, *s.sens, *s.present) > cap:
                kernel.halve(s.iv, s.slot_count)
            s.novel = [min(cap, v) for v in s.novel]
            s.since_halve = 0
        return s
