"""The runner named is the runner used: no download, no silent switch."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.options import pipeline_options


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
