"""Decisions that leave the console, signed with the deciding analyst's own key.

Pure builders (:func:`feedback`, :func:`approval`, :func:`release`) return an
:class:`Outgoing` record; :class:`KafkaSender` is the thin sender that delivers it (and says so
only once the broker acknowledged it). Every console account gets its own Ed25519 key on first
use (:class:`AnalystKeys`), whose public half joins the analysts' JWKS that workers and
responders trust: the command or feedback, and so the audit record of it, names the person who
decided, not a shared key.

>>> import tempfile
>>> from pipeline.config import Settings
>>> s = Settings.from_env({}, home=tempfile.mkdtemp())
>>> key = AnalystKeys(s).key("alice")
>>> out = feedback(s, key, user="alice", action="confirm", identity="agt-1", finding_uid="f-1",
...                reason="owner confirms", now_ms=1_000)
>>> out.topic == s.feedback_topic, out.key, key.kid.startswith("analyst-alice-")
(True, b'agt-1', True)
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.control.feedback import Feedback
from pipeline.control.signing import SigningKey, publish_analyst_key, sign_feedback
from pipeline.errors import CustosError
from pipeline.quarantine import decisions
from pipeline.quarantine.commands import sign

__all__ = ["AnalystKeys", "DecisionNotSent", "KafkaSender", "Outgoing", "approval", "feedback",
           "release"]  # fmt: skip


class DecisionNotSent(CustosError):
    """The broker did not acknowledge a decision: the analyst is told, nothing is recorded."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    what: str  # for the analyst and the action log


class AnalystKeys:
    """One signing key per console account, under ``<home>/console/keys/`` (mode 0600)."""

    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self.settings = settings
        self.directory = directory or settings.home_path / "console" / "keys"

    def key(self, user: str) -> SigningKey:
        key = SigningKey.load_or_create(self.directory / f"{user}.jwk",
                                        kid=f"analyst-{user}-{secrets.token_hex(4)}")  # fmt: skip
        publish_analyst_key(self.settings, key)
        return key


def _by(user: str) -> str:
    return f"analyst:{user}"


def feedback(
    settings: Settings, key: SigningKey, *, user: str, action: str, identity: str,
    finding_uid: str | None, reason: str, now_ms: int, learn_as_normal: bool = False,
    until_ms: int | None = None,
) -> Outgoing:  # fmt: skip
    """An analyst's decision on an incident, to the worker that holds the identity."""
    fb = Feedback(uid=str(uuid.uuid4()), action=action, identity=identity,  # type: ignore[arg-type]
                  by=_by(user), reason=reason or action, at_ms=now_ms, finding_uid=finding_uid,
                  learn_as_normal=learn_as_normal, until_ms=until_ms)  # fmt: skip
    return Outgoing(settings.feedback_topic, identity.encode(), sign_feedback(fb, key),
                    f"{action.replace('_', ' ')} of {identity} ({fb.uid})")  # fmt: skip


def approval(
    settings: Settings, key: SigningKey, pending: dict[str, Any], *, user: str, now_ms: int
) -> Outgoing:
    """A pending contain approved: the same command, signed by the approver, to responders."""
    message = decisions.approve(pending, by=_by(user), now_ms=now_ms)
    identity = str(message["body"]["openc2"]["request"]["target"]["x-custos:subject"]["id"])
    return Outgoing(settings.quarantine_topic, identity.encode(), sign(message, key),
                    f"approved contain of {identity}")  # fmt: skip


def release(
    settings: Settings, key: SigningKey, *, identity: str, command_id: str, user: str,
    reason: str, now_ms: int,
) -> Outgoing:  # fmt: skip
    """A quarantine lifted: the cancel of its contain command, to responders."""
    message = decisions.release(identity, command_id=command_id, reason=reason or "released",
                                by=_by(user), now_ms=now_ms)  # fmt: skip
    return Outgoing(settings.quarantine_topic, identity.encode(), sign(message, key),
                    f"release of {identity} (command {command_id})")  # fmt: skip


class KafkaSender:
    """Delivers one :class:`Outgoing` and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        from pipeline.kafka.clients import make_producer

        self.producer = make_producer(settings)
        self.timeout_s = timeout_s

    def __call__(self, out: Outgoing) -> None:
        errors: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        self.producer.produce(out.topic, key=out.key, value=out.value, on_delivery=done)
        if self.producer.flush(self.timeout_s) or errors:
            raise DecisionNotSent(f"{out.what} was not delivered to {out.topic}: "
                                  f"{errors[0] if errors else 'no acknowledgement'}")  # fmt: skip
