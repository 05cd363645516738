"""The formulas of huurtoeslag, kindgebonden budget, kwijtschelding and AIO against hand
computations, on test-fixture parameters.

The real years are checked by their truth tables (cases/<scheme>.yaml, run below) and
tests/test_rules_selfcheck_2025.py. These tests pin the formula itself, including shapes no
real year has yet (huurtoeslag's 2026 linear afbouw): each writes a year file of made-up,
clearly labelled fixture values (year 2099: "test fixture, not law") into a temporary copy of
the rules and evaluates households in real DuckDB. This also proves that a new benefit year and
a new municipality are data files, never code changes.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from entitlement_rules import compile_rule, evaluate, load_rules, run_cases
from entitlement_rules.loader import DEFAULT_ROOT
from flows.cli import main as signals
from pipelines.household import COLUMN_NAMES, SCHEMA

FIXTURE = {"unit": "test", "status": "verified", "source": "test fixture, not law"}


def fixture_year(root: Path, scheme: str, year: int, values: dict) -> None:
    data = {
        "scheme": scheme,
        "year": year,
        "version": 1,
        "valid_from": f"{year}-01-01",
        "valid_to": f"{year}-12-31",
        "values": {k: {"value": v} | FIXTURE for k, v in values.items()},
    }
    text = yaml.safe_dump(data).replace(f"'{year}-01-01'", f"{year}-01-01")
    (root / "parameters" / scheme / f"{year}.yaml").write_text(
        text.replace(f"'{year}-12-31'", f"{year}-12-31"), encoding="utf-8"
    )


def municipal_row(root: Path, year: int, key: str, values: dict) -> None:
    folder = root / "parameters" / "kwijtschelding" / "municipal" / str(year)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"scheme": "kwijtschelding", "table": "municipal", "key": key, "year": year}
    data |= {"version": 1, "values": {k: {"value": v} | FIXTURE for k, v in values.items()}}
    (folder / f"{key}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.fixture
def root(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(DEFAULT_ROOT, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy


def run(root: Path, scheme: str, year: int, *households: dict, explain: str = "all") -> list:
    (rule,) = load_rules(schemes=[scheme], root=root)
    rows = []
    for i, h in enumerate(households):
        row = dict.fromkeys(COLUMN_NAMES) | {"household_pid": f"h{i}", "applicant_pid": f"a{i}"}
        row |= {"income_known": True, "income_year": year, "income_status": "definitive"}
        row |= {"receiving_schemes": [], "children_ages": [], "n_persons": 1}
        rows.append(
            row
            | {k: Decimal(v) if isinstance(v, str) and v[:1].isdigit() else v for k, v in h.items()}
        )
    con = duckdb.connect()
    con.register("households", pa.Table.from_pylist(rows, schema=SCHEMA))
    out = evaluate(con, "households", [compile_rule(rule, year)], explain=explain)
    return (
        out.order("household_pid")
        .select("entitled, estimated_annual_amount, failed_conditions, explanation")
        .fetchall()
    )


def amounts(results) -> list:
    return [(r[0], None if r[1] is None else str(r[1]), r[2]) for r in results]


# -- kindgebonden budget ------------------------------------------------------------------------

KGB = {
    "amount_per_child": "2000",
    "supplement_age_from": 12,
    "supplement_12_15": "500",
    "supplement_second_age_from": 16,
    "supplement_16_17": "700",
    "single_parent_supplement": "3000",
    "threshold_single": "25000",
    "threshold_partner": "35000",
    "afbouw_pct": "7",
    "asset_limit_single": "100000",
    "asset_limit_partner": "150000",
}


def test_kindgebonden_budget_formula_on_fixture_values(root):
    fixture_year(root, "kindgebonden_budget", 2099, KGB)
    couple = {"has_partner": True, "combined_assets": "0"}
    got = amounts(
        run(
            root,
            "kindgebonden_budget",
            2099,
            # 1 child of 7, income under the partner threshold: 2,000
            couple | {"children_ages": [7], "combined_income": "30000"},
            # 2 x 2,000 + 500 (13) + 700 (16) = 5,200; 7% x (40,000 - 35,000) = 350 -> 4,850
            couple | {"children_ages": [13, 16], "combined_income": "40000"},
            # single parent: 2,000 + 3,000 = 5,000; 7% x (30,000 - 25,000) = 350 -> 4,650
            {
                "has_partner": False,
                "children_ages": [3],
                "combined_income": "30000",
                "combined_assets": "0",
            },
            # 7% x (70,000 - 35,000) = 2,450 > 2,000: nothing
            couple | {"children_ages": [7], "combined_income": "70000"},
            # no children
            couple | {"children_ages": [], "combined_income": "20000"},
            # assets one cent over the partner limit
            couple
            | {"children_ages": [7], "combined_income": "20000", "combined_assets": "150000.01"},
        )
    )
    assert got == [
        (True, "2000.00", []),
        (True, "4850.00", []),
        (True, "4650.00", []),
        (False, None, ["budget_positive"]),
        (False, None, ["has_children", "budget_positive"]),
        (False, None, ["assets_within_limit"]),
    ]


# -- AIO ----------------------------------------------------------------------------------------

AIO = {
    "pension_age": 67,
    "norm_single": "1500",
    "norm_couple": "2000",
    "full_aow_single": "1600",
    "full_aow_partner": "1100",
    "asset_limit_single": "8000",
    "asset_limit_family": "16000",
}


def test_aio_formula_on_fixture_values(root):
    fixture_year(root, "aio", 2099, AIO)
    single = {
        "has_partner": False,
        "applicant_age": 70,
        "aow_monthly_amount": "1200",
        "combined_assets": "0",
    }
    got = amounts(
        run(
            root,
            "aio",
            2099,
            single | {"combined_income": "15000"},  # 12 x 1,500 - 15,000 = 3,000
            single | {"applicant_age": 66, "combined_income": "15000"},
            single | {"aow_monthly_amount": "1600", "combined_income": "15000"},  # full AOW
            # partner of 60 gets no AOW: full household AOW 1,100 > 1,000 paid;
            # 12 x 2,000 - 20,000 = 4,000
            {
                "has_partner": True,
                "applicant_age": 70,
                "partner_age": 60,
                "aow_monthly_amount": "1000",
                "combined_income": "20000",
                "combined_assets": "0",
            },
            single | {"combined_income": "18000"},  # exactly 12 x the norm: not below it
            single | {"combined_income": "15000", "combined_assets": "8000.01"},
        )
    )
    assert got == [
        (True, "3000.00", []),
        (False, None, ["pensionable_age"]),
        (False, None, ["aow_incomplete"]),
        (True, "4000.00", []),
        (False, None, ["income_below_norm"]),
        (False, None, ["assets_within_limit"]),
    ]


# -- kwijtschelding -----------------------------------------------------------------------------

KWIJT = {
    "pension_age": 67,
    "norm_single": "1300",
    "norm_couple": "1900",
    "norm_single_pensioner": "1500",
    "norm_couple_pensioner": "2000",
}
MUNICIPAL = {
    "cost_norm_pct": "100",
    "capacity_share_pct": "80",
    "asset_allowance": "2000",
    "waste_levy_1": "300",
    "waste_levy_2": "400",
    "waste_levy_3": "450",
    "waste_levy_4": "500",
    "sewage_levy_owner": "250",
}


def test_kwijtschelding_formula_on_fixture_values(root):
    fixture_year(root, "kwijtschelding", 2099, KWIJT)
    municipal_row(root, 2099, "GM0344", MUNICIPAL)
    single = {
        "municipality_code": "GM0344",
        "applicant_age": 40,
        "has_partner": False,
        "tenure": "social_rent",
        "combined_assets": "0",
    }
    got = amounts(
        run(
            root,
            "kwijtschelding",
            2099,
            # costs 100% x 12 x 1,300 = 15,600 > income: no capacity, all 300 remitted
            single | {"combined_income": "15000"},
            # capacity 400; 80% = 320 > 300: nothing remitted
            single | {"combined_income": "16000"},
            # capacity 200; 300 - 80% x 200 = 140
            single | {"combined_income": "15800"},
            # pensioner couple, owner, 4 persons: 500 + 250 sewage; 12 x 2,000 > 20,000
            {
                "municipality_code": "GM0344",
                "applicant_age": 70,
                "has_partner": True,
                "n_persons": 4,
                "tenure": "owner_occupied",
                "combined_income": "20000",
                "combined_assets": "0",
            },
            single | {"municipality_code": "GM0999", "combined_income": "15000"},
            # assets allowed: one month's costs of living 100% x 1,300 + 2,000 = 3,300
            single | {"combined_income": "15000", "combined_assets": "3300"},
            single | {"combined_income": "15000", "combined_assets": "3300.01"},
        )
    )
    assert got == [
        (True, "300.00", []),
        (False, None, ["remission_positive"]),
        (True, "140.00", []),
        (True, "750.00", []),
        (
            False,
            None,
            ["municipal_parameters_known", "assets_within_allowance", "remission_positive"],
        ),
        (True, "300.00", []),
        (False, None, ["assets_within_allowance"]),
    ]


def test_a_new_municipality_is_a_new_file(root):
    fixture_year(root, "kwijtschelding", 2099, KWIJT)
    municipal_row(root, 2099, "GM0344", MUNICIPAL)
    household = {
        "municipality_code": "GM0307",
        "applicant_age": 40,
        "has_partner": False,
        "tenure": "social_rent",
        "combined_assets": "0",
        "combined_income": "15000",
    }
    assert run(root, "kwijtschelding", 2099, household)[0][0] is False
    municipal_row(root, 2099, "GM0307", MUNICIPAL | {"waste_levy_1": "200"})
    assert amounts(run(root, "kwijtschelding", 2099, household)) == [(True, "200.00", [])]


def test_a_municipal_row_file_must_name_its_own_key(root):
    fixture_year(root, "kwijtschelding", 2099, KWIJT)
    municipal_row(root, 2099, "GM0344", MUNICIPAL)
    path = root / "parameters" / "kwijtschelding" / "municipal" / "2099" / "GM0344.yaml"
    path.rename(path.with_name("GM0363.yaml"))
    with pytest.raises(Exception, match=r"GM0363\.yaml: key must be 'GM0363'"):
        load_rules(schemes=["kwijtschelding"], root=root)


# -- huurtoeslag --------------------------------------------------------------------------------

HUUR = {
    "minimum_age": 18,
    "young_age": 23,
    "max_rent": "850",
    "young_max_rent": "450",
    "rent_limit_refuses": True,
    "service_costs_count": True,
    "max_service_costs": "48",
    "kwaliteitskortingsgrens": "450",
    "aftoppingsgrens_small": "650",
    "aftoppingsgrens_large": "700",
    "pct_above_kkg": "65",
    "pct_above_aftopping": "40",
    "factor_a_single": "0",
    "factor_b_single": "0.01",
    "factor_a_multi": "0",
    "factor_b_multi": "0.01",
    "minimum_basishuur_single": "220",
    "minimum_basishuur_multi": "230",
    "basishuur_reduction": "20",
    "afbouw_pct": "0",
    "afbouw_income_single": "0",
    "afbouw_income_multi": "0",
    "asset_limit_single": "30000",
    "asset_limit_partner": "60000",
}
# The 2026 shape: the maximum caps, service costs do not count, a linear afbouw.
HUUR_2026_SHAPE = HUUR | {
    "rent_limit_refuses": False,
    "service_costs_count": False,
    "afbouw_pct": "10",
    "afbouw_income_single": "25000",
}


def test_huurtoeslag_formula_on_fixture_values(root):
    fixture_year(root, "huurtoeslag", 2099, HUUR)
    renter = {
        "tenure": "social_rent",
        "applicant_age": 35,
        "has_partner": False,
        "combined_assets": "0",
        "monthly_rent": "600",
        "service_costs": "20",
    }
    got = amounts(
        run(
            root,
            "huurtoeslag",
            2099,
            # basishuur max(220, 1% x 20,000) - 20 = 200; rent 620: 250 + 65% x 170 = 360.50 a month
            renter | {"household_income": "20000"},
            # basishuur 300 - 20 = 280: 170 + 65% x 170 = 280.50 a month
            renter | {"household_income": "30000"},
            renter | {"monthly_rent": "900", "service_costs": "0", "household_income": "20000"},
            renter
            | {
                "applicant_age": 20,
                "monthly_rent": "500",
                "service_costs": "0",
                "household_income": "20000",
            },
            renter | {"tenure": "owner_occupied", "household_income": "20000"},
        )
    )
    assert got == [
        (True, "4326.00", []),
        (True, "3366.00", []),
        (False, None, ["rent_within_limit"]),
        (False, None, ["rent_within_limit"]),
        (False, None, ["rents_a_dwelling"]),
    ]


def test_huurtoeslag_in_the_2026_shape_caps_the_rent_and_reduces_linearly(root):
    fixture_year(root, "huurtoeslag", 2099, HUUR_2026_SHAPE)
    renter = {
        "tenure": "private_rent",
        "applicant_age": 35,
        "has_partner": False,
        "combined_assets": "0",
        "monthly_rent": "900",
        "service_costs": "30",
    }
    got = amounts(
        run(
            root,
            "huurtoeslag",
            2099,
            # rent capped at 850, service costs ignored: 250 + 65% x 200 + 40% x 200 = 460 a month
            renter | {"household_income": "20000"},
            # basishuur 280: 170 + 130 + 80 = 380 x 12 = 4,560 - 10% x 5,000 = 4,060
            renter | {"household_income": "30000"},
        )
    )
    assert got == [(True, "5520.00", []), (True, "4060.00", [])]


# -- explanations and the command line ------------------------------------------------------------


def test_explain_modes_change_only_the_explanation_text(root):
    fixture_year(root, "aio", 2099, AIO)
    households = [
        {
            "has_partner": False,
            "applicant_age": 70,
            "aow_monthly_amount": "1200",
            "combined_assets": "0",
            "combined_income": income,
        }
        for income in ("15000", "19000")
    ]
    full = run(root, "aio", 2099, *households)
    entitled = run(root, "aio", 2099, *households, explain="entitled")
    none = run(root, "aio", 2099, *households, explain="none")
    assert [r[:3] for r in full] == [r[:3] for r in entitled] == [r[:3] for r in none]
    assert entitled[0][3] == full[0][3] and "estimated EUR 3,000.00" in full[0][3]
    assert entitled[1][3] is None and full[1][3] and none[0][3] is None


def test_every_case_of_every_scheme_passes():
    results = run_cases()
    assert {r.scheme for r in results} == {
        "aio",
        "huurtoeslag",
        "kindgebonden_budget",
        "kwijtschelding",
        "zorgtoeslag",
    }
    assert [r for r in results if not r.passed] == []


def test_signals_rules_commands(capsys, root):
    assert signals(["rules", "list"]) == 0
    assert "kindgebonden_budget" in capsys.readouterr().out
    assert signals(["rules", "explain", "huurtoeslag", "--year", "2025"]) == 0
    out = capsys.readouterr().out
    assert "kwaliteitskortingsgrens = 477.20 EUR a month [corroborated]" in out
    assert "NOT compiled" in out
    assert signals(["rules", "test", "--scheme", "zorgtoeslag"]) == 0
    assert "60 passed, 0 failed" in capsys.readouterr().out
    cases = root / "cases" / "aio.yaml"
    text = cases.read_text()
    assert "estimated_annual_amount: '3012.84'" in text
    cases.write_text(
        text.replace("estimated_annual_amount: '3012.84'", "estimated_annual_amount: '3012.85'", 1)
    )
    assert signals(["rules", "test", "--scheme", "aio", "--root", str(root)]) == 1
    assert "FAIL aio" in capsys.readouterr().out
