"""One error hierarchy; every error can carry where it happened.

>>> e = InvalidEvent("missing_identity", "user.uid is required", topic="identity.events", offset=7)
>>> str(e)
'missing_identity: user.uid is required [topic=identity.events offset=7]'
"""

from __future__ import annotations


class CustosError(Exception):
    """Base error: a message plus the Kafka/identity context it arose in."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        identity: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.identity = identity

    def context(self) -> dict[str, object]:
        ctx = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "identity": self.identity,
        }
        return {k: v for k, v in ctx.items() if v is not None}

    def __str__(self) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in self.context().items())
        return f"{self.message} [{ctx}]" if ctx else self.message


class ConfigError(CustosError):
    """A setting or configuration file is invalid."""


class KafkaError(CustosError):
    """The broker could not be started, reached or administered."""


class InvalidEvent(CustosError):
    """An input message breaks the event contract; it goes to the dead-letter topic.

    ``reason`` is a short stable code (counted per reason); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str, **context: object) -> None:
        super().__init__(f"{reason}: {detail}", **context)  # type: ignore[arg-type]
        self.reason = reason
        self.detail = detail
