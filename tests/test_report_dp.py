"""Optional differential privacy: PipelineDP on Beam adds calibrated noise, and the budget is
recorded in a ledger that adds up to what was asked for."""

from __future__ import annotations

import json
import tempfile

import pytest
from report_runs import write_run
from test_report import population

from flows.report import ReportOptions, build_report
from privacy.disclosure import LEAF
from privacy.dp import DPSettings


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("dp") / "runs", population("65-74"))


def _leaves(report, table):
    return {
        c.key: c.count
        for c in report.protected.cells[table]
        if all(level == LEAF for level, _ in c.key)
    }


def test_dp_noise_and_its_budget_ledger(run, tmp_path):
    exact = build_report(run, tmp_path / "exact.html")
    noisy = build_report(run, tmp_path / "dp.html", ReportOptions(dp=DPSettings(epsilon=1.0)))
    ledger = noisy.summary["dp"]
    assert ledger["total_epsilon"] == 1.0 and ledger["total_delta"] == 0.0
    assert ledger["spent_epsilon"] == pytest.approx(1.0)
    tables = {e["table"] for e in ledger["entries"]}
    assert {"by_scheme", "by_district", "by_age_band", "trend@" + exact.summary["run_id"]} <= tables
    assert {e["metric"] for e in ledger["entries"]} == {"Count", "Sum"}
    count = next(e for e in ledger["entries"] if e["metric"] == "Count")
    assert count["laplace_scale"] == pytest.approx(1 / count["epsilon"])
    assert json.loads((noisy.tables_dir / "dp_ledger.json").read_text()) == ledger
    assert "Differential privacy" in noisy.html.read_text()
    e, n = _leaves(exact, "by_district"), _leaves(noisy, "by_district")
    assert e.keys() == n.keys() and e != n  # noise was added
    assert all(v >= 0 for v in n.values())


def test_with_a_huge_budget_the_noise_vanishes(run, tmp_path, monkeypatch):
    exact = build_report(run, tmp_path / "exact.html")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loose = build_report(run, tmp_path / "dp.html", ReportOptions(dp=DPSettings(epsilon=1e6)))
    # The noisy counts' scratch files are gone with the call.
    assert not list(scratch.glob("signals-dp-*"))
    e, n = _leaves(exact, "by_age_band"), _leaves(loose, "by_age_band")
    assert max(abs(e[k] - n[k]) for k in e) <= 1
