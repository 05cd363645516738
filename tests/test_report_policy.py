"""The report as a policy maker and whoever runs it meet it: the disclosure defaults are a
floor no option can lower, bad options end in one line (exit 2) with nothing written, the
fairness flag needs a base of at least the threshold, the trend publishes every cell with its
amount or suppressed, tiny amounts are not shown as EUR 0, and --out means what the docs say.
Run folders are synthetic but real files (tests/report_runs.py), the CLI is the real one.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from report_runs import Cohort, write_run
from test_report import population

from flows.cli import build_parser, main
from flows.report import build_report
from privacy.dp import DPSettings


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("policy") / "runs", population("65-74"))


def _written(folder) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    "weaker",
    [
        ["--min-interval", "-5"],
        ["--threshold", "2", "--min-interval", "0", "--rounding", "1"],
        ["--threshold", "9"],
        ["--threshold", "20", "--min-interval", "10"],
        ["--rounding", "999"],
        ["--rounding", "-1000"],
    ],
)
def test_options_weaker_than_the_policy_floor_are_refused(run, tmp_path, capsys, weaker):
    out = tmp_path / "out"
    assert main(["report", "--run", str(run), "--out", str(out), *weaker]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "policy floor" in err
    assert _written(tmp_path) == []


def test_stricter_options_are_accepted_and_recorded(run, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--threshold", "12", "--min-interval", "15", "--rounding", "5000"]
    assert main(["report", "--run", str(run), "--out", str(out), *argv]) == 0
    html = (out / "report.html").read_text()
    assert "Cells of 1 to 11 households are suppressed" in html and "at least 15 wide" in html


def test_little_noise_does_not_lift_the_suppression_of_the_exact_report(run, tmp_path):
    """DP comes on top: with epsilon 1e9 (no noise to speak of) every cell the exact report
    hides, secondary cells included, is hidden too, so none can be subtracted back."""
    exact = build_report(run, tmp_path / "exact.html")
    noisy = build_report(run, tmp_path / "dp.html", _dp(1e9))
    run_id = exact.summary["run_id"]
    assert "secondary" in exact.protected.summary()
    for name, cells in exact.protected.cells.items():
        hidden = {c.key for c in cells if exact.protected.is_suppressed(c.id)}
        shown = {c.key for c in noisy.protected.cells[name] if noisy.protected.count(name, c.key)}
        assert not hidden & shown, (name, run_id)


def _dp(epsilon, delta=0.0):
    from flows.report import ReportOptions

    return ReportOptions(dp=DPSettings(epsilon=epsilon, delta=delta))


@pytest.mark.parametrize(
    "bad, says",
    [
        (["--dp-epsilon", "-1"], "DP epsilon must be a positive number"),
        (["--dp-epsilon", "nan"], "DP epsilon must be a positive number"),
        (["--dp-epsilon", "1", "--dp-delta", "2"], "DP delta must be at least 0 and below 1"),
        (["--significance", "-0.05"], "--significance must be between 0 and 1"),
    ],
)
def test_bad_values_end_in_one_line_and_write_nothing(run, tmp_path, capsys, bad, says):
    assert main(["report", "--run", str(run), "--out", str(tmp_path / "o"), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert _written(tmp_path) == []


def test_an_out_path_in_the_way_ends_in_one_line_and_writes_nothing(run, tmp_path, capsys):
    folder = tmp_path / "taken.html"
    folder.mkdir()
    assert main(["report", "--run", str(run), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a folder" in err and err.count("\n") == 1, err
    assert _written(tmp_path) == ["taken.html"] and _written(folder) == []
    a_file = tmp_path / "notes"
    a_file.write_text("x")
    assert main(["report", "--run", str(run), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert _written(tmp_path) == ["notes", "taken.html"]


def test_out_is_a_folder_unless_it_ends_in_html_as_docs_demo_and_help_say(run, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()  # the walkthrough's IsADirectoryError: a folder is a folder
    assert main(["report", "--run", str(run), "--out", str(existing)]) == 0
    assert (existing / "report.html").is_file()
    assert (existing / "report-tables" / "by_scheme.csv").is_file()
    fresh = tmp_path / "d300" / "report"  # what the demo suggests: a run's report/ layout
    assert main(["report", "--run", str(run), "--out", str(fresh)]) == 0
    assert _written(fresh) == ["report-tables", "report.html"]
    page = tmp_path / "page.html"
    assert main(["report", "--run", str(run), "--out", str(page)]) == 0
    assert page.is_file() and (tmp_path / "page-tables" / "trend.csv").is_file()
    sub = build_parser()._subparsers._group_actions[0].choices["report"]
    assert "folder for report.html" in sub.format_help()
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    said = " ".join(readme.split())
    assert "`signals report --run RUN --out DIR`" in said
    assert "It writes `DIR/report.html` with its tables in `DIR/report-tables/`" in said


def _small_district(withheld: int, deregistered: int, signalled: int = 0) -> list[Cohort]:
    d = "WK000103"  # a fourth district of municipality GM0001
    return [
        Cohort(signalled, "signalled", d, age=40),
        Cohort(withheld, "withheld", d, age=40),
        Cohort(deregistered, "withheld", d, age=40, deregistered=True),
        Cohort(60, "receiving", d, age=40),
        Cohort(100, "not_entitled", d, age=40, income=55_000.0),
    ]


def _district_rows(report, district):
    return [f for f in report.fairness if f["dimension"] == "district" and f["group"] == district]


def test_a_base_under_the_threshold_is_not_assessed_and_says_so(tmp_path):
    """7 entitled, not receiving, none signalled; 3 of them held back as deregistered."""
    run = write_run(tmp_path / "runs", population() + _small_district(4, 3))
    report = build_report(run, tmp_path / "r.html")
    (row,) = _district_rows(report, "WK000103")
    assert row["households"] is not None  # published: the district is big enough
    assert row["state"] == "unassessed", row  # never flagged on a base of 4
    assert row["note"] in (
        "not assessed: base under 10 households",
        "not assessed: published figures do not show a base of 10+",
    )
    html = report.html.read_text()
    assert "not assessed" in html and "WK000103" in html
    parity = pq.read_table(report.tables_dir / "coverage_parity.parquet").to_pylist()
    (published,) = [r for r in parity if r["group"] == "WK000103"]
    assert published["state"] == "unassessed" and published["note"].startswith("not assessed")


def test_deregistered_households_are_not_in_the_base_and_the_method_says_so(tmp_path):
    """19 signalled, 1 withheld, 40 held back by law: reached as well as the country."""
    run = write_run(tmp_path / "runs", population() + _small_district(1, 40, signalled=19))
    report = build_report(run, tmp_path / "r.html")
    (row,) = _district_rows(report, "WK000103")
    assert row["state"] == "ok", row
    assert report.summary["flags"] == 0
    html = report.html.read_text()
    assert "coverage parity base leaves deregistered households out" in html
    rows = pq.read_table(report.tables_dir / "by_scheme.parquet").to_pylist()
    assert any(r["status"] == "deregistered" for r in rows)  # its own status in the tables


def test_every_trend_cell_is_published_with_its_amount_or_suppressed(tmp_path):
    runs = tmp_path / "runs"
    first = write_run(runs, population(), "2025-01-01-aaaa", "2025-01-01")
    r1 = build_report(first, first / "report")
    second = write_run(runs, population("65-74"), "2025-02-01-bbbb", "2025-02-01")
    r2 = build_report(second, second / "report")
    trend = pq.read_table(r2.tables_dir / "trend.parquet").to_pylist()
    assert {r["run_id"] for r in trend} == {"2025-01-01-aaaa", "2025-02-01-bbbb"}
    for r in trend:
        published = r["households"] is not None and r["amount_eur"] is not None
        assert published != r["suppressed"], r  # one or the other, never an empty cell
    own = pq.read_table(r1.tables_dir / "by_scheme.parquet").to_pylist()
    (own_amount,) = [r["amount_eur"] for r in own if r["status"] == "signalled"]
    (past,) = [r for r in trend if r["run_id"] == "2025-01-01-aaaa" and r["scheme"] != "Total"]
    assert past["amount_eur"] == own_amount  # as that month's own report published it


def test_an_amount_that_rounds_to_zero_is_shown_as_under_the_rounding_unit(tmp_path):
    cohorts = [
        Cohort(12, "signalled", amount=Decimal("32.47")),  # EUR 389.64 in all
        Cohort(20, "withheld"),
        Cohort(60, "receiving"),
        Cohort(100, "not_entitled", income=55_000.0),
    ]
    report = build_report(write_run(tmp_path / "runs", cohorts), tmp_path / "r.html")
    html = report.html.read_text()
    figure = re.search(r"<b>([^<]*)</b><span>estimated unclaimed per year</span>", html)
    assert figure and figure.group(1) == "&lt; EUR 1,000", figure
    assert "<td>&lt; EUR 1,000</td>" in html  # the same amount in the tables of the page
