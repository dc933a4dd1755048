"""What the credential broker has issued, revoked and blocked: durable, in SQLite.

Why SQLite and not a compacted Kafka topic: the broker is the single authority for its
credentials, and every introspection must answer from state that is already durable - a
revocation acknowledged to a responder must survive a crash the next millisecond, and a
credential must never be issued to an identity whose block is not yet on disk. SQLite in WAL
mode with ``synchronous=FULL`` gives exactly that in one local transaction, answers reads in
microseconds, and keeps revocation working when Kafka is down (containment must not depend on
the pipeline it protects). The audit trail of these decisions is the audit issue's job.

Every change is idempotent: revoking a revoked or unknown credential, blocking a blocked
identity, completing a completed step all succeed and report what they changed.

>>> reg = Registry(":memory:")
>>> reg.record(TaskClaims(sub="agt-1", task="t", step=1, scope=(), ceiling=0, iat=0, exp=60,
...                       jti="c1", iss="custos"))
>>> reg.revoke("c1", reason="test", by="unit", now_s=10)
True
>>> reg.revoke("c1", reason="again", by="unit", now_s=11), reg.status("c1").state
(False, 'revoked')
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.credentials.tokens import TaskClaims
from pipeline.storage import open_durable, transaction

__all__ = ["REFUSALS_KEPT", "Block", "CredentialStatus", "Refusal", "Registry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    jti TEXT PRIMARY KEY,
    sub TEXT NOT NULL,
    task TEXT NOT NULL,
    step INTEGER NOT NULL,
    scope TEXT NOT NULL,
    ceiling INTEGER NOT NULL,
    act TEXT,
    iat INTEGER NOT NULL,
    exp INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'completed', 'revoked')),
    changed_at REAL,
    reason TEXT,
    changed_by TEXT
);
CREATE INDEX IF NOT EXISTS credentials_live ON credentials (sub) WHERE state = 'live';
CREATE INDEX IF NOT EXISTS credentials_task ON credentials (sub, task, step);
CREATE TABLE IF NOT EXISTS blocks (
    identity TEXT PRIMARY KEY,
    since REAL NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    blocked_by TEXT NOT NULL,
    command_id TEXT
);
-- Uses of a credential, counted in memory by the broker and flushed every few seconds (an
-- fsync per agent call would put the disk on every tool call's path).
CREATE TABLE IF NOT EXISTS uses (
    jti TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    last_at REAL NOT NULL
);
-- Refused uses and issuances (the console's view; each is also an event on Kafka): batched
-- with the uses, so a flood of refused calls is not a flood of fsyncs; the newest
-- REFUSALS_KEPT per identity are kept.
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    jti TEXT,
    task TEXT,
    operation TEXT,
    service TEXT
);
CREATE INDEX IF NOT EXISTS refusals_identity ON refusals (identity, id);
CREATE INDEX IF NOT EXISTS credentials_act ON credentials (act) WHERE act IS NOT NULL;
"""

REFUSALS_KEPT = 200


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    jti: str
    sub: str
    task: str
    step: int
    exp: int
    state: str  # live | completed | revoked
    reason: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused use or issuance, as the console's identity page lists it."""

    identity: str
    at: float
    reason: str
    detail: str
    jti: str | None = None
    task: str | None = None
    operation: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class Block:
    identity: str
    since: float
    until: float | None  # None: until unblocked
    reason: str
    blocked_by: str
    command_id: str | None

    def active(self, now_s: float) -> bool:
        return self.until is None or now_s < self.until


class Registry:
    """The broker's state. Thread-safe (one connection, one lock: the HTTP server is async)."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_durable(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    # --- credentials ------------------------------------------------------------------------
    def record(self, c: TaskClaims) -> None:
        """Remember an issued credential (before it is handed out)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO credentials (jti, sub, task, step, scope, ceiling, act, iat, exp,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'live')",
                (c.jti, c.sub, c.task, c.step, " ".join(c.scope), c.ceiling, c.act, c.iat, c.exp),
            )

    def issue_unless_blocked(self, c: TaskClaims, now_s: float) -> Block | None:
        """Record ``c`` unless its holder is blocked (one transaction: no race with a block)."""
        with self._tx() as db:
            block = self._block(db, c.sub)
            if block is not None and block.active(now_s):
                return block
            db.execute(
                "INSERT INTO credentials (jti, sub, task, step, scope, ceiling, act, iat, exp,"
                " state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'live')",
                (c.jti, c.sub, c.task, c.step, " ".join(c.scope), c.ceiling, c.act, c.iat, c.exp),
            )
        return None

    def status(self, jti: str) -> CredentialStatus | None:
        with self._lock:
            row = self._db.execute(
                "SELECT jti, sub, task, step, exp, state, reason FROM credentials WHERE jti = ?",
                (jti,),
            ).fetchone()
        return CredentialStatus(*row) if row else None

    def revoke(self, jti: str, *, reason: str, by: str, now_s: float) -> bool:
        """Revoke one credential; False when it was not live (already revoked, unknown)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE credentials SET state = 'revoked', changed_at = ?, reason = ?,"
                " changed_by = ? WHERE jti = ? AND state != 'revoked'",
                (now_s, reason, by, jti),
            )
            return cur.rowcount > 0

    def complete(self, jti: str, *, by: str, now_s: float) -> bool:
        """End a credential's step: it can never be used again. False if it was not live."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE credentials SET state = 'completed', changed_at = ?,"
                " reason = 'step completed', changed_by = ? WHERE jti = ? AND state = 'live'",
                (now_s, by, jti),
            )
            return cur.rowcount > 0

    def revoke_all(self, identity: str, *, reason: str, by: str, now_s: float) -> list[str]:
        """Revoke every live, unexpired credential of ``identity``; returns their ids."""
        with self._tx() as db:
            return self._revoke_all(db, identity, reason, by, now_s)

    def _revoke_all(
        self, db: sqlite3.Connection, identity: str, reason: str, by: str, now_s: float
    ) -> list[str]:
        rows = db.execute(
            "SELECT jti FROM credentials WHERE sub = ? AND state = 'live' AND exp >= ?",
            (identity, int(now_s) - 60),  # expired ones are dead anyway; a minute of skew
        ).fetchall()
        ids = [r[0] for r in rows]
        db.executemany(
            "UPDATE credentials SET state = 'revoked', changed_at = ?, reason = ?,"
            " changed_by = ? WHERE jti = ?",
            [(now_s, reason, by, j) for j in ids],
        )
        return ids

    def revoked_by_command(self, identity: str, command_id: str) -> list[str]:
        """Credentials of ``identity`` a quarantine command revoked (its block's reason starts
        ``quarantine <command id> ``): a re-run after a crash reports them as its own."""
        prefix = f"quarantine {command_id} "
        with self._lock:
            rows = self._db.execute(
                "SELECT jti FROM credentials WHERE sub = ? AND state = 'revoked'"
                " AND substr(reason, 1, ?) = ?",
                (identity, len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def live(self, identity: str, now_s: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT jti FROM credentials WHERE sub = ? AND state = 'live' AND exp >= ?",
                (identity, int(now_s)),
            ).fetchall()
        return [r[0] for r in rows]

    # --- history (the analyst console's identity page) -----------------------------------------
    def add_uses(self, counts: dict[str, tuple[int, float]]) -> None:
        """Add counted uses ``{jti: (n, last used at)}`` in one transaction."""
        if not counts:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO uses (jti, n, last_at) VALUES (?, ?, ?) ON CONFLICT (jti) DO UPDATE"
                " SET n = n + excluded.n, last_at = max(last_at, excluded.last_at)",
                [(j, n, at) for j, (n, at) in counts.items()],
            )

    def refused(
        self,
        identity: str,
        *,
        at: float,
        reason: str,
        detail: str,
        jti: str | None = None,
        task: str | None = None,
        operation: str | None = None,
        service: str | None = None,
    ) -> None:
        """Remember one refusal of ``identity`` (keeps the newest :data:`REFUSALS_KEPT`)."""
        self.refused_many([Refusal(identity, at, reason, detail, jti, task, operation, service)])

    def refused_many(self, refusals: Sequence[Refusal]) -> None:
        """Remember refusals in one transaction, keeping each identity's newest
        :data:`REFUSALS_KEPT`."""
        if not refusals:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO refusals (identity, at, reason, detail, jti, task, operation, service)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.identity, r.at, r.reason, r.detail[:300], r.jti, r.task, r.operation,
                  r.service) for r in refusals],
            )  # fmt: skip
            for identity in {r.identity for r in refusals}:
                db.execute(
                    "DELETE FROM refusals WHERE identity = ? AND id <= (SELECT id FROM refusals"
                    " WHERE identity = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (identity, identity, REFUSALS_KEPT),
                )

    def history(self, identity: str, *, limit: int = 50) -> dict[str, Any]:
        """What was issued to ``identity`` (newest first, with uses), what it delegated to
        others, and its refusals: plain data.

        >>> reg = Registry(":memory:")
        >>> reg.record(TaskClaims(sub="b", task="t", step=1, scope=("read",), ceiling=0, iat=0,
        ...                       exp=60, jti="c1", iss="custos", act="a"))
        >>> reg.add_uses({"c1": (3, 5.0)})
        >>> reg.refused("b", at=6.0, reason="revoked", detail="c1: test", jti="c1")
        >>> h = reg.history("b")
        >>> c = h["credentials"][0]
        >>> c["uses"], c["delegated_by"], h["refusals"][0]["reason"]
        (3, 'a', 'revoked')
        >>> [c["holder"] for c in reg.history("a")["delegated"]]
        ['b']
        >>> h["counts"]
        {'live': 1, 'completed': 0, 'revoked': 0, 'uses': 3}
        """
        cols = ("c.jti, c.sub, c.task, c.step, c.scope, c.ceiling, c.act, c.iat, c.exp, c.state,"
                " c.changed_at, c.reason, c.changed_by, coalesce(u.n, 0), u.last_at")  # fmt: skip
        with self._lock:
            own = self._db.execute(
                f"SELECT {cols} FROM credentials c LEFT JOIN uses u ON u.jti = c.jti"
                " WHERE c.sub = ? ORDER BY c.iat DESC, c.rowid DESC LIMIT ?",
                (identity, limit),
            ).fetchall()
            delegated = self._db.execute(
                f"SELECT {cols} FROM credentials c LEFT JOIN uses u ON u.jti = c.jti"
                " WHERE c.act = ? ORDER BY c.iat DESC, c.rowid DESC LIMIT ?",
                (identity, limit),
            ).fetchall()
            totals = self._db.execute(
                "SELECT c.state, count(*), coalesce(sum(u.n), 0) FROM credentials c"
                " LEFT JOIN uses u ON u.jti = c.jti WHERE c.sub = ? GROUP BY c.state",
                (identity,),
            ).fetchall()
            refusals = self._db.execute(
                "SELECT at, reason, detail, jti, task, operation, service FROM refusals"
                " WHERE identity = ? ORDER BY id DESC LIMIT ?",
                (identity, limit),
            ).fetchall()
        keys = ("jti", "holder", "task", "step", "scope", "ceiling", "delegated_by", "iat", "exp",
                "state", "changed_at", "reason", "changed_by", "uses", "last_used_at")  # fmt: skip
        rkeys = ("at", "reason", "detail", "jti", "task", "operation", "service")
        counts = {"live": 0, "completed": 0, "revoked": 0, "uses": 0}
        for state, n, uses in totals:
            counts[state] = n
            counts["uses"] += uses
        return {
            "counts": counts,
            "credentials": [dict(zip(keys, r, strict=True)) for r in own],
            "delegated": [dict(zip(keys, r, strict=True)) for r in delegated],
            "refusals": [dict(zip(rkeys, r, strict=True)) for r in refusals],
        }

    def delegators(self, identity: str, *, depth: int = 8) -> list[str]:
        """Who handed ``identity`` its latest delegated task, who handed them theirs, and so
        on (nearest first; stops at a cycle or after ``depth``)."""
        chain: list[str] = []
        seen = {identity}
        who = identity
        with self._lock:
            for _ in range(depth):
                row = self._db.execute(
                    "SELECT act FROM credentials WHERE sub = ? AND act IS NOT NULL"
                    " ORDER BY iat DESC, rowid DESC LIMIT 1",
                    (who,),
                ).fetchone()
                if row is None or row[0] in seen:
                    break
                who = row[0]
                seen.add(who)
                chain.append(who)
        return chain

    # --- blocks -----------------------------------------------------------------------------
    def block(
        self,
        identity: str,
        *,
        reason: str,
        by: str,
        now_s: float,
        until: float | None = None,
        command_id: str | None = None,
        revoke: bool = True,
    ) -> tuple[bool, list[str]]:
        """Block issuance to ``identity`` (and revoke its live credentials, atomically).

        Returns (newly blocked, revoked credential ids). Blocking again refreshes the reason,
        expiry and command (one active quarantine per identity).
        """
        with self._tx() as db:
            existing = self._block(db, identity)
            db.execute(
                "INSERT INTO blocks (identity, since, until, reason, blocked_by, command_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (identity) DO UPDATE SET"
                " until = excluded.until, reason = excluded.reason,"
                " blocked_by = excluded.blocked_by, command_id = excluded.command_id",
                (identity, now_s, until, reason, by, command_id),
            )
            revoked = self._revoke_all(db, identity, reason, by, now_s) if revoke else []
        return existing is None or not existing.active(now_s), revoked

    def unblock(self, identity: str, *, command_id: str | None = None) -> bool:
        """Lift a block; with ``command_id``, only the block that command created (a stale
        release must not lift a newer quarantine). False when nothing was lifted."""
        with self._tx() as db:
            if command_id is None:
                cur = db.execute("DELETE FROM blocks WHERE identity = ?", (identity,))
            else:
                cur = db.execute(
                    "DELETE FROM blocks WHERE identity = ? AND command_id = ?",
                    (identity, command_id),
                )
            return cur.rowcount > 0

    def blocked(self, identity: str, now_s: float) -> Block | None:
        with self._lock:
            block = self._block(self._db, identity)
        return block if block is not None and block.active(now_s) else None

    @staticmethod
    def _block(db: sqlite3.Connection, identity: str) -> Block | None:
        row = db.execute(
            "SELECT identity, since, until, reason, blocked_by, command_id FROM blocks"
            " WHERE identity = ?",
            (identity,),
        ).fetchone()
        return Block(*row) if row else None
