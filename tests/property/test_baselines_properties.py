"""Property tests for features + baselines: bounded outputs, exact serialisation, merge."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.codec import StateFormatError
from pipeline.baselines.features import CATEGORICAL, Features, extract
from pipeline.baselines.layout import DEVIATIONS, BaselineState
from pipeline.events.schemas import Event, ModelRef, Resource

PROFILE = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = 1_767_571_200_000  # Monday 2026-01-05 00:00 UTC
MODEL = BaselineModel()
FAST_DECAY = BaselineModel(half_life_events=16, cat_slots=4)  # exercises halving and eviction

# Small alphabets, so values repeat (known / rare / new all happen) — plus the odd long one.
words = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]) | st.text(max_size=40)
maybe = st.none() | words


@st.composite
def events(draw: st.DrawFn, t: int, i: int) -> Event:
    auth = draw(st.booleans())
    n_res = draw(st.integers(0, 3))
    return Event(
        uid=f"e-{i}",
        class_uid=3002 if auth else 6003,
        activity_id=1,
        time_ms=t,
        identity_uid="id",
        identity_kind=draw(st.sampled_from(["human", "service", "agent"])),
        status_id=draw(st.sampled_from([None, 0, 1, 2, 99])),
        is_mfa=draw(st.none() | st.booleans()),
        auth_protocol=draw(maybe),
        service=draw(maybe),
        operation=draw(maybe),
        src_ip=draw(st.none() | st.sampled_from(["10.0.0.1", "10.0.1.1", "2001:db8::1", "x"])),
        country=draw(st.none() | st.sampled_from(["DE", "FR", "BR"])),
        asn=draw(st.none() | st.integers(0, 2**32 - 1)),
        bytes_in=draw(st.none() | st.integers(0, 2**63 - 1)),
        bytes_out=draw(st.none() | st.integers(0, 10**4) | st.integers(0, 2**63 - 1)),
        resources=tuple(
            Resource(draw(maybe), "o", draw(st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 99])))
            for _ in range(n_res)
        ),
        model=draw(st.none() | st.just(ModelRef("m", "1", "sha256:" + "0" * 64))),
        delegated_by=draw(maybe),
        environment=draw(maybe),
    )


@st.composite
def streams(draw: st.DrawFn, max_size: int = 120) -> list[Features]:
    """A time-ordered stream (gaps from 0 ms to days, sometimes out of order)."""
    n = draw(st.integers(1, max_size))
    t = START
    out = []
    for i in range(n):
        t += draw(st.sampled_from([0, 1, 1000, 60_000, 3_600_000, 86_400_000]))
        jitter = draw(st.sampled_from([0, 0, 0, -5_000]))
        out.append(extract(draw(events(t + jitter, i))))
    return out


def learn(model: BaselineModel, stream: list[Features]) -> BaselineState:
    s = model.new_state()
    for f in stream:
        model.learn_one(s, f)
    return s


@PROFILE
@given(streams(), st.sampled_from([MODEL, FAST_DECAY]))
def test_round_trip_is_exact_bounded_and_scores_the_same(
    stream: list[Features], model: BaselineModel
) -> None:
    s = learn(model, stream[:-1])
    blob = model.to_bytes(s)
    assert len(blob) <= model.max_bytes
    back = model.from_bytes(blob)
    assert model.to_bytes(back) == blob
    d1, _ = model.deviations(s, stream[-1])
    d2, _ = model.deviations(back, stream[-1])
    assert d2 == pytest.approx(d1, abs=1e-3)  # float32 on the wire


@PROFILE
@given(streams(), st.sampled_from([MODEL, FAST_DECAY]), st.floats(1.0, 1e6))
def test_deviations_are_bounded_finite_and_pure(
    stream: list[Features], model: BaselineModel, rate: float
) -> None:
    s = model.new_state()
    for f in stream:
        before = model.to_bytes(s)
        for r in (None, rate):
            dev, why = model.deviations(s, f, r)
            assert len(dev) == len(DEVIATIONS)
            assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in dev)
            assert len(why) <= model.max_contributions
            assert all(c.weight >= model.explain_threshold and c.text for c in why)
            assert [c.weight for c in why] == sorted((c.weight for c in why), reverse=True)
        assert model.to_bytes(s) == before  # scoring never learns
        model.learn_one(s, f)
    assert s.recent == sum(s.hours)
    assert max(s.slot_count) < 3 * model.half_life_events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_size=150), st.data())
def test_merge_of_time_ordered_halves_approximates_sequential_learning(
    stream: list[Features], data: st.DataObject
) -> None:
    stream = sorted(stream, key=lambda f: f.time_ms)
    cut = data.draw(st.integers(0, len(stream)))
    head, tail = stream[:cut], stream[cut:]
    model = BaselineModel(half_life_events=data.draw(st.sampled_from([16, 64, 1000])))
    whole = learn(model, head + tail)
    a, b = learn(model, head), learn(model, tail)
    merged = model.merge(a, b)
    assert merged.n == whole.n
    assert merged.last_ms == whole.last_ms
    if not head or not tail:
        assert model.to_bytes(merged) == model.to_bytes(whole)
        return
    assert merged.mean == pytest.approx(whole.mean, rel=1e-6, abs=1e-6)
    assert merged.var == pytest.approx(whole.var, rel=1e-4, abs=1e-6)
    assert merged.rate_c == pytest.approx(whole.rate_c, rel=1e-6, abs=1e-9)
    # Counts decay in whole halvings, so their phase can differ by one halving at most; each
    # bucket's integer halving can also round differently, by one per non-zero bucket.
    slack = 4 + sum(1 for h in merged.hours if h) + sum(1 for h in whole.hours if h)
    assert sum(whole.hours) / 2 - slack <= sum(merged.hours) <= 2 * sum(whole.hours) + slack
    k = model.cat_slots
    for c, name in enumerate(CATEGORICAL):
        got = {h for h, _, _ in model.known_values(merged, name)}
        want = {h for h, _, _ in model.known_values(whole, name)}
        values = [f.cat_hashes[c] for f in stream if f.cat_hashes[c]]
        if len(set(values)) <= k:  # nothing evicted: exactly the same values are remembered
            assert got == want
            continue
        assert len(got) == k
        # A value that dominates the stream is remembered by both.
        top = max(set(values), key=values.count)
        if values.count(top) * 2 > len(values) and values.count(top) >= 4:
            assert top in got and top in want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_from_bytes_raises_only_state_format_error(data: bytes) -> None:
    try:
        s = MODEL.from_bytes(data)
    except StateFormatError:
        return
    MODEL.to_bytes(s)  # whatever decodes can be written back


@settings(max_examples=100, deadline=None)
@given(streams(max_size=20), st.binary(min_size=1, max_size=8), st.data())
def test_corrupted_state_bytes_never_crash_decoding(
    stream: list[Features], junk: bytes, data: st.DataObject
) -> None:
    blob = bytearray(MODEL.to_bytes(learn(MODEL, stream)))
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos : pos + len(junk)] = junk
    try:
        s = MODEL.from_bytes(bytes(blob))
    except StateFormatError:
        return
    MODEL.deviations(s, stream[0])
    MODEL.learn_one(s, stream[0])
    MODEL.to_bytes(s)


@PROFILE
@given(events(START, 0))
def test_extract_is_total_and_consistent(event: Event) -> None:
    f = extract(event)
    assert f == extract(event)
    assert 0 <= f.hour_of_week < 168
    assert all(math.isfinite(x) and x >= 0 for x in f.numeric)
    for h, v in zip(f.cat_hashes, f.cat_values, strict=True):
        assert (h == 0) == (v is None)
        assert 0 <= h < 2**32
