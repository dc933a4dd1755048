"""The console's web application (Starlette, Jinja2 templates, vendored htmx).

Pages: login, the alert queue (live: new and changed findings arrive over server-sent events
without a reload), a finding's page (with its contain commands and every responder answer),
the containment queue (pending approvals, active quarantines). Changes are POSTs that must
carry the session's CSRF token and come from the console's own origin; roles are enforced
here, on the server, whatever the page shows:

* triage (acknowledge, assign, close with a classification) stays in the console's store;
* confirm, false positive (optionally learned as normal), suppress (analyst), approve, reject
  and release (approver) leave the console signed with that analyst's own key
  (:mod:`~pipeline.console.decisions`) and are recorded only once the broker has them. With
  ``two_person``, an approver cannot approve a contain of a finding they confirmed themselves.

Bound to 127.0.0.1 by default (``custos console``). Behind a TLS proxy, set ``secure_cookies``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pipeline.config import Settings
from pipeline.console import charts as charts_mod
from pipeline.console import decisions
from pipeline.console.accounts import Accounts, Session
from pipeline.console.oidc import OidcLogin
from pipeline.console.store import CLASSIFICATIONS, ConsoleStore

__all__ = ["create_console"]

HERE: Final = Path(__file__).parent
log = logging.getLogger("custos.console")

COOKIE: Final = "custos_session"
LOGIN_COOKIE: Final = "custos_login"  # binds the login form to this browser (login CSRF)
OIDC_COOKIE: Final = "custos_oidc"  # the single sign-on handshake only
CREDENTIALS_SHOWN: Final = 12  # an agent gets one per task step: the latest, and the totals
PAGE: Final = 200  # findings per queue page (a page of 10,000 rows would take seconds to draw)
# Wrong passwords per user name before its logins wait (guessing stays slow; an attacker can
# make a user wait, not get in).
MAX_FAILURES: Final = 5
LOCKOUT_S: Final = 900.0
MAX_TRACKED: Final = 10_000  # user names with recent failures kept at most (then the expired go)
SEVERITIES: Final = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
                     5: "Critical", 6: "Fatal"}  # fmt: skip
# No inline script, no foreign origin: an injected <script> in a finding's text cannot run.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def row_id(uid: str) -> str:
    """A finding's element id: uids may hold characters an id or selector cannot."""
    return "f-" + hashlib.sha256(uid.encode()).hexdigest()[:16]


def _get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A JSON object from a loopback service (a worker, the broker); None on any failure."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=2) as r:  # fmt: skip
            doc = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


Send = Callable[[decisions.Outgoing], None]
#: Incident decisions an analyst sends to the worker, with what they do.
TO_WORKER: Final = {"confirm": "compromise confirmed", "false_positive": "false positive",
                    "suppress": "suppressed"}  # fmt: skip


class Console:
    def __init__(self, store: ConsoleStore, *, poll_s: float = 0.5,
                 secure_cookies: bool = False, settings: Settings | None = None,
                 send: Send | None = None, two_person: bool = False,
                 workers: tuple[str, ...] = (),
                 broker: tuple[str, str] | None = None,
                 oidc: OidcLogin | None = None) -> None:  # fmt: skip
        self.store = store
        self.oidc = oidc
        self.workers = workers  # base URLs of the workers' web servers (identity baselines)
        self.broker = broker  # (URL, API token) of the credential broker (task credentials)
        self.accounts = Accounts(store)
        self.settings = settings
        self.send = send  # None: read-only for the worker and responders (serving a replay)
        self.two_person = two_person
        self.keys = decisions.AnalystKeys(settings) if settings is not None else None
        self.failures: dict[str, list[float]] = {}  # user → recent wrong passwords (monotonic)
        self.poll_s = poll_s
        self.secure = secure_cookies
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(severities=SEVERITIES, classifications=CLASSIFICATIONS,
                           row_id=row_id, when=_when,
                           sso=oidc.config.label if oidc is not None else None)  # fmt: skip

    # --- who is asking ----------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.accounts.session(request.cookies.get(COOKIE))

    def viewer(self, request: Request) -> Session:
        """The logged-in session of a page request (HTTP 401 without one)."""
        s = self.session(request)
        if s is None:
            raise HTTPException(401, "log in first")
        return s

    async def change(self, request: Request, role: str) -> tuple[Session, dict[str, Any]]:
        """A state-changing request: same origin, the session's CSRF token, the role."""
        _same_origin(request)
        s = self.viewer(request)
        form = dict(await request.form())
        token = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        if not hmac.compare_digest(token.encode(), s.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token")
        if not s.can(role):
            raise HTTPException(403, f"{s.user} is a {s.role}; this needs {role}")
        return s, form

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        response = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        response.headers.update(_HEADERS)
        return response

    # --- pages ------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = self.page(request, "login.html", nonce=nonce, error=None)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=900, httponly=True, samesite="strict",
                            secure=self.secure)  # fmt: skip
        return response

    async def login(self, request: Request) -> Response:
        _same_origin(request)
        form = await request.form()
        nonce = str(form.get("nonce") or "")
        cookie = request.cookies.get(LOGIN_COOKIE) or ""
        if not cookie or not hmac.compare_digest(nonce.encode(), cookie.encode()):
            raise HTTPException(403, "login form expired or not from this browser; reload it")
        user = str(form.get("user") or "")[:64]
        now = time.monotonic()
        recent = [t for t in self.failures.get(user, []) if now - t < LOCKOUT_S]
        if len(recent) >= MAX_FAILURES:
            raise HTTPException(429, f"too many wrong passwords for {user!r}: try again in "
                                f"{int(LOCKOUT_S - (now - recent[0])) + 1} s")  # fmt: skip
        got = self.accounts.login(user, str(form.get("password") or ""))
        if got is None:
            self.failures[user] = [*recent, now]
            if len(self.failures) > MAX_TRACKED:  # names are the client's: bound the memory
                live = sorted(((u, ts) for u, ts in self.failures.items()
                               if now - ts[-1] < LOCKOUT_S), key=lambda x: -x[1][-1])
                self.failures = dict(live[:MAX_TRACKED])  # fmt: skip
            fresh = secrets.token_urlsafe(24)
            response = self.page(request, "login.html", 401, nonce=fresh,
                                 error="Wrong user name or password.")  # fmt: skip
            response.set_cookie(LOGIN_COOKIE, fresh, max_age=900, httponly=True,
                                samesite="strict", secure=self.secure)  # fmt: skip
            return response
        self.failures.pop(user, None)
        token, _ = got
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def oidc_start(self, request: Request) -> Response:
        if self.oidc is None:
            raise HTTPException(404, "single sign-on is not configured")
        try:
            response: Response = await self.oidc.start(request)
        except Exception as exc:  # the provider's discovery document is unreachable or bad
            log.warning("OIDC sign-in could not start: %r", exc)
            raise HTTPException(502, "the identity provider does not answer") from exc
        return response

    async def oidc_callback(self, request: Request) -> Response:
        """The provider's redirect back: verify, map (iss, sub) to a linked account, log in."""
        from pipeline.console.oidc import OidcRefused

        if self.oidc is None:
            raise HTTPException(404, "single sign-on is not configured")
        try:
            issuer, sub, claims = await self.oidc.finish(request)
        except OidcRefused as exc:
            raise HTTPException(403, str(exc)) from exc
        got = self.accounts.login_linked(issuer, sub)
        if got is None:
            who = str(claims.get("preferred_username") or claims.get("email") or sub)[:80]
            log.warning("OIDC subject %r of %s (%s) has no linked account", sub, issuer, who)
            raise HTTPException(403, f"{who} signed in, but no console account is linked to "
                                "that identity: ask an administrator to run `custos console "
                                "users link`")  # fmt: skip
        token, _, name = got
        log.info("%s logged in by single sign-on (%s of %s)", name, sub, issuer)
        response = self.page(request, "signed_in.html", user=name)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure)
        return response

    async def logout(self, request: Request) -> Response:
        await self.change(request, "viewer")
        self.accounts.logout(request.cookies.get(COOKIE) or "")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def _filters(self, request: Request, s: Session) -> dict[str, Any]:
        q = request.query_params
        try:
            severity = int(q.get("severity") or 0)
        except ValueError:
            severity = 0
        return {
            "min_severity": severity,
            "status": q.get("status") or None,
            "kind": q.get("kind") or None,
            "assignee": s.user if q.get("mine") else (q.get("assignee") or None),
            "analytic": q.get("analytic") or None,
        }

    async def queue(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        filters = self._filters(request, s)
        try:
            before = int(request.query_params["before"]) if "before" in request.query_params \
                else None
        except ValueError:
            before = None
        rows = self.store.findings(**filters, before_seq=before, limit=PAGE)
        total = self.store.count(**filters)
        older = None
        if len(rows) == PAGE:
            older = "/?" + urlencode({**{k: v for k, v in request.query_params.items()
                                         if k != "before"}, "before": rows[-1]["seq"]})  # fmt: skip
        stream = "/stream?" + urlencode({**{k: v for k, v in request.query_params.items()
                                            if k in ("severity", "status", "kind", "mine",
                                                     "assignee", "analytic")},
                                         "after": self.store.last_seq()})  # fmt: skip
        return self.page(request, "queue.html", s=s, rows=rows, stream=stream,
                         q=request.query_params, total=total, older=older,
                         live=before is None)  # fmt: skip

    async def stream(self, request: Request) -> Response:
        """Server-sent events: each new or changed finding of the queue's filters, as a row."""
        s = self.viewer(request)
        filters = self._filters(request, s)
        try:
            after = int(request.query_params.get("after") or 0)
        except ValueError:
            after = 0
        row = self.templates.get_template("_row.html")

        async def events() -> AsyncIterator[str]:
            nonlocal after
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                if self.accounts.session(request.cookies.get(COOKIE)) is None:
                    return  # logged out or revoked meanwhile: the stream ends too
                changed = self.store.findings(after_seq=after, **filters)
                for f in reversed(changed):  # oldest first: the newest ends on top
                    after = max(after, int(f["seq"]))
                    html = row.render(f=f, s=s, csrf=s.csrf, row_id=row_id, when=_when,
                                      severities=SEVERITIES,
                                      classifications=CLASSIFICATIONS)  # fmt: skip
                    data = "".join(f"data: {line}\n" for line in html.splitlines() if line)
                    yield f"event: finding\n{data}\n"
                await asyncio.sleep(self.poll_s)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**_HEADERS, "X-Accel-Buffering": "no"})  # fmt: skip

    async def finding(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        f = self.store.finding(request.path_params["uid"])
        if f is None:
            raise HTTPException(404, "no such finding")
        doc = json.loads(f["doc"])
        commands = self.store.commands(finding_uid=f["uid"])
        history = self.store.actions(f["uid"])
        for c in commands:
            c["responses"] = self.store.responses(c["command_id"])
            history += self.store.actions(c["command_id"])  # approvals, rejections, releases
        history.sort(key=lambda a: a["id"])
        return self.page(request, "finding.html", s=s, f=f, doc=doc,
                         evidence=json.dumps(doc, indent=2, sort_keys=True),
                         history=history, commands=commands,
                         can_send=self.send is not None)  # fmt: skip

    async def deliver(self, s: Session, build: Callable[..., decisions.Outgoing],
                      **kw: Any) -> decisions.Outgoing:  # fmt: skip
        """Sign with ``s``'s own key, build, send; HTTP 409 when this console cannot send,
        502 when the broker did not take it."""
        if self.send is None or self.keys is None or self.settings is None:
            raise HTTPException(409, "this console is read-only (serving a replay): decisions "
                                "go through a console that follows Kafka")  # fmt: skip
        key = await asyncio.to_thread(self.keys.key, s.user)
        out = build(self.settings, key, user=s.user, now_ms=int(time.time() * 1000), **kw)
        try:
            await asyncio.to_thread(self.send, out)
        except decisions.DecisionNotSent as exc:
            raise HTTPException(502, str(exc)) from None
        return out

    async def to_worker(self, request: Request, s: Session, form: dict[str, Any]) -> Response:
        uid, action = request.path_params["uid"], request.path_params["action"]
        f = self.store.finding(uid)
        if f is None:
            raise HTTPException(404, "no such finding")
        reason = str(form.get("reason") or "").strip()[:500]
        if not reason:
            raise HTTPException(400, "say why: the reason goes to the worker and the audit log")
        kw: dict[str, Any] = {}
        if action == "false_positive":
            kw["learn_as_normal"] = bool(form.get("learn"))
        if action == "suppress":
            try:
                hours = float(str(form.get("hours") or "24"))
            except ValueError:
                hours = -1.0
            if not 0 < hours <= 24 * 90:
                raise HTTPException(400, "a suppression lasts more than 0 and at most 90 days")
            kw["until_ms"] = int((time.time() + hours * 3600) * 1000)
        out = await self.deliver(s, decisions.feedback, action=action, identity=f["identity"],
                                 finding_uid=uid, reason=reason, **kw)  # fmt: skip
        self.store.record(s.user, action, uid, json.dumps({"reason": reason, "sent": out.what,
                                                           **kw}, sort_keys=True))  # fmt: skip
        return RedirectResponse(f"/findings/{quote(uid, safe='')}", status_code=303)

    async def triage(self, request: Request) -> Response:
        s, form = await self.change(request, "analyst")
        uid = request.path_params["uid"]
        action = request.path_params["action"]
        if action in TO_WORKER:
            return await self.to_worker(request, s, form)
        kw: dict[str, Any] = {"reason": str(form.get("reason") or "")[:500]}
        if action == "assign":
            kw["assignee"] = str(form.get("assignee") or s.user)
        elif action == "close":
            kw["classification"] = str(form.get("classification") or "")
        elif action != "acknowledge":
            raise HTTPException(404, "no such action")
        try:
            if not self.store.triage(uid, s.user, action, **kw):
                raise HTTPException(404, "no such finding")
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse(_local(str(form.get("back") or "/")), status_code=303)


    def _from_workers(self, uid: str, kind: str) -> dict[str, Any] | None:
        """The identity's state as the worker holding it describes it (None: none answers)."""
        for base in self.workers:
            doc = _get_json(f"{base}/custos/identity/{quote(uid, safe='')}?kind={quote(kind)}")
            if doc is not None:
                return doc
        return None  # another worker holds it, or they are down

    def _from_broker(self, uid: str) -> dict[str, Any] | None:
        """The identity's task credentials as the credential broker tells them (None: no
        broker configured or it does not answer)."""
        if self.broker is None:
            return None
        base, token = self.broker
        return _get_json(
            f"{base}/v1/identities/{quote(uid, safe='')}/credentials?limit={CREDENTIALS_SHOWN}",
            {"Authorization": f"Bearer {token}"})  # fmt: skip

    async def identity(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        uid = request.path_params["uid"]
        rows = self.store.query("SELECT * FROM findings WHERE identity = ? ORDER BY time_ms",
                                (uid,))  # fmt: skip
        findings = [dict(r) for r in rows]
        kind = findings[-1]["identity_kind"] if findings else "unknown"
        state, creds = await asyncio.gather(asyncio.to_thread(self._from_workers, uid, kind),
                                            asyncio.to_thread(self._from_broker, uid))  # fmt: skip
        if state is not None and state.get("kind"):
            kind = state["kind"]
        if not findings and state is None and not (creds and creds.get("credentials")):
            raise HTTPException(404, "no finding about this identity, and no worker holds it")
        risk = []
        observed: dict[str, float] = {}
        for f in findings:
            doc = json.loads(f["doc"])
            if doc.get("risk_score") is not None:
                risk.append({"time_ms": f["time_ms"], "risk": doc["risk_score"],
                             "title": f["title"]})  # fmt: skip
            for a in (doc.get("anomaly_analyses") or [{}])[0].get("anomalies") or ():
                value = ((a.get("observations") or [{}])[0]).get("value")
                try:
                    observed[str(a.get("observation_parameter"))] = float(value)
                except (TypeError, ValueError):
                    pass
        charts = {"risk": charts_mod.risk_chart(risk)} if risk else {}
        if state is not None:
            profile = state["baseline"]
            charts["hours"] = charts_mod.hours_chart(profile)
            peers = (state.get("peers") or {}).get("baseline")
            charts["numeric"] = charts_mod.numeric_chart(profile, observed, peers)
        commands = self.store.commands(identity=uid, limit=200)
        return self.page(request, "identity.html", s=s, uid=uid, kind=kind,
                         findings=list(reversed(findings)), state=state, charts=charts,
                         commands=commands, creds=creds)  # fmt: skip

    async def audit(self, request: Request) -> Response:
        """The audit log as the console reads it: verified now (hashes, signed checkpoints), a
        record's inclusion proof, an identity's history. Read from Kafka on each visit."""
        from pipeline.audit.auditor import identity_history, prove_record, verify_log

        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        if self.settings is None:
            raise HTTPException(409, "the audit log is on Kafka: this console serves a replay")
        settings = self.settings
        q = request.query_params
        report = await asyncio.to_thread(verify_log, settings)
        proof = history = None
        seq = q.get("seq") or ""
        if seq:
            if not seq.isdigit():
                raise HTTPException(400, "a record number is a non-negative integer")
            found = await asyncio.to_thread(prove_record, settings, int(seq))
            proof = json.dumps(found, indent=2) if found is not None else ""
        who = (q.get("identity") or "").strip()
        if who:
            history = await asyncio.to_thread(identity_history, settings, who)
        return self.page(request, "audit.html", s=s, report=report, seq=seq, proof=proof,
                         who=who, history=history)  # fmt: skip

    async def bulk(self, request: Request) -> Response:
        """One triage action on every selected finding of the queue (at most 500)."""
        s, _ = await self.change(request, "analyst")
        form = await request.form()
        uids = [str(u) for u in form.getlist("uid")][:500]
        action = str(form.get("action") or "")
        if action not in ("acknowledge", "assign", "close") or not uids:
            raise HTTPException(400, "choose findings and one of acknowledge, assign, close")
        kw: dict[str, Any] = {"reason": str(form.get("reason") or "")[:500]}
        if action == "assign":
            kw["assignee"] = s.user
        if action == "close":
            kw["classification"] = str(form.get("classification") or "")
        try:
            for uid in uids:
                self.store.triage(uid, s.user, action, **kw)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse("/", status_code=303)

    async def containment(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        now = int(time.time() * 1000)
        active = [c for c in self.store.commands(state="active") if (c["until_ms"] or 0) > now]
        return self.page(request, "containment.html", s=s,
                         pending=self.store.commands(state="pending"), active=active,
                         recent=self.store.commands(limit=30))  # fmt: skip

    async def decide(self, request: Request) -> Response:
        s, form = await self.change(request, "approver")
        command_id, action = request.path_params["command_id"], request.path_params["action"]
        c = self.store.command(command_id)
        if c is None:
            raise HTTPException(404, "no such command")
        reason = str(form.get("reason") or "").strip()[:500]
        if action == "approve":
            if c["state"] != "pending" or not c["pending"]:
                raise HTTPException(409, f"command {command_id} is {c['state']}, not pending")
            confirmed = [a for a in self.store.actions(c["finding_uid"] or "")
                         if a["user"] == s.user and a["action"] == "confirm"]  # fmt: skip
            if self.two_person and confirmed:
                raise HTTPException(403, "two-person rule: you confirmed this compromise; "
                                    "another approver decides on its quarantine")  # fmt: skip
            out = await self.deliver(s, decisions.approval, pending=json.loads(c["pending"]))
            self.store.decide(command_id, s.user, "approved", out.what)
        elif action == "reject":
            if c["state"] != "pending":
                raise HTTPException(409, f"command {command_id} is {c['state']}, not pending")
            if not reason:
                raise HTTPException(400, "say why the contain is rejected")
            # The worker cancels the incident's quarantine: no re-issue of the same guess.
            out = await self.deliver(s, decisions.feedback, action="release",
                                     identity=c["identity"], finding_uid=c["finding_uid"],
                                     reason=f"contain rejected: {reason}")  # fmt: skip
            self.store.decide(command_id, s.user, "rejected", f"{out.what}: {reason}")
        elif action == "release":
            if c["state"] != "active":
                raise HTTPException(409, f"command {command_id} is {c['state']}, not active")
            if not reason:
                raise HTTPException(400, "say why the quarantine is released")
            out = await self.deliver(s, decisions.release, identity=c["identity"],
                                     command_id=command_id, reason=reason)  # fmt: skip
            self.store.record(s.user, "release", command_id, f"{out.what}: {reason}")
        else:
            raise HTTPException(404, "no such action")
        return RedirectResponse("/containment", status_code=303)


def _local(path: str) -> str:
    """``path`` if it stays on this console, else ``/`` (no open redirect: ``//host`` and
    ``/\\host`` are other hosts to a browser)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _same_origin(request: Request) -> None:
    """Refuse a change whose Origin (or, without one, Referer) is not this console."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        raise HTTPException(403, "a change needs an Origin header")
    o = urlsplit(origin)
    if (o.scheme, o.netloc) != (request.url.scheme, request.url.netloc):
        raise HTTPException(403, f"cross-origin request from {o.scheme}://{o.netloc} refused")


async def healthz(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")


def create_console(store: ConsoleStore, *, poll_s: float = 0.5, secure_cookies: bool = False,
                   settings: Settings | None = None, send: Send | None = None,
                   two_person: bool = False, workers: tuple[str, ...] = (),
                   broker: tuple[str, str] | None = None,
                   oidc: OidcLogin | None = None) -> Starlette:  # fmt: skip
    c = Console(store, poll_s=poll_s, secure_cookies=secure_cookies, settings=settings,
                send=send, two_person=two_person, workers=workers, broker=broker,
                oidc=oidc)  # fmt: skip

    async def error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 401 and request.method == "GET" and request.url.path != "/stream":
            return RedirectResponse("/login", status_code=303)
        return c.page(request, "error.html", exc.status_code, code=exc.status_code,
                      detail=exc.detail)  # fmt: skip

    app = Starlette(
        routes=[
            Route("/", c.queue),
            Route("/healthz", healthz),
            Route("/login", c.login_form, methods=["GET"]),
            Route("/login", c.login, methods=["POST"]),
            Route("/logout", c.logout, methods=["POST"]),
            Route("/login/oidc", c.oidc_start, methods=["GET"]),
            Route("/login/oidc/callback", c.oidc_callback, methods=["GET"]),
            Route("/stream", c.stream),
            Route("/bulk", c.bulk, methods=["POST"]),
            Route("/findings/{uid:path}/{action}", c.triage, methods=["POST"]),
            Route("/findings/{uid:path}", c.finding),
            Route("/identities/{uid:path}", c.identity),
            Route("/containment", c.containment),
            Route("/audit", c.audit),
            Route("/containment/{command_id}/{action}", c.decide, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        exception_handlers={HTTPException: error},
        middleware=[] if oidc is None else [Middleware(
            # Only the sign-in handshake (state, nonce, PKCE verifier) lives in this cookie:
            # signed with a key of this process, ten minutes, Lax (see pipeline.console.oidc).
            SessionMiddleware, secret_key=secrets.token_urlsafe(32), session_cookie=OIDC_COOKIE,
            max_age=600, same_site="lax", https_only=secure_cookies)],
    )
    app.state.console = c
    return app
