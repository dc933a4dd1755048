"""The detection round's fused kernels (``kernel.score``, ``kernel.learn_pair``) against the
per-state calls they replace: the same vectors, explanations and states, bit for bit."""

from __future__ import annotations

import random

import numpy as np

from pipeline.baselines import kernel
from pipeline.baselines.baselines import (
    BaselineModel,
    blend,
    blend_contributions,
    blend_winners,
)
from pipeline.baselines.features import Features, extract_rows
from pipeline.baselines.layout import _N_DEV, BaselineState
from pipeline.baselines.learning import round_arrays
from pipeline.events.schemas import Event, Resource

_T0 = 1_767_261_600_000


def _event(rng: random.Random, i: int) -> Event:
    return Event(
        uid=f"e{i}", class_uid=rng.choice((3002, 6003, 6003)),
        activity_id=rng.choice((1, 2, 2, 3)), time_ms=_T0 + i * rng.randint(1_000, 900_000),
        identity_uid="a", identity_kind="agent",
        country=rng.choice(("DE", "DE", "DE", "FR", "BR")),
        operation=rng.choice(("crm.read", "crm.read", "crm.export", "mail.send")),
        service=rng.choice(("crm", "mail")), bytes_out=rng.choice((0, 1000, 1200, 90_000)),
        session_uid=rng.choice((None, "t1", "t2", f"t{i // 7}")), is_mfa=rng.random() < 0.8,
        delegated_by=rng.choice((None, None, "boss", "other")), status_id=rng.choice((1, 1, 2)),
        resources=(Resource(f"iban:{rng.randint(0, 9)}", "bank_account", rng.randint(1, 4)),),
    )  # fmt: skip


def _same(a: BaselineState, b: BaselineState) -> bool:
    return bool(
        (a.fv.tobytes() == b.fv.tobytes()) and (a.iv == b.iv).all()
        and (a.slot_hash == b.slot_hash).all() and (a.slot_count == b.slot_count).all()
        and (a.slot_hour == b.slot_hour).all() and a.name_text == b.name_text
    )  # fmt: skip


def test_score_and_learn_pair_match_the_calls_they_fuse() -> None:
    rng = random.Random(3)
    bm = BaselineModel()
    pm = BaselineModel(cat_slots=16, scope="peer", z_scale=3.0)
    op, pp = bm.kernel_params(), pm.kernel_params()
    own_a, peer_a = bm.new_state(), pm.new_state()
    own_b, peer_b = bm.new_state(), pm.new_state()
    explained = 0
    for i in range(400):
        rows = extract_rows([_event(rng, i)])
        f: Features = rows.features(0)
        w = bm.own_weight(own_a)
        cold = w < 0.99
        # one by one
        bm.observe(own_a, f)
        own_dev, own_why = bm.deviations(own_a, f)
        if cold:
            peer_dev, peer_why = pm.deviations(peer_a, f, bm.current_rate(own_a, f))
            dev = blend(own_dev, peer_dev, w)
            why = blend_contributions(own_why, peer_why, dev, w)
        else:
            dev, why = own_dev, own_why
        # fused
        X, E = round_arrays(rows)
        rows, own_rows, peer_rows = (np.empty((1, _N_DEV)) for _ in range(3))
        tops = np.empty((1, 2, _N_DEV), dtype=np.int64)
        own_max = np.zeros(1)
        activity = np.zeros((1, 3), dtype=np.int64)
        found = kernel.score(own_b.fv, own_b.iv, own_b.slot_hash, own_b.slot_count, peer_b.fv,
                             peer_b.iv, peer_b.slot_hash, peer_b.slot_count, X, E, 0, w, cold,
                             op, pp, rows, own_rows, peer_rows, tops, own_max,
                             activity)  # fmt: skip
        assert tuple(activity[0].tolist()) == own_a.activity()
        assert rows[0].tobytes() == dev.tobytes()
        assert own_rows[0].tobytes() == own_dev.tobytes()
        assert own_max[0] == own_dev.max()
        own_top = tops[0, 0, : found & 0xFF].tolist()
        rate = bm.current_rate(own_b, f)
        if cold:
            got = [
                bm._explain(own_b, f, d, x, rate) if mine else pm._explain(peer_b, f, d, x, rate)
                for mine, d, x in blend_winners(own_top, own_rows[0],
                                                tops[0, 1, : found >> 8].tolist(),
                                                peer_rows[0], rows[0], w)
            ]  # fmt: skip
        else:
            got = [bm._explain(own_b, f, d, float(own_rows[0, d]), rate) for d in own_top]
        assert got == why
        explained += len(why)
        if i % 3:  # learn
            to_peer = rng.random() < 0.5
            rate = bm.current_rate(own_a, f)
            bm.learn_one(own_a, f)
            if to_peer:
                pm.learn_one(peer_a, f, rate)
            named = kernel.learn_pair(own_b.fv, own_b.iv, own_b.slot_hash, own_b.slot_count,
                                      own_b.slot_hour, peer_b.fv, peer_b.iv, peer_b.slot_hash,
                                      peer_b.slot_count, peer_b.slot_hour, X, E, 0, to_peer,
                                      op, pp)  # fmt: skip
            if named & 0xFFFF:
                bm.note_names(own_b, f.cat_values, named & 0xFFFF)
            if named >> 16:
                pm.note_names(peer_b, f.cat_values, named >> 16)
        assert _same(own_a, own_b) and _same(peer_a, peer_b)
    assert explained > 50  # the explanations were exercised, cold and warm
    assert bm.own_weight(own_a) >= 0.99
