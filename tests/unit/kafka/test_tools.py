"""Kafka's tools' command lines: connection flags added unless given, SCRAM/TLS properties."""

from __future__ import annotations

import stat
from pathlib import Path

from pipeline.kafka.tools import TOOLS, java_properties, tool_command, write_properties


def test_bootstrap_and_client_properties_are_added_unless_the_arguments_give_them() -> None:
    java = ["java", "-cp", "libs/*"]
    cmd = tool_command(java, "console-consumer", ["--topic", "t"], "b:9092", Path("/p"))
    assert cmd[:4] == [*java, TOOLS["console-consumer"].main]
    assert cmd[4:] == ["--topic", "t", "--bootstrap-server", "b:9092", "--consumer.config", "/p"]
    own = tool_command(java, "consumer-groups", ["--bootstrap-server", "x:1", "--list"],
                       "b:9092", None)  # fmt: skip
    assert own[4:] == ["--bootstrap-server", "x:1", "--list"]


def test_scram_over_tls_becomes_java_properties_with_the_password_quoted() -> None:
    text = java_properties({"bootstrap.servers": "b:9093", "security.protocol": "SASL_SSL",
                            "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "admin",
                            "sasl.password": 'p"w\\d', "ssl.ca.location": "/ca.pem"})  # fmt: skip
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule'
                                         ' required username="admin" password="p\\"w\\\\d";')
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == "/ca.pem"


def test_the_properties_file_is_private() -> None:
    path = write_properties("sasl.jaas.config=secret\n")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        path.unlink()
