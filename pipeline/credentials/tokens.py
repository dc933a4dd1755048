"""Ephemeral task credentials: signed JWTs bound to one agent, one task, one step.

Pure code (no I/O): :func:`issue` signs :class:`TaskClaims`;
:func:`verify` checks a presented credential against what the presenter says it is doing and
returns the claims, or raises :class:`CredentialRejected` with a stable reason code. Whether a
credential was revoked, completed or its holder blocked is state, not crypto: the registry
(:mod:`pipeline.credentials.registry`) answers that.

>>> key = SigningKey.generate("k1")
>>> claims = TaskClaims(sub="agt-1", task="task-9", step=2, scope=("crm.read",),
...                     ceiling=1, iat=1_000, exp=1_300, jti="cred-1", iss="custos")
>>> token = issue(claims, key)
>>> verify(token, key.public_keys(), agent="agt-1", task="task-9", step=2,
...        scope="crm.read", now_s=1_100).jti
'cred-1'
>>> verify(token, key.public_keys(), agent="agt-2", task="task-9", step=2,
...        scope="crm.read", now_s=1_100)
Traceback (most recent call last):
...
pipeline.credentials.tokens.CredentialRejected: wrong_holder: credential of agt-1 presented by agt-2
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from pipeline.control.signing import ALG, TASK_TYP, VERIFY_ALGS, SigningKey
from pipeline.errors import CustosError

__all__ = [
    "REASONS", "CredentialRejected", "TaskClaims", "check_claims", "decode", "issue", "verify",
]  # fmt: skip


#: Why a presented credential was refused (stable codes: events, metrics and tests use them).
REASONS: Final = (
    "malformed",  # not a JWS we can parse, or the wrong type
    "bad_signature",  # no trusted key verifies it (forged, tampered, unknown kid)
    "expired",  # past exp
    "not_yet_valid",  # before iat (clock skew beyond the leeway)
    "wrong_holder",  # presented by another identity than the one it was issued to
    "wrong_task",  # used for another task or step than the one it was issued for
    "out_of_scope",  # the operation is not in its scopes
    "revoked",  # revoked (responder, RFC 7009 call) - registry
    "step_completed",  # its step ended - registry
    "unknown",  # the registry never issued it - registry
    "holder_blocked",  # the holder is quarantined - registry
)


class CredentialRejected(CustosError):
    """A credential that must not be honoured; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str, **context: Any) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}", **context)


class TaskClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a task credential asserts (the JWT claims).

    ``sub`` the agent it was issued to; ``task`` / ``step`` what it may be used for; ``scope``
    the operations allowed; ``ceiling`` the highest sensitivity rank it may touch; ``act`` the
    identity that delegated the task (RFC 8693 actor), if any.
    """

    sub: str
    task: str
    step: int
    scope: tuple[str, ...]
    ceiling: int
    iat: int
    exp: int
    jti: str
    iss: str
    act: str | None = None

    def to_claims(self) -> dict[str, Any]:
        d: dict[str, Any] = msgspec.to_builtins(self)
        d["scope"] = " ".join(self.scope)  # OAuth's space-separated form (RFC 8693 / 9068)
        if self.act is None:
            del d["act"]
        else:
            d["act"] = {"sub": self.act}
        return d

    @classmethod
    def from_claims(cls, c: dict[str, Any]) -> TaskClaims:
        try:
            act = c.get("act")
            return cls(
                sub=str(c["sub"]), task=str(c["task"]), step=int(c["step"]),
                scope=tuple(str(c.get("scope", "")).split()), ceiling=int(c["ceiling"]),
                iat=int(c["iat"]), exp=int(c["exp"]), jti=str(c["jti"]), iss=str(c["iss"]),
                act=str(act["sub"]) if isinstance(act, dict) and "sub" in act else None,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise CredentialRejected("malformed", f"claims: {exc!r}") from None

    @staticmethod
    def new_jti() -> str:
        return "cred-" + secrets.token_hex(12)


def issue(claims: TaskClaims, key: SigningKey) -> str:
    """Sign ``claims`` into a compact JWS (JWT)."""
    header = {"alg": ALG, "typ": TASK_TYP, "kid": key.kid}
    return jwt.encode(header, claims.to_claims(), key.key, algorithms=[ALG])


def decode(token: str, keys: KeySet) -> TaskClaims:
    """Check the signature and type; no time or binding checks (see :func:`verify`)."""
    try:
        t = jwt.decode(token, keys, algorithms=list(VERIFY_ALGS))
    except JoseError as exc:
        code = "malformed" if "decode" in type(exc).__name__.lower() else "bad_signature"
        raise CredentialRejected(code, f"{type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:  # not even a JWS
        raise CredentialRejected("malformed", repr(exc)) from None
    if t.header.get("typ") != TASK_TYP:
        raise CredentialRejected("malformed", f"typ {t.header.get('typ')!r}, expected {TASK_TYP}")
    return TaskClaims.from_claims(t.claims)


def verify(
    token: str,
    keys: KeySet,
    *,
    agent: str,
    task: str | None,
    step: int | None,
    scope: str | None,
    now_s: float,
    leeway_s: float = 5.0,
) -> TaskClaims:
    """Everything the token itself can prove, for a use by ``agent`` on ``task``/``step``.

    Order: signature, time, holder, task and step, scope; the first failure raises.
    """
    return check_claims(decode(token, keys), agent=agent, task=task, step=step, scope=scope,
                        now_s=now_s, leeway_s=leeway_s)  # fmt: skip


def check_claims(
    c: TaskClaims,
    *,
    agent: str,
    task: str | None,
    step: int | None,
    scope: str | None,
    now_s: float,
    leeway_s: float = 5.0,
) -> TaskClaims:
    """:func:`verify` after the signature: time, holder, task and step, scope."""
    if now_s > c.exp + leeway_s:
        raise CredentialRejected("expired", f"expired {now_s - c.exp:.0f} s ago")
    if now_s + leeway_s < c.iat:
        raise CredentialRejected("not_yet_valid", f"issued {c.iat - now_s:.0f} s in the future")
    if agent != c.sub:
        raise CredentialRejected("wrong_holder", f"credential of {c.sub} presented by {agent}")
    if task is not None and (task != c.task or (step is not None and step != c.step)):
        raise CredentialRejected(
            "wrong_task", f"issued for {c.task} step {c.step}, used for {task} step {step}"
        )
    if scope is not None and scope not in c.scope:
        raise CredentialRejected("out_of_scope", f"{scope} not in {' '.join(c.scope)}")
    return c
