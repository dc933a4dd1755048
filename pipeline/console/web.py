"""The console's web application (Starlette, Jinja2 templates, vendored htmx).

Pages: login, the alert queue (live: new and changed findings arrive over server-sent events
without a reload), a finding's page. Changes (acknowledge, assign, close with a
classification, logout) are POSTs that must carry the session's CSRF token and come from the
console's own origin; roles are enforced here, on the server, whatever the page shows.

Bound to 127.0.0.1 by default (``custos console``). Behind a TLS proxy, set ``secure_cookies``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pipeline.console.accounts import Accounts, Session
from pipeline.console.store import CLASSIFICATIONS, ConsoleStore

__all__ = ["create_console"]

HERE: Final = Path(__file__).parent
COOKIE: Final = "custos_session"
LOGIN_COOKIE: Final = "custos_login"  # binds the login form to this browser (login CSRF)
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


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Console:
    def __init__(self, store: ConsoleStore, *, poll_s: float = 0.5,
                 secure_cookies: bool = False) -> None:  # fmt: skip
        self.store = store
        self.accounts = Accounts(store)
        self.poll_s = poll_s
        self.secure = secure_cookies
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(severities=SEVERITIES, classifications=CLASSIFICATIONS,
                           row_id=row_id, when=_when)  # fmt: skip

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
        got = self.accounts.login(str(form.get("user") or ""), str(form.get("password") or ""))
        if got is None:
            fresh = secrets.token_urlsafe(24)
            response = self.page(request, "login.html", 401, nonce=fresh,
                                 error="Wrong user name or password.")  # fmt: skip
            response.set_cookie(LOGIN_COOKIE, fresh, max_age=900, httponly=True,
                                samesite="strict", secure=self.secure)  # fmt: skip
            return response
        token, _ = got
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=self.secure)
        response.delete_cookie(LOGIN_COOKIE)
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
            "assignee": s.user if q.get("mine") else None,
        }

    async def queue(self, request: Request) -> Response:
        s = self.session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        filters = self._filters(request, s)
        rows = self.store.findings(**filters)
        stream = "/stream?" + urlencode({**{k: v for k, v in request.query_params.items()
                                            if k in ("severity", "status", "kind", "mine")},
                                         "after": self.store.last_seq()})  # fmt: skip
        return self.page(request, "queue.html", s=s, rows=rows, stream=stream,
                         q=request.query_params)  # fmt: skip

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
        return self.page(request, "finding.html", s=s, f=f, doc=doc,
                         evidence=json.dumps(doc, indent=2, sort_keys=True),
                         history=self.store.actions(f["uid"]))  # fmt: skip

    async def triage(self, request: Request) -> Response:
        s, form = await self.change(request, "analyst")
        uid = request.path_params["uid"]
        action = request.path_params["action"]
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
        back = str(form.get("back") or "/")
        return RedirectResponse(back if back.startswith("/") and not back.startswith("//")
                                else "/", status_code=303)  # fmt: skip


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


def create_console(store: ConsoleStore, *, poll_s: float = 0.5,
                   secure_cookies: bool = False) -> Starlette:  # fmt: skip
    c = Console(store, poll_s=poll_s, secure_cookies=secure_cookies)

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
            Route("/stream", c.stream),
            Route("/findings/{uid:path}/{action}", c.triage, methods=["POST"]),
            Route("/findings/{uid:path}", c.finding),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        exception_handlers={HTTPException: error},
    )
    app.state.console = c
    return app
