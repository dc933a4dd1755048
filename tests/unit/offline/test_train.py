"""An IsolationForest shared detector from replay's features: artifact, calibration, registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.baselines.layout import DEVIATIONS
from pipeline.detection import Detection, surprise
from pipeline.events.schemas import Event
from pipeline.models.artifacts import SklearnDetector, decode
from pipeline.models.manifest import trusted_keys
from pipeline.models.registry import ModelRegistry
from pipeline.offline.train import features_fingerprint, manifest_for, train_isolation_forest


def _features(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.beta(1, 30, (n, len(DEVIATIONS)))  # mostly near 0: normal behaviour
    df = pd.DataFrame(x.astype(np.float32), columns=list(DEVIATIONS))
    df.insert(0, "event_uid", [f"e{i}" for i in range(n)])
    df.insert(1, "time_ms", 1_790_000_000_000 + np.arange(n) * 1000)
    df["learned"] = True
    df.loc[n - 50 :, "learned"] = False  # gated events: not fitted on
    df.loc[n - 50 :, "service"] = 1.0
    return df


def test_artifact_scores_like_detection_will() -> None:
    df = _features()
    artifact, params = train_isolation_forest(df, n_estimators=50, seed=3, scale=8.0)
    assert params["training_rows"] == 2950 and params["calibration_rows"] == 3000
    assert params["scale"] == 8.0 and params["seed"] == 3
    bundle = decode("sklearn", artifact)  # the worker's safe load (skops allow-list)
    det = bundle.detector
    assert isinstance(det, SklearnDetector) and det.scale == 8.0
    x = df[list(DEVIATIONS)].to_numpy(np.float64)
    raw = det.score_many(x) + surprise(x)  # what Detection computes
    cal = bundle.calibrator.transform_many(raw)
    assert np.median(cal[:2950]) < 0.3 < np.median(cal[2950:])  # gated rows stand out
    # Deterministic given the seed.
    again, _ = train_isolation_forest(df, n_estimators=50, seed=3, scale=8.0)
    assert decode("sklearn", again).detector.score_one(x[0]) == det.score_one(x[0])


def test_calibration_rows_and_sample_size() -> None:
    df = _features()
    _, params = train_isolation_forest(df, n_estimators=10, calibrate_on=df.iloc[:1000],
                                       calibration_size=400)  # fmt: skip
    assert params["calibration_rows"] == 400
    _, params = train_isolation_forest(df, n_estimators=10, learned_only=False)
    assert params["training_rows"] == 3000


def test_refuses_features_from_other_code() -> None:
    df = _features().drop(columns=["burst"])
    with pytest.raises(ValueError, match="burst"):
        train_isolation_forest(df)
    with pytest.raises(ValueError, match="no training rows"):
        train_isolation_forest(_features().assign(learned=False))


def test_fingerprint_is_of_the_rows() -> None:
    df = _features()
    a, b = features_fingerprint(df), features_fingerprint(df.copy())
    assert a.sha256 == b.sha256 and a.rows == 3000
    assert (a.first_ms, a.last_ms) == (1_790_000_000_000, 1_790_000_000_000 + 2999 * 1000)
    changed = df.copy()
    changed.loc[5, "country"] = 0.5
    assert features_fingerprint(changed).sha256 != a.sha256
    td = a.training_data("features.parquet", seed=7)
    assert td.rows == 3000 and td.time_from == "2026-09-21T14:13:20Z" and td.seed == 7


def test_publish_verify_and_score(tmp_path: Path) -> None:
    """The notebook's path: publish signed, load as a worker does, score events with it."""
    df = _features()
    artifact, params = train_isolation_forest(df, n_estimators=20)
    key = Ed25519PrivateKey.generate()
    reg = ModelRegistry(tmp_path)
    manifest = manifest_for(
        name="detector", version=reg.next_version("detector"), kind="sklearn",
        artifact_name="detector.skops", artifact=artifact, params=params, trainer="test",
        training=features_fingerprint(df).training_data("test"), metrics={"detection_rate": 1.0},
    )  # fmt: skip
    reg.publish(manifest, artifact, key)
    loaded = reg.load("detector", "1", trusted_keys([key.public_key()]))
    assert loaded.manifest.params["n_estimators"] == 20
    detection = Detection()
    detection.swap_model(loaded)
    ev = Event(uid="e1", class_uid=3002, activity_id=1, time_ms=1_790_000_000_000,
               identity_uid="usr-1", identity_kind="human", country="DE", status_id=1)  # fmt: skip
    [score] = detection.process([ev], {}).scores
    assert 0.0 <= score.score <= 1.0 and detection.model_ref == loaded.ref
