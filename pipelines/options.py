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
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

# Runner names Beam does not know (or knows only with bugs), and the class to use.
RUNNERS = {
    "DirectRunner": "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
    "DaskRunner": "pipelines.dask_runner.DaskRunner",
}


def pipeline_options(
    runner: str = "DirectRunner", extra: list[str] | None = None
) -> PipelineOptions:
    """Options for `runner`, plus any extra Beam flags (e.g. a Dask scheduler address)."""
    args = [f"--runner={RUNNERS.get(runner, runner)}"] + list(extra or [])
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    return PipelineOptions(args)
