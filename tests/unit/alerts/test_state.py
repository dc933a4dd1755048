"""Unit tests for the per-identity alerting state (pipeline.alerts.state)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from pipeline.alerts.state import STATE_VERSION, RiskState, Suppression, load_suppressions
from pipeline.errors import ConfigError

# --- Suppression ------------------------------------------------------------------------------


def test_suppression_needs_an_identity_or_a_feature() -> None:
    with pytest.raises(ValueError):
        Suppression()


def test_load_suppressions_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text(
        "- identity: svc-backup\n  feature: bytes_out\n  until: 2030-01-01T00:00:00Z\n"
        "  reason: nightly backup\n"
        "- {feature: off_hours}\n"
        "- {identity: bob, until_ms: 5}\n"
        "- {identity: eve, until: 2030-01-01}\n"
    )
    sups = load_suppressions(y)
    assert sups[0] == Suppression("svc-backup", "bytes_out", 1_893_456_000_000, "nightly backup")
    assert sups[1] == Suppression(feature="off_hours")
    assert sups[2].until_ms == 5 and sups[3].until_ms == 1_893_456_000_000
    j = tmp_path / "s.json"
    j.write_text(json.dumps([{"identity": "x", "until": "2030-01-01T01:00:00+01:00"}]))
    assert load_suppressions(j)[0].until_ms == 1_893_456_000_000
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_suppressions(empty) == ()


@pytest.mark.parametrize(
    "text",
    [
        "{identity: a}",  # not a list
        "- {}",  # neither identity nor feature
        "- {identity: a, colour: red}",  # unknown field
        "- {identity: a, until: tomorrow}",
        "- {identity: a, until: 1, until_ms: 2}",
        "- [a]",
        "- {identity: 7}",
        ": :",
    ],
)
def test_bad_suppression_files_raise_config_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        load_suppressions(f)


def test_missing_suppression_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_suppressions(tmp_path / "nope.yaml")


# --- State ------------------------------------------------------------------------------------


def test_newer_state_version_is_refused_and_older_payload_decodes() -> None:
    future = msgspec.msgpack.encode([STATE_VERSION + 1, 0.0, 0, 0, None])
    with pytest.raises(ValueError, match="newer"):
        RiskState.from_bytes(future)
    # A shorter (older) array gets defaults for fields appended since.
    assert RiskState.from_bytes(msgspec.msgpack.encode([1, 2.5])) == RiskState(risk=2.5)


def test_a_state_written_before_the_ask_window_decodes_with_none() -> None:
    """States a worker wrote before ``ask_until_ms`` existed (8 fields) restore unchanged:
    their identities' next contains act at once, as they did."""
    old = RiskState(risk=3.0, updated_ms=7, recurring=["bytes_out"], recurring_until_ms=9)
    fields = msgspec.msgpack.decode(old.to_bytes())
    assert len(fields) == 9 and fields[-1] == 0
    restored = RiskState.from_bytes(msgspec.msgpack.encode(fields[:8]))
    assert restored == old and restored.ask_until_ms == 0
    asked = RiskState(ask_until_ms=1_000)
    assert RiskState.from_bytes(asked.to_bytes()).ask_until_ms == 1_000
