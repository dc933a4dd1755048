"""Seeds and hashes: every random choice the simulator makes flows from one integer seed.

Two kinds of randomness are used, for two reasons:

* **Habits** (an identity's favourite tools, resources, IP host) must be *stable* over time but
  must not be stored per identity (a million identities times dozens of favourites would not fit).
  They are recomputed on demand with a keyed, vectorised hash (:func:`hash64`): the same
  (seed, identity, slot) always gives the same favourite.
* **Occurrences** (how many events this minute, which favourite this time) come from a numpy
  :class:`~numpy.random.Generator` per time slice (:func:`rng_for`), so slices are independent
  and the whole run is reproducible.

>>> int(hash64(7, 1, 2)[0]) == int(hash64(7, 1, 2)[0])
True
>>> uuid_strings(np.arange(2), key=7)[0] != uuid_strings(np.arange(2), key=7)[1]
True
>>> zipf_rank(np.array([0.0, 0.999]), np.array([5, 5])).tolist()
[0, 4]
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Array",
    "hash64",
    "hex_ids",
    "mix64",
    "rng_for",
    "unit",
    "uuid_strings",
    "zipf_rank",
]

#: Any numpy array. Dtypes are documented where arrays are declared; numpy's typing of mixed
#: integer arithmetic is too imprecise to be worth spelling out everywhere.
Array = NDArray[Any]

_U64: Final = np.uint64
_MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15
_M1: Final = 0xBF58476D1CE4E5B9
_M2: Final = 0x94D049BB133111EB


def mix64(x: Array) -> Array:
    """SplitMix64's finaliser on a ``uint64`` array: a bijection, so distinct inputs never collide.

    numpy wraps unsigned overflow silently for arrays, which is exactly the modular arithmetic
    the finaliser needs.
    """
    z = np.atleast_1d(x) + _U64(_GOLDEN)  # arrays, not scalars: scalar overflow would warn
    z = (z ^ (z >> _U64(30))) * _U64(_M1)
    z = (z ^ (z >> _U64(27))) * _U64(_M2)
    result: Array = z ^ (z >> _U64(31))
    return result


def _u64(part: ArrayLike) -> Array:
    if isinstance(part, int):
        return np.array([part & _MASK64], dtype=_U64)
    arr = np.asarray(part)
    if arr.dtype == _U64:
        return arr
    if arr.dtype.kind in "iu":
        return arr.astype(_U64)  # negative ints wrap: fine for hashing
    if arr.dtype == object or arr.dtype.kind == "O":  # python ints beyond int64
        return np.asarray([int(v) & _MASK64 for v in arr.ravel()], dtype=_U64).reshape(arr.shape)
    raise TypeError(f"cannot hash dtype {arr.dtype}")


def hash64(*parts: ArrayLike) -> Array:
    """Keyed hash of broadcastable integer arrays (or ints) into a ``uint64`` array."""
    h = np.full(1, 0x243F6A8885A308D3, dtype=_U64)
    for part in parts:
        h = mix64(h ^ np.atleast_1d(_u64(part)))
    return h


def unit(h: Array) -> Array:
    """Map ``uint64`` hashes to floats uniformly distributed in [0, 1)."""
    return (h >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def zipf_rank(u: Array, n: ArrayLike, skew: float = 1.0) -> Array:
    """A long-tailed rank in ``[0, n)`` from uniforms ``u``: P(rank k) ≈ 1/(k+1), Zipf-like.

    Closed-form inverse of a log-uniform distribution, so it vectorises with a different ``n``
    per element. ``skew`` > 1 concentrates mass on the first ranks.
    """
    size = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    uu = np.power(u, skew) if skew != 1.0 else u
    rank = np.floor(np.power(size + 1.0, uu)).astype(np.int64) - 1
    return np.clip(rank, 0, size.astype(np.int64) - 1)


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator for one stream (e.g. one time slice) of one seeded run."""
    entropy = [seed & _MASK64, *(s & _MASK64 for s in stream)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint32)


def _hex_digits(x: Array, digits: int) -> Array:
    """``(n, digits)`` array of the code points of ``x``'s lower-case hex digits."""
    shifts = (np.arange(digits - 1, -1, -1, dtype=np.uint64) * _U64(4))[None, :]
    out: Array = _HEX[((x[:, None] >> shifts) & _U64(0xF)).astype(np.intp)]
    return out


def _to_strings(chars: Array) -> list[str]:
    """Rows of code points → Python strings, in C (no per-event formatting in Python)."""
    chars = np.ascontiguousarray(chars, dtype=np.uint32)
    strings: list[str] = chars.view(f"<U{chars.shape[1]}").ravel().tolist()
    return strings


def uuid_strings(counter: ArrayLike, key: int) -> list[str]:
    """Deterministic, unique UUID-v4-shaped strings for distinct ``counter`` values.

    The low 64 bits are ``mix64(counter ^ key)`` - a bijection of the counter - spread over the
    first four groups in full, so two distinct counters can never give the same string.
    """
    lo = mix64(np.atleast_1d(_u64(counter)) ^ _U64(key & _MASK64))
    hi = mix64(lo ^ _U64((key * 31 + 17) & _MASK64))
    # xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx: 60 bits of lo in the first 15 digits, 4 bits of lo
    # plus 10 of hi (with the variant bits) in group 4, 48 bits of hi in group 5.
    head = (lo & ~_U64(0xFFFF)) | _U64(0x4000) | (lo & _U64(0xFFF))
    g4 = _U64(0x8000) | (((lo >> _U64(12)) & _U64(0xF)) << _U64(10)) | (hi & _U64(0x3FF))
    tail = (g4 << _U64(48)) | (hi >> _U64(16))
    a = _hex_digits(head, 16)
    b = _hex_digits(tail, 16)
    chars = np.empty((len(lo), 36), dtype=np.uint32)
    chars[:, 0:8] = a[:, 0:8]
    chars[:, 9:13] = a[:, 8:12]
    chars[:, 14:18] = a[:, 12:16]
    chars[:, 19:23] = b[:, 0:4]
    chars[:, 24:36] = b[:, 4:16]
    chars[:, [8, 13, 18, 23]] = ord("-")
    return _to_strings(chars)


def hex_ids(h: ArrayLike, prefix: str | list[str] | Array) -> list[str]:
    """``prefix`` + 16 hex digits per hash (credential, session ids).

    ``prefix`` may differ per row (an array of equal-length strings).
    """
    hh = np.atleast_1d(_u64(h))
    pre = np.asarray(prefix)
    width = len(str(pre.flat[0])) if pre.size else 0
    chars = np.empty((len(hh), width + 16), dtype=np.uint32)
    if width:
        codes = np.atleast_1d(np.asarray(pre, dtype=f"<U{width}")).view(np.uint32)
        codes = codes.reshape(-1, width)
        chars[:, :width] = codes
    chars[:, width:] = _hex_digits(hh, 16)
    return _to_strings(chars)
