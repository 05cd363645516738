"""The priority score of a household, and the operator's worklist built from a run's signals.

One household, one contact: the worklist has one row per household, with all its signals
across schemes, sorted by priority (highest first). The score, with weights and caps from
the `priority` section of privacy/proportionality.yaml (each with its reasoning there):

    priority      = 100 x (debt_weight x debt + benefit_weight x benefit), from 0 to 100
    debt          = sector x (months_factor + amount_factor) / 2, from 0 to 1
    sector        = the highest sector weight among the household's arrears (0: none)
    months_factor = min(arrears_max_months, months_cap) / months_cap
    amount_factor = min(arrears_total, amount_cap) / amount_cap
    benefit       = min(total estimated annual amount of its signals, benefit_cap) / benefit_cap

Ties go to the larger total amount, then to the household pseudonym, so the order is the
same every time. Only PRIORITY_INPUTS enter the score: early debt signals and amounts. No
age, household composition, location or any protected attribute or proxy (the fairness
guard of the rules, entitlement_rules/guard.py, is asked about every input).

The debt part uses the arrears fields for an individual decision (whom to contact first).
It is used only where the processing register allows those fields for that purpose without
the `aggregate_only` condition; otherwise debt is 0 for everyone and every row says why.

The worklist carries pseudonyms only (`applicant_pid`); re-identification for the
controller (privacy/reidentify.py) adds the BSN. CSV and Parquet hold the same flat table,
lists joined with "; ", ready to import into a case system.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.lifecycle import run_reader
from pipelines.proportionality import (
    PolicyError,
    config_version,
    decimal_in,
    field,
    read_config,
    reasoned,
    whole_in,
)
from privacy.files import written_whole

# What the score reads: household columns (pipelines/household.py) and the signals' amount.
HOUSEHOLD_INPUTS = ("arrears_sectors", "arrears_total", "arrears_max_months")
PRIORITY_INPUTS = (*HOUSEHOLD_INPUTS, "estimated_annual_amount")
# The source fields behind the debt part, which the register must allow for individual use.
DEBT_FIELDS = ("arrears.creditor_sector", "arrears.amount_overdue", "arrears.months_overdue")
SECTORS = ("housing", "energy", "water", "health_insurance")

WORKLIST_SCHEMA = pa.schema(
    [
        ("rank", pa.int32()),  # 1 = contact first
        ("priority", pa.decimal128(5, 2)),
        ("household_pid", pa.string()),
        ("applicant_pid", pa.string()),
        ("schemes", pa.string()),  # "huurtoeslag; zorgtoeslag", sorted
        ("signal_ids", pa.string()),  # in the order of `schemes`
        ("statuses", pa.string()),  # lifecycle per signal: new or repeated
        ("signals", pa.int32()),
        ("estimated_total_amount", pa.decimal128(14, 2)),
        ("min_confidence", pa.float64()),
        ("repayment_risk", pa.bool_()),  # any signal on an income that may still change
        ("explanation", pa.string()),  # per scheme: "<scheme>: <explanation>", " | "-joined
        ("explanation_nl", pa.string()),
        ("priority_explanation", pa.string()),
        ("run_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class Weights:
    """The `priority` section of the configuration, validated."""

    debt_weight: Decimal
    benefit_weight: Decimal
    sector_weights: tuple[tuple[str, Decimal], ...]
    months_cap: int
    amount_cap: Decimal
    benefit_cap: Decimal
    version: str


def load_weights(path: Path | str | None = None) -> Weights:
    """Read and validate the priority weights (default privacy/proportionality.yaml)."""
    path, data = read_config(path)
    unit = (Decimal("0"), Decimal("1"))
    reasoned(path, data, "priority")
    debt = decimal_in(path, data, "priority.debt_weight", *unit)
    benefit = decimal_in(path, data, "priority.benefit_weight", *unit)
    if debt + benefit != 1:
        raise PolicyError(
            f"{path}: priority.debt_weight + priority.benefit_weight must be 1, "
            f"not {debt + benefit}."
        )
    sectors = field(path, data, "priority.sector_weights")
    if not isinstance(sectors, dict) or set(sectors) != set(SECTORS):
        raise PolicyError(
            f"{path}: priority.sector_weights must give exactly {', '.join(SECTORS)}, "
            f"not {sectors!r}."
        )
    positive = (Decimal("0.01"), Decimal("1000000"))
    return Weights(
        debt_weight=debt,
        benefit_weight=benefit,
        sector_weights=tuple(
            (s, decimal_in(path, data, f"priority.sector_weights.{s}", *unit)) for s in SECTORS
        ),
        months_cap=whole_in(path, data, "priority.months_cap", 1, 120),
        amount_cap=decimal_in(path, data, "priority.amount_cap", *positive),
        benefit_cap=decimal_in(path, data, "priority.benefit_cap", *positive),
        version=config_version(data.get("priority", {})),
    )


def debt_use(register, purpose: str) -> str | None:
    """Why the debt part may not be used for `purpose`, or None when the register allows it."""
    if register is None:
        return "no processing register given"
    activity = register.activity(purpose)
    if activity is None:
        return f"purpose {purpose} is not in the register"
    for source_field in DEBT_FIELDS:
        source, name = source_field.split(".", 1)
        rule = activity.field(source, name)
        if rule is None or not rule.usable:
            return f"{source_field} is not allowed for {purpose}"
        if "aggregate_only" in rule.conditions:
            return f"{source_field} is for aggregate use only under {purpose}"
    return None


def _sql_decimal(value: Decimal) -> str:
    return f"CAST('{value}' AS DOUBLE)"


def worklist_sql(weights: Weights, use_debt: bool, why_not: str) -> str:
    """Signals `s` and households `h` in, one scored row per household out, sorted."""
    sector = " ".join(f"WHEN '{s}' THEN {_sql_decimal(w)}" for s, w in weights.sector_weights)
    months, amount = weights.months_cap, _sql_decimal(weights.amount_cap)
    debt = (
        f"coalesce(list_max(list_transform(h.arrears_sectors, lambda x: CASE x {sector} "
        "ELSE 0.0 END)), 0.0) * (least(coalesce(h.arrears_max_months, 0), "
        f"{months}) / {months}.0 + least(coalesce(CAST(h.arrears_total AS DOUBLE), 0.0), "
        f"{amount}) / {amount}) / 2"
        if use_debt
        else "0.0"
    )
    debt_text = (
        "printf('debt %.3f: %s arrears, %d of %d months, EUR %s of %s', debt, "
        "coalesce(nullif(array_to_string(arrears_sectors, '+'), ''), 'no'), "
        f"coalesce(arrears_max_months, 0), {months}, "
        f"coalesce(CAST(arrears_total AS VARCHAR), '0.00'), '{weights.amount_cap}')"
        if use_debt
        else f"'debt not used ({why_not})'"
    )
    return f"""
WITH grouped AS (
    SELECT household_pid, min(applicant_pid) AS applicant_pid,
        string_agg(scheme, '; ' ORDER BY scheme) AS schemes,
        string_agg(signal_id, '; ' ORDER BY scheme) AS signal_ids,
        string_agg(coalesce(status, 'new'), '; ' ORDER BY scheme) AS statuses,
        CAST(count(*) AS INTEGER) AS signals,
        CAST(sum(estimated_annual_amount) AS DECIMAL(14, 2)) AS estimated_total_amount,
        min(confidence) AS min_confidence,
        bool_or(repayment_risk) AS repayment_risk,
        string_agg(scheme || ': ' || coalesce(explanation, ''), ' | ' ORDER BY scheme)
            AS explanation,
        string_agg(scheme || ': ' || coalesce(explanation_nl, ''), ' | ' ORDER BY scheme)
            AS explanation_nl,
        min(run_id) AS run_id
    FROM s
    GROUP BY household_pid
),
parts AS (
    SELECT g.*, h.arrears_sectors, h.arrears_total, h.arrears_max_months,
        {debt} AS debt,
        least(CAST(g.estimated_total_amount AS DOUBLE), {_sql_decimal(weights.benefit_cap)})
            / {_sql_decimal(weights.benefit_cap)} AS benefit
    FROM grouped AS g
    LEFT JOIN h USING (household_pid)
),
scored AS (
    SELECT *, CAST(round(100 * ({_sql_decimal(weights.debt_weight)} * debt
        + {_sql_decimal(weights.benefit_weight)} * benefit), 2) AS DECIMAL(5, 2)) AS priority
    FROM parts
)
SELECT
    CAST(row_number() OVER (
        ORDER BY priority DESC, estimated_total_amount DESC, household_pid
    ) AS INTEGER) AS rank,
    priority, household_pid, applicant_pid, schemes, signal_ids, statuses, signals,
    estimated_total_amount, min_confidence, repayment_risk, explanation, explanation_nl,
    printf('priority %s = 100 x (%s x debt + %s x benefit); ', CAST(priority AS VARCHAR),
        '{weights.debt_weight}', '{weights.benefit_weight}')
        || {debt_text}
        || printf('; benefit %.3f: EUR %s a year of %s', benefit,
            CAST(estimated_total_amount AS VARCHAR), '{weights.benefit_cap}')
        AS priority_explanation,
    run_id
FROM scored
ORDER BY rank
"""


def worklist_table(
    signals: pa.Table,
    households: pa.Table,
    *,
    register=None,
    purpose: str = "",
    config: Path | str | None = None,
) -> pa.Table:
    """The worklist (WORKLIST_SCHEMA, pseudonyms only) of a run's signals and households.

    `register` and `purpose` decide whether the debt part may be used (see debt_use).
    """
    weights = load_weights(config)
    why_not = debt_use(register, purpose)
    con = duckdb.connect()
    try:
        con.register("s", signals)
        con.register("h", households.select(["household_pid", *HOUSEHOLD_INPUTS]))
        sql = worklist_sql(weights, why_not is None, why_not or "")
        return con.sql(sql).to_arrow_table().cast(WORKLIST_SCHEMA)
    finally:
        con.close()


def build_worklist(
    run_dir: Path, read=None, *, register=None, config: Path | str | None = None
) -> pa.Table:
    """The worklist of a published run folder; the purpose is the run's processing activity.

    `read(run_dir, name)` opens its tables (default lifecycle.run_reader(): plain files
    only; give it the keyring for an encrypted run).
    """
    read = read or run_reader()
    run_dir = Path(run_dir)
    purpose = json.loads((run_dir / "manifest.json").read_text())["processing_activity_id"]
    return worklist_table(
        read(run_dir, "signals.parquet"),
        read(run_dir, "households"),
        register=register,
        purpose=purpose,
        config=config,
    )


def write_worklist(table: pa.Table, csv_path: Path) -> tuple[Path, Path]:
    """Write the worklist as CSV and, next to it, Parquet; each atomically, owner-only."""
    csv_path = Path(csv_path)
    parquet_path = csv_path.with_suffix(".parquet")
    for path, write in ((parquet_path, pq.write_table), (csv_path, pacsv.write_csv)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path, private=True) as tmp:
            write(table, tmp)
    return csv_path, parquet_path
