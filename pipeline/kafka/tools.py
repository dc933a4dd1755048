"""Kafka's own command-line tools, run from the jars ``custos kafka up`` cached (kafka-tools is
on the same classpath as the broker), connected and authenticated like Custos's clients.

Operators expect ``kafka-consumer-groups``, the console consumer and producer, ``GetOffsetShell``
and friends; Custos ships no shell scripts, so ``custos kafka tools NAME ARGS...`` runs the tool's
main class with ``--bootstrap-server`` and a client properties file (TLS and SCRAM for the
secure managed broker, written 0600 to a temporary file and removed after) added unless the
arguments already give them.

>>> spec = TOOLS["consumer-groups"]
>>> spec.main.rsplit(".", 1)[-1], spec.config_flag
('ConsumerGroupCommand', '--command-config')
>>> "sasl.jaas.config" in java_properties({"bootstrap.servers": "b:9092"})
False
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["TOOLS", "Tool", "java_properties", "tool_command"]


@dataclass(frozen=True)
class Tool:
    main: str
    config_flag: str | None  # how the tool takes a client properties file
    help: str
    bootstrap_flag: str = "--bootstrap-server"


TOOLS: Final[dict[str, Tool]] = {
    "consumer-groups": Tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                            "--command-config", "list, describe, reset or delete groups"),
    "console-consumer": Tool("org.apache.kafka.tools.consumer.ConsoleConsumer",
                             "--consumer.config", "print a topic's records"),
    "console-producer": Tool("org.apache.kafka.tools.ConsoleProducer", "--producer.config",
                             "write records from stdin"),
    "get-offsets": Tool("org.apache.kafka.tools.GetOffsetShell", "--command-config",
                        "partitions' earliest / latest / by-time offsets"),
    "topics": Tool("org.apache.kafka.tools.TopicCommand", "--command-config",
                   "list, describe, create, alter topics"),
    "configs": Tool("kafka.admin.ConfigCommand", "--command-config",
                    "describe or alter topic, broker, client configs"),
    "acls": Tool("org.apache.kafka.tools.AclCommand", "--command-config", "list or change ACLs"),
    "log-dirs": Tool("org.apache.kafka.tools.LogDirsCommand", "--command-config",
                     "sizes of partitions on disk"),
    "delete-records": Tool("org.apache.kafka.tools.DeleteRecordsCommand", "--command-config",
                           "truncate partitions before an offset"),
    "metadata-quorum": Tool("org.apache.kafka.tools.MetadataQuorumCommand", "--command-config",
                            "KRaft controllers' state"),
}  # fmt: skip


def java_properties(client: dict[str, str]) -> str:
    """Java client properties equivalent to Custos's librdkafka settings (``client_config``)."""
    lines = [f"bootstrap.servers={client['bootstrap.servers']}"]
    if "security.protocol" in client:
        lines.append(f"security.protocol={client['security.protocol']}")
    if "sasl.mechanisms" in client:
        mech = client["sasl.mechanisms"]
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mech == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")  # fmt: skip
        user = client["sasl.username"].replace("\\", "\\\\").replace('"', '\\"')
        pw = client["sasl.password"].replace("\\", "\\\\").replace('"', '\\"')
        lines += [f"sasl.mechanism={mech}",
                  f'sasl.jaas.config={module} required username="{user}" password="{pw}";']
    if "ssl.ca.location" in client:
        lines += ["ssl.truststore.type=PEM",
                  f"ssl.truststore.location={client['ssl.ca.location']}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def tool_command(java_cmd: list[str], name: str, args: list[str], bootstrap: str,
                 properties: Path | None) -> list[str]:  # fmt: skip
    """``java_cmd`` (java + classpath) + the tool's main class + its arguments, with the
    bootstrap servers and client properties added unless ``args`` give them."""
    tool = TOOLS[name]
    extra: list[str] = []
    if tool.bootstrap_flag not in args:
        extra += [tool.bootstrap_flag, bootstrap]
    if properties is not None and tool.config_flag and tool.config_flag not in args:
        extra += [tool.config_flag, str(properties)]
    return [*java_cmd, tool.main, *args, *extra]


def write_properties(text: str) -> Path:
    """A private temporary properties file (it may hold a password); the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="custos-kafka-tool-", suffix=".properties")
    with os.fdopen(fd, "w") as fh:  # mkstemp creates it 0600
        fh.write(text)
    return Path(path)
