"""Throughput of EventDecoder.decode vs a plain json.loads baseline (single thread).

Run: ``/work/venv/bin/python tests/bench/bench_decode.py [--events N] [--repeats R]``.
Generates realistic mixed OCSF events in memory (60 % Authentication 3002, 40 % API Activity
6003; minimal, typical and large ones), then reports median events/s and MB/s over the repeats.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from pipeline.events.schemas import EventDecoder, encode_event_dict

COUNTRIES = ["DE", "FR", "IE", "US", "GB", "NL", "SE", "JP", "BR", "IN"]
SERVICES = ["vpn", "okta", "github", "aws-console", "jira", "mail"]
TOOLS = ["s3.GetObject", "s3.PutObject", "db.query", "http.fetch", "email.send", "slack.post"]


def make_event(rng: random.Random, i: int, now: int) -> dict[str, Any]:
    t = now - rng.randrange(3_600_000)
    size = rng.random()  # 20 % minimal, 65 % typical, 15 % large
    if rng.random() < 0.6:
        d: dict[str, Any] = {
            "class_uid": 3002,
            "activity_id": 1,
            "time": t,
            "metadata": {"uid": f"evt-{i}"},
            "user": {"uid": f"u-{rng.randrange(5000)}"},
        }
        if size >= 0.2:
            d.update(
                category_uid=3,
                type_uid=300201,
                severity_id=1,
                status_id=rng.choice([1, 1, 1, 2]),
                is_mfa=rng.random() < 0.8,
                auth_protocol=rng.choice(["SAML", "OIDC", "Kerberos"]),
                service={"name": rng.choice(SERVICES)},
                src_endpoint={
                    "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(256)}",
                    "location": {
                        "country": rng.choice(COUNTRIES),
                        "lat": rng.uniform(-60, 70),
                        "long": rng.uniform(-170, 170),
                    },
                    "autonomous_system": {"number": rng.randrange(1, 65000)},
                },
                dst_endpoint={"hostname": "sso.example.com"},
            )
            d["metadata"].update(version="1.8.0", product={"name": "Okta"})
            d["user"].update(name=f"user{i}@example.com", type_id=rng.choice([1, 1, 2, 4]))
        if size >= 0.85:  # vendors attach a lot of extra context we ignore
            d["enrichments"] = [{"name": f"k{j}", "value": "v" * 40} for j in range(20)]
            d["http_request"] = {"user_agent": "Mozilla/5.0 " * 10, "headers": ["a"] * 30}
        return d
    agent = rng.random() < 0.7
    d = {
        "class_uid": 6003,
        "activity_id": rng.choice([1, 2, 2, 2, 3, 4]),
        "time": t,
        "metadata": {"uid": f"evt-{i}"},
        "actor": {"user": {"uid": f"{'agent' if agent else 'svc'}-{rng.randrange(500)}"}},
    }
    if size >= 0.2:
        d["actor"]["session"] = {"uid": f"task-{rng.randrange(10000)}"}
        d["api"] = {"operation": rng.choice(TOOLS), "service": {"name": "tool-gw"}}
        d["resources"] = [
            {
                "uid": f"s3://bucket/path/{rng.randrange(10**6)}",
                "type": "object",
                "data_classification": {"confidentiality_id": rng.choice([1, 2, 3])},
            }
            for _ in range(rng.randrange(1, 4))
        ]
        d["traffic"] = {"bytes_in": rng.randrange(10**6), "bytes_out": rng.randrange(10**4)}
        d["src_endpoint"] = {"ip": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"}
        if agent:
            d["unmapped"] = {
                "identity_kind": "agent",
                "credential": {
                    "uid": f"cred-{i}",
                    "issued_to": d["actor"]["user"]["uid"],
                    "task_uid": d["actor"]["session"]["uid"],
                    "step": rng.randrange(50),
                    "expires_at": t + 900_000,
                },
                "model": {"name": "model-x", "version": "2025-06", "digest": "sha256:" + "ab" * 32},
                "delegated_by": f"u-{rng.randrange(5000)}",
                "environment": "prod-eu",
                "rationale": "Fetching the quarterly report the user asked for.",
            }
    if size >= 0.85:
        d["resources"] = d.get("resources", []) + [
            {"uid": f"doc-{j}", "type": "document"} for j in range(30)
        ]
        if "unmapped" in d:
            d["unmapped"]["rationale"] = "Long chain-of-thought summary. " * 40
    return d


def run(fn: Callable[[bytes], object], data: list[bytes], repeats: int) -> float:
    """Median seconds for one pass of fn over data."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in data:
            fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(42)
    now = time.time_ns() // 1_000_000
    data = [encode_event_dict(make_event(rng, i, now)) for i in range(args.events)]
    total_mb = sum(map(len, data)) / 1e6
    sizes = sorted(map(len, data))
    print(
        f"{len(data)} events, {total_mb:.1f} MB, size median {sizes[len(sizes) // 2]} B, "
        f"p95 {sizes[int(len(sizes) * 0.95)]} B, max {sizes[-1]} B"
    )

    dec = EventDecoder()
    for item in data:  # sanity: every generated event is valid
        dec.decode(item)

    results = {
        "EventDecoder.decode": run(dec.decode, data, args.repeats),
        "json.loads (baseline)": run(json.loads, data, args.repeats),
    }
    for name, secs in results.items():
        print(
            f"{name:24s} {len(data) / secs:>12,.0f} events/s  {total_mb / secs:>8.1f} MB/s  "
            f"{secs * 1e6 / len(data):6.2f} us/event"
        )
    ratio = results["json.loads (baseline)"] / results["EventDecoder.decode"]
    print(f"EventDecoder.decode is {ratio:.2f}x the speed of json.loads (which validates nothing)")


if __name__ == "__main__":
    main()
