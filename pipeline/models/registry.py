"""The model registry on disk (``models/``): signed versions, the promoted one, its history.

Layout::

    models/
      keys/*.pub.pem                 public keys trusted to sign models (dev key committed)
      <name>/<version>/manifest.json signed manifest (pipeline.models.manifest)
      <name>/<version>/<artifact>    the artifact it names by SHA-256
      <name>/promoted.json           the version to run, and every promotion / rollback before

:meth:`ModelRegistry.load` is the only way a model gets into a worker: the manifest must be
signed by a trusted key, name the directory it sits in, match the artifact's SHA-256 and the
running code's feature schema, and the artifact must decode without running code. Anything else
raises :class:`~pipeline.models.manifest.ModelRefused` with a reason code.

``promoted.json`` only chooses among signed versions; an attacker able to write it could at
worst select an older signed version, which the worker reports and the audit log records.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipeline.models import artifacts
from pipeline.models.manifest import (
    Manifest,
    ModelRefused,
    SignedManifest,
    feature_schema,
    sign,
    trusted_keys,
    verify,
)
from pipeline.models.manifest import decode as decode_manifest
from pipeline.models.manifest import encode as encode_manifest
from pipeline.scores.detectors import Loda, TailCalibrator

__all__ = ["Loaded", "ModelRegistry", "Promotion", "trusted_model_keys"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ModelRefused("bad_name", f"{what} {value!r} is not a plain name")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Loaded:
    """A verified model: its manifest, the manifest file's hash, and the decoded artifact."""

    manifest: Manifest
    manifest_sha256: str
    bundle: artifacts.Bundle

    @property
    def detector(self) -> artifacts.SklearnDetector | Loda:
        return self.bundle.detector

    @property
    def calibrator(self) -> TailCalibrator:
        return self.bundle.calibrator

    @property
    def ref(self) -> dict[str, str]:
        """What identifies this exact model in reports, audit records and saved state."""
        m = self.manifest
        return {
            "name": m.name,
            "version": m.version,
            "manifest_sha256": self.manifest_sha256,
            "artifact_sha256": m.artifact_sha256,
        }


class PromotionEntry(msgspec.Struct, frozen=True):
    action: str  # promote | rollback
    version: str
    manifest_sha256: str
    by: str
    at: str  # RFC 3339
    reason: str = ""


class Promotion(msgspec.Struct, frozen=True):
    name: str
    version: str
    manifest_sha256: str
    history: list[PromotionEntry] = msgspec.field(default_factory=list)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _version_key(v: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", v))


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ---- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and p.name != "keys" and any(p.glob("*/manifest.json"))
        )

    def versions(self, name: str) -> list[str]:
        base = self.root / _check_name("model", name)
        found = [p.parent.name for p in base.glob("*/manifest.json")]
        return sorted(found, key=_version_key)

    def manifest_bytes(self, name: str, version: str) -> bytes:
        path = self.root / _check_name("model", name) / _check_name("version", version)
        try:
            return (path / "manifest.json").read_bytes()
        except FileNotFoundError:
            raise ModelRefused(
                "not_found", f"no manifest at {path / 'manifest.json'}", model=name, version=version
            ) from None

    def read(self, name: str, version: str) -> SignedManifest:
        """The manifest as written, *unverified* (for listing)."""
        return decode_manifest(self.manifest_bytes(name, version))

    def load(
        self,
        name: str,
        version: str,
        trusted: dict[str, Ed25519PublicKey],
        *,
        schema: str | None = None,
        expect_manifest_sha256: str | None = None,
    ) -> Loaded:
        """Verify everything about ``name`` ``version`` and decode its artifact."""
        raw = self.manifest_bytes(name, version)
        digest = sha256_hex(raw)
        try:
            if expect_manifest_sha256 and digest != expect_manifest_sha256:
                raise ModelRefused(
                    "manifest_changed",
                    f"manifest SHA-256 is {digest[:16]}…, the announcement said "
                    f"{expect_manifest_sha256[:16]}…",
                )
            m = verify(decode_manifest(raw), trusted)
            if (m.name, m.version) != (name, version):
                # A validly signed manifest copied under another name or version.
                raise ModelRefused(
                    "misplaced", f"manifest is for {m.name} {m.version}, found at {name}/{version}"
                )
            expected = schema or feature_schema()
            if m.feature_schema != expected:
                raise ModelRefused(
                    "feature_schema",
                    f"model reads {m.feature_schema}, this code produces {expected}",
                )
            art_path = self.root / name / version / _check_name("artifact", m.artifact)
            try:
                data = art_path.read_bytes()
            except FileNotFoundError:
                raise ModelRefused("not_found", f"artifact {art_path} is missing") from None
            if sha256_hex(data) != m.artifact_sha256:
                raise ModelRefused(
                    "artifact_hash",
                    f"artifact SHA-256 is {sha256_hex(data)[:16]}…, manifest says "
                    f"{m.artifact_sha256[:16]}…",
                )
            bundle = artifacts.decode(m.kind, data)
        except ModelRefused as exc:
            exc.model, exc.version = name, version
            raise
        return Loaded(m, digest, bundle)

    def promoted(self, name: str) -> Promotion | None:
        path = self.root / _check_name("model", name) / "promoted.json"
        if not path.exists():
            return None
        return msgspec.json.decode(path.read_bytes(), type=Promotion)

    def listing(self, trusted: Mapping[str, Ed25519PublicKey]) -> list[str]:
        """``custos models list``: a line per version (``*`` marks the promoted one) with its
        kind, creation, whether a ``trusted`` key signed it, trainer and held-out quality.

        Only the signature is checked (cheap); :meth:`check` is the full check.
        """
        lines = []
        for name in self.names():
            promo = self.promoted(name)
            for version in self.versions(name):
                try:
                    signed = self.read(name, version)
                    m = signed.manifest
                    try:
                        verify(signed, trusted)
                        sig = "signed ✓"
                    except ModelRefused:
                        sig = "UNTRUSTED"
                    rate = m.metrics.get("detection_rate")
                    fp = m.metrics.get("false_alerts_per_1000_identity_days")
                    quality = f"detect {rate:.0%} fp {fp}/1k id-days" if rate is not None else ""
                    line = (f"{name:<10} {version:<6} {m.kind:<7} {m.created_at}  {sig:<9} "
                            f"{m.trainer:<18} {quality}")  # fmt: skip
                except ModelRefused as exc:
                    line = f"{name:<10} {version:<6} UNREADABLE {exc}"
                mark = "* " if promo is not None and promo.version == version else "  "
                lines.append(mark + line)
        return lines

    def check(
        self,
        trusted: dict[str, Ed25519PublicKey],
        name: str | None = None,
        version: str | None = None,
    ) -> list[tuple[str, str, Loaded | ModelRefused]]:
        """``custos models verify``: :meth:`load` every version (of ``name``; or only
        ``version``), each with what it loaded or why it was refused."""
        out: list[tuple[str, str, Loaded | ModelRefused]] = []
        for n in [name] if name else self.names():
            for v in [version] if version else self.versions(n):
                try:
                    out.append((n, v, self.load(n, v, trusted)))
                except ModelRefused as exc:
                    out.append((n, v, exc))
        return out

    # ---- writing ------------------------------------------------------------------------------
    def publish(self, manifest: Manifest, artifact: bytes, key: Ed25519PrivateKey) -> Path:
        """Write a new version (artifact + signed manifest); never overwrites a version."""
        _check_name("model", manifest.name)
        _check_name("version", manifest.version)
        _check_name("artifact", manifest.artifact)
        if manifest.artifact_sha256 != sha256_hex(artifact):
            raise ModelRefused(
                "artifact_hash",
                "manifest does not name this artifact's SHA-256",
                model=manifest.name,
                version=manifest.version,
            )
        folder = self.root / manifest.name / manifest.version
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ModelRefused(
                "exists",
                f"{folder} already exists: versions are immutable",
                model=manifest.name,
                version=manifest.version,
            ) from None
        _write_atomic(folder / manifest.artifact, artifact)
        _write_atomic(folder / "manifest.json", encode_manifest(sign(manifest, key)))
        return folder

    def add_signature(self, name: str, version: str, key: Ed25519PrivateKey) -> SignedManifest:
        """Co-sign an existing version (e.g. an approver after the trainer)."""
        signed = sign(self.read(name, version), key)
        _write_atomic(self.root / name / version / "manifest.json", encode_manifest(signed))
        return signed

    def next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)

    def promote(
        self, name: str, version: str, *, by: str, reason: str = "", action: str = "promote"
    ) -> Promotion:
        """Record ``version`` as the one to run (after checking it exists and parses)."""
        digest = sha256_hex(self.manifest_bytes(name, version))
        current = self.promoted(name)
        history = list(current.history) if current else []
        history.append(PromotionEntry(action, version, digest, by, _now(), reason))
        promo = Promotion(name, version, digest, history[-100:])
        _write_atomic(
            self.root / name / "promoted.json",
            msgspec.json.format(msgspec.json.encode(promo), indent=2) + b"\n",
        )
        return promo

    def rollback(self, name: str, *, by: str, reason: str = "") -> Promotion:
        """Promote again the version that ran before the current one."""
        current = self.promoted(name)
        if current is None:
            raise ModelRefused("no_history", f"{name} was never promoted", model=name)
        for entry in reversed(current.history):
            if entry.version != current.version:
                return self.promote(name, entry.version, by=by, reason=reason, action="rollback")
        raise ModelRefused(
            "no_history",
            f"{name} has no earlier version to roll back to",
            model=name,
            version=current.version,
        )


def trusted_model_keys(
    registry_root: Path, extra: Iterable[Path] = (), local: Ed25519PublicKey | None = None
) -> dict[str, Ed25519PublicKey]:
    """Keys trusted to sign models: the registry's ``keys/*.pub.pem``, ``extra``, ``local``."""
    from pipeline.control.keys import load_public

    keys = [load_public(p) for p in sorted((registry_root / "keys").glob("*.pub.pem"))]
    keys += [load_public(Path(p)) for p in extra]
    if local is not None:
        keys.append(local)
    return trusted_keys(keys)
