"""Duplicate object keys in JSON: refused, because parsers disagree on which value counts.

RFC 8259 leaves duplicate names undefined: msgspec (and Custos before this) keeps the last
value, other parsers the first. ``{"actor": {"user": {"uid": "agt-1", "uid": "agt-2"}}}`` is one
identity to Custos and another to the SIEM that stored it, so an event with a repeated key
is dead-lettered instead.

:func:`has_duplicate_keys` runs on every event, after the JSON is known to be valid: a compiled
scan (numba) hashes each key of each object and compares it with the object's other keys,
about a microsecond for an ordinary event. Anything it cannot settle cheaply - two keys with the
same hash, a key with escapes (``"uid"`` and ``"\\u0075id"`` are the same name), more than
:data:`MAX_FAST_KEYS` keys open at once, nesting beyond :data:`MAX_FAST_DEPTH` - goes to an
exact check with the standard library's parser.

>>> has_duplicate_keys(b'{"a": 1, "b": {"a": 2}}')
False
>>> has_duplicate_keys(b'{"a": 1, "b": 2, "a": 3}')
True
>>> has_duplicate_keys(b'{"uid": 1, "\\\\u0075id": 2}')
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, Final

import numpy as np
from numba import njit

__all__ = [
    "MAX_FAST_DEPTH", "MAX_FAST_KEYS", "clean_keys", "duplicate_key", "has_duplicate_keys"
]  # fmt: skip

MAX_FAST_DEPTH: Final = 64
MAX_FAST_KEYS: Final = 512

_CLEAN: Final = 0  # no object repeats a key
_UNSURE: Final = 2  # the exact check decides


@njit(cache=True, nogil=True, inline="always")
def _scan_range(
    buf: bytes, i: int, n: int, is_object: Any, first_key: Any, keys: Any
) -> int:  # pragma: no cover - compiled
    # One document, buf[i:n]. The bytes object itself, not an array over it (np.frombuffer
    # costs ~0.5 us an event). The scratch arrays are the caller's: every slot used is written
    # before it is read, so one set serves a whole batch.
    n_keys = 0
    depth = 0
    key_next = False  # the next string is an object key
    while i < n:
        c = buf[i]
        if c == 34 and not key_next:  # a string value: only its end matters
            j = i + 1
            while j < n:
                d = buf[j]
                if d == 92:  # backslash: the next byte is escaped
                    j += 2
                    continue
                if d == 34:
                    break
                j += 1
            i = j + 1
            continue
        if c == 34:  # a key: hash it (FNV-1a) and find its end
            h = np.uint64(14695981039346656037)
            escaped = False
            j = i + 1
            while j < n:
                d = buf[j]
                if d == 92:  # backslash: the next byte is escaped
                    escaped = True
                    j += 2
                    continue
                if d == 34:
                    break
                h = (h ^ np.uint64(d)) * np.uint64(1099511628211)
                j += 1
            if key_next:
                if escaped:
                    return 2
                for k in range(first_key[depth - 1], n_keys):
                    if keys[k] == h:
                        return 2  # very likely a duplicate; a hash collision is possible
                if n_keys >= MAX_FAST_KEYS:
                    return 2
                keys[n_keys] = h
                n_keys += 1
                key_next = False
            i = j + 1
            continue
        if c == 123 or c == 91:  # { or [
            if depth >= MAX_FAST_DEPTH:
                return 2
            is_object[depth] = c == 123
            first_key[depth] = n_keys
            depth += 1
            key_next = c == 123
        elif c == 125 or c == 93:  # } or ]
            depth -= 1
            if depth < 0:
                return 2
            n_keys = first_key[depth]
            key_next = False
        elif c == 44:  # , : in an object, a key follows
            key_next = depth > 0 and is_object[depth - 1]
        i += 1
    return 0


@njit(cache=True, nogil=True)
def _scan(buf: bytes) -> int:  # pragma: no cover - compiled
    is_object = np.empty(MAX_FAST_DEPTH, np.bool_)
    first_key = np.empty(MAX_FAST_DEPTH, np.int64)  # index into keys of the object's first key
    keys = np.empty(MAX_FAST_KEYS, np.uint64)
    return _scan_range(buf, 0, len(buf), is_object, first_key, keys)


@njit(cache=True, nogil=True)
def _scan_many(buf: bytes, ends: Any) -> Any:  # pragma: no cover - compiled
    # Documents laid end to end in buf, the k-th ending at ends[k]: _scan of each, one call.
    is_object = np.empty(MAX_FAST_DEPTH, np.bool_)
    first_key = np.empty(MAX_FAST_DEPTH, np.int64)
    keys = np.empty(MAX_FAST_KEYS, np.uint64)
    out = np.empty(len(ends), np.int8)
    start = 0
    for k in range(len(ends)):
        end = ends[k]
        out[k] = _scan_range(buf, start, end, is_object, first_key, keys)
        start = end
    return out


def clean_keys(values: Sequence[bytes]) -> list[bool]:
    """For each value, whether it is known to repeat no key (:func:`duplicate_key` would say
    None); False means only that :func:`duplicate_key` has to decide. One compiled call for the
    lot: calling the scan once per value costs ~0.4 us of dispatch each.

    >>> clean_keys([b'{"a": 1}', b'{"a": 1, "a": 2}', b'{"a": {"a": 2}}', b""])
    [True, False, True, True]
    """
    if not values:
        return []
    ends = np.fromiter(accumulate(map(len, values)), np.int64, len(values))
    return [status == _CLEAN for status in _scan_many(b"".join(values), ends).tolist()]


class _Duplicate(ValueError):
    pass


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(items)
    if len(out) != len(items):
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return out


def duplicate_key(data: bytes) -> str | None:
    """The first repeated key of ``data`` (valid JSON), or None.

    >>> duplicate_key(b'{"class_uid": 3002, "class_uid": 6003}')
    'class_uid'
    """
    if _scan(data) == _CLEAN:
        return None
    try:
        json.loads(data, object_pairs_hook=_pairs)
    except _Duplicate as exc:
        return str(exc)
    except (ValueError, RecursionError):  # what msgspec accepted and json does not: undecidable
        return "(undecidable: the standard parser refused the document)"
    return None


def has_duplicate_keys(data: bytes) -> bool:
    return duplicate_key(data) is not None
