"""Analyst decisions on quarantines: approve a pending ``contain``, release with ``cancel``.

Pure builders (the CLI ``custos quarantine approve|release`` signs and sends what they build):

- :func:`approve` turns a pending command (``approval: required``, waiting on the approvals
  topic) into the same command (same ``command_id``) with ``approval: approved`` and who
  approved it, under a new ``request_id`` and creation time;
- :func:`release` is a ``cancel`` of the incident's contain command;

and :func:`pending`, which reads the approvals topic for ``custos quarantine pending|approve``.

Both are signed by the caller with the command key (here the local one; in production each
analyst's own key, listed in the responders' trusted JWKS).

>>> from pipeline.quarantine.commands import contain, request_of
>>> pending = contain("agt-1", finding_uid="f-1", reason="why", duration_ms=60_000,
...                   now_ms=1_000, sender="custos-worker", approval="required")
>>> ok = approve(pending, by="analyst:alice", now_ms=5_000)
>>> ext = request_of(ok)["args"]["x-custos"]
>>> same = request_of(ok)["command_id"] == request_of(pending)["command_id"]
>>> ext["approval"], ext["approved_by"], same
('approved', 'analyst:alice', True)
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from pipeline.control.feedback import Feedback, FeedbackOutcome
from pipeline.quarantine.commands import CommandRejected, cancel, request_of, subject_of, verify

__all__ = ["approve", "describe", "pending", "release", "release_for"]


def approve(
    pending: dict[str, Any], *, by: str, now_ms: int, proof: str | None = None
) -> dict[str, Any]:
    """The approved version of a pending contain command (starts now, for its full duration).

    ``proof``: the analyst's signed ``confirm`` feedback when the worker, not the analyst,
    signs the command (responders check it against the analysts' keys).
    """
    req = request_of(pending)
    ext = req.get("args", {}).get("x-custos", {})
    if req["action"] != "contain" or ext.get("approval") != "required":
        raise CommandRejected("malformed", "only a contain command waiting for approval")
    out = copy.deepcopy(pending)
    out["headers"]["request_id"] = str(uuid.uuid4())
    out["headers"]["created"] = now_ms
    out["headers"]["from"] = by
    args = request_of(out)["args"]
    args["start_time"] = now_ms
    args["x-custos"]["approval"] = "approved"
    args["x-custos"]["approved_by"] = by
    if proof is not None:
        args["x-custos"]["approval_proof"] = proof
    return out


def release(identity: str, *, command_id: str, reason: str, by: str, now_ms: int) -> dict[str, Any]:
    """Release ``identity``: cancel its contain command ``command_id``."""
    return cancel(identity, command_id=command_id, reason=reason, now_ms=now_ms, sender=by, by=by)


def release_for(fb: Feedback, outcome: FeedbackOutcome, now_ms: int) -> dict[str, Any] | None:
    """The cancel of the contain command a feedback outcome lifts (to be signed), if any."""
    if not outcome.release_command:
        return None
    return release(fb.identity, command_id=outcome.release_command,
                   reason=f"{fb.action}: {fb.reason}", by=fb.by, now_ms=now_ms)  # fmt: skip


def describe(message: dict[str, Any]) -> str:
    """One line for ``custos quarantine pending``."""
    req = request_of(message)
    ext = req.get("args", {}).get("x-custos", {})
    return (
        f"{req.get('command_id')}  {subject_of(message)}  severity {ext.get('severity_id')}  "
        f"risk {ext.get('risk_score')}  finding {ext.get('finding_uid')}\n    {ext.get('reason')}"
    )



def pending(
    settings: Any, *, on_invalid: Callable[[int | None, CommandRejected], None] | None = None
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Contain commands waiting for approval, by ``command_id``: the newest (key, message) of
    each, in the order they first arrived; ``on_invalid(offset, why)`` for what fails to
    verify.

    Verified against the trusted command keys, but not for freshness (a command waits for
    as long as it takes) nor as executable (approving it is what makes it so).
    """
    from pipeline.control.signing import trusted_keys
    from pipeline.kafka.clients import read_all  # the builders above need no Kafka client

    keys = trusted_keys(settings)
    latest: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for m in read_all(settings, settings.approvals_topic, timeout_s=5):
        try:
            message = verify(m.value() or b"", keys, now_ms=int(time.time() * 1000),
                             max_age_ms=10**12, executable=False)  # fmt: skip
        except CommandRejected as exc:
            if on_invalid is not None:
                on_invalid(m.offset(), exc)
            continue
        latest[str(request_of(message)["command_id"])] = (m.key() or b"", message)
    return latest
