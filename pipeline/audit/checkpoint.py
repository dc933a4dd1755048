"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note format, with Ed25519.

A checkpoint commits to the whole log up to a size::

    custos.example/audit          <- origin (which log)
    1024                          <- tree size
    M7b8...base64 root hash...=   <- RFC 6962 root over the first 1024 records

    — custos.example/audit <base64(key id ‖ signature)>

The note body (the first lines, each ending in a newline) is what is signed. The key id is
the first 4 bytes of SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ Ed25519 public key), as signed notes
define it, so a verifier picks the right key by name and id.

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> key = Ed25519PrivateKey.generate()
>>> text = sign_checkpoint("custos/audit", 3, b"\\x01" * 32, key)
>>> c = verify_checkpoint(text, "custos/audit", key.public_key())
>>> c.size, c.root == b"\\x01" * 32
(3, True)
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.errors import CustosError

__all__ = ["Checkpoint", "CheckpointError", "key_id", "sign_checkpoint", "verify_checkpoint"]

_DASH = "\u2014 "  # em dash and space: the signature line prefix of signed notes


class CheckpointError(CustosError):
    """A checkpoint that is malformed, for another log, or not signed by the trusted key."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    text: str


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, pub: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + _raw(pub)).digest()[:4]


def sign_checkpoint(origin: str, size: int, root: bytes, key: Ed25519PrivateKey) -> str:
    if "\n" in origin or not origin:
        raise ValueError("origin: one non-empty line")
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    sig = key.sign(body.encode())
    blob = base64.b64encode(key_id(origin, key.public_key()) + sig).decode()
    return f"{body}\n{_DASH}{origin} {blob}\n"


def verify_checkpoint(text: str, origin: str, pub: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint if ``text`` is one for ``origin`` signed by ``pub``."""
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise CheckpointError("no blank line between the note and its signatures")
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4 or lines[0] != origin:
        raise CheckpointError(f"checkpoint of {lines[0]!r}, expected {origin!r}")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except ValueError as exc:
        raise CheckpointError(f"malformed size or root: {exc}") from None
    if size < 0 or len(root) != 32:
        raise CheckpointError("size must be >= 0 and the root 32 bytes")
    want = key_id(origin, pub)
    for line in sigs.splitlines():
        if not line.startswith(_DASH):
            continue
        name, _, b64 = line[len(_DASH) :].rpartition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except ValueError:
            continue
        if name != origin or blob[:4] != want:
            continue
        try:
            pub.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError(f"bad signature on the checkpoint of size {size}") from None
        return Checkpoint(origin, size, root, text)
    raise CheckpointError(f"the checkpoint of size {size} has no signature by the trusted key")
