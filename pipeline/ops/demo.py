"""The main job end to end: Kafka up, topics applied, the credential broker, the detection
worker and a responder running; simulated traffic (with attacks and some malformed input)
streamed in, plus a few live agents that use the broker for every step, one of them hijacked.
Shown live: alerts, quarantine answers and the hijacked agent being cut off."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import OFFSET_END, TopicPartition

from pipeline.config import REPO_ROOT, Settings, env_var
from pipeline.kafka.broker import Broker
from pipeline.kafka.clients import group_lag, make_consumer, make_producer
from pipeline.kafka.metrics import scrape
from pipeline.kafka.topics import apply_topics, load_topics
from pipeline.ops.localhost import free_port, healthy, stop, wait_until
from pipeline.simulate.malformed import bad_samples

Echo = Callable[[str], None]
_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}


def alert_line(finding: dict[str, Any]) -> str:
    """One live line per finding: who, how bad, why (the first explanation)."""
    uid = finding["evidences"][0]["actor"]["user"]["uid"]
    level = _LEVEL.get(finding.get("risk_level_id", 0), "?")
    action = {1: "NEW   ", 2: "UPDATE", 3: "CLOSED"}.get(finding["activity_id"], "?")
    custos = finding.get("unmapped", {}).get("custos", {})
    rules = custos.get("rules") or []
    why = rules[0].get("text") if rules and isinstance(rules[0], dict) else None
    if why is None:
        texts = custos.get("contributions") or [finding.get("message", "")]
        why = texts[0] if texts else ""
    quarantine = " QUARANTINE" if custos.get("quarantine") else ""
    return (
        f"  {action} {level:<8} risk {finding.get('risk_score', 0):>3} {uid:<14}"
        f"{quarantine} {str(why)[:90]}"
    )


EXAMPLE_AGENT_MODELS = REPO_ROOT / "models" / "examples" / "agent-models.yaml"


def _worker_env(settings: Settings, directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[env_var("bootstrap")] = settings.bootstrap_servers
    env[env_var("directory_file")] = str(directory)
    # The demo's world is the simulator's: its agent-model builds are registered in the
    # example registry (a deployment brings its own, or none).
    if not settings.model_allowlist_file:
        env[env_var("model_allowlist_file")] = str(EXAMPLE_AGENT_MODELS)
    env[env_var("broker_port")] = str(settings.broker_port)
    env[env_var("broker_state_dir")] = str(settings.broker_state_path)
    return env


def _owns_all(settings: Settings) -> bool:
    """The worker (its metrics page) holds every input partition, state restored."""
    owned = scrape(settings.worker_web_port).get("custos_partitions_owned", 0.0)
    return owned >= settings.worker_partitions


def ack_line(ack: dict[str, Any]) -> str | None:
    """One live line per final responder answer (the 102s are counted, not shown)."""
    resp = ack["body"]["openc2"]["response"]
    if resp["status"] == 102:
        return None
    ext = resp.get("results", {}).get("x-custos", {})
    who = ext.get("identity") or "?"
    broker = ext.get("adapters", {}).get("custos-broker", {})
    revoked = len(broker.get("revoked", []))
    return (f"  ACK {resp['status']}  {ext.get('action', '?'):<8} {who:<14} "
            f"{revoked} credential(s) revoked  {resp['status_text'][:60]}")  # fmt: skip


def _start_console(settings: Settings, env: dict[str, str], demo_dir: Path,
                   procs: list[subprocess.Popen[bytes]], echo: Echo) -> str:  # fmt: skip
    """The analyst console beside the demo, with a fresh password for its demo account
    (printed once: only the hash is kept)."""
    import secrets

    from pipeline.console.accounts import Accounts
    from pipeline.console.store import ConsoleStore, default_path

    password = secrets.token_urlsafe(12)
    Accounts(ConsoleStore(default_path(settings.home))).add("demo-analyst", password, "analyst")
    port = free_port()
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "pipeline", "console", "--port", str(port)], env=env,
        stdout=open(demo_dir / "console.log", "ab"), stderr=subprocess.STDOUT,
    ))  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: healthy(url.rstrip("/")), 30, "console")
    echo(f"console: {url} (user demo-analyst, password {password}; shown once, this run only)")
    return url


def run_demo(
    settings: Settings,
    *,
    identities: int,
    duration_s: float,
    seed: int,
    rate: float | None,
    echo: Echo = print,
    timeout_s: float = 1200.0,
) -> dict[str, Any]:
    """Run the whole loop once; return the final figures (also echoed as it goes)."""
    from pipeline.simulate import simulate
    from pipeline.simulate.directory import write_directory
    from pipeline.simulate.profiles import build_population
    from pipeline.simulate.sinks import KafkaSink

    if settings.managed_broker:
        started, secs = Broker(settings).up()
        state = f"started in {secs:.1f} s" if started else "already running"
        echo(f"kafka: {state} on {settings.bootstrap_servers}")
    report = apply_topics(settings, load_topics(settings.topics_file))
    echo(f"topics: {len(report.created)} created, {len(report.updated)} updated, "
         f"{len(report.unchanged)} unchanged")  # fmt: skip

    # The identity directory an IdP / agent registry would export for this population.
    demo_dir = settings.home_path / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    directory = demo_dir / f"directory-{identities}-{seed}.jsonl"
    write_directory(build_population(identities, seed=seed), directory)
    settings = dataclasses.replace(settings, directory_file=str(directory))

    # Watch the outputs from their current end: this run's findings and dead letters only.
    # No commits: it only assigns partitions, so its group is never joined nor left behind.
    watch = make_consumer(settings, f"custos-demo-watch-{time.time_ns()}", manual_commit=True,
                          bulk_fetch=False)  # fmt: skip
    parts = []
    for topic in (settings.alerts_topic, settings.deadletter_topic):
        md = watch.list_topics(topic, timeout=10)
        parts += [TopicPartition(topic, p, OFFSET_END) for p in md.topics[topic].partitions]
    watch.assign(parts)

    # The credential broker and a responder: quarantines really cut agents off.
    # A fresh broker state per run: a block left by the previous run would cut the live
    # agents off before anything happened.
    import shutil

    shutil.rmtree(demo_dir / "broker", ignore_errors=True)
    settings = dataclasses.replace(
        settings, broker_port=free_port(), broker_state_dir=str(demo_dir / "broker")
    )
    env = _worker_env(settings, directory)
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", name], env=env,
            stdout=open(demo_dir / f"{name}.log", "ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        return proc

    start("broker")
    wait_until(lambda: healthy(settings.broker_url), 30, "credential broker")
    echo(f"credential broker: {settings.broker_url} (state {settings.broker_state_path})")
    log = demo_dir / "worker.log"
    echo(f"worker: starting (consumer group {settings.app_id}, log {log})")
    worker = start("worker")
    wait_until(settings.command_jwks_path.exists, 60, "worker command key")
    start("respond")
    echo(f"responder: consumer group {settings.responder_group}, adapters "
         f"{settings.responder_adapters}")  # fmt: skip
    auditor = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "audit", "run"], env=env,
        stdout=open(demo_dir / "audit.log", "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    echo(f"auditor: every decision onto {settings.audit_topic}, signed checkpoints on "
         f"{settings.audit_checkpoints_topic}")  # fmt: skip
    console_url = _start_console(settings, env, demo_dir, procs, echo)
    from pipeline.credentials.broker import load_api_token
    from pipeline.ops.live import LiveAgents

    # Names of this run's own: an incident an earlier run left open in the worker's state must
    # not quarantine them before anything happened.
    run = time.strftime("%H%M%S")
    names = tuple(f"agt-live-{run}-{i}" for i in range(1, 5))
    live = LiveAgents(settings.broker_url, load_api_token(settings), make_producer(settings),
                      settings.agent_topic, agents=names, hijacked=names[2])  # fmt: skip
    for topic in (settings.quarantine_topic, settings.acks_topic):
        md = watch.list_topics(topic, timeout=10)
        parts += [TopicPartition(topic, p, OFFSET_END) for p in md.topics[topic].partitions]
    watch.assign(parts)

    bad_sent = [0]  # malformed samples sent (the simulator's events: sink.produced)
    sim_done = threading.Event()
    sim_error: list[BaseException] = []
    sim_report: list[Any] = []
    sim_ended: list[float] = []
    sink = KafkaSink(settings)  # its count is read live by the status line

    def produced_now() -> int:  # the simulator's events counted as they are sent
        return bad_sent[0] + sink.produced

    def produce_bad() -> None:
        bad = bad_samples(int(time.time() * 1000), tag=str(time.time_ns()))
        producer = make_producer(settings)
        for s in bad:
            producer.produce(s.topic, key=s.key, value=s.value)
        producer.flush(30)
        bad_sent[0] += len(bad)

    def simulator() -> None:
        try:
            produce_bad()
            sim_report.append(
                simulate(settings, identities=identities, duration_s=duration_s, seed=seed,
                         rate=rate, sink=sink, labels_path=demo_dir / "labels.jsonl")
            )  # fmt: skip
            produce_bad()
        except BaseException as exc:  # reported by the main thread, never swallowed
            sim_error.append(exc)
        finally:
            sim_ended.append(time.monotonic())
            sim_done.set()

    # Traffic starts once the worker owns its partitions, as in a deployment: on a fresh
    # checkout it first compiles its kernels (about 25 s here) and restores its state, and
    # "behind" is to measure the worker, not its start-up.
    ready_from = time.monotonic()
    wait_until(lambda: worker.poll() is not None or _owns_all(settings), 600,
               "the worker owning its partitions", step=0.5)  # fmt: skip
    if worker.poll() is not None:
        raise RuntimeError(f"the worker exited with {worker.returncode}; see {log}")
    echo(f"worker: owns its {settings.worker_partitions} partitions, "
         f"{time.monotonic() - ready_from:.1f} s after the responder started")  # fmt: skip
    t0 = time.monotonic()
    live.start()
    echo(f"live agents: {', '.join(live.agents)} use the broker for every step; "
         f"{live.hijacked} is hijacked once the worker has caught up")  # fmt: skip
    threading.Thread(target=simulator, name="simulator", daemon=True).start()
    echo(f"simulator: {identities:,} identities, {duration_s / 3600:.0f} h of event time, "
         "labelled attacks and a few malformed messages")  # fmt: skip
    echo("")
    findings: Counter[str] = Counter()
    alerted: set[str] = set()
    dead: Counter[str] = Counter()
    acks: Counter[int] = Counter()
    contains = 0
    live_seen = 0
    cut_off = False
    cut_off_at: float | None = None
    live_shown: set[tuple[str, str]] = set()
    shown = 0
    last_status = last_lag = 0.0
    lag = -1
    # How far behind the worker fell while the simulator ran, once it had started (joined its
    # group, restored its state) and caught up: committed offsets trail by up to
    # worker_commit_s, so a lag of that much input counts as caught up.
    steady = int((rate or 1_000.0) * (settings.worker_commit_s + 1.0))
    started_s: float | None = None
    max_lag = 0
    caught_up_s: float | None = None  # from the simulator's end to the worker's
    try:
        while True:
            for msg in watch.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None:
                    continue
                if msg.topic() == settings.deadletter_topic:
                    reason = dict(msg.headers() or []).get("custos.reason") or b"?"
                    dead[reason.decode() if isinstance(reason, bytes) else reason] += 1
                    continue
                if msg.topic() == settings.quarantine_topic:
                    contains += 1
                    continue
                if msg.topic() == settings.acks_topic:
                    ack = msgspec.json.decode(msg.value() or b"{}")
                    acks[int(ack["body"]["openc2"]["response"]["status"])] += 1
                    line = ack_line(ack)
                    if line and ("agt-live" in line or acks[200] <= 5):
                        echo(line)
                    continue
                finding = msgspec.json.decode(msg.value() or b"{}")
                findings[_LEVEL.get(finding.get("risk_level_id", 0), "?")] += 1
                if finding.get("is_alert") and finding["activity_id"] == 1:
                    alerted.add(finding["evidences"][0]["actor"]["user"]["uid"])
                    if shown < 40:  # the first ones live; the rest are counted
                        echo(alert_line(finding))
                        shown += 1
            for when, agent, what in live.log[live_seen:]:
                head = what.split(":")
                kind = ":".join(head[:2]) if what.startswith("call refused") else head[0]
                if ("refused" in what or "hijacked" in what) and (agent, kind) not in live_shown:
                    live_shown.add((agent, kind))
                    echo(f"  LIVE  {agent}: {what[:150]}")
                # Cut off = the broker now refuses the agent itself (quarantined), not just
                # the stolen credential it presented.
                if (
                    not cut_off
                    and live.hijacked_at is not None
                    and ("issuance refused" in what or "holder_blocked" in what)
                ):
                    cut_off, cut_off_at = True, when
                    if live.hijacked_at is not None:
                        echo(f"  LIVE  {agent} cut off {1000 * (when - live.hijacked_at):,.0f} ms "
                             "after its first hijacked call")  # fmt: skip
            live_seen = len(live.log)
            elapsed = time.monotonic() - t0
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {log}")
            if elapsed - last_lag >= 1.0:  # how far behind, sampled each second
                lag = group_lag(
                    settings, settings.app_id, [settings.identity_topic, settings.agent_topic]
                )
                last_lag = elapsed
                if started_s is None and 0 <= lag <= steady:
                    started_s = elapsed  # the worker has started and caught up once
                if not sim_done.is_set():
                    if started_s is not None:
                        max_lag = max(max_lag, lag)
                elif caught_up_s is None and lag < 200:
                    caught_up_s = elapsed - (sim_ended[0] - t0)
            if elapsed - last_status >= (1.0 if live.hijacked_at else 5.0):
                echo(f"[{elapsed:5.0f}s] produced {produced_now():,}  worker lag {lag:,}  "
                     f"findings {sum(findings.values()):,}  identities alerted {len(alerted):,}  "
                     f"dead letters {sum(dead.values())}  quarantines {contains}  "
                     f"acks {acks[200]}")  # fmt: skip
                last_status = elapsed
                # The live agents keep a trickle going: "caught up" = a lag of a few events.
                if sim_done.is_set() and lag < 200 and live.hijacked_at is None:
                    echo(f"  the worker caught up: hijacking {live.hijacked} now")
                    live.hijack_now()
                if sim_error or (sim_done.is_set() and lag < 200 and cut_off):
                    break
            if elapsed > timeout_s:
                echo(f"stopping after {timeout_s:.0f} s")
                break
    finally:
        live.stop()
        watch.close()
        # The auditor records what the others decided until the very end, then signs.
        audited = [settings.alerts_topic, settings.quarantine_topic, settings.approvals_topic,
                   settings.acks_topic]  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and auditor.poll() is None:
            if group_lag(settings, settings.auditor_group, audited) == 0:
                break
            time.sleep(1.0)
        stop([auditor])
        stop(procs)
    if sim_error:
        raise sim_error[0]
    elapsed = time.monotonic() - t0
    sim = sim_report[0] if sim_report else None
    echo("")
    echo("Summary")
    echo("-------")
    if sim is not None:
        echo(f"  simulated events       {sim.events:>10,}  ({sim.events_per_s:,.0f}/s into Kafka)")
        echo(f"  labelled campaigns     {sim.campaigns:>10,}  ({demo_dir}/labels.jsonl)")
    echo(f"  identities alerted     {len(alerted):>10,}")
    for level in ("Critical", "High", "Medium", "Low", "Info"):
        if findings[level]:
            echo(f"  findings {level:<13} {findings[level]:>10,}")
    for reason, n in sorted(dead.items()):
        echo(f"  dead letter {reason:<18} {n:>6,}")
    echo(f"  quarantine commands    {contains:>10,}  (signed OpenC2 contain on "
         f"{settings.quarantine_topic})")  # fmt: skip
    echo(f"  responder answers      {acks[200]:>10,}  done (200); {acks[102]:,} received (102); "
         f"{sum(v for k, v in acks.items() if k >= 400):,} refused or failed")  # fmt: skip
    refused = {k: v for k, v in live.counts.items() if "refused" in k}
    echo(f"  live agent calls       {live.counts.get('call ok', 0):>10,}  ok; refused: "
         f"{', '.join(f'{k} {v}' for k, v in refused.items()) or 'none'}")  # fmt: skip
    from pipeline.audit.auditor import load_public, public_key_path, read_log
    from pipeline.audit.log import verify as verify_audit

    entries, texts = read_log(settings)
    audit_report = verify_audit(
        entries, texts, settings.audit_origin,
        load_public(public_key_path(settings.home_path)),
    )  # fmt: skip
    verdict = "OK" if audit_report.ok else "TAMPERED: " + "; ".join(audit_report.problems[:3])
    echo(f"  audit log              {audit_report.records:>10,}  records, "
         f"{audit_report.checkpoints} checkpoints; custos audit verify: {verdict}")  # fmt: skip
    # Which model the worker scored with, as the audit log recorded it (issue: provenance).
    model_steps = []
    for e in entries:
        rec = msgspec.json.decode(e)
        if str(rec.get("kind", "")).startswith("model.") and rec.get("actor", "").startswith(
            "worker:"
        ):
            m = (rec.get("refs") or {}).get("model") or {}
            model_steps.append(f"{rec['kind'][6:]} {m.get('name', '?')} {m.get('version', '?')}")
    echo(f"  shared detector model  {' → '.join(model_steps[-3:]) or 'no report'}  "
         f"(signed, verified; custos models list)")  # fmt: skip
    caught_up = "yes" if lag < 200 else "no"
    echo(f"  wall time              {elapsed:>10.1f} s; worker caught up: {caught_up}")
    behind = f" (≈ {max_lag / rate:.1f} s of input at {rate:,.0f}/s)" if rate else ""
    after = f"{caught_up_s:.1f} s" if caught_up_s is not None else "not seen"
    began = f"{started_s:.0f} s" if started_s is not None else "never"
    # Lag is read from committed offsets: after every batch with snapshots, else every commit_s.
    commits = ("after every batch" if settings.snapshot_interval_s > 0
               else f"every {settings.worker_commit_s:g} s")  # fmt: skip
    echo(f"  worker behind, at most {max_lag:>10,}  events{behind} once started (caught up at "
         f"{began}), offsets committed {commits}; caught up {after} after the simulator ended")
    echo(f"Findings are OCSF 2004 JSON on {settings.alerts_topic}; the broker keeps running "
         "(custos kafka down stops it).")  # fmt: skip
    echo(f"The console stopped with the demo ({console_url}); `custos console` serves it "
         "again, with every finding of this run (same account).")  # fmt: skip
    return {
        "produced": produced_now(),
        "findings": dict(findings),
        "alerted": len(alerted),
        "dead": dict(dead),
        "elapsed_s": elapsed,
        "caught_up": lag < 200,
        "max_lag": max_lag,
        "started_s": started_s,
        "caught_up_s": caught_up_s,
        "quarantines": contains,
        "acks": dict(acks),
        "hijacked_cut_off": cut_off,
        "audit_ok": audit_report.ok,
        "audit_records": audit_report.records,
        "cut_off_ms": (
            1000 * (cut_off_at - live.hijacked_at)
            if cut_off_at is not None and live.hijacked_at is not None
            else None
        ),
    }
