"""The console's own store (SQLite): findings as they arrive, analysts, sessions, their actions.

The console follows the worker's outputs into this file, so an analyst's page never waits on
Kafka and keeps working when the broker is away. Each ingested record is committed together
with the topic offset that follows it (:meth:`ConsoleStore.ingest`), so a restarted console
resumes exactly where its store ends: nothing twice, nothing lost.

Findings are kept one row per finding uid, the latest version over the earlier ones (a finding
is created, updated, closed under one uid); ``seq`` grows with every change, which is what the
live queue follows. Triage (``status``, ``assignee``) belongs to the console and survives the
worker's updates; a worker close closes the row.

>>> s = ConsoleStore(":memory:")
>>> s.ingest_finding({"finding_info": {"uid": "f-1", "title": "t"}, "severity_id": 4,
...                   "activity_id": 1, "time": 5, "message": "m",
...                   "evidences": [{"actor": {"user": {"uid": "agt-1", "type": "Agent"}}}]})
True
>>> row = s.finding("f-1"); row["identity"], row["status"], row["severity_id"]
('agt-1', 'new', 4)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

from pipeline.storage import open_durable, transaction

__all__ = ["CLASSIFICATIONS", "ConsoleStore", "Finding", "default_path"]

#: How an analyst closes a finding (the classifications SOC tooling uses).
CLASSIFICATIONS: Final = ("true_positive", "benign_positive", "false_positive", "undetermined")

Finding = dict[str, Any]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS findings (
    uid TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    identity_kind TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    severity_id INTEGER NOT NULL,
    is_alert INTEGER NOT NULL,
    worker_status TEXT NOT NULL,
    analytic TEXT NOT NULL,
    rules TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    classification TEXT,
    assignee TEXT,
    first_ms INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_seq ON findings(seq);
CREATE INDEX IF NOT EXISTS findings_identity ON findings(identity, time_ms);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_ms INTEGER NOT NULL
);
-- Single sign-on (OIDC): which identity-provider subject logs in as which local account.
CREATE TABLE IF NOT EXISTS oidc_links (
    issuer TEXT NOT NULL, sub TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (issuer, sub)
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, user TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY, identity TEXT NOT NULL, finding_uid TEXT, state TEXT NOT NULL,
    reason TEXT NOT NULL, severity_id INTEGER, start_ms INTEGER, until_ms INTEGER,
    decided_by TEXT, pending TEXT, updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, command_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    request_id TEXT NOT NULL, command_id TEXT, status INTEGER NOT NULL, text TEXT NOT NULL,
    adapters TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (request_id, status)
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_KINDS: Final = {"User": "human", "Service": "service", "Agent": "agent"}


def _per_credential(adapters_json: str) -> list[dict[str, str]]:
    """Rows ``{adapter, status, ref, outcome}`` from a response's ``x-custos.adapters``.

    >>> _per_credential('{"vault": {"status": "ok", "revoked": ["acc-1"], "not_found": ["l-2"],'
    ...                 ' "failed": [{"ref": "p/", "reason": "403"}]}}')[1:]
    [{'adapter': 'vault', 'status': 'ok', 'ref': 'l-2', 'outcome': 'not found (already gone)'}, \
{'adapter': 'vault', 'status': 'ok', 'ref': 'p/', 'outcome': 'failed: 403'}]
    """
    try:
        adapters = json.loads(adapters_json or "{}")
    except ValueError:
        return []
    rows: list[dict[str, str]] = []
    if not isinstance(adapters, dict):
        return rows
    for name, o in sorted(adapters.items()):
        if not isinstance(o, dict):
            continue
        status = str(o.get("status", ""))
        refs = [(str(x), "revoked") for x in o.get("revoked") or ()]
        refs += [(str(x), "not found (already gone)") for x in o.get("not_found") or ()]
        refs += [(str(f.get("ref", "?")), f"failed: {f.get('reason', '')}")
                 for f in o.get("failed") or () if isinstance(f, dict)]  # fmt: skip
        refs += [(str(x), "would revoke (dry run)") for x in o.get("would_revoke") or ()]
        if not refs:
            refs = [("", str(o.get("detail") or "nothing to revoke"))]
        rows += [{"adapter": str(name), "status": status, "ref": ref, "outcome": what}
                 for ref, what in refs]  # fmt: skip
    return rows


def default_path(home: str | Path) -> Path:
    """Where ``custos console`` keeps its store unless told otherwise."""
    return Path(home) / "console" / "console.db"


def _now_ms() -> int:
    return int(time.time() * 1000)


class ConsoleStore:
    """One SQLite file (``":memory:"`` for tests), shared by the web app's threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # NORMAL: a crash may lose the last commits, never corrupt; the follower re-reads
        # them from Kafka (their offsets went with them).
        self._db = open_durable(self.path, _SCHEMA, synchronous="NORMAL")
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction (all or nothing), holding the store's lock."""
        return transaction(self._db, self._lock)

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, tuple(args)))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- findings ---------------------------------------------------------------------------

    def ingest(self, records: Iterable[tuple[str, int, int, bytes | None]],
               kind: str = "finding") -> int:  # fmt: skip
        """Findings read from ``(topic, partition, offset, value)``, committed with the offsets
        that follow them. Unreadable values are skipped (the worker's own output: counted as a
        bug, not an analyst's problem). Returns how many findings changed."""
        return self.ingest_parsed((t, p, o, kind, _json(v)) for t, p, o, v in records)

    def ingest_parsed(self, records: Iterable[tuple[str, int, int, str, dict[str, Any] | None]]
                      ) -> int:  # fmt: skip
        """Records already read and checked by the follower, ``(topic, partition, offset,
        kind, message)``: kind ``finding`` (OCSF), ``command`` (a verified OpenC2 command:
        pending on the approvals topic, acting or cancelling on the quarantine topic) or
        ``response`` (a responder's answer). ``message`` None: nothing to keep (unverified,
        unreadable), the offset still moves on. Committed with their offsets."""
        changed = 0
        with self.tx() as db:
            for topic, partition, offset, kind, doc in records:
                if doc is not None:
                    if kind == "finding":
                        changed += self._upsert(db, doc)
                    elif kind == "command":
                        changed += self._command(db, doc)
                    elif kind == "response":
                        changed += self._response(db, doc)
                db.execute("INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                           "DO UPDATE SET next = excluded.next WHERE excluded.next > next",
                           (topic, partition, offset + 1))  # fmt: skip
        return changed

    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of ``topic`` (what the store already holds)."""
        rows = self.query("SELECT partition, next FROM offsets WHERE topic = ?", (topic,))
        return {int(r["partition"]): int(r["next"]) for r in rows}

    def ingest_finding(self, doc: dict[str, Any]) -> bool:
        """One OCSF Detection Finding (a ``custos replay`` line, a test)."""
        with self.tx() as db:
            return self._upsert(db, doc)

    def _upsert(self, db: sqlite3.Connection, doc: dict[str, Any]) -> bool:
        info = doc.get("finding_info") or {}
        uid = info.get("uid")
        if not isinstance(uid, str) or not uid:
            return False
        user = ((doc.get("evidences") or [{}])[0].get("actor") or {}).get("user") or {}
        custos = (doc.get("unmapped") or {}).get("custos") or {}
        time_ms = int(doc.get("time") or 0)
        old = db.execute("SELECT time_ms FROM findings WHERE uid = ?", (uid,)).fetchone()
        if old is not None and int(old["time_ms"]) > time_ms:
            return False  # an older version arriving late changes nothing
        seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM findings").fetchone()[0])
        closed = doc.get("activity_id") == 3
        row = {
            "uid": uid,
            "identity": str(user.get("uid") or ""),
            "identity_kind": _KINDS.get(str(user.get("type") or ""), "unknown"),
            "title": str(info.get("title") or ""),
            "message": str(doc.get("message") or ""),
            "severity_id": int(doc.get("severity_id") or 0),
            "is_alert": int(bool(doc.get("is_alert"))),
            "worker_status": str(doc.get("status") or ""),
            "analytic": str((info.get("analytic") or {}).get("type") or ""),
            "rules": ",".join(sorted(str(r.get("rule")) for r in custos.get("rules") or ())),
            "first_ms": int(info.get("first_seen_time") or time_ms),
            "time_ms": time_ms,
            "doc": json.dumps(doc, sort_keys=True),
            "seq": seq,
        }
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c != "uid")
        if closed:  # the worker closed it: so does the queue (triage kept for the record)
            updates += ", status = 'closed'"
        # Column names are this code's own (never input): only values are parameters.
        db.execute(f"INSERT INTO findings ({cols}) VALUES ({marks}) "
                   f"ON CONFLICT (uid) DO UPDATE SET {updates}", tuple(row.values()))  # fmt: skip
        if closed and old is None:
            db.execute("UPDATE findings SET status = 'closed' WHERE uid = ?", (uid,))
        return True

    def _command(self, db: sqlite3.Connection, msg: dict[str, Any]) -> bool:
        try:
            req = msg["body"]["openc2"]["request"]
            ext = (req.get("args") or {}).get("x-custos") or {}
            command_id, action = str(req["command_id"]), str(req["action"])
            request_id = str(msg["headers"]["request_id"])
            created = int(msg["headers"]["created"])
        except (KeyError, TypeError, ValueError):
            return False
        if action == "cancel":
            target = str((req.get("target") or {}).get("command") or "")
            db.execute("INSERT OR IGNORE INTO requests VALUES (?, ?)", (request_id, target))
            cur = db.execute("UPDATE commands SET state = 'released', decided_by = ?, "
                             "updated_ms = ? WHERE command_id = ?",
                             (str(ext.get("by") or ""), created, target))  # fmt: skip
            return cur.rowcount > 0
        if action != "contain":
            return False
        db.execute("INSERT OR IGNORE INTO requests VALUES (?, ?)", (request_id, command_id))
        identity = str((req.get("target") or {}).get("x-custos:subject", {}).get("id") or "")
        args = req.get("args") or {}
        approval = ext.get("approval", "automatic")
        old = db.execute("SELECT state FROM commands WHERE command_id = ?",
                         (command_id,)).fetchone()  # fmt: skip
        if approval == "required":
            if old is not None:
                return False  # decided (or acting) already: a late copy changes nothing
            db.execute("INSERT INTO commands (command_id, identity, finding_uid, state, reason, "
                       "severity_id, decided_by, pending, updated_ms) VALUES "
                       "(?, ?, ?, 'pending', ?, ?, NULL, ?, ?)",
                       (command_id, identity, ext.get("finding_uid"), str(ext.get("reason", "")),
                        ext.get("severity_id"), json.dumps(msg, sort_keys=True),
                        created))  # fmt: skip
            return True
        start = int(args.get("start_time", created))
        until = start + int(args.get("duration", 0))
        by = str(ext.get("approved_by") or "automatic")
        db.execute("INSERT INTO commands (command_id, identity, finding_uid, state, reason, "
                   "severity_id, start_ms, until_ms, decided_by, updated_ms) VALUES "
                   "(?, ?, ?, 'active', ?, ?, ?, ?, ?, ?) ON CONFLICT (command_id) DO UPDATE SET "
                   "state = 'active', start_ms = excluded.start_ms, until_ms = excluded.until_ms, "
                   "decided_by = excluded.decided_by, updated_ms = excluded.updated_ms",
                   (command_id, identity, ext.get("finding_uid"), str(ext.get("reason", "")),
                    ext.get("severity_id"), start, until, by, created))  # fmt: skip
        return True

    def _response(self, db: sqlite3.Connection, doc: dict[str, Any]) -> bool:
        try:
            request_id = str(doc["headers"]["request_id"])
            at = int(doc["headers"]["created"])
            body = doc["body"]["openc2"]["response"]
            status, text = int(body["status"]), str(body.get("status_text", ""))
        except (KeyError, TypeError, ValueError):
            return False
        ext = (body.get("results") or {}).get("x-custos") or {}
        command_id = ext.get("command_id")
        if command_id is None:
            known = db.execute("SELECT command_id FROM requests WHERE request_id = ?",
                               (request_id,)).fetchone()  # fmt: skip
            command_id = known["command_id"] if known else None
        if ext.get("expired") and status == 200:
            db.execute("UPDATE commands SET state = 'expired' WHERE command_id = ?", (command_id,))
        db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                   (request_id, command_id, status, text,
                    json.dumps(ext.get("adapters") or {}, sort_keys=True), at))  # fmt: skip
        return True

    def commands(self, *, state: str | None = None, finding_uid: str | None = None,
                 identity: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
        """Contain commands as the console last saw them, newest change first."""
        where, args = [], []
        for column, value in (("state", state), ("finding_uid", finding_uid),
                              ("identity", identity)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM commands" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [dict(r) for r in self.query(sql + " ORDER BY updated_ms DESC LIMIT ?",
                                            [*args, limit])]  # fmt: skip

    def command(self, command_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM commands WHERE command_id = ?", (command_id,))
        return dict(rows[0]) if rows else None

    def decide(self, command_id: str, user: str, state: str, detail: str) -> bool:
        """An analyst's decision on a pending command (approved, rejected), with who; False
        when it is not pending (decided meanwhile, by someone else or the worker)."""
        with self.tx() as db:
            cur = db.execute("UPDATE commands SET state = ?, decided_by = ?, updated_ms = ? "
                             "WHERE command_id = ? AND state = 'pending'",
                             (state, user, _now_ms(), command_id))  # fmt: skip
            if cur.rowcount == 0:
                return False
            db.execute("INSERT INTO actions (at_ms, user, action, target, detail) "
                       "VALUES (?, ?, ?, ?, ?)", (_now_ms(), user, state, command_id, detail))
        return True

    def record(self, user: str, action: str, target: str, detail: str) -> None:
        """An analyst's action that is not a change of this store (a decision sent on)."""
        with self.tx() as db:
            db.execute("INSERT INTO actions (at_ms, user, action, target, detail) "
                       "VALUES (?, ?, ?, ?, ?)", (_now_ms(), user, action, target, detail))

    def responses(self, command_id: str) -> list[dict[str, Any]]:
        """The responders' answers to a command, oldest first; ``per_credential``: one row per
        adapter and credential reference (revoked, not found, failed with why, dry run)."""
        out = []
        for r in self.query("SELECT * FROM responses WHERE command_id = ? ORDER BY at_ms",
                            (command_id,)):  # fmt: skip
            row = dict(r)
            row["per_credential"] = _per_credential(row["adapters"])
            out.append(row)
        return out

    def finding(self, uid: str) -> Finding | None:
        rows = self.query("SELECT * FROM findings WHERE uid = ?", (uid,))
        return dict(rows[0]) if rows else None

    def findings(
        self,
        *,
        after_seq: int = 0,
        min_severity: int = 0,
        status: str | None = None,
        kind: str | None = None,
        assignee: str | None = None,
        analytic: str | None = None,
        before_seq: int | None = None,
        limit: int = 200,
    ) -> list[Finding]:
        """The queue, newest change first; ``after_seq``: only what changed since;
        ``before_seq``: the next page (older changes). ``analytic``: ``Rule`` or ``Behavioral``
        (what raised the finding)."""
        where, args = self._where(after_seq, min_severity, status, kind, assignee, analytic)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = (f"SELECT * FROM findings WHERE {' AND '.join(where)} "
               "ORDER BY seq DESC LIMIT ?")  # fmt: skip
        return [dict(r) for r in self.query(sql, [*args, limit])]

    def count(self, *, min_severity: int = 0, status: str | None = None,
              kind: str | None = None, assignee: str | None = None,
              analytic: str | None = None) -> int:  # fmt: skip
        """How many findings the queue's filters match (all pages)."""
        where, args = self._where(0, min_severity, status, kind, assignee, analytic)
        return int(self.query(f"SELECT COUNT(*) FROM findings WHERE {' AND '.join(where)}",
                              args)[0][0])  # fmt: skip

    @staticmethod
    def _where(after_seq: int, min_severity: int, status: str | None, kind: str | None,
               assignee: str | None,
               analytic: str | None) -> tuple[list[str], list[Any]]:  # fmt: skip
        where = ["seq > ?", "severity_id >= ?"]
        args: list[Any] = [after_seq, min_severity]
        for column, value in (("status", status), ("identity_kind", kind),
                              ("assignee", assignee), ("analytic", analytic)):  # fmt: skip
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        return where, args

    def last_seq(self) -> int:
        return int(self.query("SELECT COALESCE(MAX(seq), 0) FROM findings")[0][0])

    def triage(self, uid: str, user: str, action: str, *, assignee: str | None = None,
               classification: str | None = None, reason: str = "") -> bool:  # fmt: skip
        """An analyst's change to one finding (acknowledge, assign, close), recorded with who
        did it; False when there is no such finding."""
        sets: dict[str, Any]
        if action == "acknowledge":
            sets = {"status": "acknowledged"}
        elif action == "assign":
            sets = {"assignee": assignee or None}
        elif action == "close":
            if classification not in CLASSIFICATIONS:
                raise ValueError(f"classification must be one of {', '.join(CLASSIFICATIONS)}")
            sets = {"status": "closed", "classification": classification}
        else:
            raise ValueError(f"unknown action {action!r}")
        with self.tx() as db:
            seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM findings").fetchone()[0])
            cols = ", ".join(f"{c} = ?" for c in sets)
            cur = db.execute(f"UPDATE findings SET {cols}, seq = ? WHERE uid = ?",
                             (*sets.values(), seq, uid))  # fmt: skip
            if cur.rowcount == 0:
                return False
            detail = json.dumps({**sets, "reason": reason}, sort_keys=True)
            db.execute("INSERT INTO actions (at_ms, user, action, target, detail) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (_now_ms(), user, action, uid, detail))  # fmt: skip
        return True

    def actions(self, target: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM actions", []
        if target is not None:
            sql, args = sql + " WHERE target = ?", [target]
        return [dict(r) for r in self.query(sql + " ORDER BY id", args)]


def _json(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
