"""Model provenance: signed manifests, the registry's checks, safe artifacts, live swaps."""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.baselines.layout import DEVIATIONS
from pipeline.config import Settings
from pipeline.control.keys import load_or_create, pem
from pipeline.control.reports import Report
from pipeline.control.signing import SigningKey, command_key
from pipeline.detection import Detection
from pipeline.models import artifacts
from pipeline.models.manifest import Manifest, ModelRefused, feature_schema, trusted_keys
from pipeline.models.registry import ModelRegistry
from pipeline.models.runtime import Announcement, ModelRuntime, encode_announcement
from pipeline.scores.detectors import Loda, TailCalibrator

N = len(DEVIATIONS)


def _loda_artifact(seed: int = 1) -> bytes:
    det, cal = Loda(n_features=N, seed=seed), TailCalibrator(size=1000, refresh=100)
    rows = np.random.default_rng(seed).uniform(0, 0.1, (2000, N))
    det.learn_many(rows)
    cal.learn_many(det.score_many(rows))
    return artifacts.encode_loda(det, cal)


def _manifest(version: str, data: bytes, **kw: object) -> Manifest:
    fields: dict[str, object] = dict(
        name="detector", version=version, kind="loda", artifact="detector.msgpack",
        artifact_sha256=hashlib.sha256(data).hexdigest(), feature_schema=feature_schema(),
        created_at="2026-11-26T00:00:00Z", trainer="test",
    )  # fmt: skip
    fields.update(kw)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def registry(tmp_path: Path, key: Ed25519PrivateKey) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "models")
    for v, seed in (("1", 1), ("2", 2)):
        art = _loda_artifact(seed)
        reg.publish(_manifest(v, art), art, key)
    (reg.root / "keys").mkdir()
    (reg.root / "keys" / "test.pub.pem").write_bytes(pem(key.public_key()))
    return reg


def _trusted(key: Ed25519PrivateKey) -> dict[str, object]:
    return trusted_keys([key.public_key()])  # type: ignore[return-value]


# ---- registry checks ------------------------------------------------------------------------
def test_a_published_version_loads(registry: ModelRegistry, key: Ed25519PrivateKey) -> None:
    loaded = registry.load("detector", "2", _trusted(key))  # type: ignore[arg-type]
    assert loaded.manifest.version == "2"
    assert isinstance(loaded.bundle.detector, Loda)
    assert loaded.ref["artifact_sha256"] == loaded.manifest.artifact_sha256


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        # one flipped byte in the artifact
        (lambda d: _flip(d / "detector.msgpack"), "artifact_hash"),
        # a manifest field changed after signing (another trainer)
        (lambda d: _edit_manifest(d, lambda m: m.update(trainer="mallory")), "bad_signature"),
        # the artifact replaced together with its hash in the manifest (no re-signing possible)
        (lambda d: _swap_artifact(d), "bad_signature"),
        # signature stripped
        (lambda d: _edit_signed(d, lambda s: s.update(signatures=[])), "bad_signature"),
        # a manifest that is not JSON
        (lambda d: (d / "manifest.json").write_bytes(b"{not json"), "bad_manifest"),
        # artifact deleted
        (lambda d: (d / "detector.msgpack").unlink(), "not_found"),
    ],
)
def test_tampering_is_refused_with_its_reason(
    registry: ModelRegistry, key: Ed25519PrivateKey, tamper: object, reason: str
) -> None:
    tamper(registry.root / "detector" / "2")  # type: ignore[operator]
    with pytest.raises(ModelRefused) as err:
        registry.load("detector", "2", _trusted(key))  # type: ignore[arg-type]
    assert err.value.reason == reason
    assert (err.value.model, err.value.version) == ("detector", "2")
    registry.load("detector", "1", _trusted(key))  # type: ignore[arg-type]  # others unaffected


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_signed(folder: Path, edit: object) -> None:
    d = json.loads((folder / "manifest.json").read_text())
    edit(d)  # type: ignore[operator]
    (folder / "manifest.json").write_text(json.dumps(d))


def _edit_manifest(folder: Path, edit: object) -> None:
    _edit_signed(folder, lambda d: edit(d["manifest"]))  # type: ignore[operator]


def _swap_artifact(folder: Path) -> None:
    evil = _loda_artifact(seed=99)
    (folder / "detector.msgpack").write_bytes(evil)
    digest = hashlib.sha256(evil).hexdigest()
    _edit_manifest(folder, lambda m: m.update(artifact_sha256=digest))


def test_a_signature_by_an_untrusted_key_is_refused(registry: ModelRegistry) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ModelRefused, match="no trusted key") as err:
        registry.load("detector", "1", trusted_keys([other.public_key()]))
    assert err.value.reason == "bad_signature"


def test_a_signed_manifest_copied_to_another_version_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    src, dst = registry.root / "detector" / "1", registry.root / "detector" / "3"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelRefused) as err:
        registry.load("detector", "3", _trusted(key))  # type: ignore[arg-type]
    assert err.value.reason == "misplaced"


def test_a_model_for_another_feature_schema_is_refused(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    art = _loda_artifact()
    registry.publish(_manifest("3", art, feature_schema="custos.deviations/0/18/x"), art, key)
    with pytest.raises(ModelRefused) as err:
        registry.load("detector", "3", _trusted(key))  # type: ignore[arg-type]
    assert err.value.reason == "feature_schema"


def test_versions_are_immutable_and_names_plain(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    art = _loda_artifact()
    with pytest.raises(ModelRefused) as err:
        registry.publish(_manifest("1", art), art, key)
    assert err.value.reason == "exists"
    with pytest.raises(ModelRefused) as err:
        registry.load("detector", "../1", _trusted(key))  # type: ignore[arg-type]
    assert err.value.reason == "bad_name"


def test_a_second_signature_is_added_and_either_key_is_enough(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    approver = Ed25519PrivateKey.generate()
    signed = registry.add_signature("detector", "1", approver)
    assert len(signed.signatures) == 2
    registry.load("detector", "1", trusted_keys([approver.public_key()]))
    registry.load("detector", "1", _trusted(key))  # type: ignore[arg-type]


def test_promote_and_rollback_keep_history(registry: ModelRegistry) -> None:
    registry.promote("detector", "1", by="alice", reason="first")
    registry.promote("detector", "2", by="bob", reason="better")
    back = registry.rollback("detector", by="carol", reason="FP spike")
    assert back.version == "1"
    assert [(e.action, e.version, e.by) for e in back.history] == [
        ("promote", "1", "alice"), ("promote", "2", "bob"), ("rollback", "1", "carol"),
    ]  # fmt: skip
    promo = registry.promoted("detector")
    assert promo is not None and promo.version == "1"
    assert promo.manifest_sha256 == hashlib.sha256(
        registry.manifest_bytes("detector", "1")
    ).hexdigest()


def test_the_listing_marks_the_promoted_and_the_untrusted(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    registry.promote("detector", "2", by="alice")
    listed = registry.listing(_trusted(key))  # type: ignore[arg-type]
    assert [line[:20] for line in listed] == ["  detector   1      ", "* detector   2      "]
    assert all("signed ✓" in line and " test " in line for line in listed)
    untrusted = registry.listing(trusted_keys([Ed25519PrivateKey.generate().public_key()]))
    assert all("UNTRUSTED" in line for line in untrusted)
    (registry.root / "detector" / "1" / "manifest.json").write_bytes(b"{not json")
    assert "UNREADABLE" in registry.listing(_trusted(key))[0]  # type: ignore[arg-type]


def test_check_loads_every_version_or_says_why_not(
    registry: ModelRegistry, key: Ed25519PrivateKey
) -> None:
    _flip(registry.root / "detector" / "1" / "detector.msgpack")
    got = registry.check(_trusted(key))  # type: ignore[arg-type]
    assert [(n, v) for n, v, _ in got] == [("detector", "1"), ("detector", "2")]
    assert isinstance(got[0][2], ModelRefused) and got[0][2].reason == "artifact_hash"
    assert not isinstance(got[1][2], ModelRefused) and got[1][2].manifest.version == "2"
    only = registry.check(_trusted(key), "detector", "2")  # type: ignore[arg-type]
    assert [(n, v) for n, v, _ in only] == [("detector", "2")]


# ---- artifacts ------------------------------------------------------------------------------
def test_an_isolation_forest_artifact_round_trips() -> None:
    from sklearn.ensemble import IsolationForest

    rows = np.random.default_rng(0).uniform(0, 0.1, (500, N))
    est = IsolationForest(n_estimators=10, random_state=0).fit(rows)
    data = artifacts.encode_sklearn(est, calibration=np.linspace(0, 10, 400), scale=5.0)
    bundle = artifacts.decode("sklearn", data)
    odd = np.full((1, N), 0.9)
    assert bundle.detector.score_many(odd)[0] > bundle.detector.score_many(rows[:1])[0]
    assert bundle.calibrator.transform_one(9.99) > 0.5
    bundle.detector.learn_many(rows)  # frozen: learning changes nothing
    assert bundle.detector.score_many(odd)[0] == artifacts.decode("sklearn", data).detector.score_many(odd)[0]  # fmt: skip  # noqa: E501


def test_a_skops_artifact_asking_for_other_types_is_refused() -> None:
    import skops.io as sio

    data = sio.dumps({"estimator": fractions.Fraction(1, 3), "scale": 1.0, "calibration": []})
    with pytest.raises(ModelRefused, match=r"fractions\.Fraction") as err:
        artifacts.decode("sklearn", data)
    assert err.value.reason == "unsafe_artifact"
    with pytest.raises(ModelRefused) as err:
        artifacts.decode("sklearn", b"PK\x03\x04 not a zip")
    assert err.value.reason == "bad_artifact"


# ---- runtime: what a worker does -----------------------------------------------------------
def _settings(registry: ModelRegistry, tmp_path: Path, **kw: object) -> Settings:
    return Settings.from_env(
        {}, home=str(tmp_path / "home"), models_dir=str(registry.root),
        model_trust_local_key=False, **kw,
    )  # fmt: skip


def _announce(
    registry: ModelRegistry, version: str, action: str = "promote", key: SigningKey | None = None
) -> bytes:
    """A signed announcement; by default with the command key the runtime's settings trust."""
    digest = hashlib.sha256(registry.manifest_bytes("detector", version)).hexdigest()
    home = registry.root.parent / "home"
    key = key or command_key(home / "keys" / "commands.jwk", home / "keys" / "commands.jwks.json")
    a = Announcement(action, "detector", version, digest, "alice", 1)  # type: ignore[arg-type]
    return encode_announcement(a, key)


def test_a_fresh_worker_verifies_the_promoted_model_and_adopts_it_after_warm_up(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.promote("detector", "1", by="alice")
    settings = _settings(registry, tmp_path, model_warmup_events=5)
    det = Detection.from_settings(settings)
    rt = ModelRuntime(settings, "worker:test")
    [pending] = rt.start(det)
    assert pending.kind == "model.pending" and det.model_ref is None
    assert rt.maybe_adopt(det) is None
    det.events_seen = 5
    adopted = rt.maybe_adopt(det)
    assert adopted is not None and adopted.kind == "model.loaded"
    assert det.model_ref is not None and det.model_ref["version"] == "1"
    assert rt.maybe_adopt(det) is None  # once


def test_announcements_swap_refuse_and_repeat_idempotently(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    settings = _settings(registry, tmp_path, model_warmup_events=0)
    det = Detection.from_settings(settings)
    rt = ModelRuntime(settings, "worker:test")
    first = rt.apply(det, _announce(registry, "1"))
    assert first.kind == "model.loaded" and det.model_ref and det.model_ref["version"] == "1"
    detector_v1 = det.detector
    assert rt.apply(det, _announce(registry, "1")).kind == "model.unchanged"
    assert det.detector is detector_v1

    good_v2 = _announce(registry, "2")
    _flip(registry.root / "detector" / "2" / "detector.msgpack")
    refused = rt.apply(det, good_v2)
    assert (refused.kind, refused.reason) == ("model.refused", "artifact_hash")
    assert refused.model is not None and refused.model["version"] == "1"  # what it keeps
    assert det.detector is detector_v1  # still scoring with v1

    bad = rt.apply(det, b'{"action": "promote"}')
    assert (bad.kind, bad.reason) == ("model.refused", "unsigned_announcement")
    garbled = rt.apply(det, b"not.a.jws")
    assert garbled.kind == "model.refused"
    # Signed, but by a key the workers do not trust: anyone able to write the topic.
    forged = rt.apply(det, _announce(registry, "1", key=SigningKey.generate()))
    assert (forged.kind, forged.reason) == ("model.refused", "bad_signature")
    assert det.detector is detector_v1
    # An announcement whose manifest hash is not the file's (the file changed since).
    stale = Announcement("promote", "detector", "1", "0" * 64, "alice", 1)
    key = command_key(settings.command_key_path, settings.command_jwks_path)
    assert rt.apply(det, encode_announcement(stale, key)).reason == "manifest_changed"


def test_a_swap_keeps_identity_state_and_scoring_continues(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    from pipeline.events.schemas import Event

    settings = _settings(registry, tmp_path, model_warmup_events=0)
    det = Detection.from_settings(settings)
    store: dict[str, bytes] = {}
    evs = [Event(uid=f"e{i}", class_uid=3002, activity_id=1, time_ms=1_790_000_000_000 + i,
                 identity_uid="usr-1", identity_kind="human", country="DE", status_id=1)
           for i in range(20)]  # fmt: skip
    det.process(evs[:10], store)
    before = dict(store)
    rt = ModelRuntime(settings, "worker:test")
    assert rt.apply(det, _announce(registry, "2")).kind == "model.loaded"
    assert store == before  # the swap touched no identity state
    out = det.process(evs[10:], store)
    assert len(out.scores) == 10


def test_saved_state_remembers_the_model_and_a_restart_resumes_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    settings = _settings(registry, tmp_path, model_warmup_events=0)
    det = Detection.from_settings(settings)
    rt = ModelRuntime(settings, "worker:test")
    rt.apply(det, _announce(registry, "2"))
    det.save_shared(tmp_path / "shared.msgpack")

    again = Detection.from_settings(settings)
    assert again.load_shared(tmp_path / "shared.msgpack")
    [r] = ModelRuntime(settings, "worker:test").start(again)
    assert r.kind == "model.resumed" and again.model_ref == det.model_ref


def test_a_restarted_worker_with_a_frozen_model_reverifies_it(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    from sklearn.ensemble import IsolationForest

    reg = ModelRegistry(tmp_path / "models")
    rows = np.random.default_rng(0).uniform(0, 0.1, (300, N))
    art = artifacts.encode_sklearn(IsolationForest(n_estimators=5, random_state=0).fit(rows),
                                   calibration=np.linspace(0, 10, 300))  # fmt: skip
    reg.publish(_manifest("1", art, kind="sklearn", artifact="detector.skops"), art, key)
    (reg.root / "keys").mkdir()
    (reg.root / "keys" / "k.pub.pem").write_bytes(pem(key.public_key()))
    settings = _settings(reg, tmp_path, model_warmup_events=0)
    det = Detection.from_settings(settings)
    ModelRuntime(settings, "w").apply(det, _announce(reg, "1"))
    assert isinstance(det.detector, artifacts.SklearnDetector)
    det.save_shared(tmp_path / "shared.msgpack")

    _flip(reg.root / "detector" / "1" / "detector.skops")  # tampered while the worker was down
    again = Detection.from_settings(settings)
    assert again.load_shared(tmp_path / "shared.msgpack")
    reports = ModelRuntime(settings, "w").start(again)
    assert [r.kind for r in reports] == ["model.refused", "model.none"]
    assert isinstance(again.detector, Loda) and again.model_ref is None


def test_the_local_key_is_trusted_only_when_configured(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    settings = _settings(registry, tmp_path)
    local = load_or_create(settings.model_signing_key_path)
    art = _loda_artifact(3)
    registry.publish(_manifest("3", art), art, local)
    strict = ModelRuntime(settings, "w")
    with pytest.raises(ModelRefused):
        strict.registry.load("detector", "3", strict.trusted)
    dev = ModelRuntime(dataclasses.replace(settings, model_trust_local_key=True), "w")
    assert dev.registry.load("detector", "3", dev.trusted).manifest.version == "3"


def test_the_committed_default_model_verifies() -> None:
    """The repository's promoted detector is signed by the committed development key."""
    settings = Settings.from_env({}, model_trust_local_key=False)
    rt = ModelRuntime(settings, "test")
    promo = rt.registry.promoted(settings.model_name)
    assert promo is not None
    loaded = rt.registry.load(settings.model_name, promo.version, rt.trusted,
                              expect_manifest_sha256=promo.manifest_sha256)  # fmt: skip
    m = loaded.manifest
    assert m.training is not None and m.training.rows > 0 and len(m.training.sha256) == 64
    assert m.code_version and not m.code_version.endswith("+dirty")
    assert 0.0 < m.metrics["detection_rate"] <= 1.0


def test_reports_are_typed() -> None:
    r = Report("model.loaded", "w", 1, model={"name": "detector", "version": "1"})
    assert msgspec.json.decode(msgspec.json.encode(r), type=Report) == r
