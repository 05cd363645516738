"""Beam pipeline options with the runner pinned.

Beam's default runner may try to download a runner binary, which this network does
not allow; we always name the runner. Local default: the DirectRunner in memory.
`DaskRunner` means pipelines/dask_runner.py (Beam's, with the fixes this graph needs);
other names (FlinkRunner, SparkRunner, DataflowRunner, ...) go to Beam as given.

`DirectRunner` means Beam's FnApiRunner, in memory. Beam's own DirectRunner first tries
the Prism runner, a Go binary it downloads from GitHub at run time: offline that fails
(and leaves a temporary folder behind each run), online it would run a binary nobody
pinned or tested here. For a batch pipeline it falls back to the FnApiRunner, so we go
there directly and the local runner is the same on every machine.

The FnApiRunner runs one bundle at a time unless told otherwise. With `threads` > 1 it
runs that many at once (`multi_threading`): the joins, rules and writers spend most of
their time in DuckDB and Arrow, which release the GIL, so a second core helps. Measured
on 2 cores, pipeline process, buckets of 100,000 persons: 1,000,000 persons 43.5 s ->
34.7 s, 200,000 persons 11.5 s -> 10.2 s. With one join bucket there is little to run
side by side and the threads only cost (1,000 persons 3.4 s -> 4.3 s; 100,000 persons in
one bucket 7.7 s -> 8.5 s). With two buckets they are even on time but not on the rest
(50,000-person buckets, 100,000 persons: 7.0-8.0 s on two threads, 7.1-7.5 s on one; CPU
8.9-10.0 s against 7.0-7.5 s, peak 1.4-1.5 GB against 1.0 GB); from four they pay (200,000
persons 11.9 s -> 10.7 s). So `local_threads` gives each thread at least two buckets.

The local runner flushes its data streams by size only (`_no_timed_flushes`), and ends
its bundles without waiting for a slow timer (`_short_sampling_period`).
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import statesampler

# Every pipeline runs with options from here: this registers the coder of its Arrow elements.
from pipelines import arrow_coder  # noqa: F401
from pipelines.machine import cores


def _no_timed_flushes() -> None:
    """Turn off the local runner's timed flush of its data streams (Beam 2.77).

    On more than one thread, and on the runner's side always, Beam flushes each data
    stream every second from a thread of its own (data_plane.
    TimeBasedBufferingClosableOutputStream) while the bundle's thread goes on writing to
    it, with no lock on the writes: what is written between the flush's copy of the buffer
    and its clearing is lost. Measured here with Beam's class alone, 16 KB writes from one
    thread: 25 MB of 4.9 GB lost at the 1 s interval. In a run, a loss misframes the
    stream: an Arrow IPC error, a window count of garbage decoded into that many windows
    (the runs killed at 24 GB), or whole elements gone without an error. The timer only
    bounds latency, which a batch run does not need; 0 leaves the size-based flush, made
    by the writing thread between elements. Set before any pipeline runs: Beam reads it
    when it starts the runner's data server and each worker.
    """
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


_no_timed_flushes()

# The period the local runner's bundles sample their state at (ms), see below.
SAMPLING_PERIOD_MS = 10


def _short_sampling_period() -> None:
    """Sample each bundle's state every 10 ms, not every 200 (Beam 2.77).

    A bundle's state sampler (statesampler_fast.StateSampler) is a thread that sleeps up to
    its period between samples; ending the bundle joins it, so the bundle's thread waits
    for the sleep to end. A stage ends when its last thread does, and every bundle of a
    long stage waits up to 200 ms. Measured, the pipeline alone: the 24 bundles of a
    1M-person run waited 0.50 s in all (0.09 s at 10 ms), the 22 of a 100,000-person run
    0.23 s (0.08 s). The samples are also what Beam's per-transform times (`signals
    bench`) are counted from: finer too. Waking every 10 ms costs the sampler next to
    nothing (a lock and an addition). Beam binds the period as a default argument, so
    the default is what is changed; a Beam with another default is left as it is.
    """
    defaults = statesampler.StateSampler.__init__.__defaults__
    if defaults == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        statesampler.StateSampler.__init__.__defaults__ = (SAMPLING_PERIOD_MS,)


_short_sampling_period()

# Runner names Beam does not know (or knows only with bugs), and the class to use.
RUNNERS = {
    "DirectRunner": "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
    "DaskRunner": "pipelines.dask_runner.DaskRunner",
}


def local_threads(buckets: int) -> int:
    """Bundles the local runner runs at once: one per core, each with two join buckets or more.

    Each holds a bucket in DuckDB, so memory grows with the cores used: on a machine with
    many cores and little memory, set `--direct_num_workers` (docs/operations.md).
    """
    return max(1, min(cores(), buckets // 2))


def pipeline_options(
    runner: str = "DirectRunner", extra: list[str] | None = None, threads: int = 1
) -> PipelineOptions:
    """Options for `runner`, plus any extra Beam flags (e.g. a Dask scheduler address).

    `threads` is for the DirectRunner only: bundles run at once (see above). A
    `--direct_running_mode` or `--direct_num_workers` among the extra flags wins over it.
    """
    args = [f"--runner={RUNNERS.get(runner, runner)}"] + list(extra or [])
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={threads}")
        workers = PipelineOptions(args).get_all_options()["direct_num_workers"]
        args.append(f"--direct_running_mode={'multi_threading' if workers > 1 else 'in_memory'}")
    return PipelineOptions(args)


def used_threads(options: PipelineOptions) -> int:
    """Bundles the local runner will run at once under `options` (1 on other runners)."""
    values = options.get_all_options()
    if values.get("runner") != RUNNERS["DirectRunner"]:
        return 1
    if values.get("direct_running_mode") == "in_memory":
        return 1
    return values.get("direct_num_workers") or 1
