"""What the machine offers this process. No Beam here: the audit log's hashing uses it too."""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a cpuset), where the
    system tells. A CPU quota (`docker --cpus`) is not seen: give such a container a
    cpuset too (`--cpuset-cpus`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
