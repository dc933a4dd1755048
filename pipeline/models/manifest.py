"""Model manifests: what a model artifact is, where it came from, and who vouches for it.

A manifest names one artifact by its SHA-256 and records the feature schema it reads, the data
it was trained on (source, time range, row count, hash), who trained it, the code version (git
commit), library versions and evaluation metrics. It is signed with Ed25519 over its RFC 8785
canonical JSON, prefixed with a domain tag so that a manifest signature can never be replayed
as any other Custos signature (audit checkpoint, command, credential).

On disk, ``manifest.json`` is ``{"manifest": {...}, "signatures": [{"keyid", "sig"}]}``: the
signed statement stays readable, and more than one key can sign it (trainer, then approver).

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> key = Ed25519PrivateKey.generate()
>>> m = Manifest(name="detector", version="1", kind="loda", artifact="detector.msgpack",
...              artifact_sha256="0" * 64, feature_schema=feature_schema(),
...              created_at="2026-11-26T00:00:00Z")
>>> signed = sign(m, key)
>>> verify(signed, trusted_keys([key.public_key()])) == m
True
>>> forged = SignedManifest(msgspec.structs.replace(m, version="2"), signed.signatures)
>>> verify(forged, trusted_keys([key.public_key()]))
Traceback (most recent call last):
...
pipeline.models.manifest.ModelRefused: bad_signature: no trusted key signed this manifest \
(signed by ...) [model=detector version=2]
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import msgspec
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.control.keys import key_id
from pipeline.errors import CustosError

__all__ = [
    "Manifest",
    "ModelRefused",
    "SignedManifest",
    "TrainingData",
    "decode",
    "encode",
    "feature_schema",
    "sign",
    "trusted_keys",
    "verify",
]

DOMAIN: Final = b"custos-model-manifest/v1\n"
Kind = Literal["loda", "sklearn"]


class ModelRefused(CustosError):
    """A model failed verification; ``reason`` is a stable code, the message says why."""

    def __init__(self, reason: str, detail: str, *, model: str = "?", version: str = "?") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.model = model
        self.version = version

    def context(self) -> dict[str, object]:
        return {"model": self.model, "version": self.version, **super().context()}


class TrainingData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a model learned from: enough to find and re-hash the exact data."""

    source: str  # file or topic the rows came from
    rows: int
    sha256: str  # of the training input as read (the events file)
    time_from: str | None = None  # RFC 3339, event time of the first / last row
    time_to: str | None = None
    seed: int | None = None  # simulator seed when the data is simulated


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One model version's signed statement (see the module docstring)."""

    name: str
    version: str
    kind: Kind
    artifact: str  # file name beside the manifest
    artifact_sha256: str
    feature_schema: str
    created_at: str
    trainer: str = ""  # who trained it (person or pipeline)
    code_version: str = ""  # git commit of the training code
    libraries: dict[str, str] = msgspec.field(default_factory=dict)
    training: TrainingData | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    params: dict[str, Any] = msgspec.field(default_factory=dict)  # hyperparameters, for readers
    description: str = ""


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keyid: str
    sig: str  # base64 of the 64-byte Ed25519 signature


class SignedManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    manifest: Manifest
    signatures: list[Signature] = msgspec.field(default_factory=list)


def feature_schema() -> str:
    """The running code's detector input schema: version plus a hash of the deviation names.

    A model trained on other inputs (renamed, added, reordered deviations) must not be loaded.
    """
    from pipeline.baselines.features import FEATURE_SCHEMA_VERSION
    from pipeline.baselines.layout import DEVIATIONS

    names = hashlib.sha256(",".join(DEVIATIONS).encode()).hexdigest()[:12]
    return f"custos.deviations/{FEATURE_SCHEMA_VERSION}/{len(DEVIATIONS)}/{names}"


def _statement(m: Manifest) -> bytes:
    return DOMAIN + rfc8785.dumps(msgspec.to_builtins(m))


def sign(m: Manifest | SignedManifest, key: Ed25519PrivateKey) -> SignedManifest:
    """Add ``key``'s signature (replacing an earlier one by the same key)."""
    signed = m if isinstance(m, SignedManifest) else SignedManifest(m)
    kid = key_id(key.public_key())
    sig = base64.b64encode(key.sign(_statement(signed.manifest))).decode()
    others = [s for s in signed.signatures if s.keyid != kid]
    return SignedManifest(signed.manifest, [*others, Signature(kid, sig)])


def trusted_keys(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}


def verify(signed: SignedManifest, trusted: Mapping[str, Ed25519PublicKey]) -> Manifest:
    """The manifest, if at least one trusted key signed exactly it; else :class:`ModelRefused`."""
    m = signed.manifest
    statement = _statement(m)
    for s in signed.signatures:
        pub = trusted.get(s.keyid)
        if pub is None:
            continue
        try:
            pub.verify(base64.b64decode(s.sig, validate=True), statement)
            return m
        except (InvalidSignature, ValueError):
            continue
    by = ", ".join(s.keyid for s in signed.signatures) or "nobody"
    raise ModelRefused(
        "bad_signature",
        f"no trusted key signed this manifest (signed by {by})",
        model=m.name,
        version=m.version,
    )


def encode(signed: SignedManifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(signed), indent=2) + b"\n"


def decode(data: bytes) -> SignedManifest:
    try:
        return msgspec.json.decode(data, type=SignedManifest)
    except msgspec.DecodeError as exc:
        raise ModelRefused("bad_manifest", f"unreadable manifest: {exc}") from None
