from __future__ import annotations

from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.config import Settings, env_var


def test_custos_status_reports_broker_topics_and_lag(isolated: Settings) -> None:
    env = {
        env_var("bootstrap"): isolated.bootstrap_servers,
        env_var("identity_topic"): isolated.identity_topic,
        env_var("agent_topic"): isolated.agent_topic,
        env_var("app_id"): "status-test-group",
        env_var("worker_web_port"): "1",  # nothing listens there
    }
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert isolated.identity_topic in result.output and isolated.agent_topic in result.output
    assert "status-test-group: lag 0 input events" in result.output
    assert "no metrics" in result.output
