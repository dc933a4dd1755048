"""CEF in RFC 5424 syslog, framed for TCP/TLS by octet counting (RFC 6587 §3.4.1, RFC 5425).

``CEF:0|Custos|Custos|<version>|<signature id>|<name>|<severity 0-10>|<extensions>``

- header fields escape ``\\`` and ``|``; extension values escape ``\\``, ``=`` and line breaks
  (``\\n``, ``\\r``), as the CEF specification says (keys are Custos's own, never escaped);
- signature id: the rules that fired (``rule:credential_misuse``), ``anomaly`` for a
  behavioural finding, ``finding`` otherwise (a failure finding);
- severity: OCSF 1 Informational → 1, 2 Low → 3, 3 Medium → 5, 4 High → 8, 5 Critical and
  6 Fatal → 10;
- extensions: ``rt`` (event time, ms), ``act`` (create/update/close), ``suser`` (the identity
  the finding is about: the actor in its evidence), ``src`` / ``c6a2`` (an address a rule's
  evidence names), ``msg``, ``cat``, ``externalId`` (this emission), ``start``/``end``, and
  labelled custom fields: ``cs1`` finding uid, ``cs2`` rules, ``cs3`` status, ``cs4`` identity
  kind, ``cn1`` risk score, ``cn2`` confidence.

The syslog message: ``<PRI>1 TIMESTAMP HOSTNAME custos - MSGID - CEF:...``. PRI is the
facility (default 10, security/authorization) times 8 plus the syslog severity of the finding
(Critical → 2 crit, High → 3 err, Medium → 4 warning, Low → 5 notice, else 6 info). The MSG is
UTF-8 without a BOM: RFC 5424 allows it (MSG-ANY), and CEF parsers expect the text to start
with ``CEF:``.

>>> escape_header("a|b\\\\c"), escape_extension("x=1\\nb\\\\")
('a\\\\|b\\\\\\\\c', 'x\\\\=1\\\\nb\\\\\\\\')
>>> octet_frame(b"<82>1 - - custos - finding - CEF:0")
b'34 <82>1 - - custos - finding - CEF:0'
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from pipeline.outputs.base import Alert

__all__ = ["build_cef", "cef_severity", "escape_extension", "escape_header", "octet_frame",
           "syslog_message"]  # fmt: skip

_CEF_SEVERITY: Final = {0: 0, 1: 1, 2: 3, 3: 5, 4: 8, 5: 10, 6: 10}
_SYSLOG_SEVERITY: Final = {6: 2, 5: 2, 4: 3, 3: 4, 2: 5}  # else 6 informational
_ACT: Final = {1: "create", 2: "update", 3: "close"}
_NOT_PRINTUSASCII: Final = re.compile(r"[^\x21-\x7e]")
_MSG_MAX: Final = 1023  # ArcSight's msg limit


def escape_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def escape_extension(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("=", "\\=").replace("\r\n", "\\n")
            .replace("\n", "\\n").replace("\r", "\\r"))  # fmt: skip


def cef_severity(severity_id: int) -> int:
    return _CEF_SEVERITY.get(severity_id, 0)


def _addresses(a: Alert) -> Iterator[str]:
    for r in a.rules:
        for key, value in (r.get("evidence") or {}).items():
            if key.endswith("ip") and value:
                yield str(value)


def _signature(a: Alert) -> str:
    if a.rules:
        return "rule:" + "+".join(str(r.get("rule")) for r in a.rules)
    if a.custos.get("contributions"):
        return "anomaly"
    return "finding"


def build_cef(alert: Alert, *, version: str) -> str:
    """The CEF line for one finding (no syslog header)."""
    a, f = alert, alert.finding
    header = ["CEF:0", "Custos", "Custos", version, _signature(a), a.title,
              str(cef_severity(a.severity_id))]  # fmt: skip
    ext: list[tuple[str, Any]] = [
        ("rt", a.time_ms),
        ("act", _ACT.get(int(f.get("activity_id") or 1), "create")),
        ("suser", a.identity),
    ]
    for addr in _addresses(a):
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        ext.append(("src", str(ip)) if ip.version == 4 else ("c6a2", str(ip)))
        break
    msg = " ".join(str(f.get("message") or "").split())
    ext += [
        ("msg", msg[:_MSG_MAX]),
        ("cat", "/".join(str(t) for t in a.info.get("types") or ()) or "Detection Finding"),
        ("externalId", (f.get("metadata") or {}).get("uid")),
        ("start", a.info.get("first_seen_time")),
        ("end", a.info.get("last_seen_time")),
        ("cs1Label", "findingUid"), ("cs1", a.uid),
        ("cs2Label", "rules"), ("cs2", ",".join(str(r.get("rule")) for r in a.rules)),
        ("cs3Label", "status"), ("cs3", f.get("status")),
        ("cs4Label", "identityKind"), ("cs4", a.identity_kind),
        ("cn1Label", "riskScore"), ("cn1", f.get("risk_score")),
        ("cn2Label", "confidence"), ("cn2", f.get("confidence_score")),
    ]  # fmt: skip
    pairs = " ".join(f"{k}={escape_extension(str(v))}" for k, v in ext
                     if v is not None and v != "")  # fmt: skip
    return "|".join(header[:1] + [escape_header(h) for h in header[1:]]) + "|" + pairs


def _printusascii(value: str, limit: int) -> str:
    return _NOT_PRINTUSASCII.sub("_", value)[:limit] or "-"


def syslog_message(alert: Alert, *, version: str, hostname: str, facility: int = 10,
                   app_name: str = "custos", msgid: str = "finding") -> bytes:  # fmt: skip
    """One RFC 5424 message carrying the finding's CEF line."""
    sev = _SYSLOG_SEVERITY.get(alert.severity_id, 6)
    ts = datetime.fromtimestamp(alert.time_ms / 1000, UTC).isoformat(timespec="milliseconds")
    head = (f"<{facility * 8 + sev}>1 {ts[:-6]}Z {_printusascii(hostname, 255)} "
            f"{_printusascii(app_name, 48)} - {_printusascii(msgid, 32)} - ")  # fmt: skip
    return head.encode("ascii") + build_cef(alert, version=version).encode("utf-8")


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG`` (the count is of octets)."""
    return str(len(message)).encode("ascii") + b" " + message
