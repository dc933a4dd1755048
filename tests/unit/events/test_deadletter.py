from __future__ import annotations

import threading

from pipeline.errors import InvalidEvent
from pipeline.events.deadletter import ReasonCounter, dead_letter, dead_letter_headers


def test_dead_letter_keeps_original_bytes_and_names_the_source() -> None:
    raw = b"\xff\x00 not json at all"
    dl = dead_letter(
        InvalidEvent("invalid_json", "bad utf-8"),
        key=b"user-1",
        value=raw,
        topic="identity.events",
        partition=4,
        offset=123456,
        timestamp_ms=1_700_000_000_000,
        now_ms=1_700_000_000_999,
        source_headers=[("traceparent", b"00-abc"), ("custos.reason", b"forged"),
                        ("Custos.Reason", b"forged"), ("CUSTOS.source.offset", b"1"),
                        (" custos.detail", b"forged")],
    )
    h = dict(dl.headers)
    assert dl.value is raw and dl.key == b"user-1" and dl.reason == "invalid_json"
    assert h["custos.reason"] == b"invalid_json"
    assert h["custos.source.topic"] == b"identity.events"
    assert h["custos.source.partition"] == b"4" and h["custos.source.offset"] == b"123456"
    assert h["custos.source.timestamp"] == b"1700000000000"
    assert h["traceparent"] == b"00-abc"
    # A producer cannot smuggle in its own verdict: only one custos.reason, ours.
    assert [k for k, _ in dl.headers].count("custos.reason") == 1
    # ... whatever its case or padding.
    assert b"forged" not in dict(dl.headers).values()
    assert "CUSTOS.source.offset" not in dict(dl.headers)


def test_detail_is_bounded() -> None:
    dl = dead_letter(
        InvalidEvent("oversized", "x" * 10_000),
        key=None, value=b"", topic="t", partition=0, offset=0, timestamp_ms=None, now_ms=0,
    )  # fmt: skip
    assert len(dict(dl.headers)["custos.detail"]) <= 1000  # type: ignore[arg-type]
    assert "custos.source.timestamp" not in dict(dl.headers)


def test_reason_counter_is_thread_safe() -> None:
    c = ReasonCounter()

    def work() -> None:
        for _ in range(10_000):
            c.add("identity.events", "invalid_json")
            c.add("agent.events", "oversized")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.by_reason() == {"invalid_json": 40_000, "oversized": 40_000}
    assert c.total() == 80_000
    assert c.snapshot()[("agent.events", "oversized")] == 40_000


def test_a_tombstone_becomes_an_empty_value_with_a_marker() -> None:
    dl = dead_letter(
        InvalidEvent("invalid_json", "no value"),
        key=None, value=None, topic="t", partition=0, offset=5, timestamp_ms=None, now_ms=0,
    )  # fmt: skip
    assert dl.value == b"" and dict(dl.headers)["custos.source.tombstone"] == b"1"


def test_headers_for_a_refused_command_say_why_and_where_from() -> None:
    # What the responder's dead letters carry: a reason and the command's position only.
    h = dead_letter_headers("quarantine_failed", partition=2, offset=17)
    assert h == [("custos.reason", b"quarantine_failed"), ("custos.source.partition", b"2"),
                 ("custos.source.offset", b"17")]  # fmt: skip
