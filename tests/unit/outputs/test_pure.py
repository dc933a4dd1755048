"""The outputs' builders stay pure: importing them loads no Kafka client and no HTTP/TLS
sender state (the runner brings Kafka in only when it runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = ["pipeline.outputs.pagerduty", "pipeline.outputs.chat", "pipeline.outputs.cef",
           "pipeline.outputs.hec", "pipeline.outputs.syslog", "pipeline.outputs.runner"]


@pytest.mark.parametrize("module", MODULES)
def test_outputs_import_no_kafka_client(module: str) -> None:
    code = (f"import sys, {module}; print(sorted(m for m in ('faust', 'confluent_kafka', "
            "'aiokafka', 'mode', 'pipeline.kafka.clients') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == "[]", f"{module} pulls in {out}"
