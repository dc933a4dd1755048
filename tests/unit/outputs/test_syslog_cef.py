"""CEF in RFC 5424 syslog, octet-counted, over TCP and TLS to a local listener. The received
frames are parsed back here by rules written from RFC 5424/6587 and the CEF specification."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from pipeline.outputs.cef import build_cef, cef_severity, escape_extension, escape_header
from pipeline.outputs.syslog import SyslogOutput
from pipeline.scores.explanations import RuleHit
from tests.unit.outputs.receivers import MISUSE, ODD_HOUR, SyslogReceiver, alert, tls_files

# RFC 5424 §6: HEADER SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(rb"<(\d{1,3})>1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) (-) (.*)",
                     re.S)  # fmt: skip


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Header fields (unescaped) and extensions (unescaped), per the CEF specification."""
    fields: list[str] = []
    cur = ""
    i = 0
    while len(fields) < 7:
        ch = line[i]
        if ch == "\\" and line[i + 1] in "|\\":
            cur += line[i + 1]
            i += 2
            continue
        if ch == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    ext: dict[str, str] = {}
    # A key is a word followed by an unescaped "="; the value runs to the next key.
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=(?<!\\=)", line[i:]))
    rest = line[i:]
    for n, m in enumerate(keys):
        end = keys[n + 1].start() if n + 1 < len(keys) else len(rest)
        raw = rest[m.end():end]
        ext[m.group(1)] = re.sub(r"\\(.)", lambda g: {"n": "\n", "r": "\r"}.get(g.group(1),
                                                                               g.group(1)), raw)
    return fields, ext


def test_escaping_follows_the_cef_rules() -> None:
    assert escape_header("a|b\\c") == "a\\|b\\\\c"
    assert escape_extension("k=v\\x\ny\rz") == "k\\=v\\\\x\\ny\\rz"
    assert [cef_severity(i) for i in range(7)] == [0, 1, 3, 5, 8, 10, 10]


def test_a_finding_round_trips_through_cef() -> None:
    evil = RuleHit("credential_misuse", 5, "x", {"src_ip": "203.0.113.9"})
    a = alert(identity="a|b=c\\d\ne", rules=[evil], contributions=[ODD_HOUR], severity_id=5)
    fields, ext = parse_cef(build_cef(a, version="0.1.0"))
    assert fields == ["CEF:0", "Custos", "Custos", "0.1.0", "rule:credential_misuse",
                      "Zero Trust rule credential_misuse: agent a|b=c\\d e", "10"]  # fmt: skip
    assert ext["suser"] == "a|b=c\\d\ne"
    assert ext["src"] == "203.0.113.9" and ext["act"] == "create"
    assert ext["rt"] == "1700000000123"
    assert (ext["cs1Label"], ext["cs1"]) == ("findingUid", "f-1")
    assert (ext["cs2Label"], ext["cs2"]) == ("rules", "credential_misuse")
    assert (ext["cn1Label"], ext["cn1"]) == ("riskScore", "62")
    assert ext["msg"] == a.finding["message"]
    assert ext["externalId"] == a.finding["metadata"]["uid"]


def _check_frame(frame: bytes, a_uid: str, host_name: bytes = b"custos-test") -> dict[str, str]:
    m = RFC5424.fullmatch(frame)
    assert m is not None, frame[:120]
    pri, ts, host, app, _procid, msgid, _sd, msg = m.groups()
    assert int(pri) == 10 * 8 + 3  # authpriv, High -> err
    assert ts == b"2023-11-14T22:13:20.123Z"
    assert (host, app, msgid) == (host_name, b"custos", b"finding")
    fields, ext = parse_cef(msg.decode())
    assert fields[0] == "CEF:0" and ext["cs1"] == a_uid
    return ext


def test_tcp_frames_are_octet_counted() -> None:
    alerts = [alert(uid=f"f-{i}", rules=[MISUSE]) for i in range(3)]
    with SyslogReceiver() as r:
        out = SyslogOutput("127.0.0.1", r.port, version="0.1.0", hostname="custos test")
        frames = out.build(alerts)
        assert [out.send(f).status for f in frames] == ["ok"] * 3
        got = r.wait(3)
        out.close()
    # Each frame's length prefix was exactly its octets: the receiver split them back.
    assert len(got) == 3 and r.errors == []
    # HOSTNAME is PRINTUSASCII without spaces (RFC 5424 §6.2.4).
    assert [_check_frame(g, f"f-{i}", b"custos_test")["cs1"] for i, g in enumerate(got)] == [
        "f-0", "f-1", "f-2"]
    assert frames[0] == str(len(got[0])).encode() + b" " + got[0]


def test_tls_delivers_to_a_server_the_ca_vouches_for(tmp_path: Path) -> None:
    ca, cert, key = tls_files(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    with SyslogReceiver(server) as r:
        out = SyslogOutput("127.0.0.1", r.port, version="0.1.0", hostname="custos-test",
                           tls=True, ca_file=str(ca))  # fmt: skip
        [frame] = out.build([alert(uid="f-tls")])
        assert out.send(frame).status == "ok"
        got = r.wait(1)
        out.close()
    assert len(got) == 1
    _check_frame(got[0], "f-tls")


def test_tls_refuses_a_server_of_another_ca(tmp_path: Path) -> None:
    _, cert, key = tls_files(tmp_path, "real")
    wrong_ca, _, _ = tls_files(tmp_path, "other")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    with SyslogReceiver(server) as r:
        out = SyslogOutput("127.0.0.1", r.port, version="0.1.0", hostname="h", tls=True,
                           ca_file=str(wrong_ca))  # fmt: skip
        result = out.send(out.build([alert()])[0])
        r.wait(1, timeout=0.5)
    assert result.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert r.frames == []


def test_a_closed_port_is_retry_and_the_next_send_reconnects() -> None:
    with SyslogReceiver() as r:
        port = r.port
    out = SyslogOutput("127.0.0.1", port, version="0.1.0", hostname="h", timeout_s=2)
    assert out.send(out.build([alert()])[0]).status == "retry"
    with SyslogReceiver() as r2:
        out.port = r2.port
        assert out.send(out.build([alert()])[0]).status == "ok"
        assert len(r2.wait(1)) == 1
        out.close()


@pytest.mark.parametrize(("severity_id", "pri"), [(5, 82), (4, 83), (3, 84), (2, 85), (1, 86)])
def test_syslog_severity_follows_the_finding(severity_id: int, pri: int) -> None:
    out = SyslogOutput("127.0.0.1", 1, version="0.1.0", hostname="h")
    [frame] = out.build([alert(severity_id=severity_id)])
    assert frame.split(b" ", 1)[1].startswith(f"<{pri}>1 ".encode())
