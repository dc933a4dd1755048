"""Custos's audit log checked by Go's checksum-database code (tests/interop/tlog:
golang.org/x/mod/sumdb/note and sumdb/tlog), an RFC 6962 and C2SP signed-note implementation
nobody on the project wrote: the checkpoint's signature verifies with the key Custos
publishes, the tree head Go computes from the records is the checkpoint's root, and Custos's
inclusion proofs check out; a tampered record, a forged signature and a wrong proof do not."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.audit.checkpoint import key_id
from pipeline.audit.log import AuditLog, prove

GO_DIR = Path(__file__).resolve().parents[1] / "interop" / "tlog"
ORIGIN = "custos.test/audit"


def _vkey(key: Ed25519PrivateKey) -> str:
    """The signed-note verifier key: name + key id (hex) + base64(0x01 ‖ Ed25519 public key)."""
    pub = key.public_key()
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    encoded = base64.b64encode(b"\x01" + raw).decode()
    return f"{ORIGIN}+{key_id(ORIGIN, pub).hex()}+{encoded}"


def _go(payload: dict[str, Any]) -> dict[str, Any]:
    go = shutil.which("go")
    assert go is not None, "the Go toolchain is needed for this interop check (apt golang-go)"
    out = subprocess.run([go, "run", "."], cwd=GO_DIR, input=json.dumps(payload), text=True,
                         capture_output=True, timeout=240, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _log(n: int, key: Ed25519PrivateKey) -> tuple[list[bytes], str]:
    log = AuditLog(ORIGIN)
    entries = [log.append(kind="quarantine.issued" if i % 3 == 0 else "alert.created",
                          subject=f"agt-{i % 4}", actor="custos-worker", time_ms=1_000 + i,
                          why={"explanation": [f"reason {i}"]},
                          refs={"finding": f"f-{i}"}) for i in range(n)]  # fmt: skip
    return entries, log.checkpoint(key)


def test_go_sumdb_verifies_the_checkpoint_the_tree_and_the_proofs() -> None:
    key = Ed25519PrivateKey.generate()
    entries, checkpoint = _log(37, key)  # not a power of two: the RFC 6962 split matters
    proofs = []
    for seq in (0, 1, 16, 31, 36):
        p = prove(entries, seq)
        proofs.append({"index": seq, "size": p["tree_size"], "hashes": p["proof"]})
    wrong = prove(entries, 5)
    proofs.append({"index": 6, "size": wrong["tree_size"], "hashes": wrong["proof"]})
    records = [base64.b64encode(e).decode() for e in entries]
    got = _go({"vkey": _vkey(key), "checkpoint": checkpoint, "records": records,
               "proofs": proofs})  # fmt: skip
    assert got["signature_ok"] and got["origin"] == ORIGIN and got["size"] == 37
    assert got["root_matches"], got
    assert got["proofs_ok"] == [True, True, True, True, True, False], got["proof_errors"]

    # A record edited after the checkpoint: the tree Go computes no longer has its root.
    tampered = list(records)
    tampered[10] = base64.b64encode(entries[10].replace(b"reason 10", b"reason 11")).decode()
    assert not _go({"vkey": _vkey(key), "checkpoint": checkpoint, "records": tampered,
                    "proofs": []})["root_matches"]  # fmt: skip
    # A checkpoint signed by another key, and one whose root was rewritten: refused.
    other = _go({"vkey": _vkey(Ed25519PrivateKey.generate()), "checkpoint": checkpoint,
                 "records": records, "proofs": []})  # fmt: skip
    assert not other["signature_ok"] and "verif" in other["signature_error"]
    lines = checkpoint.split("\n")
    lines[2] = base64.b64encode(b"\x00" * 32).decode()
    forged = _go({"vkey": _vkey(key), "checkpoint": "\n".join(lines), "records": records,
                  "proofs": []})  # fmt: skip
    assert not forged["signature_ok"]
