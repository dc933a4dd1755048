from __future__ import annotations

from pathlib import Path

from pipeline.config import Settings
from pipeline.kafka.broker import Broker


def test_follow_yields_only_lines_written_after_it_starts(tmp_path: Path) -> None:
    broker = Broker(Settings(home=str(tmp_path)))
    broker.server_log.parent.mkdir(parents=True)
    broker.server_log.write_text("old 1\nold 2\n")
    lines = broker.follow(poll_s=0.01)
    with open(broker.server_log, "a") as fh:
        fh.write("new 1\n")
        fh.flush()
        first = next(lines)  # opens at the end, so the old lines are skipped
        fh.write("new 2\n")
        fh.flush()
        assert (first, next(lines)) == ("new 1\n", "new 2\n")
    assert broker.tail(1) == "new 2\n"
