"""One BLAS thread for a process that forecasts.

OpenBLAS keeps a team of threads that spin while they wait for work. On the tiny matrices of the per-entity
engine's candidates (ARIMA's state space is a few rows) the team costs far more than the work, and on busy cores
the spinning takes the CPU: one darts forecast took 12.8 CPU-s with two BLAS threads and 1.0 with one (2 cores
under load). The limit is process-wide and set once, not per call: OpenBLAS's thread count is global, and a
per-call limit restored from another activity thread than the one that set it did not take effect.
"""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_limits

_lock = threading.Lock()
_done = False


def single_blas_thread() -> None:
    """From now on this process's BLAS libraries (numpy's, scipy's) run on one thread."""
    global _done
    with _lock:
        if not _done:
            threadpool_limits(limits=1, user_api="blas")
            _done = True
