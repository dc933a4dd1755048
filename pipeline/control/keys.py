"""Ed25519 key files: created on first use (mode 0600), public halves in PEM, key ids.

Used by the audit checkpoints and the model registry. Private keys never go in the repository:
they are generated under ``CUSTOS_HOME`` or given by configuration.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> key = load_or_create(d / "k.pem")
>>> key_id(key.public_key()) == key_id(load_public(public_path(d / "k.pem")))
True
>>> oct((d / "k.pem").stat().st_mode & 0o777)
'0o600'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

__all__ = ["key_id", "load_or_create", "load_public", "public_path", "raw_public"]


def public_path(key_path: Path) -> Path:
    """Where :func:`load_or_create` writes the public half of ``key_path``."""
    return key_path.with_name(key_path.name.removesuffix(".pem") + ".pub.pem")


def load_or_create(key_path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``key_path`` (PKCS#8 PEM), created if missing; public half beside it."""
    if key_path.exists():
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_path} is not an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        key_path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not overwrite each other's key.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pub_path = public_path(key_path)
    if not pub_path.exists():
        pub_path.write_bytes(pem(key.public_key()))
    return key


def pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def load_public(path: Path) -> Ed25519PublicKey:
    pub = load_pem_public_key(path.read_bytes())
    if not isinstance(pub, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return pub


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its bytes."""
    return hashlib.sha256(raw_public(pub)).hexdigest()[:16]
