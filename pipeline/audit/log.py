"""The audit log's records and their verification (pure; the Kafka wiring reads and writes bytes).

A record is canonical JSON (RFC 8785, via ``rfc8785``) with:

- ``seq`` - its position, from 0, no gaps;
- ``prev`` - hex SHA-256 leaf hash of the record before it ("" for the first): a hash chain
  that names the exact record an in-place edit touched;
- ``time`` (ms), ``kind`` (``alert.created``, ``quarantine.issued``, ``quarantine.rejected``...),
  ``subject`` (the identity), ``actor`` (the service or analyst that decided), ``why`` (the
  detector's explanation and the agent's own stated rationale) and ``refs`` (event uids,
  finding uid, command id).

The log's entries are the records' bytes; their RFC 6962 leaf hashes build the tree that signed
checkpoints (:mod:`pipeline.audit.checkpoint`) commit to. :class:`AuditLog` appends;
:func:`verify` recomputes everything and names what is wrong.

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> key = Ed25519PrivateKey.generate()
>>> log = AuditLog("custos/audit")
>>> entries = [log.append(kind="alert.created", subject="agt-1", actor="custos-worker",
...                       time_ms=1000 + i, why={"explanation": ["misuse"]}) for i in range(3)]
>>> checkpoints = [log.checkpoint(key)]
>>> verify(entries, checkpoints, "custos/audit", key.public_key()).ok
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    sign_checkpoint,
    verify_checkpoint,
)
from pipeline.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
)

__all__ = ["AuditLog", "Report", "canonical", "prove", "verify"]


def canonical(record: dict[str, Any]) -> bytes:
    """RFC 8785 JSON Canonicalization Scheme."""
    return bytes(rfc8785.dumps(record))


class AuditLog:
    """The single writer's view: next seq, previous leaf hash, the tree's right edge."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.range = CompactRange()
        self.prev = ""

    @property
    def size(self) -> int:
        return self.range.size

    def resume(self, entries: Sequence[bytes]) -> None:
        """Continue after ``entries`` (what the log already holds, in order)."""
        for e in entries:
            leaf = leaf_hash(e)
            self.range.append(leaf)
            self.prev = leaf.hex()

    def append(
        self,
        *,
        kind: str,
        subject: str | None,
        actor: str,
        time_ms: int,
        why: dict[str, Any] | None = None,
        refs: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bytes:
        """The next record's bytes (publish them in this order, and only them)."""
        record = {
            "seq": self.range.size, "prev": self.prev, "time": time_ms, "kind": kind,
            "subject": subject, "actor": actor, "why": why or {}, "refs": refs or {},
            "detail": detail or {},
        }  # fmt: skip
        entry = canonical(record)
        leaf = leaf_hash(entry)
        self.range.append(leaf)
        self.prev = leaf.hex()
        return entry

    def checkpoint(self, key: Ed25519PrivateKey) -> str:
        return sign_checkpoint(self.origin, self.range.size, self.range.root(), key)


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    unsigned_tail: int = 0  # records after the newest checkpoint (covered by the next one)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    entries: Sequence[bytes],
    checkpoints: Sequence[str],
    origin: str,
    pub: Ed25519PublicKey,
) -> Report:
    """Recompute everything; list every problem found, the first ones naming the record.

    Checks, in one pass: each record is canonical JSON with the expected ``seq`` (a gap is a
    deleted record, a repeat or a step back an inserted or reordered one) and a ``prev`` equal to
    the previous record's leaf hash (an in-place edit breaks the link to the next record); every
    checkpoint is signed by ``pub`` for ``origin`` and its root equals the root recomputed over
    that many records; consecutive checkpoints are consistent (RFC 9162 proofs over the
    recomputed leaves). A checkpoint larger than the log means records were removed from its end.
    """
    report = Report(records=len(entries))
    problems = report.problems
    leaves = [leaf_hash(e) for e in entries]
    records: list[Any] = []
    for e in entries:
        try:
            records.append(json.loads(e))
        except ValueError:
            records.append(None)
    present = {r.get("seq") for r in records if isinstance(r, dict)}
    prev = ""
    for i, (e, record) in enumerate(zip(entries, records, strict=True)):
        if record is None:
            problems.append(f"position {i}: not JSON (modified)")
            prev = leaves[i].hex()
            continue
        if not isinstance(record, dict) or canonical(record) != e:
            problems.append(f"position {i}: not canonical JSON (modified outside the writer)")
        seq = record.get("seq") if isinstance(record, dict) else None
        if seq != i:
            if isinstance(seq, int) and seq > i and i not in present:
                gone = [s for s in range(i, seq) if s not in present]
                problems.append(f"record {seq} at position {i}: records {gone[0]}..{gone[-1]} "
                                "deleted")  # fmt: skip
            else:
                problems.append(f"record {seq} at position {i}: inserted or reordered "
                                f"(expected seq {i})")  # fmt: skip
        elif isinstance(record, dict) and record.get("prev") != prev:
            problems.append(f"record {i - 1} was modified (or a record after it deleted or "
                            f"inserted): its hash does not match record {i}'s prev")  # fmt: skip
        prev = leaves[i].hex()

    # Checkpoints: signature, root over the prefix, consistency with the one before.
    good: list[Checkpoint] = []
    cr = CompactRange()
    roots: dict[int, bytes] = {0: cr.root()}
    sizes = set()
    parsed: list[Checkpoint] = []
    for n, text in enumerate(checkpoints):
        try:
            c = verify_checkpoint(text, origin, pub)
        except CheckpointError as exc:
            problems.append(f"checkpoint {n}: {exc}")
            continue
        parsed.append(c)
        sizes.add(c.size)
    report.checkpoints = len(parsed)
    for i, leaf in enumerate(leaves):
        cr.append(leaf)
        if i + 1 in sizes:
            roots[i + 1] = cr.root()
    for c in sorted(parsed, key=lambda c: c.size):
        if c.size > len(leaves):
            problems.append(f"checkpoint of size {c.size}: the log has only {len(leaves)} "
                            "records (records removed from its end)")  # fmt: skip
            continue
        if roots[c.size] != c.root:
            problems.append(f"checkpoint of size {c.size}: root differs from the records "
                            f"0..{c.size - 1} (a record in that range was modified, inserted or "
                            "deleted)")  # fmt: skip
            continue
        if good and not verify_consistency(
            good[-1].size, c.size, good[-1].root, c.root,
            consistency_proof(leaves[: c.size], good[-1].size) if good[-1].size else [],
        ):  # fmt: skip
            problems.append(f"checkpoints of sizes {good[-1].size} and {c.size} are "
                            "inconsistent")  # fmt: skip
            continue
        good.append(c)
    if not parsed:
        problems.append("no valid checkpoint: nothing proves the log was not rewritten")
    else:  # not a problem, a fact: the newest records await the next checkpoint
        report.unsigned_tail = max(0, len(leaves) - max(c.size for c in parsed))
    return report


def prove(entries: Sequence[bytes], seq: int, size: int | None = None) -> dict[str, Any]:
    """An RFC 6962 inclusion proof of record ``seq`` in the tree of ``size`` records."""
    leaves = [leaf_hash(e) for e in entries]
    size = len(leaves) if size is None else size
    proof = inclusion_proof(leaves[:size], seq)
    import base64

    return {
        "seq": seq, "tree_size": size, "leaf_hash": leaves[seq].hex(),
        "root": base64.b64encode(tree_root(leaves[:size])).decode(),
        "proof": [p.hex() for p in proof],
    }  # fmt: skip
