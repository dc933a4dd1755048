"""Training Custos's shared detector, and the provenance that goes into its manifest.

Training the ``loda`` detector is running the worker's own code path offline
(:func:`pipeline.offline.evaluate.run_offline`) over a training stream: the detector learns exactly
what the learning gate lets through in production, and its calibrator the scores it saw. The
resulting state is the artifact; a worker that loads it scores well from its first event
instead of spending its first hours calibrating.

Provenance is collected here, not typed in: data fingerprint (SHA-256 of the events as read,
row count, event-time range), git commit of the code, library versions.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.config import REPO_ROOT, Settings
from pipeline.detection import Detection
from pipeline.events.schemas import Event, EventDecoder
from pipeline.models.artifacts import encode_loda
from pipeline.models.manifest import Manifest, TrainingData, feature_schema
from pipeline.offline.evaluate import Evaluation, run_offline
from pipeline.scores.detectors import Loda
from pipeline.simulate.directory import population_directory

__all__ = [
    "Fingerprint",
    "code_version",
    "features_fingerprint",
    "libraries",
    "manifest_for",
    "metrics_of",
    "train_and_publish",
    "train_isolation_forest",
    "train_loda",
]

LIBRARIES = ("custos", "numpy", "scikit-learn", "river", "msgspec", "skops")


def code_version() -> str:
    """The git commit of the code (``+dirty`` if the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def libraries() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Fingerprint:
    """SHA-256, row count and event-time range of a stream, computed while it is consumed."""

    sha256: str = ""
    rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def training_data(self, source: str, seed: int | None = None) -> TrainingData:
        return TrainingData(
            source, self.rows, self.sha256, _iso(self.first_ms), _iso(self.last_ms), seed
        )


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def decode_counted(raw: Iterable[bytes], fp: Fingerprint) -> Iterator[Event]:
    """Decode raw event bytes, hashing them (length-prefixed) into ``fp`` on the way."""
    h = hashlib.sha256()
    decoder = EventDecoder(max_future_skew_ms=10**13)  # recorded traffic: any time is fine
    for value in raw:
        h.update(len(value).to_bytes(8, "big") + value)
        ev = decoder.decode(value)
        fp.rows += 1
        fp.first_ms = ev.time_ms if fp.first_ms is None else min(fp.first_ms, ev.time_ms)
        fp.last_ms = ev.time_ms if fp.last_ms is None else max(fp.last_ms, ev.time_ms)
        yield ev
    fp.sha256 = h.hexdigest()


def train_loda(raw: Iterable[bytes], detection: Detection) -> tuple[bytes, Fingerprint]:
    """Run ``raw`` events through ``detection`` offline; its detector state is the artifact."""
    fp = Fingerprint()
    for _ in run_offline(decode_counted(raw, fp), detection):
        pass
    return encode_loda(detection.detector, detection.calibrator), fp  # type: ignore[arg-type]


def metrics_of(result: Evaluation) -> dict[str, float]:
    """The manifest's evaluation metrics from a held-out :class:`Evaluation`."""
    attacked = sum(r.attacked for r in result.rows.values())
    detected = sum(r.detected for r in result.rows.values())
    out = {
        "detection_rate": round(detected / attacked, 4) if attacked else 0.0,
        "false_alerts_per_1000_identity_days": round(result.false_per_1000_identity_days, 3),
        "campaigns": float(attacked),
        "events": float(result.events),
    }
    for name, r in sorted(result.rows.items()):
        out[f"detected.{name}"] = round(r.rate, 4)
    return out


def manifest_for(
    *,
    name: str,
    version: str,
    kind: str,
    artifact_name: str,
    artifact: bytes,
    training: TrainingData,
    trainer: str,
    metrics: dict[str, float],
    params: dict[str, object] | None = None,
    description: str = "",
) -> Manifest:
    """A complete manifest for a freshly trained artifact (unsigned)."""
    return Manifest(
        name=name,
        version=version,
        kind=kind,  # type: ignore[arg-type]
        artifact=artifact_name,
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        feature_schema=feature_schema(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        trainer=trainer,
        code_version=code_version(),
        libraries=libraries(),
        training=training,
        metrics=metrics,
        params=dict(params or {}),
        description=description,
    )


def train_and_publish(
    settings: Settings,
    key: Ed25519PrivateKey,
    *,
    identities: int = 1_000,
    duration_s: float = 86_400.0,
    seed: int = 3,
    events_path: Path | None = None,
    eval_seed: int = 11,
    eval_identities: int = 500,
    eval_duration_s: float = 86_400.0,
    version: str | None = None,
    trainer: str = "custos",
    echo: Callable[[str], None] = print,
) -> tuple[Path, Manifest]:
    """Train the ``loda`` detector, evaluate it on held-out simulated traffic, publish it.

    Training data: ``events_path`` (JSONL) or a simulation (``identities``, ``duration_s``,
    ``seed``). Held-out data: a simulation with ``eval_seed`` (another population, other
    attacks); the model is swapped in after the cold-start warm-up, as a worker would.
    """
    from pipeline.models.artifacts import decode
    from pipeline.models.registry import Loaded, ModelRegistry, sha256_hex
    from pipeline.offline.evaluate import evaluate
    from pipeline.simulate import Simulation

    t0 = time.perf_counter()
    raw: Iterable[bytes]
    if events_path is not None:
        source, sim_seed = str(events_path), None
        raw = (line.rstrip(b"\n") for line in open(events_path, "rb") if line.strip())
        detection = Detection.from_settings(settings)
    else:
        sim = Simulation(settings, identities=identities, duration_s=duration_s, seed=seed)
        source, sim_seed = f"custos simulate --identities {identities} --seed {seed}", seed
        raw = (value for _, _, value, _ in sim.events())
        directory = population_directory(identities, seed)
        detection = Detection.from_settings(settings, directory=directory)
    artifact, fp = train_loda(raw, detection)
    echo(f"trained on {fp.rows:,} events in {time.perf_counter() - t0:.0f} s")

    held = Simulation(
        settings, identities=eval_identities, duration_s=eval_duration_s, seed=eval_seed
    )
    decoder = EventDecoder(max_future_skew_ms=10**13)
    events = [decoder.decode(v) for _, _, v, _ in held.events()]
    held_out = population_directory(eval_identities, eval_seed)
    candidate = Detection.from_settings(settings, directory=held_out)
    # Held out as a worker would run it: the candidate adopted after the cold-start warm-up.
    result = evaluate(
        events, held.label_rows(), candidate,
        swap_in=Loaded(_placeholder, "", decode("loda", artifact)),
        swap_after=settings.model_warmup_events, batch=settings.worker_batch,
    )  # fmt: skip
    metrics = metrics_of(result)
    for line in result.table():
        echo("  " + line)
    registry = ModelRegistry(settings.models_dir)
    name = settings.model_name
    det = detection.detector
    assert isinstance(det, Loda)
    version = version or registry.next_version(name)
    manifest = manifest_for(
        name=name,
        version=version,
        kind="loda",
        artifact_name="detector.msgpack",
        artifact=artifact,
        training=fp.training_data(source, sim_seed),
        trainer=trainer,
        metrics=metrics | {"eval_seed": float(eval_seed)},
        params={
            "n_projections": det.n_projections,
            "n_bins": det.n_bins,
            "half_life": det.half_life,
        },
        description="LODA shared detector and tail calibrator, trained by running the worker's "
        "code path offline; keeps learning online once loaded",
    )
    assert manifest.artifact_sha256 == sha256_hex(artifact)
    return registry.publish(manifest, artifact, key), manifest


# Evaluation swaps the candidate in before it has a manifest: a stand-in with the right shape.
_placeholder = Manifest(
    name="candidate",
    version="0",
    kind="loda",
    artifact="-",
    artifact_sha256="",
    feature_schema="",
    created_at="",
)


# --- scikit-learn detectors from exported features (the notebooks) -----------------------------
def _deviation_matrix(features: Any) -> Any:
    """The :data:`~pipeline.baselines.layout.DEVIATIONS` columns of ``features``, float64."""
    import numpy as np

    from pipeline.baselines.layout import DEVIATIONS

    missing = [c for c in DEVIATIONS if c not in features.columns]
    if missing:
        raise ValueError(f"features lack deviation columns {missing} (not from this code?)")
    return np.ascontiguousarray(features[list(DEVIATIONS)].to_numpy(dtype=np.float64))


def features_fingerprint(features: Any) -> Fingerprint:
    """Fingerprint of a training matrix (``features.parquet`` rows, as a DataFrame).

    SHA-256 over the event uids and the deviation matrix as float32 (what replay writes), so
    the same rows give the same hash whatever file they were read from; event-time range from
    ``time_ms``.
    """
    import numpy as np

    h = hashlib.sha256()
    if "event_uid" in features.columns:
        for uid in features["event_uid"]:
            h.update(str(uid).encode() + b"\n")
    h.update(_deviation_matrix(features).astype(np.float32).tobytes())
    fp = Fingerprint(sha256=h.hexdigest(), rows=len(features))
    if "time_ms" in features.columns and len(features):
        fp.first_ms, fp.last_ms = int(features["time_ms"].min()), int(features["time_ms"].max())
    return fp


def train_isolation_forest(
    features: Any,
    *,
    n_estimators: int = 100,
    max_samples: int | float | str = 256,
    contamination: float | str = "auto",
    max_features: float = 1.0,
    seed: int = 0,
    scale: float = 10.0,
    learned_only: bool = True,
    calibrate_on: Any = None,
    calibration_size: int = 20_000,
) -> tuple[bytes, dict[str, object]]:
    """An IsolationForest shared detector as a ``sklearn`` artifact, and its parameters.

    ``features``: rows of ``features.parquet`` (``custos replay``): one column per deviation,
    plus ``learned`` and optionally ``event_uid`` / ``time_ms``. The forest is fitted on the
    rows the worker's learning gate let through (``learned``) unless ``learned_only`` is false:
    like the online detector, it must learn what normal is, not the attacks.

    The calibrator needs the raw scores :class:`~pipeline.detection.Detection` produces with
    this detector: ``SklearnDetector.score_many(rows) + surprise(rows)``. It should see every
    event's score, gated or not (a reference of normal ones only makes every gated event look
    maximally rare), but not new identities' (Detection calibrates those apart): pass those
    rows as ``calibrate_on`` (default: all of ``features``). At most ``calibration_size``
    rows are used (a seeded sample; the calibrator keeps that many).

    >>> import numpy as np, pandas as pd
    >>> from pipeline.baselines.layout import DEVIATIONS
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame(rng.uniform(0, 0.2, (600, len(DEVIATIONS))), columns=list(DEVIATIONS))
    >>> df["learned"] = True
    >>> artifact, params = train_isolation_forest(df, n_estimators=10, seed=1)
    >>> params["training_rows"], params["calibration_rows"], params["estimator"]
    (600, 600, 'sklearn.ensemble.IsolationForest')
    """
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from pipeline.detection import surprise
    from pipeline.models.artifacts import SklearnDetector, encode_sklearn

    train = features
    if learned_only and "learned" in features.columns:
        train = features[features["learned"].astype(bool)]
    x = _deviation_matrix(train)
    if len(x) == 0:
        raise ValueError("no training rows (nothing learned?)")
    estimator = IsolationForest(
        n_estimators=n_estimators,
        max_samples=max_samples,
        contamination=contamination,
        max_features=max_features,
        random_state=seed,
    ).fit(x)
    cal = _deviation_matrix(features if calibrate_on is None else calibrate_on)
    if len(cal) > calibration_size:
        pick = np.random.default_rng(seed).choice(len(cal), calibration_size, replace=False)
        cal = cal[np.sort(pick)]
    raw = SklearnDetector(estimator, scale).score_many(cal) + surprise(cal)
    params: dict[str, object] = {
        "estimator": "sklearn.ensemble.IsolationForest",
        "n_estimators": n_estimators,
        "max_samples": max_samples,
        "contamination": contamination,
        "max_features": max_features,
        "seed": seed,
        "scale": scale,
        "learned_only": learned_only,
        "training_rows": len(x),
        "calibration_rows": len(cal),
    }
    return encode_sklearn(estimator, raw, scale), params
