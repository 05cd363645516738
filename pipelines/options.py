"""Beam pipeline options with the runner pinned.

Beam's default runner may try to download a runner binary, which this network does
not allow; we always name the runner. Local default: the DirectRunner in memory.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


def pipeline_options(
    runner: str = "DirectRunner", extra: list[str] | None = None
) -> PipelineOptions:
    """Options for `runner`, plus any extra Beam flags (e.g. a Dask scheduler address)."""
    args = [f"--runner={runner}"] + list(extra or [])
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in args):
        args.append("--direct_running_mode=in_memory")
    return PipelineOptions(args)
