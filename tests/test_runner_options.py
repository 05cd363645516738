"""The runner named is the runner used: no download, no silent switch; and the local
runner's threads change nothing in what a run publishes."""

from __future__ import annotations

import dataclasses
import logging
import os

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from pipeline_outputs import assert_same_outputs, population, run_central

from pipelines.options import local_threads, pipeline_options


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


def test_threads_run_bundles_side_by_side_unless_a_mode_is_given():
    threaded = _options(pipeline_options(threads=2))
    assert threaded["direct_running_mode"] == "multi_threading"
    assert threaded["direct_num_workers"] == 2
    given = _options(pipeline_options(extra=["--direct_running_mode=in_memory"], threads=2))
    assert given["direct_running_mode"] == "in_memory"
    # Another runner is not given local threads.
    assert _options(pipeline_options("DaskRunner", threads=2))["direct_running_mode"] != (
        "multi_threading"
    )


def test_local_threads_are_one_per_core_and_no_more_than_join_buckets():
    cores = os.cpu_count() or 1
    assert local_threads(1) == 1
    assert local_threads(256) == min(cores, 256)
    assert local_threads(2) == min(cores, 2)
    assert local_threads(0) == 1


@pytest.fixture(scope="module")
def pseudonymised(tmp_path_factory):
    return population(tmp_path_factory.mktemp("threads-population"))


def test_the_central_pipeline_publishes_the_same_with_two_threads_as_with_one(pseudonymised):
    from flows.bench import run_spec

    root = pseudonymised.parent
    spec = run_spec(str(pseudonymised), str(root / "one"), buckets=2)
    one = run_central(spec, pipeline_options(threads=1))
    two = run_central(dataclasses.replace(spec, staging=root / "two"), pipeline_options(threads=2))
    assert_same_outputs(one, two)
