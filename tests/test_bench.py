"""`signals bench` on a tiny population: every phase runs and reports, nothing is timed.

The one figure checked is an answer, not a time: the DuckDB floor and the pipeline find
the same number of households entitled to zorgtoeslag, so the floor does the same work.
"""

from __future__ import annotations

import json

from flows.cli import main


def test_bench_reports_every_stage_and_the_floor_agrees_with_the_pipeline(tmp_path, capsys):
    figures = tmp_path / "figures.json"
    args = ["bench", "--persons", "2000", "--work", str(tmp_path / "work"), "--no-startup"]
    assert main(args + ["--buckets", "4", "--json", str(figures)]) == 0
    out = capsys.readouterr().out
    for line in ("generate", "pseudonymise", "pipeline (process total)", "finalise", "floor"):
        assert line in out, line
    for stage in ("read + domain pseudonyms", "join (3 bucketed joins)", "evaluate rules"):
        assert stage in out, stage

    (run,) = json.loads(figures.read_text())["runs"]
    phases = run["phases"]
    assert phases["finalise"]["households"] > 500
    assert phases["floor"]["households"] == phases["finalise"]["households"]
    assert phases["floor"]["entitled"] == phases["finalise"]["entitled"] > 0
    assert all(phases[p]["peak_mb"] > 0 for p in ("pipeline", "finalise", "floor"))
    # The populations are kept in --work and reused by the next run.
    assert (tmp_path / "work" / "persons-2000" / "population.json").is_file()
