"""SQLite as Custos's local stores use it: the credential broker's registry, the responders'
answers, the analyst console. One connection per store, shared by its threads behind a lock.

>>> import threading
>>> db, lock = open_durable(":memory:", "CREATE TABLE t (x INTEGER);"), threading.Lock()
>>> with transaction(db, lock) as tx:
...     _ = tx.execute("INSERT INTO t VALUES (1)")
>>> db.execute("SELECT x FROM t").fetchall()
[(1,)]
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["open_durable", "transaction"]


def open_durable(path: Path | str, schema: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A SQLite database in WAL mode; with ``synchronous=FULL`` an acknowledged write is on
    disk. Autocommit (transactions are explicit), shareable across threads behind the
    caller's lock."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(schema)
    return db


@contextmanager
def transaction(
    db: sqlite3.Connection, lock: threading.Lock | threading.RLock
) -> Iterator[sqlite3.Connection]:
    """One write transaction, all or nothing, holding ``lock`` (``BEGIN IMMEDIATE``: the
    write lock is taken at once, so two writers never deadlock upgrading)."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
