"""benchmarks/beam_startup.py runs and reports its figures; nothing is timed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_beam_startup_bench_runs_its_empty_graph_and_reports_each_phase():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "beam_startup.py"), "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a Beam graph doing nothing, 8 shuffles, 2 turns" in done.stdout
    for phase in ("import", "build", "run", "total", "process"):
        assert re.search(rf"^  {phase} +median +\d+\.\d\d +least", done.stdout, re.M), phase
