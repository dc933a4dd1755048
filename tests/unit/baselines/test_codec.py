"""Unit tests for a baseline state as bytes (pipeline.baselines.codec)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.codec import (
    PACKED_VERSION,
    SHED_ORDER,
    STATE_VERSION,
    StateFormatError,
    shed_names,
)
from pipeline.baselines.features import CATEGORICAL, extract
from pipeline.events.schemas import Resource
from tests.unit.baselines.test_baselines import (
    DAY,
    HOUR,
    MB,
    MONDAY,
    ev,
    learned,
    office_worker,
)

# --- serialisation ----------------------------------------------------------------------------


def test_round_trip_is_exact_after_the_first_encoding() -> None:
    m, s, _ = learned(office_worker(weeks=2))
    blob = m.to_bytes(s)
    assert blob[0] == PACKED_VERSION
    back = m.from_bytes(blob)
    assert m.to_bytes(back) == blob
    f = extract(ev(MONDAY + 30 * DAY + 3 * HOUR, 1, country="BR", bytes_out=20 * MB))
    d1, w1 = m.deviations(s, f)
    d2, w2 = m.deviations(back, f)
    assert d2 == pytest.approx(d1, abs=1e-4)
    assert [c.text for c in w1] == [c.text for c in w2]


def test_size_stays_under_1kb_with_many_distinct_long_values() -> None:
    m = BaselineModel()
    s = m.new_state()
    rng = random.Random(5)
    for k in range(5000):
        f = extract(
            ev(
                MONDAY + k * 37_000,
                k,
                country=rng.choice(["DE", "FR", "BR", "JP", "US", "IN", "CN", "ZA"]),
                asn=rng.randrange(2**32),
                src_ip=f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.1",
                service="ü" * rng.randrange(1, 100),
                operation=f"op-{k}-" + "x" * 200,
                resources=(Resource(f"s3://bucket/{'é' * 50}/{k}", "o", rng.choice([1, 3])),),
                delegated_by=f"user-{k}" * 10,
                model=None,
                environment=f"env-{k % 50}",
                auth_protocol=f"proto-{k % 9}",
                class_uid=rng.choice([3002, 6003]),
                is_mfa=rng.random() < 0.5,
            )
        )
        m.learn_one(s, f)
    size = len(m.to_bytes(s, pack=False))
    assert len(m.to_bytes(s)) < size  # stored zero-elided: never longer
    # 12 categorical features (counterparty, combo), task / hour / drift aggregates and the
    # counterparty and step filters: the worst case grew past 1 KB; typical identities fill far
    # fewer slots.
    assert size <= m.max_bytes <= 1234
    assert size > 700  # the bound is meaningful: this state is nearly full
    assert m.to_bytes(m.from_bytes(m.to_bytes(s))) == m.to_bytes(s)


def test_the_packed_form_is_lossless_shorter_and_reads_the_plain_one() -> None:
    m, s, _ = learned(office_worker(weeks=2))
    plain, packed = m.to_bytes(s, pack=False), m.to_bytes(s)
    assert plain[0] == STATE_VERSION and packed[0] == PACKED_VERSION
    assert len(packed) < 0.8 * len(plain)  # about half an encoded state is zero bytes
    # A state stored before packing existed reads as the same state, and is written packed.
    assert m.to_bytes(m.from_bytes(plain)) == packed
    assert m.to_bytes(m.from_bytes(packed), pack=False) == plain


def test_hostile_packed_bytes_raise_state_format_error_not_crash() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    blob = m.to_bytes(s)
    size = int.from_bytes(blob[2:4], "little")
    cases = {
        "truncated": blob[:3],
        "shorter than its header": blob[:2] + (10).to_bytes(2, "little") + blob[4:],
        "trailing": blob + b"\x01",
    }
    for match, data in cases.items():
        with pytest.raises(StateFormatError, match=match):
            m.from_bytes(data)
    # A stored zero (a second spelling of the same state) and a mask bit past the end are
    # refused: one state, one byte string, so re-encoding never changes stored bytes.
    mask = blob[4]
    j = next(b for b in range(8) if not mask >> b & 1)  # a zero byte of the first group
    at = 5 + bin(mask & ((1 << j) - 1)).count("1")
    spelled = blob[:4] + bytes((mask | 1 << j,)) + blob[5:at] + b"\x00" + blob[at:]
    with pytest.raises(StateFormatError, match="canonical"):
        m.from_bytes(spelled)
    last_mask_gap = bytes(blob[:2]) + (size - 1).to_bytes(2, "little") + blob[4:]
    with pytest.raises(StateFormatError):
        m.from_bytes(last_mask_gap)
    rng = random.Random(11)
    for _ in range(300):  # random damage: an error or a state, never anything else
        data = bytearray(blob)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(1, len(data))] = rng.randrange(256)
        try:
            m.from_bytes(bytes(data))
        except StateFormatError:
            pass


def test_foreign_bytes_raise_state_format_error() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    blob = m.to_bytes(s)
    with pytest.raises(StateFormatError, match="version"):
        m.from_bytes(b"")
    with pytest.raises(StateFormatError, match="version 1"):  # the layout before steps
        m.from_bytes(bytes([1]) + blob[1:])
    with pytest.raises(StateFormatError, match="feature schema"):
        m.from_bytes(blob[:1] + bytes([99]) + blob[2:])
    with pytest.raises(StateFormatError):
        m.from_bytes(blob[:-3])
    with pytest.raises(StateFormatError, match="trailing"):
        m.from_bytes(blob + b"\x00")
    plain = m.to_bytes(s, pack=False)
    with pytest.raises(StateFormatError, match="trailing"):
        m.from_bytes(plain + b"\x00")
    assert isinstance(StateFormatError("x"), ValueError)


def test_a_state_with_more_slots_keeps_its_most_used_values() -> None:
    big = BaselineModel(cat_slots=16)
    small = BaselineModel(cat_slots=4)
    events = [ev(MONDAY + k * 60_000, k, operation=f"op{k % 10}") for k in range(100)]
    events += [ev(MONDAY + (100 + k) * 60_000, 100 + k, operation="op3") for k in range(50)]
    _, s, _ = learned(events, big)
    s4 = small.from_bytes(big.to_bytes(s))
    values = small.known_values(s4, "operation")
    assert len(values) == 4
    assert values[0][1] == 60  # op3: 10 + 50
    assert s4.name_text[CATEGORICAL.index("operation")] == "op3"


def test_names_changed_after_an_encoding_are_stored() -> None:
    m, s, _ = learned(office_worker(weeks=1))
    back = m.from_bytes(m.to_bytes(s))  # keeps its names' stored bytes (stored_names)
    c = next(i for i, t in enumerate(back.name_text) if t)
    for text in ("x" * 20, "DE", None):
        back.name_text[c] = text  # in place, as learning does: the encoder must notice
        blob = m.to_bytes(back)
        assert m.from_bytes(blob).name_text[c] == (text and text[:12])
        back.stored_names = None
        assert m.to_bytes(back) == blob


# --- names shed to keep an identity's state within its budget ----------------------------------


def test_shed_names_keep_their_slots_scores_and_learning() -> None:
    m, s, _ = learned(office_worker(weeks=2))
    blob = m.to_bytes(s)
    named = [c for c, t in enumerate(s.name_text) if t and s.name_slot[c] >= 0]
    assert len(named) >= 3
    texts = [s.name_text[c] for c in named]
    twin = m.from_bytes(blob)
    assert shed_names(twin, 10**6) == len(named)  # all of them, in SHED_ORDER
    shed = m.to_bytes(twin)
    # Only the names' text goes: an empty name (its length byte) each, nothing else moves.
    assert len(shed) == len(blob) - sum(len(t.encode()) for t in texts if t)
    assert shed[: len(blob) - sum(1 + len(t.encode()) for t in texts if t)] == blob[
        : len(blob) - sum(1 + len(t.encode()) for t in texts if t)]  # fmt: skip
    back = m.from_bytes(shed)
    assert [back.name_text[c] for c in named] == [None] * len(named)
    assert back.name_slot.tolist() == s.name_slot.tolist()  # what is usual: still known
    assert m.to_bytes(back) == shed  # canonical
    # Scores and learning do not change; only the explanations' "most used" names go.
    s = m.from_bytes(blob)  # the same state unshed, as stored (float32, like back)
    for f in (extract(ev(MONDAY + 30 * DAY + 3 * HOUR, 1, country="BR", bytes_out=20 * MB)),
              extract(ev(MONDAY + 30 * DAY + 4 * HOUR, 2, operation="op-new"))):  # fmt: skip
        d1, w1 = m.deviations(s, f)
        d2, w2 = m.deviations(back, f)
        assert d2.tolist() == d1.tolist()
        assert [(c.feature, c.weight) for c in w1] == [(c.feature, c.weight) for c in w2]
        m.learn_one(s, f)
        m.learn_one(back, f)
    s.name_text = [None if c in named else t for c, t in enumerate(s.name_text)]
    assert m.to_bytes(back) == m.to_bytes(s)


def test_shed_names_goes_in_order_and_only_as_far_as_asked() -> None:
    _, s, _ = learned(office_worker(weeks=2))
    named = {c for c, t in enumerate(s.name_text) if t and s.name_slot[c] >= 0}
    order = [c for c in SHED_ORDER if c in named]
    first = s.name_text[order[0]]
    assert first is not None
    assert shed_names(s, len(first.encode())) == 1
    assert s.name_text[order[0]] is None and all(s.name_text[c] for c in order[1:])
    assert shed_names(s, 0) == 0
    assert sorted(SHED_ORDER) == list(range(len(CATEGORICAL)))
    assert SHED_ORDER[-1] == CATEGORICAL.index("country")  # the most telling name goes last


def test_stored_names_are_each_names_length_and_utf8_however_often_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The encoder keeps each name's stored form (codec._CHUNKS, bounded): what it stores is
    still every name's length byte and UTF-8 cut at _NAME_BYTES, before and after a clear."""
    from pipeline.baselines import codec

    def plain(texts: tuple[str | None, ...]) -> bytes:
        out = b""
        for t in texts:
            b = t.encode()[: codec._NAME_BYTES] if t is not None else b""
            out += bytes([len(b)]) + b
        return out

    monkeypatch.setattr(codec, "_CHUNKS_MAX", 4)
    texts = ("DE", None, "é" * 20, "", "x" * 40, "DE", "svc", None, "a", "b", "c", "d")
    for _ in range(3):  # new names, then cached ones, the cache cleared on the way
        got = codec._stored_names(texts)
        assert got[0] is texts and got[1] == (1 << len(texts)) - 1
        assert got[2].tobytes() == plain(texts) and not got[2].flags.writeable
    assert len(codec._CHUNKS) <= 4


def _pack_reference(src: bytes) -> bytes:
    """The zero elision spelled out: per group of 8, a mask of its non-zero bytes, then them."""
    out = bytearray()
    for i in range(0, len(src), 8):
        group = src[i : i + 8]
        out.append(sum(1 << j for j, v in enumerate(group) if v))
        out += bytes(v for v in group if v)
    return bytes(out)


def test_pack_zeros_is_the_reference_elision_and_unpacks_whatever_the_tail() -> None:
    from pipeline.baselines.kernel import pack_zeros, unpack_zeros

    rng = np.random.default_rng(7)
    for n in [*range(20), 61, 624, 1000]:
        for density in (0.0, 0.35, 1.0):
            src = (rng.integers(1, 256, n) * (rng.random(n) < density)).astype(np.uint8)
            dst = np.full(n + n // 8 + 1, 0xAA, dtype=np.uint8)  # stale bytes must not leak
            size = pack_zeros(src, 0, dst)
            assert dst[:size].tobytes() == _pack_reference(src.tobytes())
            back = np.full(n, 0xAA, dtype=np.uint8)
            assert unpack_zeros(dst[:size], 0, back, 0) == size
            assert back.tobytes() == src.tobytes()
