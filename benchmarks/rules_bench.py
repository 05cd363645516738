"""Times evaluate() of all five schemes over 1M synthetic household rows in DuckDB.

    .venv/bin/python benchmarks/rules_bench.py [--rows N] [--year Y] [--modes none,entitled,all]

Households are generated set-based in DuckDB with the columns of pipelines/household.SCHEMA
(ages, partners, children, incomes, assets, rents, municipalities). Schemes whose parameters
for --year are not confirmed yet are compiled from a temporary copy of the rules with
made-up fixture values ("benchmark fixture, not law"), so the SQL measured is the real rule's
SQL; the figures say which schemes ran on fixtures. Prints seconds per explain mode.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from entitlement_rules import compile_rule, evaluate, load_rules
from entitlement_rules.loader import DEFAULT_ROOT
from pipelines.household import SCHEMA

# Made-up values to compile schemes that have no confirmed year yet. NOT law.
FIXTURES = {
    "kindgebonden_budget": {
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
    },
    "aio": {
        "pension_age": 67,
        "norm_single": "1500",
        "norm_couple": "2000",
        "full_aow_single": "1600",
        "full_aow_partner": "1100",
        "asset_limit_single": "8000",
        "asset_limit_family": "16000",
    },
    "kwijtschelding": {
        "pension_age": 67,
        "norm_single": "1300",
        "norm_couple": "1900",
        "norm_single_pensioner": "1500",
        "norm_couple_pensioner": "2000",
    },
    "huurtoeslag": {
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
    },
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
TAG = {"unit": "fixture", "status": "verified", "source": "benchmark fixture, not law"}

HOUSEHOLDS_SQL = """
SELECT
    'h' || i AS household_pid,
    'a' || i AS applicant_pid,
    CASE WHEN i % 3 = 0 THEN 'p' || i END AS partner_pid,
    ['GM0344', 'GM0307', 'GM0356'][1 + i % 3] AS municipality_code,
    'WK' || (i % 50) AS district_code,
    DATE '{year}-01-01' AS reference_date,
    CAST(18 + (i * 7919) % 75 AS INTEGER) AS applicant_age,
    CASE WHEN i % 3 = 0 THEN CAST(18 + (i * 104729) % 75 AS INTEGER) END AS partner_age,
    i % 3 = 0 AS has_partner,
    CAST(1 + (i % 3 = 0)::INT + (i % 4) AS INTEGER) AS n_persons,
    CAST(1 + (i % 3 = 0)::INT AS INTEGER) AS n_adults,
    CAST(i % 4 AS INTEGER) AS n_children,
    list_transform(range(i % 4), LAMBDA x: CAST((i + 5 * x) % 18 AS INTEGER)) AS children_ages,
    i % 97 = 0 AS applicant_deregistered,
    i % 211 <> 0 AS applicant_insured,
    CASE WHEN i % 3 = 0 THEN TRUE END AS partner_insured,
    CAST({year} - i % 3 AS INTEGER) AS income_year,
    ['definitive', 'provisional', 'estimated'][1 + i % 3] AS income_status,
    i % 53 <> 0 AS income_known,
    CAST((i * 37) % 60000 AS DECIMAL(14, 2)) AS applicant_income,
    CASE WHEN i % 3 = 0 THEN CAST((i * 53) % 40000 AS DECIMAL(14, 2)) END AS partner_income,
    CAST((i * 37) % 60000 + CASE WHEN i % 3 = 0 THEN (i * 53) % 40000 ELSE 0 END
        AS DECIMAL(14, 2)) AS combined_income,
    CAST((i * 37) % 60000 + (i * 11) % 9000 AS DECIMAL(14, 2)) AS household_income,
    CAST((i * 7) % 40000 AS DECIMAL(14, 2)) AS combined_assets,
    CAST((i * 7) % 40000 AS DECIMAL(14, 2)) AS household_assets,
    CASE WHEN i % 5 = 0 THEN ['zorgtoeslag'] ELSE [] END::VARCHAR[] AS receiving_schemes,
    CAST(CASE WHEN i % 4 = 0 THEN 1000 + (i % 600) ELSE 0 END AS DECIMAL(14, 2))
        AS aow_monthly_amount,
    ['social_rent', 'private_rent', 'owner_occupied'][1 + i % 3] AS tenure,
    CASE WHEN i % 3 <> 2 THEN CAST(400 + (i * 13) % 700 AS DECIMAL(14, 2)) END AS monthly_rent,
    CASE WHEN i % 3 <> 2 THEN CAST((i * 3) % 60 AS DECIMAL(14, 2)) END AS service_costs,
    CAST(0 AS INTEGER) AS arrears_count,
    CAST(0 AS DECIMAL(14, 2)) AS arrears_total,
    CAST(NULL AS INTEGER) AS arrears_max_months,
    []::VARCHAR[] AS arrears_sectors,
    []::VARCHAR[] AS objected_schemes,
    ['a' || i] AS member_pids
FROM range({rows}) AS r(i)
"""


def fixture_root(year: int) -> Path:
    """A temporary rules root in which every scheme has usable parameters for `year`."""
    root = Path(tempfile.mkdtemp(prefix="rules-bench-")) / "rules"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for rule in load_rules(years=[year]):
        if not rule.missing_parameters(year):
            continue
        data = {
            "scheme": rule.id,
            "year": year,
            "version": 1,
            "valid_from": f"{year}-01-01",
            "valid_to": f"{year}-12-31",
            "values": {k: {"value": v} | TAG for k, v in FIXTURES[rule.id].items()},
        }
        text = yaml.safe_dump(data).replace(f"'{year}-01-01'", f"{year}-01-01")
        text = text.replace(f"'{year}-12-31'", f"{year}-12-31")
        (root / "parameters" / rule.id / f"{year}.yaml").write_text(text, encoding="utf-8")
        for table in rule.tables:
            folder = root / "parameters" / rule.id / table / str(year)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for key in ("GM0344", "GM0307", "GM0356"):
                row = {
                    "scheme": rule.id,
                    "table": table,
                    "key": key,
                    "year": year,
                    "version": 1,
                    "values": {k: {"value": v} | TAG for k, v in MUNICIPAL.items()},
                }
                (folder / f"{key}.yaml").write_text(yaml.safe_dump(row), encoding="utf-8")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--modes", default="none,entitled,all")
    args = parser.parse_args()

    real = {r.id for r in load_rules(years=[args.year]) if not r.missing_parameters(args.year)}
    compiled = [
        compile_rule(r, args.year)
        for r in load_rules(years=[args.year], root=fixture_root(args.year))
    ]
    con = duckdb.connect()
    t = time.perf_counter()
    table = con.sql(HOUSEHOLDS_SQL.format(rows=args.rows, year=args.year)).to_arrow_table()
    households = table.cast(SCHEMA) if table.schema != SCHEMA else table
    con.register("households", pa.Table.from_batches(households.to_batches()))
    print(f"built {households.num_rows:,} household rows in {time.perf_counter() - t:.1f} s")
    print(
        f"schemes ({args.year}): "
        + ", ".join(
            f"{c.rule_id}{'' if c.rule_id in real else ' [fixture values]'}" for c in compiled
        )
    )
    for mode in args.modes.split(","):
        t = time.perf_counter()
        result = evaluate(con, "households", compiled, explain=mode).to_arrow_table()
        seconds = time.perf_counter() - t
        entitled = result.column("entitled").to_pylist().count(True)
        print(
            f"explain={mode:<9} {len(compiled)} schemes x {households.num_rows:,} households "
            f"= {result.num_rows:,} evaluations ({entitled:,} entitled) in {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
