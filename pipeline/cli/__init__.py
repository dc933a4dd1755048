"""The ``custos`` command line (:mod:`pipeline.cli.main`).

Set before numpy is first imported (nothing here imports it): OpenBLAS's worker threads give
Custos's loops, which multiply small matrices from one thread, no speed (measured: the same
wall time per event) but spin on another core, which the broker, the Kafka clients' threads
and the other services need (measured: twice the CPU time per event). An operator's own
setting wins.

The cyclic garbage collector runs less often than Python's default (700 new objects): the
per-event loops allocate a few dozen short-lived objects per event, almost none in cycles, so
the default ran a young collection every ~20 events and a full one (over every decoded
identity state held) every few seconds - 13 µs per event in the worker's units of work,
measured with ``gc.callbacks``; 4 µs at (20000, 20, 20), at the same peak RSS. Reference
counting still frees everything that is not in a cycle at once. ``CUSTOS_GC_THRESHOLD``
(three integers, as ``gc.set_threshold`` takes them) overrides it.
"""

import gc
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

GC_THRESHOLD = (20_000, 20, 20)


def _gc_threshold(raw: str | None) -> tuple[int, int, int]:
    """``CUSTOS_GC_THRESHOLD`` read, or the default.

    >>> _gc_threshold(None), _gc_threshold(" 700, 10,10 ")
    ((20000, 20, 20), (700, 10, 10))
    """
    if raw is None or not raw.strip():
        return GC_THRESHOLD
    try:
        a, b, c = (int(p) for p in raw.split(","))
    except ValueError:
        a = -1
    if a < 0 or b < 0 or c < 0:
        raise SystemExit(f"CUSTOS_GC_THRESHOLD: expected three non-negative integers such as "
                         f"'20000,20,20', got {raw!r}")  # fmt: skip
    return a, b, c


gc.set_threshold(*_gc_threshold(os.environ.get("CUSTOS_GC_THRESHOLD")))
