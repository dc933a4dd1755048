"""The credential broker: issues ephemeral task credentials and takes them away again.

:class:`CredentialBroker` is the logic (registry + signing key + clock, no HTTP), so tests and
the simulator can drive it directly; :func:`web_app` puts it behind an aiohttp API on
127.0.0.1 (``custos broker``):

=========================================  =======  =============================================
route                                      auth     what
=========================================  =======  =============================================
``GET /.well-known/jwks.json``             -        the public signing key (RFC 7517, OKP)
``GET /healthz``                           -        liveness
``POST /v1/credentials``                   token    issue ``{agent, task, step, scope, ceiling,
                                                    ttl_s?, delegated_by?}`` → 201 / 403 blocked
``POST /v1/credentials/{jti}/complete``    token    the step ended: the credential is dead
``POST /v1/access``                        bearer   a resource server's check of one use:
                                                    ``Authorization: Bearer <credential>``,
                                                    ``{agent, task?, step?, operation, service?}``
                                                    → 200 allowed / 403 with the reason;
                                                    ``X-Custos-Resource-Token``: the caller is
                                                    a resource server vouching for ``agent``
``POST /introspect``                       token    RFC 7662 (form ``token``)
``POST /revoke``                           token    RFC 7009 (form ``token``): 200 also for an
                                                    unknown or already revoked token
``POST /v1/identities/{uid}/revoke``       token    revoke every live credential of ``uid``
``POST /v1/identities/{uid}/block``        token    quarantine: block issuance (and revoke);
                                                    ``revoked_earlier``: what an earlier attempt
                                                    of the same ``command_id`` revoked
``DELETE /v1/identities/{uid}/block``      token    release (``?command_id=`` lifts only the
                                                    block that command created)
``GET /v1/identities/{uid}``               read     blocked?, live credentials
``GET /v1/identities/{uid}/credentials``   read     its credentials newest first with their
                                                    uses, the tasks it delegated, its
                                                    refusals, its delegation chain (console)
=========================================  =======  =============================================

"token" = ``Authorization: Bearer <broker API token>`` (``CUSTOS_BROKER_TOKEN`` or generated on
first run into the state directory, mode 0600). "read" = that token or the read-only one
(``read-token`` beside it), which the analyst console holds: it can look, never act.

Who presented a credential is a security decision: a ``wrong_holder`` event on the presenter is
a Critical ``credential_misuse`` and an automatic quarantine of that identity. So ``agent`` in a
``/v1/access`` body is believed only from a resource server that authenticates
(``X-Custos-Resource-Token``: the API token; in production the identity mTLS / SPIFFE
established). Without it the body is a claim: the check still refuses whatever does not match,
but the refusal is recorded on the credential's *holder* (the identity the signature proves),
with the claimed presenter as unverified context - never on the identity the caller named, so
an unauthenticated request cannot quarantine anybody. Every refused use is published as an input
event (:mod:`pipeline.credentials.rejections`), so detection sees it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.control.signing import SigningKey
from pipeline.credentials.registry import Block, Refusal, Registry
from pipeline.credentials.rejections import RejectionSink, rejection_event
from pipeline.credentials.tokens import CredentialRejected, TaskClaims, check_claims, decode, issue
from pipeline.errors import ConfigError, CustosError

__all__ = ["Blocked", "CredentialBroker", "Issued", "load_api_token", "load_read_token",
           "web_app"]

log = logging.getLogger("custos.broker")

HISTORY_FLUSH_S = 5.0  # uses and refusals reach the registry within this (see flush_history)
PENDING_REFUSALS = 10_000  # at most this many wait for a flush (a flood drops the oldest)


class Blocked(CustosError):
    """Issuance refused: the identity is quarantined."""

    def __init__(self, block: Block) -> None:
        self.block = block
        super().__init__(f"{block.identity} is blocked: {block.reason}", identity=block.identity)


@dataclass(frozen=True, slots=True)
class Issued:
    credential: str
    claims: TaskClaims


class CredentialBroker:
    """Issue, check, complete, revoke, block. Thread-safe through the registry."""

    def __init__(
        self,
        registry: Registry,
        key: SigningKey,
        *,
        issuer: str,
        ttl_s: float = 300.0,
        max_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        on_reject: RejectionSink | None = None,
    ) -> None:
        if not 0 < ttl_s <= max_ttl_s:
            raise ConfigError("need 0 < credential_ttl_s <= credential_max_ttl_s")
        self.registry = registry
        self.key = key
        self.keys = key.public_keys()
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.max_ttl_s = max_ttl_s
        self.clock = clock
        self.on_reject = on_reject
        self.rejected: dict[str, int] = {}  # reason -> count (metrics)
        # Uses counted and refusals seen since the last flush, {jti: (n, last at)}: written to
        # the registry every few seconds, not per call (see :meth:`flush_history`).
        self._uses: dict[str, tuple[int, float]] = {}
        self._refusals: deque[Refusal] = deque(maxlen=PENDING_REFUSALS)
        self._pending_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_reject: RejectionSink | None = None
    ) -> CredentialBroker:
        state = settings.broker_state_path
        state.mkdir(parents=True, exist_ok=True, mode=0o700)  # key and token live here
        return cls(
            Registry(state / "credentials.sqlite3"),
            SigningKey.load_or_create(state / "signing-key.jwk"),
            issuer=settings.broker_url,
            ttl_s=settings.credential_ttl_s,
            max_ttl_s=settings.credential_max_ttl_s,
            on_reject=on_reject,
        )

    # --- issuance -----------------------------------------------------------------------------
    def issue(
        self,
        agent: str,
        task: str,
        step: int,
        scope: tuple[str, ...],
        ceiling: int,
        *,
        ttl_s: float | None = None,
        delegated_by: str | None = None,
    ) -> Issued:
        """A credential for exactly this agent, task and step; :class:`Blocked` if quarantined."""
        now = self.clock()
        ttl = min(self.ttl_s if ttl_s is None else ttl_s, self.max_ttl_s)
        if ttl <= 0:
            raise ValueError("ttl_s must be > 0")
        claims = TaskClaims(
            sub=agent, task=task, step=step, scope=scope, ceiling=ceiling, iat=int(now),
            exp=int(now + ttl), jti=TaskClaims.new_jti(), iss=self.issuer, act=delegated_by,
        )  # fmt: skip
        block = self.registry.issue_unless_blocked(claims, now)
        if block is not None:
            self._reject(
                agent, None, "holder_blocked", f"issuance refused: {block.reason}",
                operation="credentials.issue", service="custos-credential-broker", task=task,
                step=step,
            )  # fmt: skip
            raise Blocked(block)
        return Issued(issue(claims, self.key), claims)

    def complete(self, jti: str, *, by: str) -> bool:
        return self.registry.complete(jti, by=by, now_s=self.clock())

    # --- use ------------------------------------------------------------------------------------
    def check(
        self,
        token: str,
        *,
        agent: str,
        operation: str,
        task: str | None = None,
        step: int | None = None,
        service: str | None = None,
        src_ip: str | None = None,
        presenter_verified: bool = True,
    ) -> TaskClaims:
        """One use of a credential: the claims if it may proceed, else
        :class:`CredentialRejected` (and a rejection event).

        ``presenter_verified`` False: ``agent`` is only what the caller says (no resource
        server vouched for it), so a refusal is recorded on the credential's holder.
        """
        now = self.clock()
        claims: TaskClaims | None = None
        try:
            claims = decode(token, self.keys)  # the signature is checked once, here
            check_claims(claims, agent=agent, task=task, step=step, scope=operation, now_s=now)
            status = self.registry.status(claims.jti)
            if status is None:
                raise CredentialRejected("unknown", f"{claims.jti} was never issued here")
            if status.state == "revoked":
                raise CredentialRejected("revoked", f"{claims.jti}: {status.reason}")
            if status.state == "completed":
                raise CredentialRejected("step_completed", f"{claims.jti}: step {claims.step}")
            block = self.registry.blocked(agent, now)
            if block is not None:
                raise CredentialRejected("holder_blocked", f"{agent}: {block.reason}")
        except CredentialRejected as exc:
            subject, claimed = agent, None
            if not presenter_verified:
                # Blame only what the signature proves: the holder, else the caller's address.
                subject = claims.sub if claims is not None else f"unverified@{src_ip or '?'}"
                claimed = agent
            self._reject(
                subject, claims, exc.reason, exc.detail, operation=operation, service=service,
                task=task, step=step, src_ip=src_ip, claimed_presenter=claimed,
            )  # fmt: skip
            raise
        with self._pending_lock:
            n, _ = self._uses.get(claims.jti, (0, now))
            self._uses[claims.jti] = (n + 1, now)
        return claims

    def flush_history(self) -> int:
        """Write the uses counted and the refusals seen since the last flush; returns how
        many records."""
        with self._pending_lock:
            counts, self._uses = self._uses, {}
            refusals = list(self._refusals)
            self._refusals.clear()
        try:
            self.registry.add_uses(counts)
            self.registry.refused_many(refusals)
        except Exception:
            with self._pending_lock:  # keep them for the next flush
                for jti, (n, at) in counts.items():
                    m, last = self._uses.get(jti, (0, at))
                    self._uses[jti] = (n + m, max(at, last))
                self._refusals.extendleft(reversed(refusals))
            raise
        return len(counts) + len(refusals)

    def history(self, identity: str, *, limit: int = 50) -> dict[str, Any]:
        """The identity's credentials (issued, used, completed, revoked), the tasks it
        delegated, its refusals, its delegation chain and block: the console's identity page."""
        self.flush_history()
        out: dict[str, Any] = {"identity": identity, **self.registry.history(identity, limit=limit)}
        out["delegation_chain"] = self.registry.delegators(identity)
        b = self.registry.blocked(identity, self.clock())
        out["blocked"] = None if b is None else {
            "since": b.since, "until": b.until, "reason": b.reason, "by": b.blocked_by,
        }  # fmt: skip
        return out

    def _reject(
        self,
        agent: str,
        claims: TaskClaims | None,
        reason: str,
        detail: str,
        *,
        operation: str | None,
        service: str | None,
        task: str | None = None,
        step: int | None = None,
        src_ip: str | None = None,
        claimed_presenter: str | None = None,
    ) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.info("rejected %s for %r: %s", reason, agent, detail)
        with self._pending_lock:
            self._refusals.append(Refusal(
                agent, self.clock(), reason, detail, claims.jti if claims is not None else None,
                claims.task if claims is not None else task, operation, service))  # fmt: skip
        if self.on_reject is not None:
            event = rejection_event(
                presenter=agent, claims=claims, reason=reason, detail=detail,
                operation=operation, service=service, now_ms=int(self.clock() * 1000),
                src_ip=src_ip, task=task, step=step, claimed_presenter=claimed_presenter,
            )  # fmt: skip
            self.on_reject(agent, event)

    # --- RFC 7662 / 7009 --------------------------------------------------------------------------
    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything that may not be used right now."""
        now = self.clock()
        try:
            c = decode(token, self.keys)
        except CredentialRejected:
            return {"active": False}
        status = self.registry.status(c.jti)
        if (
            status is None
            or status.state != "live"
            or now > c.exp
            or self.registry.blocked(c.sub, now) is not None
        ):
            return {"active": False}
        out: dict[str, Any] = {
            "active": True, "scope": " ".join(c.scope), "token_type": "Bearer", "sub": c.sub,
            "iss": c.iss, "iat": c.iat, "exp": c.exp, "jti": c.jti,
            "custos": {"task": c.task, "step": c.step, "ceiling": c.ceiling},
        }  # fmt: skip
        if c.act:
            out["act"] = {"sub": c.act}
        return out

    def revoke_token(self, token: str, *, by: str) -> bool:
        """RFC 7009: revoke if it is ours; unknown, invalid or already revoked is not an error.

        Only the signature is checked (not expiry: revoking an expired token is harmless).
        """
        try:
            c = decode(token, self.keys)
        except CredentialRejected:
            return False
        return self.registry.revoke(c.jti, reason="revoked (RFC 7009)", by=by, now_s=self.clock())

    # --- containment ------------------------------------------------------------------------------
    def revoke_identity(self, identity: str, *, reason: str, by: str) -> list[str]:
        return self.registry.revoke_all(identity, reason=reason, by=by, now_s=self.clock())

    def block(
        self,
        identity: str,
        *,
        reason: str,
        by: str,
        until: float | None = None,
        command_id: str | None = None,
        revoke: bool = True,
    ) -> tuple[bool, list[str]]:
        return self.registry.block(
            identity, reason=reason, by=by, now_s=self.clock(), until=until,
            command_id=command_id, revoke=revoke,
        )  # fmt: skip

    def unblock(self, identity: str, *, command_id: str | None = None) -> bool:
        return self.registry.unblock(identity, command_id=command_id)


# --- HTTP -------------------------------------------------------------------------------------


def load_api_token(settings: Settings) -> str:
    """The broker API token: from settings, else created once (mode 0600) and reused."""
    if settings.broker_token:
        return settings.broker_token
    return _token_file(settings.broker_state_path / "api-token")


def load_read_token(settings: Settings) -> str:
    """The broker's read-only token (created once, mode 0600): what an identity holds, its
    credentials' history, and nothing else. The analyst console holds this one, not the API
    token that issues, revokes and blocks."""
    return _token_file(settings.broker_state_path / "read-token")


def _token_file(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


_MAX_NAME_CHARS = 1024  # as the input contract (pipeline.events.schemas): ids end up in events
_MAX_TEXT_CHARS = 1000
_MAX_TOKEN_CHARS = 16_384
_MAX_INT = 2**31 - 1  # steps, ceilings, TTLs, times in s: SQLite INTEGER and JSON safe


def _is_name(v: str) -> bool:
    """Non-empty, bounded, printable (no NUL, line breaks, zero-width, bidi, lone surrogates)."""
    return 0 < len(v) <= _MAX_NAME_CHARS and v.isprintable() and not v.isspace()


def _strict_json(text: str) -> Any:
    """JSON without NaN/Infinity and with duplicate keys refused (the event decoder's check)."""
    import json

    from pipeline.events.duplicate_keys import duplicate_key

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    doc = json.loads(text, parse_constant=constant)
    if duplicate_key(text.encode("utf-8", "surrogatepass")) is not None:
        raise ValueError("duplicate key")
    return doc


def web_app(broker: CredentialBroker, api_token: str, read_token: str | None = None) -> Any:
    """The aiohttp application (thin: parse, call the broker, shape the answer)."""
    from aiohttp import web

    routes = web.RouteTableDef()

    def bearer(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def same(got: str | None, want: str) -> bool:
        # Headers are decoded with surrogateescape: bytes that are not UTF-8 must not raise.
        return got is not None and hmac.compare_digest(
            got.encode("utf-8", "surrogateescape"), want.encode()
        )

    def require_token(request: web.Request) -> str:
        """The caller's name for the audit fields; 401 unless it holds the API token."""
        if not same(bearer(request), api_token):
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Bearer realm="custos-broker"'},
                text='{"error": "invalid_token"}',
                content_type="application/json",
            )
        caller = request.headers.get("X-Custos-Caller", "api")
        return caller if _is_name(caller) else "api"

    def require_reader(request: web.Request) -> None:
        """401 unless the caller holds the API token or the read-only one."""
        got = bearer(request)
        if read_token is not None and same(got, read_token):
            return
        require_token(request)

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json(loads=_strict_json)
        except ValueError:  # also UnicodeDecodeError and duplicate keys
            raise bad("body must be a JSON object (UTF-8, no duplicate keys)") from None
        if not isinstance(data, dict):
            raise bad("body must be a JSON object")
        return data

    async def form_token(request: web.Request) -> str:
        try:
            form = await request.post()
        except ValueError:  # not UTF-8, not a form
            raise bad("body must be an application/x-www-form-urlencoded form") from None
        token = form.get("token")
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise bad("token required")
        return token

    def bad(msg: str) -> web.HTTPBadRequest:
        import json

        return web.HTTPBadRequest(
            text=json.dumps({"error": "invalid_request", "error_description": msg}),
            content_type="application/json",
        )

    def field(d: dict[str, Any], name: str, typ: Any, default: Any = ...) -> Any:
        """``d[name]`` of type ``typ``; names are printable and bounded, numbers in range."""
        v = d.get(name, default)
        if v is ... or (v is not None and not isinstance(v, typ)) or isinstance(v, bool):
            kind = " or ".join(t.__name__ for t in typ) if isinstance(typ, tuple) else typ.__name__
            raise bad(f"{name}: {kind} required")
        if isinstance(v, str) and not _is_name(v):
            raise bad(f"{name}: 1 to {_MAX_NAME_CHARS} printable characters")
        if isinstance(v, int) and not 0 <= v <= _MAX_INT:
            raise bad(f"{name}: an integer from 0 to {_MAX_INT}")
        if isinstance(v, float) and not (math.isfinite(v) and 0 <= v <= _MAX_INT):
            raise bad(f"{name}: a finite number from 0 to {_MAX_INT}")
        return v

    def text(d: dict[str, Any], name: str, default: Any = ...) -> Any:
        """Free text (a reason): bounded, printable, may contain spaces."""
        v = d.get(name, default)
        if v is ... or (v is not None and not isinstance(v, str)):
            raise bad(f"{name}: str required")
        if isinstance(v, str) and not (0 < len(v) <= _MAX_TEXT_CHARS and v.isprintable()):
            raise bad(f"{name}: 1 to {_MAX_TEXT_CHARS} printable characters")
        return v

    def path_uid(request: web.Request) -> str:
        uid = request.match_info["uid"]
        if not _is_name(uid):
            raise bad(f"identity: 1 to {_MAX_NAME_CHARS} printable characters")
        return uid

    @routes.get("/.well-known/jwks.json")
    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(broker.key.jwks())

    @routes.get("/healthz")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @routes.post("/v1/credentials")
    async def issue_credential(request: web.Request) -> web.Response:
        require_token(request)
        d = await body(request)
        scope = field(d, "scope", list, [])
        if len(scope) > 256 or not all(isinstance(s, str) and _is_name(s) and " " not in s
                                       for s in scope):  # fmt: skip
            raise bad("scope: list of operation names")
        try:
            got = broker.issue(
                field(d, "agent", str), field(d, "task", str), field(d, "step", int),
                tuple(scope), field(d, "ceiling", int, 0),
                ttl_s=field(d, "ttl_s", (int, float), None),
                delegated_by=field(d, "delegated_by", str, None),
            )  # fmt: skip
        except Blocked as exc:
            return web.json_response(
                {"error": "blocked", "error_description": str(exc)}, status=403
            )
        except ValueError as exc:
            raise bad(str(exc)) from None
        return web.json_response(
            {"credential": got.credential, "token_type": "Bearer", "jti": got.claims.jti,
             "expires_at": got.claims.exp},
            status=201,
        )  # fmt: skip

    @routes.post("/v1/credentials/{jti}/complete")
    async def complete(request: web.Request) -> web.Response:
        by = require_token(request)
        jti = request.match_info["jti"]
        if not _is_name(jti):
            raise bad("jti: printable characters")
        return web.json_response({"jti": jti, "completed": broker.complete(jti, by=by)})

    @routes.post("/v1/access")
    async def access(request: web.Request) -> web.Response:
        token = bearer(request)
        d = await body(request)
        agent = field(d, "agent", str)
        operation = field(d, "operation", str)
        if token is not None and len(token) > _MAX_TOKEN_CHARS:
            raise bad("credential too long")
        if token is None:
            return web.json_response(
                {"allowed": False, "reason": "malformed", "detail": "no bearer credential"},
                status=401,
            )
        verified = same(request.headers.get("X-Custos-Resource-Token"), api_token)
        try:
            c = broker.check(
                token, agent=agent, operation=operation, task=field(d, "task", str, None),
                step=field(d, "step", int, None), service=field(d, "service", str, None),
                src_ip=request.remote, presenter_verified=verified,
            )  # fmt: skip
        except CredentialRejected as exc:
            return web.json_response(
                {"allowed": False, "reason": exc.reason, "detail": exc.detail}, status=403
            )
        return web.json_response({"allowed": True, "jti": c.jti, "exp": c.exp})

    @routes.post("/introspect")
    async def introspect(request: web.Request) -> web.Response:
        require_token(request)
        return web.json_response(broker.introspect(await form_token(request)))

    @routes.post("/revoke")
    async def revoke(request: web.Request) -> web.Response:
        by = require_token(request)
        broker.revoke_token(await form_token(request), by=by)
        return web.Response(status=200)  # RFC 7009 §2.2: 200 whether or not it was valid

    @routes.post("/v1/identities/{uid}/revoke")
    async def revoke_identity(request: web.Request) -> web.Response:
        by = require_token(request)
        d = await body(request)
        uid = path_uid(request)
        ids = broker.revoke_identity(uid, reason=text(d, "reason", "revoked"), by=by)
        return web.json_response({"identity": uid, "revoked": ids})

    @routes.post("/v1/identities/{uid}/block")
    async def block(request: web.Request) -> web.Response:
        by = require_token(request)
        d = await body(request)
        uid = path_uid(request)
        command_id = field(d, "command_id", str, None)
        new, ids = broker.block(
            uid, reason=text(d, "reason"), by=by,
            until=field(d, "until", (int, float), None),
            command_id=command_id, revoke=d.get("revoke", True) is True,
        )  # fmt: skip
        answer: dict[str, Any] = {"identity": uid, "newly_blocked": new, "revoked": ids}
        if command_id is not None:  # what an earlier attempt of the same command revoked
            earlier = broker.registry.revoked_by_command(uid, command_id)
            answer["revoked_earlier"] = [j for j in earlier if j not in ids]
        return web.json_response(answer)

    @routes.delete("/v1/identities/{uid}/block")
    async def unblock(request: web.Request) -> web.Response:
        require_token(request)
        uid = path_uid(request)
        command_id = request.query.get("command_id")
        if command_id is not None and not _is_name(command_id):
            raise bad("command_id: printable characters")
        lifted = broker.unblock(uid, command_id=command_id)
        return web.json_response({"identity": uid, "unblocked": lifted})

    @routes.get("/v1/identities/{uid}")
    async def identity(request: web.Request) -> web.Response:
        require_reader(request)
        uid = path_uid(request)
        now = broker.clock()
        b = broker.registry.blocked(uid, now)
        return web.json_response(
            {"identity": uid, "blocked": b is not None, "reason": b.reason if b else None,
             "command_id": b.command_id if b else None,
             "live": broker.registry.live(uid, now)}
        )  # fmt: skip

    @routes.get("/v1/identities/{uid}/credentials")
    async def history(request: web.Request) -> web.Response:
        require_reader(request)
        uid = path_uid(request)
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), 500)
        except ValueError:
            raise bad("limit must be an integer") from None
        return web.json_response(broker.history(uid, limit=limit))

    async def flush_history(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(HISTORY_FLUSH_S)
                try:
                    broker.flush_history()
                except Exception:  # they stay in memory for the next try
                    log.exception("could not write credential uses and refusals")

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        broker.flush_history()

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes(routes)
    app.cleanup_ctx.append(flush_history)
    return app


def run_broker(settings: Settings) -> None:
    """``custos broker``: serve until interrupted (loopback only)."""
    from aiohttp import web

    if not ipaddress.ip_address(settings.broker_host).is_loopback:
        raise ConfigError(f"broker_host {settings.broker_host} is not a loopback address")
    from pipeline.control.reports import config_report, encode
    from pipeline.credentials.rejections import KafkaRejectionSink
    from pipeline.kafka.clients import make_producer

    sink = KafkaRejectionSink(settings)
    # The configuration this broker runs with (secrets masked), for the audit log.
    producer = make_producer(settings)
    producer.produce(settings.reports_topic, value=encode(config_report(settings, "broker")))
    if producer.flush(10):
        log.warning("configuration report not delivered to %s", settings.reports_topic)
    broker = CredentialBroker.from_settings(settings, on_reject=sink)
    app = web_app(broker, load_api_token(settings), load_read_token(settings))
    try:
        web.run_app(app, host=settings.broker_host, port=settings.broker_port, print=None)
    finally:
        sink.flush()
        broker.registry.close()
