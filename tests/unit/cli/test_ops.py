from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.config import MASK


def test_custos_config_masks_secrets() -> None:
    env = {"CUSTOS_SASL_PASSWORD": "hunter2", "CUSTOS_KAFKA_PORT": "19999"}
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert (
        MASK in result.output and "19999" in result.output and "CUSTOS_BOOTSTRAP" in result.output
    )
