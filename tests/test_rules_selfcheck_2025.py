"""Self-checks of the 2024-2026 parameter values: recompute independently published figures,
and the indexation the law prescribes from one year to the next, from the year files.

A value marked "corroborated" must reproduce figures published by someone else (README of
entitlement_rules). These tests read the real parameter files (load_rules, no copies) so that a
mistyped value fails here, not in production:

- kindgebonden budget: the amounts of Wkb art. 2 lid 4, 5 and 8 are indexed every 1 January
  with the tabelcorrectiefactor (Wkb art. 3 lid 1), which also indexes the asset limits of
  art. 1 lid 4 (published independently by Meijburg & Co for 2024 and 2025); the thresholds use
  the same drempelinkomen as the zorgtoeslag, whose asset limits (Wzt art. 3 lid 2) follow the
  same factor;
- AIO and kwijtschelding read the same Participatiewet norms; the 2026 AOW amounts must agree
  with the net amounts and the Zvw contribution the secondary sources published;
- huurtoeslag 2025: the statutory amounts reproduce the 16 monthly amounts metronieuws.nl
  published for 2025, and the compiled rule reproduces the one below the minimum-inkomensijkpunt.
"""

from __future__ import annotations

import shutil
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from entitlement_rules import compile_rule, evaluate, load_rules
from entitlement_rules.loader import DEFAULT_ROOT
from pipelines.household import COLUMN_NAMES, SCHEMA

RULES = {rule.id: rule for rule in load_rules()}


def value(scheme: str, year: int, name: str):
    return RULES[scheme].parameter_sets[year].values[name].value


def ceil_euro(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal(1), rounding=ROUND_CEILING)


# -- kindgebonden budget --------------------------------------------------------------------------


def tabelcorrectiefactor(year: int) -> Decimal:
    """The factor from `year - 1` to `year`, from the asset limits it indexes (3 decimals)."""
    factors = {
        (
            value("kindgebonden_budget", year, n) / value("kindgebonden_budget", year - 1, n)
        ).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
        for n in ("asset_limit_single", "asset_limit_partner")
    }
    assert len(factors) == 1, factors
    return factors.pop()


@pytest.mark.parametrize("year", [2025, 2026])
def test_kindgebonden_budget_indexed_amounts_follow_the_tabelcorrectiefactor(year):
    factor = tabelcorrectiefactor(year)
    assert factor == {2025: Decimal("1.012"), 2026: Decimal("1.029")}[year]

    def partner_increase(y: int) -> Decimal:  # the "met EUR ... verhoogde drempelinkomen"
        kgb = "kindgebonden_budget"
        return value(kgb, y, "threshold_partner") - value(kgb, y, "threshold_single")

    for name in ("supplement_12_15", "supplement_16_17"):
        before = value("kindgebonden_budget", year - 1, name)
        assert ceil_euro(before * factor) == value("kindgebonden_budget", year, name), name
    assert ceil_euro(partner_increase(year - 1) * factor) == partner_increase(year)


def test_kindgebonden_budget_2025_amounts_match_the_published_changes():
    # wierdavannes.nl (18 September 2024) and metronieuws.nl (December 2024): the budget per
    # child rises by EUR 75, the alleenstaande-ouderkop falls by EUR 91, the afbouw goes from
    # 6.75% to 7.10% (Wkb art. 3 lid 11: no indexation of these amounts on 1 January 2025).
    kgb = "kindgebonden_budget"
    assert value(kgb, 2025, "amount_per_child") - value(kgb, 2024, "amount_per_child") == 75
    assert (
        value(kgb, 2024, "single_parent_supplement") - value(kgb, 2025, "single_parent_supplement")
        == 91
    )
    # percentages are held as fractions: 6.75% is 0.0675
    assert (value(kgb, 2024, "afbouw_pct"), value(kgb, 2025, "afbouw_pct")) == (
        Decimal("0.0675"),
        Decimal("0.0710"),
    )


@pytest.mark.parametrize(
    ("name", "change"),
    [("amount_per_child", -71 + 68), ("single_parent_supplement", -71)],
)
def test_kindgebonden_budget_2026_amounts_follow_indexation_and_the_statutory_changes(name, change):
    # Wkb art. 3 lid 1 (indexation), lid 6 (lid 2 and 6 lowered by EUR 71 from 2026) and lid 7
    # (lid 2 raised by EUR 68 from 2026), applied after the indexation (lid 8). The law's
    # rounding of these two amounts is not stated: the result must lie within one euro.
    indexed = value("kindgebonden_budget", 2025, name) * tabelcorrectiefactor(2026) + change
    assert abs(indexed - value("kindgebonden_budget", 2026, name)) < 1, indexed


@pytest.mark.parametrize("year", [2024, 2025, 2026])
def test_kindgebonden_budget_threshold_is_the_zorgtoeslag_drempelinkomen(year):
    # Wkb art. 1 lid 1 onder d and Wzt art. 1 lid 1 onder f define the same drempelinkomen.
    assert value("kindgebonden_budget", year, "threshold_single") == value(
        "zorgtoeslag", year, "drempelinkomen"
    )


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [("asset_limit_single", 2025, 2026), ("asset_limit_partner", 2025, 2026)],
)
def test_zorgtoeslag_asset_limits_follow_the_tabelcorrectiefactor(name, before, after):
    # Wzt art. 3 lid 2: the amounts of lid 1 are indexed every 1 January with the
    # tabelcorrectiefactor (1.029 for 2026, from the kindgebonden budget asset limits above). The
    # rounding is not stated in the Wzt: the result must lie within one euro.
    indexed = value("zorgtoeslag", before, name) * tabelcorrectiefactor(after)
    assert abs(indexed - value("zorgtoeslag", after, name)) < 1, indexed


# -- AIO and kwijtschelding -----------------------------------------------------------------------


def test_aio_and_kwijtschelding_use_the_same_pensioner_norms_in_2025():
    assert value("aio", 2025, "norm_single") == value(
        "kwijtschelding", 2025, "norm_single_pensioner"
    )
    assert value("aio", 2025, "norm_couple") == value(
        "kwijtschelding", 2025, "norm_couple_pensioner"
    )


@pytest.mark.parametrize("year", [2024, 2025, 2026])
def test_aio_family_asset_limit_is_twice_the_single_limit(year):
    # Participatiewet art. 34 lid 3: the amounts for a single parent and for a couple are equal
    # and twice the single amount in every year read.
    assert value("aio", year, "asset_limit_family") == 2 * value("aio", year, "asset_limit_single")


@pytest.mark.parametrize(
    ("name", "net", "zvw"),
    [
        # metronieuws.nl (12-12-2025), welingelichtekringen.nl (15-12-2025): net with
        # loonheffingskorting and the Zvw-bijdrage (4.85%); no loonheffing is withheld then.
        ("full_aow_single", Decimal("1558.15"), Decimal("79.42")),
        ("full_aow_partner", Decimal("1067.70"), Decimal("54.42")),
    ],
)
def test_aio_2026_aow_amounts_agree_with_the_published_net_amounts(name, net, zvw):
    gross = value("aio", 2026, name)
    assert gross - zvw == net
    assert (gross * Decimal("0.0485")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) == zvw


# -- huurtoeslag 2025 -----------------------------------------------------------------------------

# metronieuws.nl / nosnews.nl (January 2025): huurtoeslag per month for a single person of 27,
# kale huur EUR 900, no service costs, by income. Amounts in whole euros (rounded down).
PUBLISHED_2025 = {
    22000: 498, 23500: 482, 25000: 449, 26500: 414, 28000: 378, 29500: 339, 31000: 299,
    32500: 257, 34000: 215, 35500: 185, 37000: 153, 39500: 98, 41000: 72, 43500: 35,
    45000: 11, 46500: 0,
}  # fmt: skip
# Wht art. 18 (text valid from 2025-01-01): referentie-inkomensijkpunt of a one-person household
# and its normhuur, EUR 483,78 minus EUR 2,27. Not parameters of the rule.
REFERENCE_INCOME, REFERENCE_NORMHUUR = Decimal(32625), Decimal("483.78") - Decimal("2.27")
# Wht art. 17 lid 2-3 (text valid from 2025-01-01): the normhuur at the minimum-inkomensijkpunt of a
# one-person household, EUR 238,01 minus EUR 1,82, here WITHOUT the "verhoogd met EUR 12" of art. 16
# (unresolved, see minimum_basishuur_single in parameters/huurtoeslag/2025.yaml, which is null).
# That only this reproduces the published amounts is part of the evidence recorded there.
MINIMUM_NORMHUUR = Decimal("238.01") - Decimal("1.82")
# Inferred, NOT official: the one minimum-inkomensijkpunt (Wht art. 17 lid 1 onder a, multiple
# of EUR 25) with which the amounts are reproduced. The Regeling huurtoeslaggrenzen 2025 was not
# found; see parameters/huurtoeslag/2025.yaml.
INFERRED_MINIMUM_INCOME = Decimal(22700)


def huurtoeslag_2025_month(income: Decimal, rent: Decimal) -> Decimal:
    """Wht art. 16-21 (2025) for a one-person household, with the 2025 year file's values."""
    p = {n: v.value for n, v in RULES["huurtoeslag"].parameter_sets[2025].values.items()}
    minimum = MINIMUM_NORMHUUR
    if income <= INFERRED_MINIMUM_INCOME:  # art. 19 lid 1
        normhuur = minimum
    else:  # art. 19 lid 2-3: a and b from the linear relation of the normhuurquotes
        q_min = minimum / INFERRED_MINIMUM_INCOME
        q_ref = REFERENCE_NORMHUUR / REFERENCE_INCOME
        a = (q_ref - q_min) / (REFERENCE_INCOME - INFERRED_MINIMUM_INCOME)
        b = q_min - a * INFERRED_MINIMUM_INCOME
        normhuur = (a * income * income + b * income).quantize(Decimal("0.01"), ROUND_CEILING)
    basishuur = normhuur - p["basishuur_reduction"]
    kkg, aftopping = p["kwaliteitskortingsgrens"], p["aftoppingsgrens_small"]
    return (
        max(Decimal(0), min(rent, kkg) - basishuur)
        + p["pct_above_kkg"] * max(Decimal(0), min(rent, aftopping) - max(kkg, basishuur))
        + p["pct_above_aftopping"] * max(Decimal(0), rent - max(aftopping, basishuur))
    )


@pytest.mark.parametrize(("income", "published"), sorted(PUBLISHED_2025.items()))
def test_huurtoeslag_2025_amounts_reproduce_the_published_table(income, published):
    month = huurtoeslag_2025_month(Decimal(income), Decimal(900))
    assert int(month) == published, month


def test_the_huurtoeslag_rule_with_the_2025_amounts_reproduces_the_published_minimum_case(
    tmp_path: Path,
):
    """Below the minimum-inkomensijkpunt the factors do not matter: set them to 0 (fixture)."""
    root = tmp_path / "rules"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = root / "parameters" / "huurtoeslag" / "2025.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    fixture = {"status": "verified", "source": "test fixture, not law: unused below the ijkpunt"}
    for name in ("factor_a_single", "factor_b_single", "factor_a_multi", "factor_b_multi"):
        data["values"][name] |= {"value": "0"} | fixture
    # The minimum basishuur is null in the year file (the art. 16 amount is unresolved); this
    # check uses the art. 17 lid 2-3 amounts without it (238.01 - 1.82 and 238.01 - 3.63).
    minimum = {"minimum_basishuur_single": "236.19", "minimum_basishuur_multi": "234.38"}
    for name, amount in minimum.items():
        data["values"][name] |= {"value": amount} | fixture
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    (rule,) = load_rules(schemes=["huurtoeslag"], root=root)
    row = dict.fromkeys(COLUMN_NAMES) | {
        "household_pid": "h0",
        "applicant_pid": "a0",
        "applicant_age": 27,
        "has_partner": False,
        "n_persons": 1,
        "tenure": "private_rent",
        "monthly_rent": Decimal(900),
        "service_costs": Decimal(0),
        "income_known": True,
        "income_year": 2025,
        "income_status": "definitive",
        "household_income": Decimal(22000),
        "combined_assets": Decimal(0),
        "receiving_schemes": [],
        "children_ages": [],
    }
    con = duckdb.connect()
    con.register("households", pa.Table.from_pylist([row], schema=SCHEMA))
    out = evaluate(con, "households", [compile_rule(rule, 2025)], explain="none")
    ((entitled, amount),) = out.select("entitled, estimated_annual_amount").fetchall()
    # (477.20 - 199.05) + 65% x 205.76 + 40% x 217.04 = 498.71 a month; published: 498
    assert entitled and amount == Decimal("5984.52")
    assert int(amount / 12) == PUBLISHED_2025[22000]
