"""Local receivers the outputs are tested against (127.0.0.1 only), and real Custos findings.

- :class:`HttpReceiver`: records every request (method, path, headers, body) and answers from a
  script of (status, body, headers), the last answer repeating.
- :class:`SyslogReceiver`: a TCP or TLS listener that reads RFC 6587 octet-counted frames.
- :func:`tls_files`: a CA and a server certificate for 127.0.0.1 (cryptography), written as PEM.
- :func:`alert`: a finding built by ``pipeline.alerts.findings.build_finding``, as published.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.alerts.decisions import ACTIVITY_IDS, Decision
from pipeline.alerts.findings import build_finding, encode_finding
from pipeline.alerts.state import Counters
from pipeline.outputs.base import Alert
from pipeline.scores.explanations import Contribution, RuleHit

T0 = 1_700_000_000_123


def alert(action: str = "create", *, status_id: int | None = None, is_alert: bool = True,
          severity_id: int = 4, identity: str = "agt-7", rules: Sequence[RuleHit] = (),
          contributions: Sequence[Contribution] = (), uid: str = "f-1",
          kind: str = "agent") -> Alert:  # fmt: skip
    """A finding as the worker publishes it (bytes from encode_finding, parsed back)."""
    status = status_id if status_id is not None else {"create": 1, "update": 2, "close": 4}[action]
    d = Decision(action=action, activity_id=ACTIVITY_IDS[action],  # type: ignore[arg-type]
                 identity_uid=identity, identity_kind=kind, finding_uid=uid, time_ms=T0,
                 first_seen_ms=T0 - 60_000, last_seen_ms=T0, risk=55.0, peak_risk=62.4,
                 risk_level_id=2, severity_id=severity_id, status_id=status, is_alert=is_alert,
                 quarantine=True, confidence=0.8, reason="risk above threshold",
                 related_events=("e-1",), contributions=tuple(contributions), rules=tuple(rules),
                 counters=Counters(3, 2, 1, 0, 0))  # fmt: skip
    return Alert.of(encode_finding(build_finding(d, product_version="0.1.0")))


MISUSE = RuleHit("credential_misuse", 5, "credential of bob used by agt-7",
                 {"src_ip": "203.0.113.9", "credential": "cred-1"})  # fmt: skip
ODD_HOUR = Contribution("hour", "off_hours", 0.9, "03:00", "09:00-18:00", "active at 03:00")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """``with HttpReceiver([(202, b'{}')]) as r: ... r.url ... r.requests``"""

    script: list[tuple[int, bytes, dict[str, str]] | tuple[int, bytes]] = field(
        default_factory=lambda: [(200, b"ok")])
    requests: list[Request] = field(default_factory=list)

    def __enter__(self) -> HttpReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                owner.requests.append(Request("POST", self.path, dict(self.headers.items()),
                                              body))  # fmt: skip
                i = min(len(owner.requests), len(owner.script)) - 1
                status, answer, *rest = owner.script[i]
                headers: dict[str, str] = rest[0] if rest else {}  # type: ignore[assignment]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SyslogReceiver:
    """Accepts connections (TLS with ``context``) and splits the stream into octet-counted
    frames; ``frames`` holds each SYSLOG-MSG, ``errors`` what went wrong server-side."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.frames: list[bytes] = []
        self.errors: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SyslogReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.thread.join()  # no accept() in flight: closing the socket really stops listening
        self.sock.close()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b" " in buf:
                    size, _, rest = buf.partition(b" ")
                    if not size.isdigit():
                        self.errors.append(f"bad frame length {size[:20]!r}")
                        return
                    if len(rest) < int(size):
                        break
                    self.frames.append(rest[: int(size)])
                    buf = rest[int(size):]
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def wait(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if len(self.frames) >= n:
                break
            deadline.wait(0.05)
        return self.frames


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
          signer: ec.EllipticCurvePrivateKey,
          extensions: list[x509.ExtensionType]) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(public).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(hours=1)))  # fmt: skip
    for ext in extensions:
        b = b.add_extension(ext, critical=isinstance(ext, x509.BasicConstraints | x509.KeyUsage))
    return b.sign(signer, hashes.SHA256())


def tls_files(directory: Path, tag: str = "ca") -> tuple[Path, Path, Path]:
    """(CA PEM, server cert PEM, server key PEM): a CA and a cert for IP 127.0.0.1 it signed."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)  # fmt: skip
    ca = _cert(f"test {tag}", _name(f"test {tag}"), ca_key.public_key(), ca_key,
               [x509.BasicConstraints(ca=True, path_length=None), usage,
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())])  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server_auth = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = _cert("127.0.0.1", ca.subject, key.public_key(), ca_key, [san, server_auth, aki])
    paths = (directory / f"{tag}.pem", directory / f"{tag}-server.pem",
             directory / f"{tag}-server.key")  # fmt: skip
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths
