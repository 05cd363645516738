"""Run in each worker process of a local Dask cluster as it starts (a Dask `preload`).

The terminal sends Ctrl-C to its whole process group, the cluster's workers too: each
printed its own KeyboardInterrupt traceback beside the run's one line. A worker ignores
it; the run stops on it and closes its cluster, which ends the workers
(pipelines/dask_runner.py). A worker still starting up, before this module is imported,
may still print one. Its info lines (connections closing as the cluster stops) are left
out as the run's own are; its warnings stay, but for Beam's import-time one about Google
Cloud libraries, which every worker printed on its first task, and a heartbeat lost as
the cluster closes (a traceback from each worker, seen once in a Ctrl-C test).
"""

import logging
import signal

from flows.environment import not_gcp_noise


def _not_a_lost_heartbeat(record: logging.LogRecord) -> bool:
    """A worker whose scheduler went away between two heartbeats logs an ERROR with the
    connection's traceback, and tries again: when the run closes its cluster (at its end,
    or on Ctrl-C) that is a worker still ticking, not a fault. The run reports its own
    outcome; a cluster that fails while the run goes on fails the run with Dask's error."""
    return not record.getMessage().startswith("Failed to communicate with scheduler")


signal.signal(signal.SIGINT, signal.SIG_IGN)
logging.getLogger("distributed").setLevel(logging.WARNING)
logging.getLogger("distributed.worker").addFilter(_not_a_lost_heartbeat)
logging.getLogger().addFilter(not_gcp_noise)
