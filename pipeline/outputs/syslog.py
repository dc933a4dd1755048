"""The syslog output: CEF in RFC 5424 messages over TCP, or TLS (RFC 5425), octet-counted.

The sender keeps one connection and opens it again after an error. TCP syslog has no
application-level acknowledgement: "accepted" means the whole frame was written to the socket
(``sendall`` returned), which is as far as the protocol lets a sender know. A refused
connection, a TLS certificate that does not chain to the configured CA, or a broken pipe is
``retry`` (the runner stops uncommitted if it persists; a frame is never dropped for it).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Final

from pipeline.outputs.base import Alert, Delivery
from pipeline.outputs.cef import octet_frame, syslog_message

__all__ = ["SyslogOutput", "tls_context"]

_MAX_FRAME: Final = 64 * 1024  # rsyslog's default maximum message size is 8 KB; 64 KB is ample


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """Verifying client context: the server's certificate must chain to ``ca_file`` (the system
    store if empty) and name the host; a client certificate if the collector wants one."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    return ctx


class SyslogOutput:
    name = "syslog"

    def __init__(self, host: str, port: int, *, version: str, hostname: str,
                 tls: bool = False, ca_file: str = "", cert_file: str = "", key_file: str = "",
                 facility: int = 10, min_severity_id: int = 0,
                 timeout_s: float = 10.0) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.version = version
        self.hostname = hostname
        self.facility = facility
        self.min_severity_id = min_severity_id
        self.timeout_s = timeout_s
        self.context = tls_context(ca_file, cert_file, key_file) if tls else None
        self._sock: socket.socket | None = None

    def build(self, alerts: Sequence[Alert]) -> list[bytes]:
        """One octet-counted frame per finding (a SIEM keeps every finding, alert or not)."""
        frames = []
        for a in alerts:
            if a.severity_id < self.min_severity_id:
                continue
            msg = syslog_message(a, version=self.version, hostname=self.hostname,
                                 facility=self.facility)  # fmt: skip
            if len(msg) > _MAX_FRAME:  # cut on a character boundary
                msg = msg[:_MAX_FRAME].decode("utf-8", "ignore").encode("utf-8")
            frames.append(octet_frame(msg))
        return frames

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        if self.context is None:
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def send(self, job: bytes) -> Delivery:
        try:
            if self._sock is None:
                self._sock = self._connect()
            self._sock.sendall(job)
        except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError; named for the reader
            self.close()
            return Delivery("retry", f"syslog {self.host}:{self.port}: {exc!r}")
        return Delivery("ok", f"syslog: {len(job)} bytes")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
