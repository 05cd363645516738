"""Runs compiled rules over a households table in DuckDB, as one set-based query.

evaluate(con, "households", compiled) returns a DuckDB relation with one row per
(household, scheme, benefit year): the compiled SELECTs joined with UNION ALL. Nothing
is computed per household in Python, so the cost is DuckDB's, not an interpreter loop's.
"""

from __future__ import annotations

import duckdb

from entitlement_rules.compiler import CompiledRule, quote_identifier
from entitlement_rules.errors import RuleEvaluationError

# The output contract of evaluate(), in column order.
OUTPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("household_pid", "VARCHAR"),
    ("applicant_pid", "VARCHAR"),
    ("scheme", "VARCHAR"),
    ("benefit_year", "INTEGER"),
    ("rule_id", "VARCHAR"),
    ("rule_version", "VARCHAR"),
    ("parameter_version", "VARCHAR"),
    ("entitled", "BOOLEAN"),
    ("estimated_annual_amount", "DECIMAL(12,2)"),
    ("already_receiving", "BOOLEAN"),
    ("explanation", "VARCHAR"),
    ("explanation_nl", "VARCHAR"),
    ("failed_conditions", "VARCHAR[]"),
    ("confidence", "DOUBLE"),
    ("repayment_risk", "BOOLEAN"),
)


def evaluate(
    con: duckdb.DuckDBPyConnection,
    households: str,
    compiled: list[CompiledRule],
    explain: str = "all",
) -> duckdb.DuckDBPyRelation:
    """Evaluate every compiled rule over the table/view `households` in `con`.

    `explain` says which rows get explanation text: "all" (default, the audited form),
    "entitled" (refusals keep failed_conditions but no text) or "none" (decisions only).
    """
    _check_columns(con, households, compiled)
    return con.sql(evaluation_sql(households, compiled, explain))


def evaluation_sql(households: str, compiled: list[CompiledRule], explain: str = "all") -> str:
    """The SQL that evaluate() runs, for a caller that runs it another way (its columns are
    not checked here)."""
    if not compiled:
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in OUTPUT_COLUMNS)
        return f"SELECT {nulls} WHERE FALSE"
    columns = ", ".join(c for c, _ in OUTPUT_COLUMNS)
    parts = [
        f"SELECT {columns} FROM (\n{rule.render(households, explain).rstrip().rstrip(';')}\n)"
        for rule in compiled
    ]
    return "\nUNION ALL\n".join(parts)


def _check_columns(
    con: duckdb.DuckDBPyConnection, households: str, compiled: list[CompiledRule]
) -> None:
    try:
        described = con.sql(f"DESCRIBE SELECT * FROM {quote_identifier(households)}").fetchall()
    except duckdb.Error as exc:
        raise RuleEvaluationError(
            f"households table {households!r} cannot be read: {str(exc).splitlines()[0]}"
        ) from None
    present = {row[0] for row in described}
    for rule in compiled:
        missing = sorted(rule.fields - present)
        if missing:
            raise RuleEvaluationError(
                f"households table {households!r} lacks column(s) {', '.join(missing)} that "
                f"rule {rule.rule_id} ({rule.year}) reads."
            )
