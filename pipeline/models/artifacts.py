"""Model artifacts: the shared detector (and its calibrator) in formats that run no code on load.

Two kinds, named by the manifest's ``kind``:

* ``loda`` - Custos's online detector (:class:`pipeline.scores.detectors.Loda`) and calibrator, as
  msgpack of plain numbers and byte strings. Loaded, it keeps learning online in the worker.
* ``sklearn`` - any scikit-learn estimator with ``score_samples`` (higher = more normal, e.g.
  IsolationForest) in skops format. Loading refuses every type outside a short allow-list
  instead of trusting what the file asks for: no pickle, no arbitrary imports. Frozen: it is
  retrained offline and shipped as a new version.

Both carry the calibrator's recent raw scores, so calibrated scores (and with them the policy's
thresholds) mean the same from the first event after a swap.

>>> import numpy as np
>>> from pipeline.scores.detectors import Loda, TailCalibrator
>>> det, cal = Loda(n_features=3, seed=1), TailCalibrator(size=500, refresh=100)
>>> det.learn_many(np.random.default_rng(0).uniform(0, 0.1, (500, 3)))
>>> cal.learn_many(det.score_many(np.random.default_rng(1).uniform(0, 0.1, (500, 3))))
>>> bundle = decode("loda", encode_loda(det, cal))
>>> float(bundle.detector.score_one([0.05] * 3)) == float(det.score_one([0.05] * 3))
True
>>> decode("loda", b"not msgpack")
Traceback (most recent call last):
...
pipeline.models.manifest.ModelRefused: bad_artifact: unreadable loda artifact: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from pipeline.models.manifest import ModelRefused
from pipeline.scores.detectors import FloatArray, Loda, TailCalibrator
from pipeline.scores.detectors import dumps as dump_state
from pipeline.scores.detectors import loads as load_state

__all__ = [
    "SKOPS_ALLOWED",
    "Bundle",
    "SklearnDetector",
    "decode",
    "encode_loda",
    "encode_sklearn",
]

#: Types a skops artifact may contain beyond skops' own defaults (numpy, builtins, scikit-learn
#: estimators it knows). Anything else is refused, not trusted on the file's word.
SKOPS_ALLOWED: Final = frozenset({"sklearn.tree._tree.Tree"})


class SklearnDetector:
    """A fitted scikit-learn estimator as a frozen shared detector (a ``Detector``).

    ``score_many`` is ``scale * -score_samples(x)`` (high = anomalous); ``scale`` brings the
    estimator's units near the per-event surprise it is added to. ``learn_many`` does nothing:
    the estimator learns offline, in a notebook, and comes back as a new signed version.
    """

    def __init__(self, estimator: Any, scale: float = 10.0) -> None:
        if not hasattr(estimator, "score_samples"):
            raise TypeError(f"{type(estimator).__name__} has no score_samples")
        self.estimator = estimator
        self.scale = scale

    def score_many(self, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(-self.scale * self.estimator.score_samples(x), dtype=np.float64)

    def score_one(self, x: Sequence[float]) -> float:
        return float(self.score_many(np.asarray([x], dtype=np.float64))[0])

    def learn_many(self, x: FloatArray) -> None:
        return None


@dataclass
class Bundle:
    """A loaded artifact: the detector and the calibrator that goes with it."""

    detector: Loda | SklearnDetector
    calibrator: TailCalibrator


def encode_loda(detector: Loda, calibrator: TailCalibrator) -> bytes:
    return msgspec.msgpack.encode(
        {
            "format": "custos.loda/1",
            "detector": dump_state(detector),
            "calibrator": dump_state(calibrator),
        }
    )


def encode_sklearn(estimator: Any, calibration: FloatArray, scale: float = 10.0) -> bytes:
    """skops bytes of the estimator, its score scale and the raw scores to calibrate on."""
    import skops.io as sio

    SklearnDetector(estimator, scale)  # fail here, not in the worker, without score_samples
    data: bytes = sio.dumps(
        {
            "format": "custos.sklearn/1",
            "estimator": estimator,
            "scale": float(scale),
            "calibration": np.asarray(calibration, dtype=np.float64),
        }
    )
    return data


def decode(kind: str, data: bytes) -> Bundle:
    """Load an artifact whose hash and manifest were already verified; refuse anything odd."""
    if kind == "loda":
        try:
            d = msgspec.msgpack.decode(data)
            det, cal = load_state(d["detector"]), load_state(d["calibrator"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AssertionError) as exc:
            raise ModelRefused("bad_artifact", f"unreadable loda artifact: {exc!r}") from None
        if not isinstance(det, Loda) or not isinstance(cal, TailCalibrator):
            raise ModelRefused("bad_artifact", "loda artifact holds the wrong objects")
        return Bundle(det, cal)
    if kind == "sklearn":
        import skops.io as sio

        try:
            untrusted = set(sio.get_untrusted_types(data=data))
        except Exception as exc:  # skops raises many types on a corrupt archive
            raise ModelRefused("bad_artifact", f"unreadable skops artifact: {exc!r}") from None
        if untrusted - SKOPS_ALLOWED:
            raise ModelRefused(
                "unsafe_artifact",
                f"skops artifact needs types outside the allow-list: "
                f"{sorted(untrusted - SKOPS_ALLOWED)}",
            )
        try:
            d = sio.loads(data, trusted=sorted(untrusted))
            est, scale, calibration = d["estimator"], float(d["scale"]), d["calibration"]
            frozen = SklearnDetector(est, scale)
        except Exception as exc:
            raise ModelRefused("bad_artifact", f"unusable skops artifact: {exc!r}") from None
        cal = TailCalibrator()
        cal.learn_many(np.asarray(calibration, dtype=np.float64))
        return Bundle(frozen, cal)
    raise ModelRefused("bad_artifact", f"unknown model kind {kind!r}")
