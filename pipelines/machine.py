"""What the machine offers this process. No Beam here: the audit log's hashing uses it too
(and DuckDB only when a step asks for a connection)."""

from __future__ import annotations

import os
import tempfile
import uuid


def cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a cpuset), where the
    system tells. A CPU quota (`docker --cpus`) is not seen: give such a container a
    cpuset too (`--cpuset-cpus`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# The memory each DuckDB connection of a pipeline step (a join bucket, the rules,
# proportionality) may hold before it spills to a temporary folder of its own, or fails
# with DuckDB's out-of-memory error naming the limit. DuckDB's default is 80% of the
# machine for every connection, and two threads hold several connections each: one
# runaway query could take all of the machine's memory and have the kernel kill the run.
# A bucket of 50,000 persons ran within 256 MB (1M persons, docs/scaling.md); buckets now
# hold 100,000 (pipelines/join.py), and the pipeline at 10M peaked at 2.9 GB.
STEP_MEMORY = "2GB"
STEP_MEMORY_ENV = "SIGNALS_STEP_MEMORY"  # to raise (or lower) it, e.g. "4GB"


def step_connection():
    """A one-thread DuckDB connection for one step of the pipeline, within STEP_MEMORY.

    It spills under the system's temporary folder, in a folder of its own that DuckDB
    makes when it first spills and removes when the connection closes.
    """
    import duckdb

    limit = os.environ.get(STEP_MEMORY_ENV) or STEP_MEMORY
    spill = os.path.join(tempfile.gettempdir(), f"signals-duckdb-{uuid.uuid4().hex}")
    try:
        return duckdb.connect(config={"threads": 1, "memory_limit": limit, "temp_directory": spill})
    except duckdb.Error as e:
        raise ValueError(
            f"{STEP_MEMORY_ENV}={limit!r} is not a memory size DuckDB takes: {e}"
        ) from None
