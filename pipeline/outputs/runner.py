"""``custos outputs run``: the alerts topic to every configured output, delivered before committed.

:class:`Deliverer` holds the logic with its I/O injected (the outputs' senders, the sleep), so it
is tested without Kafka: each output builds its jobs for a batch of alerts, and each job is
sent with a bounded retry loop (exponential backoff, or the receiver's Retry-After, capped).

- ``ok``: next job.
- ``failed``: that alert can never be accepted (its content refused): logged at ERROR, and the
  input is committed past it - holding every later alert back for it would be worse.
- ``retry`` after ``attempts`` tries: :class:`OutputError`; the loop stops without committing,
  so the batch is read again when the runner restarts. Delivery is at least once: outputs that
  had accepted the batch see it again (PagerDuty deduplicates on the finding uid; a chat
  message is repeated).

:func:`run_outputs` is the Kafka loop: its own consumer group (``group`` in the outputs
config) on the alerts topic, offsets committed only after :meth:`Deliverer.deliver` returned.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.outputs.base import Alert, Delivery, Output, OutputError
from pipeline.outputs.config import OutputsConfig

__all__ = ["Deliverer", "Report", "build_outputs", "run_outputs"]

log = logging.getLogger("custos.outputs")


@dataclass(slots=True)
class Report:
    """What one batch did, per output: jobs accepted, failed for good, tries."""

    ok: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)
    attempts: int = 0


class Deliverer:
    def __init__(self, outputs: Sequence[Output], *, attempts: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.outputs = list(outputs)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep

    def _send(self, output: Output, job: Any, report: Report) -> Delivery:
        delay = self.backoff_s
        result = Delivery("retry", "not sent")
        for attempt in range(self.attempts):
            if attempt:
                wait = result.retry_after_s if result.retry_after_s is not None else delay
                self.sleep(min(max(wait, 0.0), self.max_backoff_s))
                delay *= 2
            report.attempts += 1
            result = output.send(job)
            if result.status != "retry":
                return result
            log.warning("%s: try %d of %d: %s", output.name, attempt + 1, self.attempts,
                        result.detail)  # fmt: skip
        return result

    def deliver(self, alerts: Sequence[Alert]) -> Report:
        """Every output's jobs for ``alerts``; returns once each was accepted or failed for
        good. Raises OutputError when one is still refused after the retries."""
        report = Report()
        for output in self.outputs:
            for job in output.build(alerts):
                result = self._send(output, job, report)
                what = getattr(job, "what", "") or output.name
                if result.status == "retry":
                    raise OutputError(f"{output.name} still refuses after {self.attempts} "
                                      f"tries ({what}): {result.detail}")  # fmt: skip
                if result.status == "failed":
                    log.error("%s: %s refused for good, skipped: %s", output.name, what,
                              result.detail)  # fmt: skip
                    report.failed.setdefault(output.name, []).append(what)
                else:
                    report.ok[output.name] = report.ok.get(output.name, 0) + 1
        return report

    def close(self) -> None:
        for output in self.outputs:
            closer = getattr(output, "close", None)
            if closer is not None:
                closer()


def build_outputs(config: OutputsConfig, *, version: str) -> list[Output]:
    """The outputs the config names, in a fixed order (pages first)."""
    from pipeline.outputs.chat import SlackOutput, TeamsOutput
    from pipeline.outputs.hec import HecOutput
    from pipeline.outputs.pagerduty import PagerDutyOutput
    from pipeline.outputs.syslog import SyslogOutput

    me = socket.gethostname()
    out: list[Output] = []
    if (pd := config.pagerduty) is not None:
        out.append(PagerDutyOutput(pd.routing_key, url=pd.url, console_url=config.console_url,
                                   source=pd.source, group=pd.group,
                                   min_severity_id=pd.min_severity_id,
                                   timeout_s=config.timeout_s))  # fmt: skip
    if (sl := config.slack) is not None:
        out.append(SlackOutput(sl.webhook_url, console_url=config.console_url,
                               min_severity_id=sl.min_severity_id,
                               timeout_s=config.timeout_s))  # fmt: skip
    if (tm := config.teams) is not None:
        out.append(TeamsOutput(tm.webhook_url, console_url=config.console_url,
                               min_severity_id=tm.min_severity_id,
                               timeout_s=config.timeout_s))  # fmt: skip
    if (sy := config.syslog) is not None:
        out.append(SyslogOutput(sy.host, sy.port, version=version, hostname=sy.hostname or me,
                                tls=sy.tls, ca_file=sy.ca_file, cert_file=sy.cert_file,
                                key_file=sy.key_file, facility=sy.facility,
                                min_severity_id=sy.min_severity_id,
                                timeout_s=config.timeout_s))  # fmt: skip
    if (hc := config.hec) is not None:
        out.append(HecOutput(hc.url, hc.token, host=hc.host or me, source=hc.source,
                             sourcetype=hc.sourcetype, index=hc.index, ca_file=hc.ca_file,
                             max_events=min(hc.max_events, config.batch),
                             max_bytes=hc.max_bytes, min_severity_id=hc.min_severity_id,
                             timeout_s=config.timeout_s))  # fmt: skip
    return out


def run_outputs(settings: Any, config: OutputsConfig, *, stop: threading.Event | None = None,
                stop_after: int | None = None, outputs: Sequence[Output] | None = None,
                echo: Callable[[str], None] = log.info) -> int:  # fmt: skip
    """Consume the alerts topic until ``stop`` is set (or ``stop_after`` records were
    committed); returns how many records were committed. ``outputs`` replaces the config's
    (tests)."""
    from confluent_kafka import TopicPartition

    from pipeline import __version__
    from pipeline.kafka.clients import make_consumer

    chosen = list(outputs) if outputs is not None else build_outputs(config, version=__version__)
    if not chosen:
        raise OutputError("no output configured (CUSTOS_OUTPUTS_FILE names none)")
    deliverer = Deliverer(chosen, attempts=config.attempts, backoff_s=config.backoff_s,
                          max_backoff_s=config.max_backoff_s)  # fmt: skip
    stop = stop or threading.Event()
    consumer = make_consumer(settings, config.group, bulk_fetch=False)
    consumer.subscribe([settings.alerts_topic])
    committed = 0
    echo(f"outputs {', '.join(o.name for o in chosen)} on {settings.alerts_topic} "
         f"(group {config.group})")  # fmt: skip
    try:
        while not stop.is_set() and (stop_after is None or committed < stop_after):
            msgs = consumer.consume(config.batch, 0.5)
            alerts: list[Alert] = []
            ends: dict[tuple[str, int], int] = {}  # next offset to commit per partition
            records = 0
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise OutputError(f"alerts consumer: {err}")
                    continue
                ends[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
                records += 1
                try:
                    alerts.append(Alert.of(m.value() or b""))
                except OutputError as exc:  # not a finding: nothing any output could send
                    log.error("alerts %s[%s]@%s skipped: %s", m.topic(), m.partition(),
                              m.offset(), exc)  # fmt: skip
            if not ends:
                continue
            if alerts:
                report = deliverer.deliver(alerts)
                log.info("delivered %d alerts: %s, failed %s", len(alerts), report.ok,
                         report.failed)  # fmt: skip
            # Every output accepted (or refused for good) what these records carry.
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                            asynchronous=False)  # fmt: skip
            committed += records
    finally:
        deliverer.close()
        consumer.close()
    return committed
