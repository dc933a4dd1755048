"""HTTP requests as data, and the one thin sender that performs them.

Alert outputs (:mod:`pipeline.outputs`) and responder adapters (:mod:`pipeline.responders`) are
pure builders of :class:`HttpRequest` s and pure readers of :class:`HttpResponse` s; only
:func:`send_http` touches the network, so the builders are tested on exact requests and the
sender once.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field

__all__ = ["HttpRequest", "HttpResponse", "send_http"]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    what: str = ""  # for logs: which alerts this carries


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int  # 0: no answer (refused, timeout, TLS failure)
    body: bytes = b""
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_after_s(self) -> float | None:
        raw = self.headers.get("retry-after", "")
        try:
            return float(raw) if raw else None
        except ValueError:  # an HTTP date: the runner's own backoff applies
            return None


def send_http(req: HttpRequest, *, timeout_s: float = 10.0,
              context: ssl.SSLContext | None = None) -> HttpResponse:  # fmt: skip
    """The thin sender: one request; any HTTP status is returned, never raised."""
    r = urllib.request.Request(req.url, data=req.body or None, method=req.method,
                               headers=req.headers)  # fmt: skip
    try:
        with urllib.request.urlopen(r, timeout=timeout_s, context=context) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return HttpResponse(resp.status, resp.read(), headers=headers)
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return HttpResponse(exc.code, exc.read(), headers=headers)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return HttpResponse(0, b"", repr(exc))
