"""Zorgtoeslag: the truth tables of cases/zorgtoeslag.yaml, run in real DuckDB, and self-checks
that recompute published figures (maximum amounts, income limits) from the base parameters."""

from __future__ import annotations

import random
import shutil
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from entitlement_rules import (
    MissingParameterError,
    compile_rule,
    evaluate,
    load_rules,
    run_cases,
)
from entitlement_rules.cases import load_cases
from entitlement_rules.loader import DEFAULT_ROOT
from pipelines.household import COLUMN_NAMES, SCHEMA

RULE = load_rules(schemes=["zorgtoeslag"])[0]
CASES = load_cases(RULE)
CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def results():
    return {r.name: r for r in run_cases("zorgtoeslag")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, results):
    result = results[case.name]
    assert result.passed, "\n".join(result.problems)


def test_every_case_is_run_exactly_once(results):
    assert sorted(results) == sorted(c.name for c in CASES)
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


def test_a_wrong_expectation_makes_its_case_fail(tmp_path):
    root = tmp_path / "rules"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = root / "cases" / "zorgtoeslag.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["cases"][0]["expect"]["estimated_annual_amount"] = "1573.43"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    results = {r.name: r for r in run_cases("zorgtoeslag", root=root)}
    first = results[data["cases"][0]["name"]]
    assert not first.passed
    assert first.problems == (
        "estimated_annual_amount: expected '1573.43', got Decimal('1573.42')",
    )


# -- self-checks: published figures recomputed from the base parameters --------------------------


def parameters(year: int) -> dict[str, Decimal | int]:
    return {n: v.value for n, v in RULE.parameter_sets[year].values.items()}


def maximum(year: int, partner: bool) -> Decimal:
    """Wzt art. 2 with an income at or below the drempelinkomen."""
    p = parameters(year)
    count, pct = (2, p["pct_partner"]) if partner else (1, p["pct_single"])
    return p["standaardpremie"] * count - pct * p["drempelinkomen"]


@pytest.mark.parametrize(
    ("partner", "annual", "monthly"),
    [(False, "1573.42", "131.12"), (True, "3010.21", "250.85")],
)
def test_the_2025_parameters_give_the_published_maximum_amounts(partner, annual, monthly):
    amount = maximum(2025, partner).quantize(CENT, ROUND_HALF_UP)
    assert amount == Decimal(annual)
    assert (amount / 12).quantize(CENT, ROUND_HALF_UP) == Decimal(monthly)


@pytest.mark.parametrize(("partner", "monthly"), [(False, 123), (True, 236)])
def test_the_2024_parameters_give_the_whole_euro_monthly_maxima(partner, monthly):
    # 2024 leaflet practice: the monthly amount rounded down (123.59 -> 123); 236.05 -> 236.
    assert (maximum(2024, partner) / 12).quantize(Decimal(1), ROUND_FLOOR) == monthly


@pytest.mark.parametrize(("partner", "monthly"), [(False, 129), (True, 246)])
def test_the_2026_parameters_give_the_published_monthly_maxima(partner, monthly):
    assert (maximum(2026, partner) / 12).quantize(Decimal(1), ROUND_FLOOR) == monthly


def reproduced_income_limit(year: int, partner: bool) -> int:
    """The largest whole-euro income whose amount, rounded to whole euros, is at least EUR 24.

    This is how the Dienst Toeslagen's published limits arise (Awir art. 14 lid 4: round to
    whole euros; lid 5: nothing under EUR 24), as read by a secondary source. Reproducing the
    published limits checks the percentages, the drempelinkomen and the limits together.
    """
    p = parameters(year)
    income = int(p["drempelinkomen"])
    step = 1 << 16
    while step:  # exponential search down from above: the amount falls as income rises
        candidate = income + step
        above = max(Decimal(0), Decimal(candidate) - p["drempelinkomen"])
        if (maximum(year, partner) - p["afbouw_pct"] * above).quantize(1, ROUND_HALF_UP) >= 24:
            income = candidate
        else:
            step //= 2
    return income


@pytest.mark.parametrize("year", [2024, 2025, 2026])
@pytest.mark.parametrize("partner", [False, True])
def test_the_published_income_limits_follow_from_the_base_parameters(year, partner):
    p = parameters(year)
    published = p["income_limit_partner" if partner else "income_limit_single"]
    assert reproduced_income_limit(year, partner) == published


# -- the statutory formula, independently in Python, against the compiled SQL --------------------


def reference(year: int, income: Decimal, assets: Decimal, partner: bool) -> Decimal | None:
    """Wzt art. 2 and 3 in plain Python: the amount, or None when not entitled."""
    p = parameters(year)
    limit = p["income_limit_partner" if partner else "income_limit_single"]
    asset_limit = p["asset_limit_partner" if partner else "asset_limit_single"]
    above = max(Decimal(0), income - p["drempelinkomen"])
    amount = maximum(year, partner) - p["afbouw_pct"] * above
    if income > limit or assets > asset_limit or amount <= 0:
        return None
    return amount.quantize(CENT, ROUND_HALF_UP)


@pytest.mark.parametrize("year", [2024, 2025, 2026])
def test_the_compiled_sql_agrees_with_the_formula_for_two_thousand_households(year):
    rng = random.Random(year)
    rows = []
    for i in range(2000):
        partner = rng.random() < 0.5
        row = dict.fromkeys(COLUMN_NAMES)
        row |= {
            "household_pid": f"h{i}",
            "applicant_pid": f"a{i}",
            "applicant_age": rng.randint(18, 90),
            "has_partner": partner,
            "partner_insured": True if partner else None,
            "applicant_deregistered": False,
            "applicant_insured": True,
            "income_known": True,
            "income_year": year,
            "income_status": "definitive",
            "combined_income": Decimal(rng.randint(0, 6_000_000)) / 100,
            "combined_assets": Decimal(rng.randint(0, 20_000_000)) / 100,
            "receiving_schemes": [],
        }
        rows.append(row)
    con = duckdb.connect()
    con.register("households", pa.Table.from_pylist(rows, schema=SCHEMA))
    out = evaluate(con, "households", [compile_rule(RULE, year)])
    got = dict(out.select("household_pid, estimated_annual_amount").fetchall())
    for row in rows:
        expected = reference(
            year, row["combined_income"], row["combined_assets"], row["has_partner"]
        )
        assert got[row["household_pid"]] == expected, row


# -- 2026 -------------------------------------------------------------------------------------


def test_2026_compiles_now_that_its_asset_limits_are_filled_in():
    # Wzt art. 3 lid 1 as valid from 2026-01-01, read in a verbatim copy (see the year file).
    compiled = compile_rule(RULE, 2026)
    assert compiled.year == 2026 and compiled.parameter_version.startswith("2026.2+")
    p = parameters(2026)
    assert (p["asset_limit_single"], p["asset_limit_partner"]) == (Decimal(146011), Decimal(184633))
    assert (p["pct_single"], p["pct_partner"], p["afbouw_pct"]) == (
        Decimal("0.01912"),
        Decimal("0.04289"),
        Decimal("0.1373"),
    )


def test_2024_2025_and_2026_are_ready_to_compile():
    assert RULE.years == (2024, 2025, 2026)
    assert RULE.ready_years() == (2024, 2025, 2026)


def test_a_year_without_a_parameter_file_is_refused_with_the_file_it_needs():
    with pytest.raises(MissingParameterError, match=r"parameters/zorgtoeslag/2023\.yaml"):
        compile_rule(RULE, 2023)


def test_the_2025_drempelinkomen_is_the_statutory_amount_rounded_to_whole_euros():
    statutory = Decimal("1.08") * 12 * Decimal("2191.80")
    assert statutory == Decimal("28405.728")
    assert parameters(2025)["drempelinkomen"] == statutory.quantize(1, ROUND_HALF_UP)


def test_percentages_are_stored_as_fractions():
    p = parameters(2025)
    assert (p["pct_single"], p["pct_partner"], p["afbouw_pct"]) == (
        Decimal("0.01896"),
        Decimal("0.04273"),
        Decimal("0.137"),
    )


def test_the_cases_cover_every_threshold_on_both_sides():
    names = " ".join(c.name for c in CASES)
    for phrase in (
        "exactly at the income limit",
        "one cent above the income limit",
        "exactly at the partner income limit",
        "one cent above the partner income limit",
        "assets exactly at the limit",
        "assets one cent above the limit",
        "17-year-old",
        "18-year-old",
    ):
        assert phrase in names, phrase


def test_cases_file_is_in_the_package():
    assert RULE.cases_path == Path(DEFAULT_ROOT) / "cases" / "zorgtoeslag.yaml"
