"""What a policy maker needs around the figures (the walkthrough's findings): which rules and
parameter versions, which schemes were not evaluated and why, rows quarantined and persons
excluded for objecting (small counts suppressed), readable scheme names, tables that say which
run they are of; why entitled households were held back (a quiet second month is fatigue,
not take-up solved); and a suppressed month in the trend that does not read as a zero.
Run folders are synthetic but real files (tests/report_runs.py).
"""

from __future__ import annotations

import re
from html import unescape

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from report_runs import Cohort, write_run
from test_report import population, small_month

from flows.report import build_report
from privacy.disclosure import LEAF

HUURTOESLAG_REASON = (
    "parameter factor_a_single is unknown (MISSING: the factor a of a one-person household "
    "for 2025. It is set in the yearly Regeling huurtoeslaggrenzen (Wht art. 19 lid 4); "
    "that Regeling was not found.); parameter factor_b_single is unknown (MISSING: from the "
    "same Regeling (see factor_a_single).); parameter minimum_basishuur_multi is unknown "
    "(MISSING, as minimum_basishuur_single (the EUR 12 of art. 16 is unresolved).)"
)
OTHER_SCHEMES = (
    ("kindgebonden_budget", "signalled"),
    ("aio", "not_entitled"),
    ("kwijtschelding", "receiving"),
)


def _visible(html: str) -> str:
    """The page's text as a reader sees it (no tags, no attributes)."""
    html = re.sub(r"<(style|title)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture(scope="module")
def context_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    cohorts = [
        Cohort(
            c.n, c.status, c.district, c.age, c.partner, c.children, c.income, also=OTHER_SCHEMES
        )
        for c in population()
    ]
    run = write_run(
        root / "runs",
        cohorts,
        quarantined={"brp": 15, "tax": 3, "housing": 0},
        excluded=2,
        skipped={"huurtoeslag": HUURTOESLAG_REASON},
    )
    return run, build_report(run, root / "out")


def test_the_report_states_rules_versions_and_what_was_not_evaluated(context_report):
    _, report = context_report
    text = _visible(report.html.read_text())
    assert "1.0.0+synthetic" in text and "2025.1+synthetic" in text  # rule, parameter version
    said = re.search(r"Not evaluated: (.*?)\.", text)
    assert said and said.group(1).startswith("huurtoeslag"), text[:2000]
    line = re.search(r"huurtoeslag: ([^.]*)", text).group(1)
    assert "3 parameters" in line and "unknown" in line, line
    assert "Regeling" not in text  # one line, not the manifest's paragraph
    rules = pq.read_table(report.tables_dir / "rules.parquet").to_pylist()
    assert {(r["scheme"], r["evaluated"]) for r in rules} >= {
        ("huurtoeslag", False),
        ("zorgtoeslag", True),
    }


def test_quarantine_and_exclusions_are_stated_with_small_counts_suppressed(context_report):
    _, report = context_report
    text = _visible(report.html.read_text())
    assert re.search(r"brp 15 ", text), text
    assert re.search(r"tax suppressed \(under 10\)", text), text
    assert re.search(r"housing 0 ", text)
    assert re.search(r"excluded for objecting to all processing suppressed \(under 10\)", text)
    rows = pq.read_table(report.tables_dir / "inputs.parquet").to_pylist()
    by = {(r["measure"], r["source"]): r for r in rows}
    assert by[("rows quarantined", "brp")]["count"] == 15
    tax = by[("rows quarantined", "tax")]
    assert tax["count"] is None and tax["suppressed"]
    excluded = by[("persons excluded for objecting", "all sources")]
    assert excluded["count"] is None and excluded["suppressed"]
    assert ",3," not in (report.tables_dir / "inputs.csv").read_text()


def test_schemes_are_shown_by_a_readable_name(context_report):
    _, report = context_report
    text = _visible(report.html.read_text())
    for name in (
        "kindgebonden budget",
        "AIO (aanvullende inkomensvoorziening ouderen)",
        "kwijtschelding gemeentelijke belastingen",
    ):
        assert name in text
    assert "kindgebonden_budget" not in text and "kwijtschelding " not in text.replace(
        "kwijtschelding gemeentelijke", ""
    )
    assert not re.search(r"\baio\b", text)


def test_every_table_says_which_run_and_reference_date_it_is_of(context_report):
    run, report = context_report
    for path in sorted(report.tables_dir.glob("*.parquet")):
        table = pq.read_table(path)
        assert {"run_id", "reference_date"} <= set(table.column_names), path
        if path.stem != "trend":
            assert set(table.column("run_id").to_pylist()) == {"2025-01-01-synthetic"}, path
        assert set(table.column("reference_date").to_pylist()) == {"2025-01-01"}, path
        csv = pacsv.read_csv(path.with_suffix(".csv"))
        assert {"run_id", "reference_date"} <= set(csv.column_names), path


# -- held back: by law and by proportionality ------------------------------------------------


def _second_month(objection: int = 3) -> list[Cohort]:
    """A month after a first run: nobody new, 47 entitled households signalled last month
    (fatigue; 5 of them also under the minimum amount), 12 with an open case, a few who
    objected to this scheme and two deregistered applicants; 56 already receiving."""
    return [
        Cohort(42, "withheld", reasons=("fatigue",)),
        Cohort(5, "withheld", reasons=("minimum_amount", "fatigue")),
        Cohort(12, "withheld", reasons=("open_case",)),
        Cohort(objection, "withheld", reasons=("objection",)),
        Cohort(2, "withheld", deregistered=True),
        Cohort(56, "receiving"),
        Cohort(300, "not_entitled", income=55_000.0),
    ]


def test_held_back_households_are_shown_per_reason_and_explained(tmp_path):
    run = write_run(tmp_path / "runs", _second_month(objection=11), "2025-02-01-m2", "2025-02-01")
    report = build_report(run, tmp_path / "out")
    p = report.protected
    reason = lambda r: p.count("withheld_reasons", ((LEAF, "zorgtoeslag"), (LEAF, r)))  # noqa: E731
    assert reason("fatigue") == 47  # a candidate with two reasons counts once, as fatigue
    assert reason("open_case") == 12 and reason("objection") == 11
    text = _visible(report.html.read_text())
    assert re.search(r"fatigue: signalled .*? 47 ", text), text
    assert "not signalled again" in text and "not non-take-up solved" in text
    assert re.search(r"by law", text) and re.search(r"by proportionality", text)
    rows = pq.read_table(report.tables_dir / "withheld_reasons.parquet").to_pylist()
    assert {r["reason"] for r in rows} >= {"fatigue", "open_case", "objection", "Total"}
    # Every withheld household has its reason here: no always-empty "not recorded" row,
    # which would only cost suppression of real figures.
    assert "not_recorded" not in {r["reason"] for r in rows}


def test_a_small_held_back_count_cannot_be_worked_out_from_the_others(tmp_path):
    """3 objections: hidden; the withheld total and the other reasons would give it away,
    so the disclosure audit hides enough to keep it at least the threshold wide."""
    run = write_run(tmp_path / "runs", _second_month(objection=3), "2025-02-01-m2", "2025-02-01")
    report = build_report(run, tmp_path / "out")
    p = report.protected
    key = ((LEAF, "zorgtoeslag"), (LEAF, "objection"))
    assert p.count("withheld_reasons", key) is None
    cell = p.tables["withheld_reasons"].cell_id(key)
    lo, hi = p.intervals[cell]
    assert hi - lo >= p.rules.threshold, (lo, hi)
    total = p.count("by_scheme", ((LEAF, "zorgtoeslag"), (LEAF, "withheld")))
    shown = [
        p.count("withheld_reasons", ((LEAF, "zorgtoeslag"), (LEAF, r)))
        for r in ("fatigue", "open_case", "minimum_amount", "confidence", "necessity")
    ]
    assert total is None or None in shown


# -- the trend: a suppressed month is no zero --------------------------------------------------


def _trend_svg(html: str) -> str:
    at = html.index("<figcaption>Signals per run</figcaption>")
    return html[at : html.index("</svg>", at)]


def test_a_suppressed_month_in_the_trend_is_a_marked_gap_not_a_zero(tmp_path):
    """Month 1 is hidden by its own report (7 signals), month 2 by carry-forward; month 3
    is published: one point, two hatched bands, nothing drawn on the zero line."""
    runs = tmp_path / "runs"
    small = small_month()
    first = write_run(runs, small, "2025-01-01-aaaa", "2025-01-01")
    build_report(first, first / "report")
    for run_id in ("2025-02-01-bbbb", "2025-03-01-cccc"):
        run = write_run(runs, population(), run_id, run_id[:10])
        report = build_report(run, run / "report")
    trend = pq.read_table(report.tables_dir / "trend.parquet").to_pylist()
    hidden = {r["run_id"] for r in trend if r["scheme"] == "zorgtoeslag" and r["suppressed"]}
    assert hidden == {"2025-01-01-aaaa", "2025-02-01-bbbb"}
    svg = _trend_svg(report.html.read_text())
    assert "×" not in svg
    assert svg.count('class="suppressed"') == 2  # a band per hidden month
    assert ">suppressed (small numbers)</text>" in svg  # the legend says what a band is
    zero_line = re.search(r'<line x1="[\d.]+" y1="([\d.]+)" x2', svg).group(1)
    points = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert len(points) == 1 and points[0][1] != zero_line  # only the published month


def test_a_scheme_evaluated_without_signals_is_a_zero_in_the_trend_not_a_gap(tmp_path):
    """The manifest lists only schemes with signals; a month whose aio households were all
    held back evaluated aio all the same: its trend cell is a count, never 'not evaluated'."""
    runs = tmp_path / "runs"
    signalled = [
        Cohort(30, "signalled", also=(("aio", "signalled"),)),
        Cohort(100, "not_entitled", also=(("aio", "not_entitled"),)),
    ]
    held = [
        Cohort(30, "signalled", also=(("aio", "withheld"),)),
        Cohort(100, "not_entitled", also=(("aio", "not_entitled"),)),
    ]
    for cohorts, run_id, day in (
        (signalled, "2025-01-01-aaaa", "2025-01-01"),
        (held, "2025-02-01-bbbb", "2025-02-01"),
    ):
        run = write_run(runs, cohorts, run_id, day)
        build_report(run, run / "report")
    last = write_run(runs, signalled, "2025-03-01-cccc", "2025-03-01")
    report = build_report(last, last / "report")
    html = report.html.read_text()
    at = html.index("<figcaption>Signals per run</figcaption>")
    assert "gap: scheme not evaluated" not in html[at : html.index("</svg>", at)]
    trend = pq.read_table(report.tables_dir / "trend.parquet").to_pylist()
    assert [r["scheme"] for r in trend if r["run_id"] == "2025-02-01-bbbb"].count("aio") == 1


def test_a_household_whose_receipt_was_unknown_is_held_back_for_that_not_for_no_reason(tmp_path):
    """The run holds back a candidate whose receipt or registration it could not tell (its
    reason: already_receiving or deregistered, with nothing delivered to say so); the
    report counts it as withheld and must say why, not 'reason not recorded'."""
    cohorts = _second_month(objection=11) + [Cohort(14, "withheld", reasons=("already_receiving",))]
    run = write_run(tmp_path / "runs", cohorts, "2025-02-01-m2", "2025-02-01")
    report = build_report(run, tmp_path / "out")
    key = ((LEAF, "zorgtoeslag"), (LEAF, "status_unknown"))
    assert report.protected.count("withheld_reasons", key) == 14
    rows = pq.read_table(report.tables_dir / "withheld_reasons.parquet").to_pylist()
    assert "not_recorded" not in {r["reason"] for r in rows}
    assert "not known whether it already receives the scheme" in report.html.read_text()
