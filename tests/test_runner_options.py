"""The runner named is the runner used: no download, no silent switch; and the local
runner's threads change nothing in what a run publishes."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that
from pipeline_outputs import assert_same_outputs, population, run_central

from pipelines.machine import cores
from pipelines.options import (
    SAMPLING_PERIOD_MS,
    local_threads,
    pipeline_options,
    used_threads,
)


def _options(options) -> dict:
    return options.get_all_options()


def test_the_local_runner_is_the_fn_api_runner_in_memory():
    p = beam.Pipeline(options=pipeline_options())
    assert isinstance(p.runner, FnApiRunner)
    assert p.options.get_all_options()["direct_running_mode"] == "in_memory"


def test_a_local_run_does_not_try_to_fetch_another_runner(caplog):
    # Beam's own DirectRunner logs "Running pipeline with PrismRunner." and then tries
    # to download Prism from GitHub; offline it logs the failure and falls back.
    caplog.set_level(logging.INFO, logger="apache_beam")
    with beam.Pipeline(options=pipeline_options()) as p:
        p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
    assert not [r.getMessage() for r in caplog.records if "prism" in r.getMessage().lower()]


def test_threads_run_bundles_side_by_side_unless_the_user_says_otherwise():
    def mode_and_workers(**kwargs):
        options = pipeline_options(**kwargs)
        values = _options(options)
        return values["direct_running_mode"], values["direct_num_workers"], used_threads(options)

    assert mode_and_workers(threads=2) == ("multi_threading", 2, 2)
    assert mode_and_workers(threads=1) == ("in_memory", 1, 1)
    # The user's flags win, either of them, in either spelling.
    assert mode_and_workers(extra=["--direct_running_mode=in_memory"], threads=2)[::2] == (
        "in_memory",
        1,
    )
    assert mode_and_workers(extra=["--direct_num_workers=1"], threads=2) == ("in_memory", 1, 1)
    assert mode_and_workers(extra=["--direct_num_workers", "3"]) == ("multi_threading", 3, 3)
    # Another runner is not given local threads.
    assert used_threads(pipeline_options("DaskRunner", threads=2)) == 1


def test_local_threads_are_one_per_core_and_two_join_buckets_each():
    assert cores() == len(os.sched_getaffinity(0))
    assert local_threads(0) == local_threads(1) == local_threads(2) == local_threads(3) == 1
    assert local_threads(4) == min(cores(), 2)
    assert local_threads(256) == min(cores(), 128)


def test_a_small_population_gets_smaller_buckets_so_every_core_has_two():
    from pipelines.join import SMALLEST_BUCKET, buckets_for

    assert buckets_for(1_000, cores=2) == 1
    # Four would be too small, and two buckets would go to one thread (local_threads): one.
    assert buckets_for(4 * SMALLEST_BUCKET - 1, cores=2) == 1
    assert buckets_for(99_600, cores=2) == 4
    assert buckets_for(99_600, cores=1) == 1  # one core: no thread to gain
    assert buckets_for(99_600, cores=8) == 4
    assert buckets_for(1_000_000, cores=2) == 10  # large enough by size alone
    assert buckets_for(99_600, most=3, cores=2) == 3


@pytest.fixture(scope="module")
def pseudonymised(tmp_path_factory):
    return population(tmp_path_factory.mktemp("threads-population"))


def test_the_central_pipeline_publishes_the_same_however_it_is_split(pseudonymised, monkeypatch):
    from flows.bench import run_spec
    from pipelines import central, join

    # Buckets of 250 persons: the 1,000 are 4 buckets, so the joins, rules and audit of
    # different buckets run side by side, as at scale.
    monkeypatch.setattr(join, "PERSONS_PER_BUCKET", 250)
    root = pseudonymised.parent
    spec = run_spec(str(pseudonymised), str(root / "one"), buckets=8)
    assert central.join_buckets(spec) == 4
    # One thread, and a shuffle file for every batch that goes into a join ...
    monkeypatch.setattr(join, "SPILL_ROWS", 1)
    one = run_central(spec, pipeline_options(threads=1))
    # ... against two threads, the batches gathered into files of 300 rows or more.
    monkeypatch.setattr(join, "SPILL_ROWS", 300)
    two = run_central(dataclasses.replace(spec, staging=root / "two"), pipeline_options(threads=2))
    assert_same_outputs(one, two)


class _TimedFlushers(beam.DoFn):
    """Emits how many of Beam's timed data-stream flushers run while a bundle is open."""

    def process(self, element):
        from apache_beam.runners.worker.data_plane import PeriodicThread

        timers = [t for t in threading.enumerate() if isinstance(t, PeriodicThread)]
        # Beam's worker has a timer of its own (for idle bundle processors): not counted.
        flushers = [t for t in timers if "OutputStream" in t._function.__qualname__]
        yield element, len(flushers)


def test_no_data_stream_is_flushed_by_a_timer_while_its_bundle_writes_to_it():
    """Beam's local runner flushed each data stream every second from a thread of its own
    while the bundle's thread wrote to it, and lost what was written in between
    (pipelines/options.py): elements misframed, or gone. Only size-based flushes remain."""
    with beam.Pipeline(options=pipeline_options(threads=2)) as p:
        found = (
            p
            | beam.Create(range(8))
            | "Before" >> beam.Reshuffle()  # stage boundaries: the probe's output crosses
            | beam.ParDo(_TimedFlushers())  # the data plane, as every step's output does
            | "After" >> beam.Reshuffle()
            | beam.Map(lambda pair: pair[1])
            | beam.combiners.ToList()
        )
        assert_that(found, lambda counts: _all_zero(counts[0] if counts else None))


def _all_zero(counts) -> None:
    assert counts and len(counts) == 8, counts
    assert set(counts) == {0}, f"timed flushers alive while bundles wrote: {counts}"


def test_a_bundle_samples_its_state_often_so_ending_it_does_not_wait():
    """Ending a bundle joins its state sampler's thread, which sleeps a period between
    samples: Beam's 200 ms made every bundle of a long stage wait up to that long."""
    p = beam.Pipeline(options=pipeline_options(threads=2))
    p | beam.Create(range(4)) | beam.Reshuffle() | beam.ParDo(_SamplingPeriod())
    result = p.run()
    result.wait_until_finish()
    (period,) = result.metrics().query()["distributions"]
    assert period.committed.count == 4
    assert period.committed.min == period.committed.max == SAMPLING_PERIOD_MS <= 20


class _SamplingPeriod(beam.DoFn):
    """The sampling period of the bundle each element runs in (the runner's own sampler)."""

    def process(self, element):
        from apache_beam.metrics import Metrics
        from apache_beam.runners.worker import statesampler

        period = statesampler.get_current_tracker().sampling_period_ms
        Metrics.distribution("test", "sampling_period_ms").update(period)
