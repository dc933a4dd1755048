"""custos replay: the worker's code path over files, with every output the issue names."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.baselines.layout import DEVIATIONS
from pipeline.config import Settings
from pipeline.offline.replay import SCORE_COLUMNS, replay
from pipeline.simulate import Simulation
from pipeline.simulate.directory import write_directory
from pipeline.simulate.labels import write_labels
from pipeline.simulate.profiles import build_population
from pipeline.simulate.sinks import JsonlSink, ParquetSink

BAD = b'{"class_uid": 3002, "time": "yesterday"}'


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, Path]:
    tmp = tmp_path_factory.mktemp("replay")
    settings = Settings.from_env({}, home=str(tmp / "home"), model_trust_local_key=False,
                                 directory_file=str(tmp / "directory.jsonl"))  # fmt: skip
    sim = Simulation(settings, identities=150, duration_s=6 * 3600, seed=5)
    jsonl, parquet = JsonlSink(tmp / "events.jsonl"), ParquetSink(tmp / "events.parquet")
    for topic, key, value, _ in sim.events():
        jsonl.write(topic, key, value)
        parquet.write(topic, key, value)
    jsonl.write("identity.events", b"x", BAD)
    jsonl.close()
    parquet.close()
    write_labels(tmp / "labels.jsonl", sim.label_rows())
    write_directory(build_population(150, seed=5), tmp / "directory.jsonl")
    return settings, tmp / "events.jsonl", tmp / "events.parquet"


def test_replay_writes_every_output(data: tuple[Settings, Path, Path], tmp_path: Path) -> None:
    settings, jsonl, _ = data
    res = replay(settings, jsonl, tmp_path)
    n_lines = sum(1 for line in jsonl.read_bytes().splitlines() if line.strip())
    assert res.events == n_lines and res.dead == 1 and res.scored == n_lines - 1
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(scores.columns) == list(SCORE_COLUMNS) and len(scores) == res.scored
    assert scores["time_ms"].is_monotonic_increasing  # event-time order
    assert scores["score"].between(0, 1).all()
    features = pd.read_parquet(tmp_path / "features.parquet")
    assert len(features) == res.scored and set(DEVIATIONS) <= set(features.columns)
    assert (features["event_uid"] == scores["event_uid"]).all()
    [dead] = [json.loads(x) for x in (tmp_path / "deadletter.jsonl").read_text().splitlines()]
    assert base64.b64decode(dead["value_b64"]) == BAD  # the original bytes
    assert dead["offset"] == n_lines - 1 and dead["source"] == str(jsonl)
    assert dead["reason"]
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts and all(a["class_uid"] == 2004 for a in alerts)
    assert res.alerts == sum(a["activity_id"] == 1 and a["is_alert"] for a in alerts)
    assert res.findings == len(alerts)
    commands = [json.loads(x) for x in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert len(commands) == res.commands
    finding_uids = {a["finding_info"]["uid"] for a in alerts}
    for c in commands:  # every command is about a finding that was published before it
        ext = c["command"]["body"]["openc2"]["request"]["args"]["x-custos"]
        assert ext["finding_uid"] in finding_uids and c["topic"] in ("quarantine", "approvals")
    reports = [json.loads(x) for x in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert reports[0]["kind"] in ("model.pending", "model.loaded", "model.none")


def test_parquet_and_jsonl_inputs_give_the_same_output(
    data: tuple[Settings, Path, Path], tmp_path: Path
) -> None:
    settings, jsonl, parquet = data
    replay(settings, jsonl, tmp_path / "a")
    replay(settings, parquet, tmp_path / "b")
    a = (tmp_path / "a" / "alerts.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "alerts.jsonl").read_bytes() and a
    sa = pd.read_parquet(tmp_path / "a" / "scores.parquet")
    sb = pd.read_parquet(tmp_path / "b" / "scores.parquet")
    pd.testing.assert_frame_equal(sa, sb)


def test_replayed_feedback_takes_effect_at_its_time(
    data: tuple[Settings, Path, Path], tmp_path: Path
) -> None:
    from pipeline.control.feedback import Feedback, encode

    settings, jsonl, _ = data
    replay(settings, jsonl, tmp_path / "plain")
    alerts = [json.loads(x) for x in (tmp_path / "plain" / "alerts.jsonl").read_text().splitlines()]
    first = next(a for a in alerts if a["activity_id"] == 1 and a["is_alert"])
    who = first["evidences"][0]["actor"]["user"]["uid"]
    fid = first["finding_info"]["uid"]
    fb = Feedback(uid="fb-1", action="false_positive", identity=who, by="analyst:alice",
                  reason="known maintenance", finding_uid=fid, learn_as_normal=True,
                  at_ms=first["time"] + 1)  # fmt: skip
    (tmp_path / "feedback.jsonl").write_bytes(encode(fb) + b"\n")
    res = replay(settings, jsonl, tmp_path / "fb", feedback_path=tmp_path / "feedback.jsonl")
    assert res.feedback == 1
    out = [json.loads(x) for x in (tmp_path / "fb" / "alerts.jsonl").read_text().splitlines()]
    closed = [a for a in out if a["finding_info"]["uid"] == fid and a["activity_id"] == 3]
    assert closed and "false positive" in closed[0]["unmapped"]["custos"]["reason"]
    reports = [json.loads(x) for x in (tmp_path / "fb" / "reports.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "feedback.applied" and r["subject"] == who for r in reports)

    # custos evaluate replays the same feedback at the same time: the same incidents alert.
    from pipeline.offline.evaluate import run_evaluation

    alerted = {a["finding_info"]["uid"] for a in out if a["is_alert"] and a["activity_id"] != 3}
    result = run_evaluation(settings, events_path=str(jsonl),
                            labels_path=str(jsonl.parent / "labels.jsonl"),
                            directory_path=settings.directory_file, echo=print,
                            feedback_path=tmp_path / "feedback.jsonl")  # fmt: skip
    assert {a.finding_uid for a in result.alert_records} == alerted


def test_evaluate_counts_exactly_the_alerts_replay_publishes(
    data: tuple[Settings, Path, Path], tmp_path: Path
) -> None:
    """Same events, same model selection, same batches: the same incidents alert."""
    from pipeline.offline.evaluate import run_evaluation

    settings, _, parquet = data
    replay(settings, parquet, tmp_path / "r")
    lines = (tmp_path / "r" / "alerts.jsonl").read_text().splitlines()
    alerted = {a["finding_info"]["uid"] for a in map(json.loads, lines) if a["is_alert"]}
    labels = str(parquet.parent / "labels.jsonl")
    result = run_evaluation(settings, events_path=str(parquet), labels_path=labels,
                            directory_path=settings.directory_file, echo=print)
    assert alerted and {a.finding_uid for a in result.alert_records} == alerted


def test_replay_accounts_for_every_record_of_a_hostile_file(
    data: tuple[Settings, Path, Path], tmp_path: Path
) -> None:
    """Issue 12.8: empty records, tombstones and junk are dead-lettered and counted, none lost."""
    from pipeline.simulate.malformed import bad_samples

    settings, jsonl, _ = data
    good = jsonl.read_bytes().splitlines()[:300]
    bad = [s.value for s in bad_samples(1_760_000_000_000, tag="replay") if s.value is not None]
    bad = [b for b in bad if b"\n" not in b and b"\r" not in b]  # one record per line
    hostile = [b"", b"   ", b"\t", b"null", b"{}", b"[]", b"\xff\xfe", *bad]
    lines = [x for pair in zip(good, hostile * 50, strict=False) for x in pair] + hostile
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = replay(settings, path, tmp_path / "out")
    assert res.events == len(lines) and res.scored + res.dead == res.events
    assert res.scored == len({json.loads(g)["metadata"]["uid"] for g in good})
    dead = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_text().splitlines()]
    assert len(dead) == res.dead
    by_offset = {d["offset"]: base64.b64decode(d["value_b64"]) for d in dead}
    assert all(by_offset[d["offset"]] == lines[d["offset"]] for d in dead)  # bytes intact
    assert by_offset[1] == b"" and dead[0]["reason"] == "invalid_json"


def test_replay_of_a_10k_hostile_corpus_accounts_for_every_record(tmp_path: Path) -> None:
    """Issue 12, reliability suite: sent = scored + dead-lettered, bytes intact, none twice."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.simulate.hostile import corpus

    records = corpus(10_000, seed=12, now_ms=int(time.time() * 1000))
    path = tmp_path / "hostile.parquet"
    pq.write_table(pa.table({"value": pa.array([r.value for r in records], pa.binary())}), path)
    settings = Settings.from_env({}, home=str(tmp_path / "home"))
    res = replay(settings, path, tmp_path / "out")
    dead = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_text().splitlines()]
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    print(f"hostile replay: sent {len(records)}, scored {res.scored}, dead-lettered {res.dead}, "
          f"lost {len(records) - res.scored - res.dead}, "
          f"duplicated {res.scored + res.dead - len(records)}")  # fmt: skip
    assert res.events == len(records) and res.scored + res.dead == len(records)
    assert len(dead) == res.dead and len(scores) == res.scored
    for d in dead:  # the original bytes, at the record's own offset
        assert base64.b64decode(d["value_b64"]) == (records[d["offset"]].value or b"")
    dead_at = {d["offset"] for d in dead}
    assert all(i not in dead_at for i, r in enumerate(records) if r.valid is True)
    assert all(i in dead_at for i, r in enumerate(records) if r.valid is False)
    valid_uids = {f"hostile-{i}" for i, r in enumerate(records) if r.valid is True}
    assert valid_uids <= set(scores["event_uid"])
    # Nothing scored twice (a byte flip may make two records share an uid: count records).
    assert len(scores) == len(records) - len(dead_at)
