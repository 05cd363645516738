"""Run in each worker process of a local Dask cluster as it starts (a Dask `preload`).

The terminal sends Ctrl-C to its whole process group, the cluster's workers too: each
printed its own KeyboardInterrupt traceback beside the run's one line. A worker ignores
it; the run stops on it and closes its cluster, which ends the workers
(pipelines/dask_runner.py). A worker still starting up, before this module is imported,
may still print one. Its info lines (connections closing as the cluster stops) are left
out as the run's own are; its warnings stay, but for Beam's import-time one about Google
Cloud libraries, which every worker printed on its first task.
"""

import logging
import signal

from flows.environment import not_gcp_noise

signal.signal(signal.SIGINT, signal.SIG_IGN)
logging.getLogger("distributed").setLevel(logging.WARNING)
logging.getLogger().addFilter(not_gcp_noise)
