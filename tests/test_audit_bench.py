"""benchmarks/audit_bench.py on a tiny population: both variants run and it reports, nothing
is timed. Its ablation patches the pipeline's audit record makers, so a change of their
signatures would otherwise only show when someone measures (as it once did)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_audit_bench_runs_both_variants_and_reports(tmp_path):
    figures = tmp_path / "figures.json"
    args = ["--persons", "1500", "--buckets", "4", "--work", str(tmp_path / "work")]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "audit_bench.py"),
            *args,
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("without audit records and log", "overhead", "leaf hashing", "SHA-256 loop"):
        assert line in done.stdout, line

    f = json.loads(figures.read_text())
    parts = f["append_parts"]
    assert parts["verify_ok"] is True
    with_run = json.loads((Path(f["with"][0]["folder"]) / "manifest.json").read_text())
    without = json.loads((Path(f["without"][0]["folder"]) / "manifest.json").read_text())
    # The run with the audit logged ~3.7 records a person (ingest, join and rule evaluation
    # each, an address's housing, the candidates); the ablation only the purpose check.
    assert with_run["counts"]["audit_records"] == parts["records"] > 3 * 1500
    assert without["counts"]["audit_records"] <= 1
    assert with_run["counts"]["signals"] == without["counts"]["signals"] > 0
