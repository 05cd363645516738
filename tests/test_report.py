"""The aggregate report: contents, coverage parity flags, feedback, trend and carried suppression,
the CLI and the Prefect task with its artifacts. Run folders are synthetic but real files
(tests/report_runs.py); the report reads them exactly as it reads a published run.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_runs import Cohort, pid, write_run

from flows.cli import main
from flows.report import ReportError, ReportOptions, build_report
from privacy.disclosure import LEAF, PolicyError, Rules

BANDS = {"under 30": 25, "30-44": 40, "45-64": 55, "65-74": 70}
DISTRICTS = ("WK000101", "WK000102", "WK000201")


def population(gap_band: str | None = None) -> list[Cohort]:
    """Per age band and district: receiving, not entitled, and 60 unclaimed entitled households
    of which 57 get a signal; in `gap_band` only 6 of 60 do (the rest are not signalled)."""
    cohorts = []
    for band, age in BANDS.items():
        for i, district in enumerate(DISTRICTS):
            signalled = 2 if band == gap_band else 19
            cohorts += [
                Cohort(
                    signalled,
                    "signalled",
                    district,
                    age=age,
                    partner=bool(i % 2),
                    amount=Decimal("1100.00"),
                ),
                Cohort(20 - signalled, "withheld", district, age=age),
                Cohort(30, "receiving", district, age=age, children=1),
                Cohort(50, "not_entitled", district, age=age, income=55_000.0),
            ]
    return cohorts


@pytest.fixture(scope="module")
def gap_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap")
    run = write_run(root / "runs", population(gap_band="65-74"))
    return run, build_report(run, root / "out" / "report.html")


def test_a_coverage_gap_for_one_age_band_is_flagged(gap_report):
    _, report = gap_report
    flagged = [f for f in report.fairness if f["state"] == "flag"]
    assert [(f["dimension"], f["group"]) for f in flagged] == [("age_band", "65-74")]
    row = flagged[0]
    assert row["signals"] is None and row["ratio"] is None  # 6 signals: hidden, still flagged
    html = report.html.read_text()
    assert "1 coverage disparities flagged" in html and "65-74" in html
    parity = pq.read_table(report.tables_dir / "coverage_parity.parquet").to_pylist()
    assert {(r["group"], r["state"]) for r in parity if r["state"] == "flag"} == {("65-74", "flag")}


def test_without_a_gap_nothing_is_flagged(tmp_path):
    run = write_run(tmp_path / "runs", population(gap_band=None))
    report = build_report(run, tmp_path / "out" / "report.html")
    assert [f for f in report.fairness if f["state"] == "flag"] == []
    assert {f["state"] for f in report.fairness if f["dimension"] == "age_band"} == {"ok"}
    assert "No coverage disparity" in report.html.read_text()


def test_the_entitled_basis_can_be_chosen(tmp_path):
    run = write_run(tmp_path / "runs", population(gap_band="under 30"))
    report = build_report(run, tmp_path / "r.html", ReportOptions(parity_basis="entitled"))
    flagged = {(f["dimension"], f["group"]) for f in report.fairness if f["state"] == "flag"}
    assert ("age_band", "under 30") in flagged


def test_the_report_is_self_contained_and_holds_no_pseudonym(gap_report):
    run, report = gap_report
    html = report.html.read_text()
    assert html.count("<svg") >= 10
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "@import" not in html and "url(http" not in html
    assert "Content-Security-Policy" in html
    households = pq.read_table(run / "households" / "part-00000.parquet")
    signals = pq.read_table(run / "signals.parquet")
    secrets = set(households.column("household_pid").to_pylist())
    secrets |= set(households.column("applicant_pid").to_pylist())
    secrets |= set(signals.column("signal_id").to_pylist())
    outputs = [report.html] + sorted(report.tables_dir.iterdir())
    for path in outputs:
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert not any(s in text for s in secrets), path
        assert "k1." not in text  # no pseudonym of any kind


def test_the_tables_are_written_as_parquet_and_csv_with_suppressed_cells_empty(gap_report):
    _, report = gap_report
    names = {p.stem for p in report.tables_dir.glob("*.parquet")}
    assert {
        "by_scheme",
        "by_district",
        "by_age_band",
        "by_household_type",
        "by_income_band",
        "by_debt_signal",
        "trend",
        "coverage_parity",
    } <= names
    assert names == {p.stem for p in report.tables_dir.glob("*.csv")}
    # Written aside and moved into place whole: nothing half-written is left behind.
    assert not list(report.html.parent.glob(".*.tmp"))
    rows = pq.read_table(report.tables_dir / "by_age_band.parquet").to_pylist()
    hidden = [r for r in rows if r["suppressed"]]
    assert hidden and all(r["households"] is None and r.get("amount_eur") is None for r in hidden)
    shown = [r for r in rows if r["amount_eur"] is not None]
    assert all(r["amount_eur"] % 1000 == 0 for r in shown)  # rounded to EUR 1,000
    national = next(r for r in rows if r["age_band"] == "Total" and r["status"] == "signalled")
    assert national["households"] == 3 * (19 * 3 + 2 * 1) + 0  # 57 per band, 6 in the gap band


def test_no_feedback_yet_then_take_up_and_precision(tmp_path, gap_report):
    run, report = gap_report
    assert "No feedback yet" in report.html.read_text()
    ids = sorted(pq.read_table(run / "signals.parquet").column("signal_id").to_pylist())
    outcomes = ["granted"] * 60 + ["not_entitled"] * 20 + ["contacted"] * 40
    fb = tmp_path / "feedback.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"signal_id": i, "scheme": "zorgtoeslag", "outcome": o}
                for i, o in zip(ids, outcomes, strict=False)
            ]
            + [{"signal_id": ids[0], "scheme": "zorgtoeslag", "outcome": "contacted"}]
        ),
        fb,
    )
    again = build_report(run, tmp_path / "r.html", ReportOptions(feedback=fb))
    p = again.protected
    assert p.count("feedback", ((LEAF, "zorgtoeslag"), (LEAF, "granted"))) == 60  # furthest
    html = again.html.read_text()
    assert "<td>50%</td>" in html  # take-up: 60 granted of 120 with feedback
    assert "<td>75%</td>" in html  # precision: 60 / (60 + 20)


def test_a_feedback_outcome_outside_the_list_names_file_and_row(tmp_path, gap_report):
    run, _ = gap_report
    fb = tmp_path / "bad.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"signal_id": "s.x", "scheme": "zorgtoeslag", "outcome": "granted"},
                {"signal_id": "s.y", "scheme": "zorgtoeslag", "outcome": "maybe"},
            ]
        ),
        fb,
    )
    with pytest.raises(ReportError, match=r"bad\.parquet: row 2: outcome 'maybe'"):
        build_report(run, tmp_path / "r.html", ReportOptions(feedback=fb))


def _district_x(sig: int) -> list[Cohort]:
    cohorts = [
        Cohort(sig, "signalled", "WK000103", age=50),
        Cohort(60, "receiving", "WK000103", age=50),
    ]
    for district in DISTRICTS:
        cohorts += [
            Cohort(40, "signalled", district, age=30),
            Cohort(15, "signalled", district, age=50),
            Cohort(90, "receiving", district, age=30),
            Cohort(30, "withheld", district, age=60),
            Cohort(200, "not_entitled", district, age=60),
        ]
    return cohorts


def test_suppression_carries_to_the_next_period_and_the_trend_keeps_the_past(tmp_path):
    runs = tmp_path / "runs"
    key = ((LEAF, "zorgtoeslag"), (LEAF, "WK000103"), (LEAF, "signalled"))
    first = write_run(runs, _district_x(5), "2025-01-01-aaaa", "2025-01-01")
    r1 = build_report(first, first / "report" / "report.html")
    assert r1.protected.count("by_district", key) is None  # 5: primary
    second = write_run(runs, _district_x(12), "2025-02-01-bbbb", "2025-02-01")
    r2 = build_report(second, second / "report" / "report.html")
    assert r2.protected.count("by_district", key) is None  # 12, but hidden last period
    trend = pq.read_table(r2.tables_dir / "trend.parquet").to_pylist()
    assert {r["run_id"] for r in trend} == {"2025-01-01-aaaa", "2025-02-01-bbbb"}
    third = write_run(runs, _district_x(12), "2025-03-01-cccc", "2025-03-01")
    r3 = build_report(third, third / "report" / "report.html")
    assert r3.protected.count("by_district", key) == 12  # carried for one period only
    with pytest.raises(PolicyError, match="carry-forward is part of the policy floor"):
        build_report(second, tmp_path / "off.html", ReportOptions(rules=Rules(carry_forward=False)))


def small_month() -> list[Cohort]:
    """A month whose 7 signals its own report hides."""
    return [
        Cohort(7, "signalled", "WK000101"),
        Cohort(40, "receiving", "WK000101"),
        Cohort(100, "not_entitled", "WK000101"),
    ]


def test_a_past_runs_hidden_figures_stay_hidden_in_the_trend(tmp_path):
    runs = tmp_path / "runs"
    small = small_month()
    first = write_run(runs, small, "2025-01-01-aaaa", "2025-01-01")
    build_report(first, first / "report" / "report.html")
    second = write_run(runs, population(), "2025-02-01-bbbb", "2025-02-01")
    report = build_report(second, second / "report" / "report.html")
    trend = pq.read_table(report.tables_dir / "trend.parquet").to_pylist()
    past = [r for r in trend if r["run_id"] == "2025-01-01-aaaa"]
    assert past and all(r["suppressed"] and r["households"] is None for r in past)
    state = json.loads((report.tables_dir / "suppression.json").read_text())
    assert state["format"] == "signals-disclosure-state/1"


def test_the_cli_writes_the_report_and_names_a_missing_run(tmp_path, capsys):
    run = write_run(tmp_path / "runs", population())
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--run", str(run), "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "out" / "report-tables" / "by_district.csv").is_file()
    assert "suppressed" in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a published run" in capsys.readouterr().err


def test_the_prefect_task_attaches_aggregate_artifacts_only(tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.run import report_run

    run = write_run(tmp_path / "runs", population(gap_band="65-74"))

    @flow(name="report-artifacts-test")
    def report_flow() -> str:
        return report_run(str(run), None)

    html = report_flow()
    assert html.endswith("report/report.html") and (run / "report" / "report.html").is_file()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    by_key = {a.key: a for a in artifacts if a.key}
    assert {
        "signals-per-scheme",
        "signals-per-district",
        "coverage-flags",
        "aggregate-report",
    } <= set(by_key)
    text = json.dumps([str(a.data) for a in by_key.values()])
    assert pid("h", 1) not in text and "k1." not in text
    assert "65-74" in str(by_key["coverage-flags"].data)
