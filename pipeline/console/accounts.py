"""Local accounts and server-side sessions of the console.

Passwords are stored as argon2id hashes (argon2-cffi's defaults, RFC 9106). A session is a
random token in an ``HttpOnly``, ``SameSite=Strict`` cookie; the store keeps only its SHA-256,
so reading the database does not hand out live sessions. Sessions expire and can be revoked
(logout, ``custos console users logout NAME``); each carries its own CSRF token.

Single sign-on (OpenID Connect, :mod:`pipeline.console.oidc`) logs in a local account too: an
account is linked to one subject (``sub``) of one issuer, the only claims OIDC guarantees to be
stable and unique; the role stays the local account's, never a claim the provider sends. An
account made for single sign-on only has no password (:data:`NO_PASSWORD`).

Roles, each including the ones before it: ``viewer`` reads, ``analyst`` triages (acknowledge,
assign, close), ``approver`` also decides on containment.

>>> from pipeline.console.store import ConsoleStore
>>> accounts = Accounts(ConsoleStore(":memory:"))
>>> accounts.add("alice", "correct horse battery", "analyst")
>>> token, csrf = accounts.login("alice", "correct horse battery")
>>> accounts.session(token).user, accounts.login("alice", "wrong")
('alice', None)
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.console.store import ConsoleStore
from pipeline.errors import ConfigError

__all__ = ["NO_PASSWORD", "ROLES", "Accounts", "Session"]

ROLES: Final = ("viewer", "analyst", "approver")
SESSION_S: Final = 12 * 3600  # a working day; then log in again
MIN_PASSWORD: Final = 12
_NAME: Final = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
# Verified against when the name is unknown: the same work as a real check, so response time
# does not tell which names exist.
_DUMMY: Final = PasswordHasher().hash("not a password of anyone")
NO_PASSWORD: Final = "!sso-only"  # in place of a hash: no password logs this account in


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str
    expires_ms: int

    def can(self, role: str) -> bool:
        """Whether this session's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, store: ConsoleStore, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()

    def add(self, name: str, password: str | None, role: str) -> None:
        """Create an account (or reset its password and role); ``password`` None: single
        sign-on only (see :meth:`link`)."""
        if not _NAME.match(name):
            raise ConfigError("a user name is 2-32 of a-z, 0-9, '.', '_', '-', "
                              "starting with a letter")  # fmt: skip
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}")
        if password is not None and len(password) < MIN_PASSWORD:
            raise ConfigError(f"a password has at least {MIN_PASSWORD} characters")
        stored = NO_PASSWORD if password is None else self.hasher.hash(password)
        with self.store.tx() as db:
            db.execute("INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "role = excluded.role, hash = excluded.hash",
                       (name, role, stored, int(time.time() * 1000)))
        self.logout_all(name)  # a new password or role: old sessions end

    def link(self, name: str, issuer: str, sub: str) -> None:
        """Let ``sub`` of ``issuer`` log in as ``name`` (one account per subject)."""
        if not self.store.query("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise ConfigError(f"no account {name!r}: add it first")
        from pipeline.console.oidc import trusted_url

        if not trusted_url(issuer):
            raise ConfigError("an OIDC issuer is an https:// URL (http only on loopback)")
        if not sub or len(sub) > 255:
            raise ConfigError("an OIDC subject is 1-255 characters")
        with self.store.tx() as db:
            db.execute("INSERT INTO oidc_links VALUES (?, ?, ?) ON CONFLICT (issuer, sub) "
                       "DO UPDATE SET user = excluded.user", (issuer, sub, name))  # fmt: skip

    def login_linked(self, issuer: str, sub: str) -> tuple[str, str, str] | None:
        """(session token, CSRF token, account) for a subject an identity provider vouched for
        (its ID token already verified), else None when no account is linked to it."""
        rows = self.store.query("SELECT l.user FROM oidc_links l JOIN users u ON u.name = l.user"
                                " WHERE l.issuer = ? AND l.sub = ?", (issuer, sub))  # fmt: skip
        if not rows:
            return None
        name = rows[0]["user"]
        return (*self._start(name), name)

    def users(self) -> list[tuple[str, str]]:
        return [(r["name"], r["role"]) for r in self.store.query(
            "SELECT name, role FROM users ORDER BY name")]  # fmt: skip

    def login(self, name: str, password: str) -> tuple[str, str] | None:
        """(session token, CSRF token) for the right password, else None."""
        rows = self.store.query("SELECT hash FROM users WHERE name = ?", (name,))
        stored = rows[0]["hash"] if rows and rows[0]["hash"] != NO_PASSWORD else _DUMMY
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is _DUMMY:
            return None
        return self._start(name)

    def _start(self, name: str) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        with self.store.tx() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, 0)",
                       (_digest(token), name, csrf, now, now + SESSION_S * 1000))  # fmt: skip
        return token, csrf

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie's token (not expired, not revoked, its user still
        there), else None."""
        if not token:
            return None
        rows = self.store.query(
            "SELECT s.user, s.csrf, s.expires_ms, u.role FROM sessions s JOIN users u "
            "ON u.name = s.user WHERE s.id_hash = ? AND s.revoked = 0", (_digest(token),))
        if not rows or rows[0]["expires_ms"] <= time.time() * 1000:
            return None
        r = rows[0]
        return Session(r["user"], r["role"], r["csrf"], r["expires_ms"])

    def logout(self, token: str) -> None:
        with self.store.tx() as db:
            db.execute("UPDATE sessions SET revoked = 1 WHERE id_hash = ?", (_digest(token),))

    def logout_all(self, name: str) -> int:
        """Revoke every session of ``name``; returns how many were live."""
        with self.store.tx() as db:
            cur = db.execute("UPDATE sessions SET revoked = 1 WHERE user = ? AND revoked = 0",
                             (name,))  # fmt: skip
            return cur.rowcount
