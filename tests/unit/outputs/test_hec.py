"""Splunk HEC: batches of OCSF findings as a local collector receives them, and HEC's answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.outputs.hec import HecOutput, batches
from tests.unit.outputs.receivers import MISUSE, HttpReceiver, alert

SUCCESS = (200, b'{"text":"Success","code":0}')


def _events(body: bytes) -> list[dict[str, Any]]:
    """Concatenated JSON objects, read one after another as HEC does."""
    dec = json.JSONDecoder()
    text, i, out = body.decode(), 0, []
    while i < len(text):
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def test_findings_arrive_as_hec_events_carrying_the_finding_as_published() -> None:
    alerts = [alert(uid=f"f-{i}", rules=[MISUSE]) for i in range(5)]
    with HttpReceiver([SUCCESS]) as r:
        out = HecOutput(r.url, "tok-1", host="custos-1", index="zt", max_events=2)
        jobs = out.build(alerts)
        assert [out.send(j).status for j in jobs] == ["ok"] * 3
    assert [req.path for req in r.requests] == ["/services/collector/event"] * 3
    assert {req.headers["Authorization"] for req in r.requests} == {"Splunk tok-1"}
    got = [e for req in r.requests for e in _events(req.body)]
    assert [len(_events(req.body)) for req in r.requests] == [2, 2, 1]
    for a, e in zip(alerts, got, strict=True):
        assert e["time"] == 1700000000.123
        assert (e["host"], e["source"], e["sourcetype"], e["index"]) == (
            "custos-1", "custos", "ocsf:detection_finding", "zt")
        assert e["event"] == a.finding
    # The event is the published bytes themselves, not a re-encoding of them.
    assert alerts[0].raw in r.requests[0].body


def test_batches_respect_the_byte_bound() -> None:
    alerts = [alert(uid=f"f-{i}") for i in range(4)]
    one = len(HecOutput("http://x", "t", host="h").build(alerts[:1])[0].body)
    jobs = HecOutput("http://x", "t", host="h", max_bytes=2 * one + 1).build(alerts)
    assert [len(_events(j.body)) for j in jobs] == [2, 2]
    assert all(len(j.body) <= 2 * one + 1 for j in jobs)
    # An event larger than the bound travels alone (the collector decides about it).
    assert [len(b) for b in batches([b"x" * 50, b"y", b"z"], max_events=10, max_bytes=10)] == [
        1, 2]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (SUCCESS, "ok"),
        ((403, b'{"text":"Invalid token","code":4}'), "retry"),  # every batch would fail alike
        ((401, b'{"text":"Token is required","code":2}'), "retry"),
        ((503, b'{"text":"Server is busy","code":9}'), "retry"),
        ((503, b'{"text":"HEC is unhealthy, queues are full","code":18}'), "retry"),
        ((500, b'{"text":"Internal server error","code":8}'), "retry"),
        ((400, b'{"text":"Invalid data format","code":6,"invalid-event-number":0}'), "failed"),
        ((400, b'{"text":"Incorrect index","code":7,"invalid-event-number":1}'), "retry"),
        ((413, b"Content-Length too large"), "failed"),
        ((200, b"<html>a proxy's page</html>"), "retry"),  # no HEC answer: not accepted
    ],
)
def test_hec_answers(answer: tuple[int, bytes], status: str) -> None:
    with HttpReceiver([answer]) as r:
        out = HecOutput(r.url + "/services/collector/event", "t", host="h")
        [job] = out.build([alert()])
        result = out.send(job)
    assert result.status == status
    assert r.requests[0].path == "/services/collector/event"


@pytest.mark.parametrize("right_ca", [True, False], ids=["its CA", "another CA"])
def test_tls_to_the_collector_checks_its_certificate(tmp_path: Any, right_ca: bool) -> None:
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from tests.unit.outputs.receivers import tls_files

    ca, cert, key = tls_files(tmp_path, "hec")
    other_ca, _, _ = tls_files(tmp_path, "other")
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(SUCCESS[1])))
            self.end_headers()
            self.wfile.write(SUCCESS[1])

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.handle_request, daemon=True).start()
    out = HecOutput(f"https://127.0.0.1:{server.server_address[1]}", "t", host="h",
                    ca_file=str(ca if right_ca else other_ca), timeout_s=3)  # fmt: skip
    result = out.send(out.build([alert()])[0])
    server.server_close()
    if right_ca:
        assert result.status == "ok" and hits == ["/services/collector/event"]
    else:
        assert result.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in result.detail
        assert hits == []
