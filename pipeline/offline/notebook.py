"""What the notebooks in ``notebooks/`` share: parameters, the dataset they work on, loaders.

Every notebook reads its parameters from the environment, so CI runs them small and a data
scientist runs them big without editing them (:class:`Params`):

=================================  ===========================================================
``CUSTOS_NB_DATA``                 where datasets are kept (default ``<CUSTOS_HOME>/notebooks``)
``CUSTOS_NB_IDENTITIES``           simulated population (default 1000)
``CUSTOS_NB_DURATION``             simulated event time: ``12h``, ``2d``, … (default ``1d``)
``CUSTOS_NB_SEED``                 training / exploration data seed (default 7)
``CUSTOS_NB_HELDOUT_SEED``         held-out data seed: another population, other attacks (11)
``CUSTOS_NB_KAFKA``                ``auto`` (default: use a reachable broker), ``1``, ``0``
``CUSTOS_NB_KAFKA_SINCE``          how far back to export from Kafka (default ``1h``)
``CUSTOS_NB_KAFKA_MAX``            at most this many records from Kafka (default 200000)
``CUSTOS_NOTEBOOK_FORCE_PUBLISH``  ``1``: 02 publishes its candidate even when it is not better
``CUSTOS_NB_PROMOTE``              ``1``: 02 also promotes and announces what it published
=================================  ===========================================================

Models are read from and published to ``CUSTOS_MODELS_DIR`` (the repository's ``models/`` by
default; the notebook test points it at a temporary copy) and signed with
``CUSTOS_MODEL_SIGNING_KEY`` (default ``<CUSTOS_HOME>/keys/model-signing.pem``).

A dataset (:func:`ensure_dataset`) is what ``custos simulate --out events.parquet --labels …
--directory …`` then ``custos replay events.parquet --out replay/`` produce, made once per
(identities, duration, seed) and reused: ``events.parquet``, ``labels.jsonl``,
``event-labels.jsonl``, ``directory.jsonl`` and ``replay/`` (``scores.parquet``,
``features.parquet``, ``alerts.jsonl``, …). The simulated time starts at a fixed instant
(:data:`DEFAULT_START_MS`), so the same parameters give the same data, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pipeline.config import Settings

if TYPE_CHECKING:
    from pipeline.events.schemas import Event
    from pipeline.models.registry import Loaded
    from pipeline.offline.evaluate import Evaluation
    from pipeline.simulate.labels import EventLabel, LabelRow

__all__ = [
    "DEFAULT_START_MS",
    "Dataset",
    "Params",
    "candidate",
    "current_model",
    "ensure_dataset",
    "evaluate_on",
    "finite",
    "kafka_status",
    "scenario_descriptions",
]

#: Simulated time starts here (a Monday, 00:00 UTC): reproducible datasets.
DEFAULT_START_MS: Final = 1_793_577_600_000  # 2026-11-02T00:00:00Z
_FORMAT: Final = 1  # bump when the dataset layout changes: older ones are rebuilt


def _duration(text: str) -> float:
    """``12h``, ``2d``, ``90m``, ``3600`` (seconds) → seconds, as ``custos simulate`` takes them.

    >>> _duration("12h"), _duration("1.5d"), _duration("90")
    (43200.0, 129600.0, 90.0)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h, 2d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[
        m.group(2)
    ]


@dataclass(frozen=True)
class Params:
    """The notebooks' parameters (see the module docstring for the variables)."""

    data_dir: Path
    identities: int = 1_000
    duration_s: float = 86_400.0
    seed: int = 7
    heldout_seed: int = 11
    kafka: str = "auto"
    kafka_since: str = "1h"
    kafka_max: int = 200_000
    force_publish: bool = False
    promote: bool = False

    @classmethod
    def from_env(
        cls, settings: Settings | None = None, env: Mapping[str, str] | None = None
    ) -> Params:
        env = os.environ if env is None else env
        settings = settings or Settings.from_env(env)

        def flag(name: str) -> bool:
            return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")

        return cls(
            data_dir=Path(env.get("CUSTOS_NB_DATA") or settings.home_path / "notebooks"),
            identities=int(env.get("CUSTOS_NB_IDENTITIES", "1000")),
            duration_s=_duration(env.get("CUSTOS_NB_DURATION", "1d")),
            seed=int(env.get("CUSTOS_NB_SEED", "7")),
            heldout_seed=int(env.get("CUSTOS_NB_HELDOUT_SEED", "11")),
            kafka=env.get("CUSTOS_NB_KAFKA", "auto").strip().lower(),
            kafka_since=env.get("CUSTOS_NB_KAFKA_SINCE", "1h"),
            kafka_max=int(env.get("CUSTOS_NB_KAFKA_MAX", "200000")),
            force_publish=flag("CUSTOS_NOTEBOOK_FORCE_PUBLISH"),
            promote=flag("CUSTOS_NB_PROMOTE"),
        )

    def describe(self) -> str:
        return (f"{self.identities:,} identities, {self.duration_s / 3600:g} h of event time, "
                f"seed {self.seed} (held-out seed {self.heldout_seed}); data in "
                f"{self.data_dir}")  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    """One simulated dataset and its replay outputs (see the module docstring)."""

    root: Path
    identities: int
    duration_s: float
    seed: int

    @property
    def events_path(self) -> Path:
        return self.root / "events.parquet"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def event_labels_path(self) -> Path:
        return self.root / "event-labels.jsonl"

    @property
    def directory_path(self) -> Path:
        return self.root / "directory.jsonl"

    @property
    def replay_dir(self) -> Path:
        return self.root / "replay"

    # --- loaders (pandas) --------------------------------------------------------------------
    def events(self, *, flat: bool = False) -> Any:
        """``events.parquet`` as a DataFrame; ``flat``: plus the event JSON's fields as columns."""
        import pandas as pd

        df = pd.read_parquet(self.events_path)
        if not flat:
            return df
        from pipeline.offline.export import json_table

        fields = json_table(df["event"]).to_pandas().drop(columns=["value", "decode_error"])
        fields = fields.drop(columns=[c for c in fields.columns if c in df.columns])
        return pd.concat([df.drop(columns=["event"]), fields], axis=1)

    def scores(self) -> Any:
        import pandas as pd

        return pd.read_parquet(self.replay_dir / "scores.parquet")

    def features(self) -> Any:
        import pandas as pd

        return pd.read_parquet(self.replay_dir / "features.parquet")

    def alerts(self) -> Any:
        """Findings (OCSF 2004) from ``alerts.jsonl``, flattened (one row per decision)."""
        from pipeline.offline.export import json_table

        lines = (self.replay_dir / "alerts.jsonl").read_bytes().splitlines()
        return json_table([x for x in lines if x.strip()], max_depth=3).to_pandas()

    def labels(self) -> Any:
        import pandas as pd

        return pd.read_json(self.labels_path, lines=True, dtype={"identity_uid": str})

    def directory(self) -> Any:
        import pandas as pd

        return pd.read_json(self.directory_path, lines=True)

    # --- what evaluate() takes ---------------------------------------------------------------
    def label_rows(self) -> list[LabelRow]:
        from pipeline.simulate.labels import read_labels

        return read_labels(self.labels_path)

    def event_label_rows(self) -> list[EventLabel]:
        from pipeline.simulate.labels import read_event_labels

        return read_event_labels(self.event_labels_path)

    def decoded_events(self) -> list[Event]:
        """Every event decoded as the worker does, in event-time order (stable)."""
        from pipeline.events.schemas import EventDecoder
        from pipeline.offline.replay import read_raw

        decoder = EventDecoder(max_future_skew_ms=10**13)  # recorded traffic
        events = [decoder.decode(raw) for _, raw in read_raw(self.events_path)]
        events.sort(key=lambda e: e.time_ms)
        return events

    def detection(self, settings: Settings) -> Any:
        """A fresh :class:`~pipeline.detection.Detection` with this population's directory."""
        from pipeline.detection import Detection
        from pipeline.scores.directory import Directory

        # Notebooks look at every score, not only those above the noise floor: all explained.
        return Detection.from_settings(settings, directory=Directory.load(self.directory_path),
                                       explain_all=True)

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "dataset.json").read_text())
        return data


def ensure_dataset(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int,
    data_dir: Path | str,
    start_ms: int = DEFAULT_START_MS,
    echo: Callable[[str], None] = print,
) -> Dataset:
    """The dataset for these parameters: reused if complete, else simulated and replayed.

    ``dataset.json`` is written last, so an interrupted build is redone, never half-used.
    Replay scores with the model the registry (``CUSTOS_MODELS_DIR``) promotes, adopted after
    the warm-up, exactly as a worker would.
    """
    from pipeline.offline.replay import replay
    from pipeline.simulate import simulate
    from pipeline.simulate.directory import write_directory
    from pipeline.simulate.profiles import build_population
    from pipeline.simulate.sinks import ParquetSink

    root = Path(data_dir) / f"sim-{identities}-{duration_s:g}s-seed{seed}"
    ds = Dataset(root, identities, duration_s, seed)
    marker = root / "dataset.json"
    wanted = {"format": _FORMAT, "identities": identities, "duration_s": duration_s,
              "seed": seed, "start_ms": start_ms}  # fmt: skip
    if marker.exists():
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            echo(f"dataset {root} (made {info.get('made_at')}): {info.get('events', 0):,} events")
            return ds
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    report = simulate(
        settings, identities=identities, duration_s=duration_s, seed=seed, start_ms=start_ms,
        rate=None, sink=ParquetSink(ds.events_path), labels_path=ds.labels_path,
        event_labels_path=ds.event_labels_path,
    )  # fmt: skip
    write_directory(build_population(identities, seed=seed), ds.directory_path)
    t1 = time.perf_counter()
    replayed = replay(
        dataclasses.replace(settings, directory_file=str(ds.directory_path)),
        ds.events_path,
        ds.replay_dir,
    )
    model = replayed.model
    info = {**wanted, "events": report.events, "campaigns": report.campaigns,
            "alerts": replayed.alerts, "findings": replayed.findings,
            "model": f"{model['name']} {model['version']}" if model else "built-in cold start",
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    marker.write_text(json.dumps(info, indent=2) + "\n")
    echo(f"dataset {root}: simulated {report.events:,} events ({report.campaigns} campaigns) "
         f"in {t1 - t0:.1f} s, replayed in {time.perf_counter() - t1:.1f} s: "
         f"{replayed.alerts:,} alerts, model {info['model']}")  # fmt: skip
    return ds


def current_model(settings: Settings) -> Loaded | None:
    """The promoted shared detector, verified as a worker verifies it (None: not promoted)."""
    from pipeline.models.runtime import ModelRuntime

    runtime = ModelRuntime(settings, "notebook")
    promo = runtime.registry.promoted(runtime.name)
    if promo is None:
        return None
    return runtime.registry.load(
        runtime.name, promo.version, runtime.trusted, expect_manifest_sha256=promo.manifest_sha256
    )


def candidate(artifact: bytes, kind: str = "sklearn", label: str = "candidate") -> Loaded:
    """An unpublished artifact, decoded as the registry would, to evaluate before signing it.

    Its manifest is a stand-in (``label``, version ``0``): nothing here is verified or signed;
    :meth:`~pipeline.models.registry.ModelRegistry.publish` then ``load`` do that.
    """
    from pipeline.models.artifacts import decode
    from pipeline.models.manifest import Manifest
    from pipeline.models.registry import Loaded

    stand_in = Manifest(name=label, version="0", kind=kind, artifact="-",  # type: ignore[arg-type]
                        artifact_sha256="", feature_schema="", created_at="")  # fmt: skip
    return Loaded(stand_in, f"unsigned {label}", decode(kind, artifact))


def evaluate_on(
    settings: Settings, dataset: Dataset, model: Loaded | None, *, source: str = ""
) -> Evaluation:
    """Detection quality of ``model`` on ``dataset``, as a worker would run it.

    A fresh worker scores with the built-in cold start and adopts the model after
    ``CUSTOS_MODEL_WARMUP_EVENTS`` events; ``model`` None keeps the cold start throughout.
    Exact event labels when the dataset has them.
    """
    from pipeline.offline.evaluate import evaluate

    event_labels = dataset.event_label_rows() if dataset.event_labels_path.exists() else None
    return evaluate(
        dataset.decoded_events(),
        dataset.label_rows(),
        dataset.detection(settings),
        event_labels=event_labels,
        swap_in=model,
        swap_after=settings.model_warmup_events,
        source=source or str(dataset.root),
    )


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Only the finite numbers (a manifest's metrics are JSON numbers: no NaN).

    >>> finite({"a": 1.0, "b": float("nan"), "c": float("inf")})
    {'a': 1.0}
    """
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def kafka_status(settings: Settings, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(reachable, what was found) for the broker ``settings`` point at, quickly and quietly."""
    from confluent_kafka import KafkaException

    from pipeline.kafka.clients import make_admin

    client_log = logging.getLogger("custos.kafka.client")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # an absent broker is an answer here, not an error
    try:
        md = make_admin(settings).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        return False, f"no broker at {settings.bootstrap_servers} ({exc.args[0].str()})"
    finally:
        client_log.setLevel(level)
    return True, f"broker at {settings.bootstrap_servers}: {len(md.topics)} topics"


def scenario_descriptions() -> dict[str, str]:
    """Scenario name → what it does, from :mod:`pipeline.simulate.scenarios`' documentation.

    >>> scenario_descriptions()["cloned_agent"]
    'the same agent uid active in two environments at the same time.'
    """
    from pipeline.simulate import scenarios

    doc = scenarios.__doc__ or ""
    found = re.findall(r"^\d+\. ``(\w+)`` - (.*?)(?=^\d+\. |^\S|\Z)", doc, re.M | re.S)
    return {name: " ".join(text.split()) for name, text in found}
