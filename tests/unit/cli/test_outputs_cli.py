from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import main


def test_outputs_run_needs_a_config() -> None:
    result = CliRunner().invoke(main, ["outputs", "run"], env={"CUSTOS_OUTPUTS_FILE": ""})
    assert result.exit_code == 1
    assert "no outputs config" in result.output


def test_outputs_run_names_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "outputs.yaml"
    path.write_text("pagerduty: {routing_key_env: CUSTOS_TEST_NOT_SET}\n")
    result = CliRunner().invoke(main, ["outputs", "run", "--config", str(path)], env={})
    assert result.exit_code == 1
    assert "$CUSTOS_TEST_NOT_SET is not set" in result.output
