"""Vega-Lite specs of the console's charts: plain dicts, so the same chart renders in the
console (vendored vega-embed) and in a notebook (``altair.Chart.from_dict(spec)``).

>>> spec = hours_chart({"hours": {"weekday": [1] * 24, "weekend": [0] * 24}})
>>> spec["mark"]["type"], len(spec["data"]["values"])
('bar', 48)
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SCHEMA", "hours_chart", "numeric_chart", "risk_chart"]

SCHEMA: Final = "https://vega.github.io/schema/vega-lite/v6.json"


def hours_chart(profile: dict[str, Any]) -> dict[str, Any]:
    """When the identity is usually active: learned events per UTC hour, weekdays and weekends."""
    values = [{"hour": h, "days": days, "events": n}
              for days in ("weekday", "weekend")
              for h, n in enumerate(profile["hours"][days])]  # fmt: skip
    return {
        "$schema": SCHEMA,
        "title": "Usual hours (events learned, UTC)",
        "width": 480, "height": 140,
        "data": {"values": values},
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "hour", "type": "ordinal", "title": "hour"},
            "xOffset": {"field": "days"},
            "y": {"field": "events", "type": "quantitative", "title": "events"},
            "color": {"field": "days", "type": "nominal", "title": None},
        },
    }  # fmt: skip


def numeric_chart(profile: dict[str, Any], observed: dict[str, float],
                  peers: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Each numeric feature's usual band (mean ± 2 standard deviations, in its own unit) and
    usual value, the peer group's band (a dark line) when ``peers`` (its profile) is given,
    with what the finding observed, where it says (``observed``: feature → value).

    >>> p = {"numeric": [{"feature": "bytes_out", "unit": "bytes", "low": 1.0, "high": 9.0,
    ...                   "usual": 3.0}]}
    >>> spec = numeric_chart(p, {}, {"numeric": [dict(p["numeric"][0], low=0.0, high=99.0)]})
    >>> spec["data"]["values"][0]["peer_high"], len(spec["spec"]["layer"])
    (99.0, 4)
    """
    peer = {r["feature"]: r for r in (peers or {}).get("numeric") or ()}
    rows = [{"feature": f"{r['feature']} ({r['unit']})", "low": r["low"], "high": r["high"],
             "usual": r["usual"], "observed": observed.get(r["feature"]),
             "peer_low": peer.get(r["feature"], {}).get("low"),
             "peer_high": peer.get(r["feature"], {}).get("high")}
            for r in profile["numeric"]]  # fmt: skip
    return {
        "$schema": SCHEMA,
        "title": "Usual range (band), its peers' (line) and what was observed (dot)",
        "width": 480,
        "data": {"values": rows},
        "resolve": {"scale": {"x": "independent"}},
        "facet": {"row": {"field": "feature", "type": "nominal", "title": None,
                          "header": {"labelAngle": 0, "labelAlign": "left"}}},
        "spec": {
            "width": 480, "height": 18,
            "layer": [
                {"mark": {"type": "bar", "opacity": 0.35},
                 "encoding": {"x": {"field": "low", "type": "quantitative", "title": None,
                                    "axis": {"format": "~g"}},
                              "x2": {"field": "high"}}},
                {"transform": [{"filter": "datum.peer_low != null"}],
                 "mark": {"type": "rule", "strokeWidth": 3, "color": "#444"},
                 "encoding": {"x": {"field": "peer_low", "type": "quantitative"},
                              "x2": {"field": "peer_high"}}},
                {"mark": {"type": "tick", "thickness": 2},
                 "encoding": {"x": {"field": "usual", "type": "quantitative"}}},
                {"transform": [{"filter": "datum.observed != null"}],
                 "mark": {"type": "point", "filled": True, "color": "#a4161a", "size": 80},
                 "encoding": {"x": {"field": "observed", "type": "quantitative"}}},
            ],
        },
        "config": {"axis": {"labelLimit": 200}},
    }  # fmt: skip


def risk_chart(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Risk over time from the identity's findings (``time_ms``, ``risk``, ``title``)."""
    return {
        "$schema": SCHEMA,
        "title": "Risk over time (its findings)",
        "width": 480, "height": 140,
        "data": {"values": points},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "time_ms", "type": "temporal", "title": None},
            "y": {"field": "risk", "type": "quantitative", "title": "risk",
                  "scale": {"domain": [0, 100]}},
            "tooltip": [{"field": "title"}, {"field": "risk"}],
        },
    }  # fmt: skip
