"""`signals bench` on a tiny population: every phase runs and reports, nothing is timed.

The one figure checked is an answer, not a time: the DuckDB floor and the pipeline find
the same number of households entitled to zorgtoeslag, so the floor does the same work.
"""

from __future__ import annotations

import json
import re

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
    # Every step of the pipeline counts towards a named stage (flows/bench.py STAGES).
    assert not [s for s in phases["pipeline"]["stages"] if s.startswith("other")]
    assert phases["finalise"]["households"] > 500
    assert phases["floor"]["households"] == phases["finalise"]["households"]
    assert phases["floor"]["entitled"] == phases["finalise"]["entitled"] > 0
    assert all(phases[p]["peak_mb"] > 0 for p in ("pipeline", "finalise", "floor"))
    # The populations are kept in --work and reused by the next run.
    assert (tmp_path / "work" / "persons-2000" / "population.json").is_file()

    # A floor that does not fit in memory is reported, not fatal (10M persons need ~19 GB).
    from flows.bench import floor_phase

    pseudo = tmp_path / "work" / "persons-2000" / "pseudonymised"
    failed = floor_phase(str(pseudo), memory_limit="1MB")
    assert failed.keys() == {"error"} and "out of memory" in failed["error"]
    assert not (pseudo.parent / "floor-spill").exists()


def test_peak_memory_counts_the_worker_processes_too():
    import os
    import subprocess
    import sys

    from flows.bench import tree_rss_mb

    alone = tree_rss_mb(os.getpid())
    # A worker that holds 300 MB (written, so resident) until told to stop.
    code = "b = b'x' * (300 * 2**20); print(1, flush=True); input()"
    worker = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().strip() == "1"
        together = tree_rss_mb(os.getpid())
    finally:
        worker.communicate("\n")
    assert together - alone > 250


def test_a_phase_past_its_memory_mark_has_every_threads_stack_written_once(tmp_path, capsys):
    import threading
    import time

    from flows.bench import _TreeMemory

    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="a-busy-stage")
    worker.start()
    try:
        with _TreeMemory(every=0.01, stacks_from_mb=1, stacks_dir=tmp_path) as memory:
            time.sleep(0.2)
    finally:
        release.set()
        worker.join()
    (written,) = tmp_path.glob("signals-bench-stacks-*.txt")
    assert memory.stacks == str(written)
    text = written.read_text()
    assert re.match(r"[\d,]+ MB \(this process and its workers\)", text)
    # The test's own frame and the waiting thread's are in it.
    assert "test_a_phase_past_its_memory_mark" in text and "in wait" in text
    # Sampled ~20 times past the mark, said once.
    assert capsys.readouterr().err.count(f"stacks in {written}") == 1


def test_repeated_turns_are_all_kept_and_the_middle_one_is_reported(tmp_path, capsys):
    figures = tmp_path / "figures.json"
    args = ["bench", "--persons", "1000,2000", "--work", str(tmp_path / "work"), "--no-startup"]
    assert main(args + ["--buckets", "4", "--repeat", "3", "--json", str(figures)]) == 0
    out = capsys.readouterr().out
    assert out.count("turn 3 of 3") == 2
    runs = json.loads(figures.read_text())["runs"]
    for run in runs:
        turns = run["turns"]
        assert len(turns) == 3 and all(t["central_seconds"] > 0 for t in turns)
        phases = run["phases"]
        central = phases["pipeline"]["seconds"] + phases["finalise"]["seconds"]
        assert central == sorted(t["central_seconds"] for t in turns)[1]
        assert phases["floor"]["query_seconds"] == sorted(t["floor_seconds"] for t in turns)[1]
    assert "every turn (the figures above are the middle turn's, of 3)" in out
    assert "marginal time against the floor, turn by turn:" in out


def test_a_repeat_below_one_is_refused_with_a_clear_message(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["bench", "--repeat", "0"])
    assert "give a whole number of turns, 1 or more" in capsys.readouterr().err


def _figures(persons: int, seconds: float) -> dict:
    phase = {"seconds": seconds / 2, "cpu_seconds": seconds, "peak_mb": 100.0}
    return {"persons": persons, "phases": {"pipeline": phase, "finalise": dict(phase)}}


def test_the_per_person_target_is_read_net_of_the_start_up_and_both_spreads_are_printed():
    from flows.bench import report_scaling

    # 2 s start-up; 100k in 4 s and 1M in 19 s: 40 and 19 us as measured, 20 and 17 net.
    lines = report_scaling(
        [_figures(100_000, 4.0), _figures(1_000_000, 19.0)], _figures(1_000, 2.0)
    )
    assert (
        "  time per person net of the start-up spans 17.0..20.0 us: +/-8% (target +/-25%)" in lines
    )
    assert "  as measured, the start-up included: 19.0..40.0 us: +/-36%" in lines

    # Without a start-up run there is no net figure, and the line says so.
    (line,) = [
        x
        for x in report_scaling([_figures(100_000, 4.0), _figures(1_000_000, 19.0)], None)
        if "per person" in x
    ]
    assert "19.0..40.0 us: +/-36%, the start-up included (not measured" in line
