"""Running the audit log's hashing in workers, with the results in order.

Appending a run and verifying a log both hash millions of records. hashlib hashes under
the GIL, so there the workers are processes: spawned (no fork of a process that runs
threads), importing only this package, not Beam. The C loop of privacy/audit/sha256.py
releases the GIL, and Arrow and Parquet do too: then threads, which share what they read.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from itertools import islice


def leave_stops_to_parent() -> None:
    """A worker ignores Ctrl-C: the terminal sends it to the whole process group, and the
    parent, which stops the run (flows/interrupt.py), shuts the pool down itself. A worker
    that took it too would print its own traceback beside the run's one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def in_order(fn: Callable, jobs: Iterable[tuple], workers: int, threads: bool = False) -> Iterator:
    """fn(*job) for every job, yielded in the order of the jobs.

    With `workers` > 1 the calls run in that many processes (threads with `threads`), a
    bounded number of them ahead of the caller: the workers hash faster than the caller
    writes, and results that were not asked for yet would pile up here (1.9 GB at 60 M
    records). Otherwise they run here, one at a time.
    """
    jobs = iter(jobs)
    if workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    if threads:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="audit-hashing")
    else:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=leave_stops_to_parent,
        )
    # Thread results carry the chunk's table too (~45 MB at 100,000 records), not only
    # its hashes: one queued per worker keeps them busy without holding 2 * workers tables.
    ahead = workers if threads else 2 * workers
    try:
        pending = deque(pool.submit(fn, *job) for job in islice(jobs, ahead))
        while pending:
            future = pending.popleft()
            for job in islice(jobs, 1):
                pending.append(pool.submit(fn, *job))
            yield future.result()
    finally:  # a caller that stops early (a record found altered) waits for no more jobs
        pool.shutdown(wait=True, cancel_futures=True)
