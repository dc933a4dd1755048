"""Small helpers for the parts that run beside each other on 127.0.0.1: the demo, the
benchmarks and the integration tests start processes, wait for them and call their HTTP APIs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["call_json", "free_port", "healthy", "stop", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a race is possible but rare).

    >>> 1024 <= free_port() <= 65535
    True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call_json(
    method: str, url: str, bearer: str, body: dict[str, Any] | None = None, timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One JSON call with a bearer token: (HTTP status, JSON answer); 0 when nobody answered."""
    req = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), method=method,
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json",
                 **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError as exc:
        return 0, {"error": repr(exc)}


def healthy(base_url: str) -> bool:
    """True when ``<base_url>/healthz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_until(pred: Callable[[], T], timeout: float, what: str, step: float = 0.1) -> T:
    """``pred()``'s first truthy value, polled every ``step`` s; RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def stop(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """SIGTERM all, then wait for each; kill what does not end in time."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
