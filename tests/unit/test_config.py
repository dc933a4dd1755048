from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import Settings, env_var
from pipeline.errors import ConfigError


def test_every_setting_has_a_default_an_env_var_and_a_doc() -> None:
    s = Settings()
    for f in dataclasses.fields(s):
        assert f.metadata.get("doc"), f.name
        assert env_var(f.name) == "CUSTOS_" + f.name.upper()


def test_environment_overrides_defaults_with_types() -> None:
    s = Settings.from_env({"CUSTOS_KAFKA_PORT": "19092", "CUSTOS_KAFKA_START_TIMEOUT_S": "5.5"})
    assert s.kafka_port == 19092 and s.kafka_start_timeout_s == 5.5
    assert s.bootstrap_servers == "127.0.0.1:19092" and s.managed_broker


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="CUSTOS_KAFKA_PORT"):
        Settings.from_env({"CUSTOS_KAFKA_PORT": "ninety"})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().kafka_port = 1  # type: ignore[misc]


def test_existing_cluster_with_sasl_gets_client_config() -> None:
    s = Settings.from_env(
        {
            "CUSTOS_BOOTSTRAP": "k1:9093,k2:9093",
            "CUSTOS_SECURITY_PROTOCOL": "SASL_SSL",
            "CUSTOS_SASL_USERNAME": "svc",
            "CUSTOS_SASL_PASSWORD": "hunter2",
        }
    )
    assert not s.managed_broker
    conf = s.client_config()
    assert conf["bootstrap.servers"] == "k1:9093,k2:9093"
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "hunter2"


def test_cluster_ids_never_look_like_options() -> None:
    from pipeline.kafka.broker import new_cluster_id

    ids = [new_cluster_id() for _ in range(3000)]  # ~47 would start with '-' unfiltered
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
