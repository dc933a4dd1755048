"""Counters in the Prometheus text format, served on 127.0.0.1 for scraping.

>>> from pipeline.kafka.ingest import IngestStats
>>> stats = IngestStats()
>>> stats.dead.add("identity.events", "invalid_json", 3)
>>> print(render(stats).splitlines()[-1])
custos_deadletter_total{topic="identity.events",reason="invalid_json"} 3
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.kafka.ingest import IngestStats


def render(stats: IngestStats) -> str:
    with stats.lock:
        by_topic = dict(stats.by_topic)
        by_class = dict(stats.by_class)
        by_kind = dict(stats.by_kind)
        identities = len(stats.identities)
    lines = [
        "# HELP custos_events_total Valid input events decoded, per topic.",
        "# TYPE custos_events_total counter",
        *(f'custos_events_total{{topic="{t}"}} {n}' for t, n in sorted(by_topic.items())),
        "# HELP custos_events_by_class_total Valid input events per OCSF class.",
        "# TYPE custos_events_by_class_total counter",
        *(
            f'custos_events_by_class_total{{class_uid="{c}"}} {n}'
            for c, n in sorted(by_class.items())
        ),
        "# HELP custos_events_by_kind_total Valid input events per identity kind.",
        "# TYPE custos_events_by_kind_total counter",
        *(f'custos_events_by_kind_total{{kind="{k}"}} {n}' for k, n in sorted(by_kind.items())),
        "# HELP custos_identities Distinct identities seen.",
        "# TYPE custos_identities gauge",
        f"custos_identities {identities}",
        "# HELP custos_deadletter_total Messages sent to the dead-letter topic, per reason.",
        "# TYPE custos_deadletter_total counter",
    ]
    for (topic, reason), n in sorted(stats.dead.snapshot().items()):
        lines.append(f'custos_deadletter_total{{topic="{topic}",reason="{reason}"}} {n}')
    return "\n".join(lines) + "\n"


def serve(stats: IngestStats, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` in a daemon thread; call ``shutdown()`` on the result to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render(stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the summary

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
