"""Per-event cost of features + baselines, and the serialised size of a baseline (one core).

Run: ``/work/venv/bin/python tests/bench/bench_baselines.py [--events N] [--identities M]``.

Builds ~200k synthetic events of 10k identities (humans on office hours, services around the
clock, delegated agents; each with a few habitual countries / ASNs / addresses / operations /
resources and occasional new ones), in time order, as typed ``Event`` objects in memory. Then:

1. ``extract`` alone;
2. the own-baseline path per event: ``extract`` + ``deviations`` + ``learn_one``;
3. the full cold-start path: 2. + the peer group's ``deviations`` / ``learn_one`` + ``blend``;
4. each stage on its own (per-event timers, ~0.05 µs timer overhead included);
5. ``to_bytes`` size per identity (mean, p99, max) and ``to_bytes`` / ``from_bytes`` cost.

Times are medians over chunks of 1,000 events (µs per event).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from pipeline.baselines.baselines import BaselineModel, blend, peer_group_key
from pipeline.baselines.features import Features, extract
from pipeline.baselines.layout import BaselineState
from pipeline.events.schemas import Event, ModelRef, Resource

START_MS = 1_767_225_600_000  # Thursday 2026-01-01 00:00 UTC
DAY_MS = 86_400_000
COUNTRIES = ["DE", "FR", "IE", "US", "GB", "NL", "SE", "JP", "BR", "IN", "ES", "PL"]
SERVICES = ["crm", "mail", "github", "aws", "jira", "vpn", "okta", "s3", "db", "slack"]
VERBS = ["read", "list", "get", "put", "query", "export", "send", "update", "delete", "search"]
PROTOCOLS = ["SAML", "OIDC", "Kerberos", "NTLM"]
CHUNK = 1000


class Persona:
    """One identity's habits: what it usually does, where from, and when."""

    def __init__(self, rng: random.Random, i: int) -> None:
        u = rng.random()
        self.kind = "human" if u < 0.6 else "service" if u < 0.8 else "agent"
        self.uid = f"{self.kind[:3]}-{i:05d}"
        self.country = rng.choice(COUNTRIES)
        self.asn = rng.randrange(1000, 65000)
        self.prefix = f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}"
        self.ops = [f"{rng.choice(SERVICES)}.{rng.choice(VERBS)}" for _ in range(rng.randint(2, 8))]
        self.resources = [f"res://{self.uid}/{j}" for j in range(rng.randint(1, 12))]
        self.bytes_out = math.exp(rng.uniform(5, 14))
        self.bytes_in = math.exp(rng.uniform(6, 16))
        self.start_hour = rng.randint(6, 10)
        self.owner = f"hum-{rng.randrange(6000):05d}"
        self.digest = "sha256:" + f"{rng.getrandbits(256):064x}"
        self.mfa = rng.choice([0.99, 0.9, 0.3])

    def event(self, rng: random.Random, n: int, t: int) -> Event:
        novel = rng.random() < 0.03  # now and then something new
        country = rng.choice(COUNTRIES) if novel else self.country
        op = f"{rng.choice(SERVICES)}.{rng.choice(VERBS)}" if novel else rng.choice(self.ops)
        service = op.split(".")[0]
        ip = f"{self.prefix}.{rng.randrange(1, 255)}"
        if self.kind == "human" and rng.random() < 0.3:
            return Event(
                uid=f"e-{n}",
                class_uid=3002,
                activity_id=1,
                time_ms=t,
                identity_uid=self.uid,
                identity_kind="human",
                status_id=2 if rng.random() < 0.03 else 1,
                is_mfa=rng.random() < self.mfa,
                auth_protocol=rng.choice(PROTOCOLS[:2]),
                service="okta",
                src_ip=ip,
                country=country,
                asn=self.asn,
            )
        rank_id = rng.choice([1, 1, 2, 2, 5, 6, 3])
        k = rng.randint(1, 3)
        resources = tuple(
            Resource(rng.choice(self.resources), "object", rank_id if j == 0 else 1)
            for j in range(k)
        )
        agent = self.kind == "agent"
        return Event(
            uid=f"e-{n}",
            class_uid=6003,
            activity_id=2,
            time_ms=t,
            identity_uid=self.uid,
            identity_kind=self.kind,  # type: ignore[arg-type]
            status_id=2 if rng.random() < 0.01 else 1,
            service=service,
            operation=op,
            src_ip=ip,
            country=country,
            asn=self.asn,
            bytes_out=int(self.bytes_out * math.exp(rng.gauss(0, 0.4))),
            bytes_in=int(self.bytes_in * math.exp(rng.gauss(0, 0.4))),
            resources=resources,
            delegated_by=self.owner if agent else None,
            model=ModelRef("m", "1", self.digest) if agent else None,
            environment="prod-eu" if self.kind != "human" else None,
        )

    def time(self, rng: random.Random, days: int) -> int:
        day = rng.randrange(days)
        if self.kind == "human":
            hour = self.start_hour + rng.random() * 9
        else:
            hour = rng.random() * 24
        return START_MS + day * DAY_MS + int(hour * 3_600_000)


def make_events(n_events: int, n_identities: int, days: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    people = [Persona(rng, i) for i in range(n_identities)]
    # Activity is skewed (a few identities do most of the work), as in real tenants.
    weights = [1.0 / (1 + i) ** 0.6 for i in range(n_identities)]
    rng.shuffle(weights)
    chosen = rng.choices(people, weights=weights, k=n_events)
    stamped = sorted(((p.time(rng, days), j, p) for j, p in enumerate(chosen)), key=lambda x: x[:2])
    return [p.event(rng, j, t) for t, j, p in stamped]


def chunked(fn: Callable[[list[Event]], None], events: list[Event]) -> float:
    """Median µs/event over chunks of CHUNK events."""
    per: list[float] = []
    for i in range(0, len(events), CHUNK):
        chunk = events[i : i + CHUNK]
        t0 = time.perf_counter_ns()
        fn(chunk)
        per.append((time.perf_counter_ns() - t0) / 1000 / len(chunk))
    return statistics.median(per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    t0 = time.perf_counter()
    events = make_events(args.events, args.identities, args.days, args.seed)
    print(
        f"{len(events):,} events, {args.identities:,} identities, {args.days} days "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )

    model = BaselineModel()
    peer_model = BaselineModel(cat_slots=16, scope="peer")

    def run_extract(chunk: list[Event]) -> None:
        for e in chunk:
            extract(e)

    own: dict[str, BaselineState] = {}

    def run_own(chunk: list[Event]) -> None:
        for e in chunk:
            f = extract(e)
            s = own.get(f.identity_uid)
            if s is None:
                s = own[f.identity_uid] = model.new_state()
            model.deviations(s, f)
            model.learn_one(s, f)

    own2: dict[str, BaselineState] = {}
    peers: dict[str, BaselineState] = {}

    def run_full(chunk: list[Event]) -> None:
        for e in chunk:
            f = extract(e)
            s = own2.get(f.identity_uid)
            if s is None:
                s = own2[f.identity_uid] = model.new_state()
            key = peer_group_key(f)
            p = peers.get(key)
            if p is None:
                p = peers[key] = peer_model.new_state()
            rate = model.current_rate(s, f)
            own_dev, _ = model.deviations(s, f)
            peer_dev, _ = peer_model.deviations(p, f, rate)
            blend(own_dev, peer_dev, model.own_weight(s))
            model.learn_one(s, f)
            peer_model.learn_one(p, f, rate)

    results = {
        "extract": chunked(run_extract, events),
        "extract + deviations + learn_one": chunked(run_own, events),
        "... + peer deviations/learn + blend": chunked(run_full, events),
    }
    for name, us in results.items():
        print(f"{name:38s} {us:6.2f} us/event  ({1e6 / us:>9,.0f} events/s)")

    # Per-stage split on fresh states, with per-event timers.
    feats: list[Features] = [extract(e) for e in events]
    states: dict[str, BaselineState] = {}
    t_dev: list[int] = []
    t_learn: list[int] = []
    clock = time.perf_counter_ns
    for f in feats:
        s = states.get(f.identity_uid)
        if s is None:
            s = states[f.identity_uid] = model.new_state()
        a = clock()
        model.deviations(s, f)
        b = clock()
        model.learn_one(s, f)
        c = clock()
        t_dev.append(b - a)
        t_learn.append(c - b)
    for name, ts in (("deviations", t_dev), ("learn_one", t_learn)):
        ts.sort()
        print(
            f"{name:38s} {statistics.median(ts) / 1000:6.2f} us/event median, "
            f"p99 {ts[int(len(ts) * 0.99)] / 1000:.2f} us"
        )

    sizes = sorted(len(model.to_bytes(s)) for s in states.values())
    peer_sizes = [len(peer_model.to_bytes(p)) for p in peers.values()]
    print(
        f"state bytes per identity: mean {statistics.mean(sizes):.0f}, "
        f"p99 {sizes[int(len(sizes) * 0.99)]}, max {sizes[-1]} (bound {model.max_bytes}); "
        f"peer groups: {len(peer_sizes)}, max {max(peer_sizes)} B"
    )
    busiest = max(states.values(), key=lambda s: s.n)
    print(f"busiest identity: {busiest.n} events, {len(model.to_bytes(busiest))} B")
    blobs = [model.to_bytes(s) for s in states.values()]
    a = time.perf_counter_ns()
    for s in states.values():
        model.to_bytes(s)
    b = time.perf_counter_ns()
    for blob in blobs:
        model.from_bytes(blob)
    c = time.perf_counter_ns()
    print(
        f"to_bytes {(b - a) / 1000 / len(blobs):.2f} us/state, "
        f"from_bytes {(c - b) / 1000 / len(blobs):.2f} us/state"
    )


if __name__ == "__main__":
    main()
