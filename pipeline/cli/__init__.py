"""The ``custos`` command line (:mod:`pipeline.cli.main`).

Set before numpy is first imported (nothing here imports it): OpenBLAS's worker threads give
Custos's loops, which multiply small matrices from one thread, no speed (measured: the same
wall time per event) but spin on another core, which the broker, the Kafka clients' threads
and the other services need (measured: twice the CPU time per event). An operator's own
setting wins.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
