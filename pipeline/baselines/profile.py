"""What an identity's baseline says, for people: its usual hours, the usual range of each
numeric feature, the values it knows of each categorical one. JSON-ready (the worker serves
it to the analyst console; notebooks can chart it with the same Vega-Lite specs).

>>> from pipeline.baselines.baselines import BaselineModel
>>> from pipeline.baselines.features import extract
>>> from pipeline.events.schemas import Event
>>> m = BaselineModel()
>>> s = m.new_state()
>>> for i in range(20):
...     m.learn_one(s, extract(Event(uid=f"e{i}", class_uid=3002, activity_id=1,
...                                  time_ms=1_790_000_000_000 + i * 60_000, identity_uid="a",
...                                  identity_kind="human", country="DE")))
>>> p = summary(m, s)
>>> p["events_learned"], sum(p["hours"]["weekday"]) + sum(p["hours"]["weekend"])
(20, 20)
>>> [(c["feature"], c["usual"], c["values"][0]["count"]) for c in p["categorical"]][:1]
[('country', 'DE', 20)]
"""

from __future__ import annotations

import math
from typing import Any, Final

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.features import CATEGORICAL, NUMERIC
from pipeline.baselines.layout import BaselineState
from pipeline.baselines.names import NameBook

__all__ = ["summary"]

# Features learned as log1p(x): their range is shown back in their own unit.
_LOG: Final = frozenset({"bytes_out", "bytes_in"})
_UNIT: Final = {"bytes_out": "bytes", "bytes_in": "bytes", "failure": "share of events",
                "no_mfa": "share of sign-ins", "sensitivity": "rank 0-4",
                "n_resources": "resources per event", "chain_depth": "share delegated"}  # fmt: skip


def summary(
    model: BaselineModel, state: BaselineState, names: NameBook | None = None
) -> dict[str, Any]:
    """The baseline of one identity (or peer group) as plain data (numbers, strings, lists);
    ``names`` names the remembered values this process has seen (else only the usual one)."""
    n, first_ms, last_ms = state.activity()
    hours = [int(h) for h in state.hours]
    numeric = []
    for i, name in enumerate(NUMERIC):
        mean, var = float(state.mean[i]), max(0.0, float(state.var[i]))
        sd = math.sqrt(var)
        low, high = mean - 2 * sd, mean + 2 * sd
        if name in _LOG:
            mean, low, high = math.expm1(mean), math.expm1(max(0.0, low)), math.expm1(high)
        else:
            low = max(0.0, low)
        numeric.append({"feature": name, "usual": round(mean, 3), "low": round(low, 3),
                        "high": round(high, 3), "unit": _UNIT.get(name, "")})  # fmt: skip
    categorical = []
    for c, name in enumerate(CATEGORICAL):
        named = int(state.name_slot[c])
        values = []
        for h, count, hour in model.known_values(state, name):
            # The book's name is whole; the state keeps only the most used value's, shortened
            # for explanations (kept for when this process has not seen the value yet).
            mine = named >= 0 and int(state.slot_hash[named]) == int(h)
            text = names.name(c, int(h)) if names is not None else None
            if text is None and mine:
                text = state.name_text[c]
            values.append({
                "hash": f"{int(h):08x}", "count": int(count), "last_seen_hour": int(hour),
                "name": text,
            })  # fmt: skip
        usual = state.name_text[c] if named >= 0 else None
        if named >= 0 and names is not None:
            usual = names.name(c, int(state.slot_hash[named])) or usual
        present, novel = int(state.present[c]), int(state.novel[c])
        if values or present:
            categorical.append({"feature": name, "usual": usual, "values": values,
                                "events": present,
                                "new_value_share": round(novel / present, 3) if present
                                else 0.0})  # fmt: skip
    return {
        "events_learned": int(n),
        "first_ms": int(first_ms),
        "last_ms": int(last_ms),
        "own_weight": round(model.own_weight(state), 3),
        "hours": {"weekday": hours[:24], "weekend": hours[24:]},
        "numeric": numeric,
        "categorical": categorical,
    }
