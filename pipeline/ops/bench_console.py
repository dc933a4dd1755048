"""The analyst console under a full queue: page load times with N open alerts in its store.

Real findings (a simulated, attacked population through the detection core and the OCSF
builder) are copied under new finding and identity uids until the store holds ``alerts`` open
ones, ingested as the follower ingests them, then each page is loaded repeatedly in process
(Starlette's test client: the server's time to answer, no network). The worker's side of the
identity page (its ``/custos/identity`` answer while it holds a million identities) is timed
by ``custos bench --memory-identities``.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Settings

__all__ = ["bench_console", "real_findings"]

Echo = Callable[[str], None]


def real_findings(
    settings: Settings, *, identities: int = 300, seed: int = 11
) -> list[dict[str, Any]]:
    """The alert findings the core raises on a simulated day with attacks."""
    from pipeline import __version__
    from pipeline.alerts.findings import build_finding
    from pipeline.detection import Detection
    from pipeline.events.schemas import EventDecoder
    from pipeline.simulate.run import Simulation

    sim = Simulation(settings, identities=identities, duration_s=86_400.0, seed=seed)
    decoder = EventDecoder(max_future_skew_ms=10**13)
    det = Detection(settings)
    store: dict[str, bytes] = {}
    out: list[dict[str, Any]] = []
    batch = []
    for _, _, value, _ in sim.events():
        batch.append(decoder.decode(value))
        if len(batch) >= settings.worker_batch:
            out += [build_finding(d, product_version=__version__)
                    for d in det.process(batch, store).decisions if d.is_alert]  # fmt: skip
            batch = []
    out += [build_finding(d, product_version=__version__)
            for d in det.process(batch, store).decisions if d.is_alert]  # fmt: skip
    return out


def _copies(seeds: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        doc = copy.deepcopy(seeds[i % len(seeds)])
        doc["finding_info"]["uid"] = f"bench-{i:07d}"
        for ev in doc.get("evidences") or ():
            user = (ev.get("actor") or {}).get("user")
            if user is not None:
                user["uid"] = f"{user['uid']}~{i % 5000}"
        doc["activity_id"] = 1  # open
        docs.append(doc)
    return docs


def _timed(get: Callable[[], Any], n: int) -> tuple[float, float]:
    """(median, worst) milliseconds of ``n`` loads after one warm-up."""
    get()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = get()
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"console page answered {r.status_code}")
    return statistics.median(times), max(times)


def bench_console(
    settings: Settings, alerts: int, echo: Echo, *, loads: int = 20
) -> dict[str, Any]:
    """Page load times of the console with ``alerts`` open findings."""
    from starlette.testclient import TestClient

    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore
    from pipeline.console.web import create_console

    seeds = real_findings(settings)
    if not seeds:
        raise RuntimeError("the simulated day raised no alert to copy")
    docs = _copies(seeds, alerts)
    with tempfile.TemporaryDirectory() as tmp:
        store = ConsoleStore(Path(tmp) / "console.db")
        t0 = time.perf_counter()
        lines = [("bench", 0, i, json.dumps(doc).encode()) for i, doc in enumerate(docs)]
        for start in range(0, len(lines), 1000):  # the follower's batches
            store.ingest(lines[start:start + 1000])
        ingest_s = time.perf_counter() - t0
        password = "bench password, not secret"
        Accounts(store).add("bench", password, "viewer")
        client = TestClient(create_console(store))
        page = client.get("/login")
        nonce = client.cookies.get("custos_login") or ""
        client.post("/login", data={"user": "bench", "password": password, "nonce": nonce},
                    headers={"origin": "http://testserver"})  # fmt: skip
        assert "bench (viewer)" in client.get("/").text, page.status_code
        last = docs[-1]
        ident = last["evidences"][0]["actor"]["user"]["uid"]
        oldest = store.findings(limit=1, before_seq=alerts // 2)[0]["seq"]
        pages = {
            "queue": lambda: client.get("/"),
            "queue_filtered": lambda: client.get("/?severity=4&kind=agent"),
            "queue_older_page": lambda: client.get(f"/?before={oldest}"),
            "finding": lambda: client.get(f"/findings/{last['finding_info']['uid']}"),
            "identity": lambda: client.get(f"/identities/{ident}"),
            "containment": lambda: client.get("/containment"),
        }
        result: dict[str, Any] = {"console_alerts": store.count(),
                                  "console_ingest_per_s": round(alerts / ingest_s)}  # fmt: skip
        echo(f"  console: {alerts:,} open alerts ({len(seeds)} real findings copied) ingested "
             f"at {alerts / ingest_s:,.0f}/s")  # fmt: skip
        for name, get in pages.items():
            med, worst = _timed(get, loads)
            result[f"console_{name}_ms_p50"] = round(med, 1)
            result[f"console_{name}_ms_max"] = round(worst, 1)
            echo(f"  console: {name:<17} median {med:7.1f} ms, worst {worst:7.1f} ms "
                 f"({loads} loads)")  # fmt: skip
    return result

