"""A refused credential use becomes an input event, so detection sees it.

:func:`rejection_event` is the pure builder: an OCSF API Activity (6003) with ``status_id`` 2
(Failure), the presenting identity as ``actor.user.uid`` and the credential as Custos's
``unmapped.credential`` extension (``docs/EVENTS.md``) - so the Zero Trust rules fire on it like
on any other use (``credential_misuse`` when another agent presented it, ``credential_expired``
when it is past its expiry). :class:`KafkaRejectionSink` is the thin sender.

>>> from pipeline.credentials.tokens import TaskClaims
>>> c = TaskClaims(sub="agt-1", task="t-1", step=2, scope=("crm.read",), ceiling=1,
...                iat=1_000, exp=1_300, jti="cred-1", iss="custos")
>>> e = rejection_event(presenter="agt-2", claims=c, reason="wrong_holder", detail="...",
...                     operation="crm.read", service="crm", now_ms=1_100_000, src_ip=None)
>>> e["class_uid"], e["status_id"], e["actor"]["user"]["uid"]
(6003, 2, 'agt-2')
>>> e["unmapped"]["credential"]["issued_to"], e["unmapped"]["rejection"]
('agt-1', 'wrong_holder')
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from pipeline.credentials.tokens import TaskClaims

__all__ = ["KafkaRejectionSink", "RejectionSink", "rejection_event"]

PRODUCT = "custos-credential-broker"


def rejection_event(
    *,
    presenter: str,
    claims: TaskClaims | None,
    reason: str,
    detail: str,
    operation: str | None,
    service: str | None,
    now_ms: int,
    src_ip: str | None,
    task: str | None = None,
    step: int | None = None,
    claimed_presenter: str | None = None,
) -> dict[str, Any]:
    """The OCSF 6003 event for one refused use (``claims`` None: the token was unreadable).

    ``claimed_presenter``: who an unauthenticated caller said presented it (context only:
    ``presenter`` is then the credential's holder, the identity the signature proves).
    """
    unmapped: dict[str, Any] = {"identity_kind": "agent", "rejection": reason}
    if claimed_presenter is not None:
        unmapped["presenter"] = {"uid": claimed_presenter, "verified": False}
    if claims is not None:
        unmapped["credential"] = {
            "uid": claims.jti,
            "issued_to": claims.sub,
            "task_uid": claims.task,
            "step": claims.step,
            "expires_at": claims.exp * 1000,
        }
        if claims.act:
            unmapped["delegated_by"] = claims.act
    event: dict[str, Any] = {
        "class_uid": 6003,
        "category_uid": 6,
        "activity_id": 99,
        "activity_name": "Credential Rejected",  # OCSF: an Other (99) activity says what it is
        "type_uid": 600399,
        "severity_id": 3,
        "time": now_ms,
        "status_id": 2,
        "status_detail": f"credential rejected: {reason}: {detail}",
        "metadata": {
            "uid": str(uuid.uuid4()),
            "version": "1.8.0",
            "product": {"name": PRODUCT},
        },
        "actor": {"user": {"uid": presenter, "type_id": 99, "type": "AI Agent"}},
        "unmapped": unmapped,
    }
    session = task or (claims.task if claims is not None else None)
    if session:
        event["actor"]["session"] = {"uid": session}
    # OCSF requires api (with an operation) and src_endpoint: a refusal whose token could not
    # be read names neither, and an empty service name is not a name.
    event["api"] = {"operation": operation or "unknown"}
    if service:
        event["api"]["service"] = {"name": service}
    event["src_endpoint"] = {"ip": src_ip} if src_ip else {"uid": "unknown-client"}
    return event


class RejectionSink(Protocol):
    def __call__(self, key: str, event: dict[str, Any]) -> None: ...


class KafkaRejectionSink:
    """Produce rejection events to the agent events topic (keyed by the presenter)."""

    def __init__(self, settings: Any) -> None:
        from pipeline.kafka.clients import make_producer

        self.topic = settings.rejections_topic
        self.producer = make_producer(settings)

    def __call__(self, key: str, event: dict[str, Any]) -> None:
        import msgspec

        self.producer.produce(self.topic, key=key.encode(), value=msgspec.json.encode(event))
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        return int(self.producer.flush(timeout))
