"""Quarantine commands: OpenC2-style ``contain`` / ``cancel``, signed so forgeries are refused.

Pure code. :func:`contain` and :func:`cancel` build the OpenC2 message
(``../shared/STANDARDS.md`` §4): ``headers{request_id, created, from, to}`` and
``body.openc2.request{action, target, args, command_id}``. The subject is an SSF subject
identifier (RFC 9493 ``opaque``) under the extension target ``x-custos:subject``; Custos's
arguments sit under ``args["x-custos"]`` (finding uid, reason, credential references, dry run,
approval).

One quarantine per incident: the ``command_id`` of a ``contain`` is derived from the finding uid,
so repeated detections re-issue *the same command* (a new ``request_id``, same
``command_id``) and responders update it instead of stacking a second one.

:func:`sign` wraps the message in a compact JWS (Ed25519, ``typ`` ``custos-openc2+jws``);
:func:`verify` refuses unsigned, forged, expired and malformed commands with a stable reason
(a contain expires with its duration, a cancel ``max_age_ms`` after its creation). Replays are
a responder's business: it keeps the request ids it answered (:mod:`pipeline.responders`).

>>> from pipeline.control.signing import SigningKey
>>> key = SigningKey.generate("k1")
>>> msg = contain("agt-7", finding_uid="f-1", reason="credential misuse", duration_ms=3_600_000,
...               credentials=("cred-1",), now_ms=1_000_000, sender="custos-worker")
>>> jws = sign(msg, key)
>>> verify(jws, key.public_keys(), now_ms=1_000_500)["body"]["openc2"]["request"]["action"]
'contain'
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
from joserfc.jwk import KeySet

from pipeline.alerts.decisions import MAX_CONTAIN_MS
from pipeline.control.signing import (
    COMMAND_TYP,
    FEEDBACK_TYP,
    SignedMessageError,
    SigningKey,
    sign_compact,
    verify_compact,
)
from pipeline.errors import CustosError

__all__ = [
    "REJECT_REASONS",
    "CommandRejected",
    "cancel",
    "command_id_for",
    "contain",
    "request_of",
    "sign",
    "subject_of",
    "verify",
]

TO: Final = ("custos-responders",)
_NS: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://custos.invalid/quarantine")

MAX_SKEW_MS: Final = 300_000  # clocks of worker, analysts and responders may differ this much
MAX_DURATION_MS: Final = MAX_CONTAIN_MS  # the longest quarantine a command may ask for

REJECT_REASONS: Final = (
    "unsigned", "bad_signature", "malformed", "expired", "replayed",
    "unapproved",  # a contain that still waits for a human (approval "required" or unknown)
)  # fmt: skip


class CommandRejected(CustosError):
    """A command a responder must not act on; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str, **context: Any) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}", **context)


def command_id_for(finding_uid: str) -> str:
    """The one ``contain`` command of an incident (stable: replays and updates reuse it)."""
    return str(uuid.uuid5(_NS, f"contain/{finding_uid}"))


def _subject(identity: str) -> dict[str, str]:
    return {"format": "opaque", "id": identity}


def _message(sender: str, now_ms: int, request: dict[str, Any]) -> dict[str, Any]:
    return {
        "headers": {
            "request_id": str(uuid.uuid4()),
            "created": now_ms,
            "from": sender,
            "to": list(TO),
        },
        "body": {"openc2": {"request": request}},
    }


def contain(
    identity: str,
    *,
    finding_uid: str,
    reason: str,
    duration_ms: int,
    now_ms: int,
    sender: str,
    credentials: tuple[str, ...] = (),
    dry_run: bool = False,
    approval: str = "automatic",
    severity_id: int | None = None,
    risk_score: int | None = None,
) -> dict[str, Any]:
    """Quarantine ``identity``: revoke its credentials and block new ones for ``duration_ms``.

    ``approval``: ``automatic`` (act now), ``required`` (a human approves on
    ``custos.approvals`` first) or ``approved`` (a required approval was given).
    """
    if approval not in ("automatic", "required", "approved"):
        raise ValueError(f"approval {approval!r}")
    ext: dict[str, Any] = {
        "dry_run": dry_run, "finding_uid": finding_uid, "reason": reason,
        "credentials": list(credentials), "approval": approval,
    }  # fmt: skip
    if severity_id is not None:
        ext["severity_id"] = severity_id
    if risk_score is not None:
        ext["risk_score"] = risk_score
    return _message(
        sender,
        now_ms,
        {
            "action": "contain",
            "target": {"x-custos:subject": _subject(identity)},
            "args": {
                "start_time": now_ms,
                "duration": duration_ms,
                "response_requested": "complete",
                "x-custos": ext,
            },
            "command_id": command_id_for(finding_uid),
        },
    )


def cancel(
    identity: str, *, command_id: str, reason: str, now_ms: int, sender: str, by: str
) -> dict[str, Any]:
    """Release: cancel the ``contain`` command ``command_id`` (target ``{"command": id}``)."""
    return _message(
        sender,
        now_ms,
        {
            "action": "cancel",
            "target": {"command": command_id},
            "args": {
                "response_requested": "complete",
                "x-custos": {"subject": _subject(identity), "reason": reason, "by": by},
            },
            "command_id": str(uuid.uuid4()),
        },
    )


def request_of(message: dict[str, Any]) -> dict[str, Any]:
    try:
        request = message["body"]["openc2"]["request"]
    except (KeyError, TypeError):
        raise CommandRejected("malformed", "no body.openc2.request") from None
    if not isinstance(request, dict) or request.get("action") not in ("contain", "cancel"):
        raise CommandRejected("malformed", f"unsupported action in {request!r:.80}")
    return request


def subject_of(message: dict[str, Any]) -> str:
    """The identity a command is about (both actions)."""
    request = request_of(message)
    if request["action"] == "contain":
        subject = request.get("target", {}).get("x-custos:subject", {})
    else:
        subject = request.get("args", {}).get("x-custos", {}).get("subject", {})
    if not isinstance(subject, dict) or not isinstance(subject.get("id"), str):
        raise CommandRejected("malformed", "no subject identifier")
    return str(subject["id"])


def sign(message: dict[str, Any], key: SigningKey) -> bytes:
    """Compact JWS over the canonical (sorted-key) JSON of ``message``."""
    return sign_compact(msgspec.json.encode(message, order="sorted"), key, COMMAND_TYP)


def _check_window(req: dict[str, Any], created: int) -> None:
    """A contain starts when it was made and lasts at most :data:`MAX_DURATION_MS`."""
    args = req.get("args")
    if not isinstance(args, dict):
        raise CommandRejected("malformed", "contain without args")
    duration = args.get("duration")
    if type(duration) is not int or not 0 < duration <= MAX_DURATION_MS:
        raise CommandRejected("malformed", f"duration {duration!r:.40} not in 1..{MAX_DURATION_MS}")
    start = args.get("start_time", created)
    if type(start) is not int or abs(start - created) > MAX_SKEW_MS:
        raise CommandRejected("malformed", f"start_time {start!r:.40} is not its creation time")


def _approval_of(req: dict[str, Any]) -> Any:
    ext = (req.get("args") or {}).get("x-custos") or {}
    return ext.get("approval", "automatic") if isinstance(ext, dict) else None


def _check_approver(
    data: bytes, message: dict[str, Any], req: dict[str, Any], approvers: KeySet | None,
    created: int,
) -> None:  # fmt: skip
    """An ``approved`` contain carries an analyst's signature (not only the worker's word)."""
    if approvers is None:
        raise CommandRejected("unapproved", "no analyst keys are trusted: nobody can approve")
    try:
        verify_compact(data, approvers, COMMAND_TYP)
        return  # signed by an analyst (custos quarantine approve)
    except SignedMessageError:
        pass
    ext = req["args"]["x-custos"]
    proof = ext.get("approval_proof")
    if not isinstance(proof, str):
        raise CommandRejected("unapproved", "approved, but neither signed by an analyst nor "
                              "carrying an analyst's signed confirmation")  # fmt: skip
    try:
        fb = msgspec.json.decode(
            verify_compact(proof.encode("ascii", "replace"), approvers, FEEDBACK_TYP),
            type=_Confirmation,
        )
    except (SignedMessageError, msgspec.DecodeError) as exc:
        raise CommandRejected("unapproved", f"approval proof: {exc}") from None
    if abs(created - fb.at_ms) > MAX_SKEW_MS:  # as fresh as the command it led to
        raise CommandRejected("unapproved", "the approval proof is not from this decision")
    if fb.action != "confirm" or fb.identity != subject_of(message) or fb.by != ext.get(
        "approved_by"
    ):
        raise CommandRejected("unapproved", "the approval proof confirms something else")


class _Confirmation(msgspec.Struct):
    """What an approval proof must say: a signed ``custos.feedback`` message (control.feedback)."""

    action: str
    identity: str
    by: str
    at_ms: int


def _check_approval(req: dict[str, Any]) -> None:
    """Only ``automatic`` and ``approved`` (with who approved) may act.

    ``required`` is the form the worker puts on ``custos.approvals`` for a human: signed, valid
    and current, so without this check a copy of it onto the quarantine topic is executed.
    """
    args = req.get("args")
    ext = args.get("x-custos") if isinstance(args, dict) else None
    approval = ext.get("approval", "automatic") if isinstance(ext, dict) else None
    if approval == "automatic":
        return
    if approval == "approved":
        by = ext.get("approved_by") if isinstance(ext, dict) else None
        if isinstance(by, str) and by.strip():
            return
        raise CommandRejected("unapproved", "approval 'approved' without approved_by")
    raise CommandRejected("unapproved", f"approval {approval!r}: waits for an analyst")


def verify(
    data: bytes,
    keys: KeySet,
    *,
    now_ms: int,
    max_age_ms: int = 300_000,
    executable: bool = True,
    approvers: KeySet | None = None,
) -> dict[str, Any]:
    """The message if ``data`` is a valid command, signed by a trusted key and still current.

    ``executable`` (responders): a contain must also be ``automatic``, or ``approved`` with an
    analyst's signature - the command itself signed by a key of ``approvers``, or carrying the
    analyst's signed confirmation of that identity (``approval_proof``: the worker turns a
    ``confirm`` feedback into the command) - else ``unapproved``. Readers of the approvals
    topic pass ``executable=False``.

    Current: a ``contain`` until its duration is over (at least ``max_age_ms``), a ``cancel``
    for ``max_age_ms`` after it was created.
    """
    try:
        payload = verify_compact(data, keys, COMMAND_TYP)
    except SignedMessageError as exc:
        raise CommandRejected(exc.reason, exc.detail) from None
    try:
        message = msgspec.json.decode(payload)
        created = int(message["headers"]["created"])
        str(message["headers"]["request_id"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise CommandRejected("malformed", f"headers: {exc!r}") from None
    if created > now_ms + MAX_SKEW_MS:  # a command dated ahead would never expire
        raise CommandRejected("malformed", f"created {(created - now_ms) / 1000:.0f} s ahead")
    req = request_of(message)
    if req["action"] == "contain":
        _check_window(req, created)
    if executable and req["action"] == "contain":
        _check_approval(req)
        if _approval_of(req) == "approved":
            _check_approver(data, message, req, approvers, created)
    # A contain stays actionable for its own duration: a responder that was down for a while
    # must still carry out a quarantine that is in force (re-applying it is idempotent, and the
    # request-id store answers a replayed one). Anything else - a cancel, above all - must be
    # fresh: an old captured release must not lift a quarantine.
    args = req.get("args") or {}
    limit = max_age_ms
    if req["action"] == "contain":  # duration and start_time checked above
        start = args.get("start_time", created)
        limit = max(max_age_ms, int(start) - created + int(args["duration"]))
    if now_ms - created > limit:
        raise CommandRejected("expired", f"created {(now_ms - created) / 1000:.0f} s ago")
    return message  # type: ignore[no-any-return]
