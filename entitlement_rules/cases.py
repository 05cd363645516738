"""Runs the truth tables in `cases/<scheme>.yaml` against the compiled rules in real DuckDB.

A case is a household (the file's defaults plus the case's own fields), a benefit year
and what the rule must say: entitled, the amount to the cent, failed conditions,
confidence, text the explanation must contain, or the compile error the year must give.
run_cases() builds one in-memory households table per scheme and year from the household
schema of pipelines/household.py and evaluates all its cases in one query; pytest and
`signals rules test` both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from entitlement_rules.compiler import compile_rule
from entitlement_rules.errors import RuleCompileError, RuleLoadError
from entitlement_rules.evaluate import OUTPUT_COLUMNS, evaluate
from entitlement_rules.loader import load_rules, read_yaml
from entitlement_rules.model import Rule
from pipelines.household import COLUMN_NAMES
from pipelines.household import SCHEMA as HOUSEHOLD_SCHEMA

EXPECT_KEYS = frozenset(
    {
        "entitled",
        "estimated_annual_amount",
        "already_receiving",
        "failed_conditions",
        "confidence",
        "repayment_risk",
        "explanation_contains",
        "explanation_nl_contains",
        "compile_error",
    }
)


@dataclass(frozen=True)
class Case:
    """One row of a truth table: a named household, a year and the expected outcome."""

    scheme: str
    index: int
    name: str
    year: int
    household: dict[str, Any]
    expect: dict[str, Any]
    computation: str


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: passed, and if not, what differed."""

    scheme: str
    year: int
    name: str
    passed: bool
    problems: tuple[str, ...]
    actual: dict[str, Any]


def load_cases(rule: Rule) -> list[Case]:
    """The cases of one rule, validated: fields must be household columns, keys known."""
    if rule.cases_path is None:
        return []
    path = rule.cases_path
    raw = read_yaml(path)
    if raw.get("scheme") != rule.id:
        raise RuleLoadError(f"{path}: scheme must be {rule.id!r}, not {raw.get('scheme')!r}.")
    defaults = _household(path, "household", raw.get("household", {}))
    entries = raw.get("cases")
    if not isinstance(entries, list) or not entries:
        raise RuleLoadError(f"{path}: cases must be a non-empty list.")
    return [_case(path, rule.id, i, entry, defaults) for i, entry in enumerate(entries)]


def _case(path: Path, scheme: str, index: int, entry: Any, defaults: dict) -> Case:
    where = f"{path}: cases[{index}]"
    if not isinstance(entry, dict):
        raise RuleLoadError(f"{where} must be a mapping.")
    extra = sorted(set(entry) - {"name", "year", "household", "expect", "computation"})
    if extra:
        raise RuleLoadError(f"{where} has unknown field(s) {', '.join(extra)}.")
    name, year, expect = entry.get("name"), entry.get("year"), entry.get("expect")
    if not isinstance(name, str) or not name.strip():
        raise RuleLoadError(f"{where}.name must be a sentence.")
    if not isinstance(year, int):
        raise RuleLoadError(f"{where}.year must be an integer, not {year!r}.")
    if not isinstance(expect, dict) or not expect or set(expect) - EXPECT_KEYS:
        raise RuleLoadError(
            f"{where}.expect must map some of {', '.join(sorted(EXPECT_KEYS))}, not {expect!r}."
        )
    own = _household(path, f"cases[{index}].household", entry.get("household", {}))
    household = {"income_year": year} | defaults | own
    return Case(
        scheme, index, name.strip(), year, household, expect, str(entry.get("computation", ""))
    )


def _household(path: Path, where: str, fields: Any) -> dict[str, Any]:
    if not isinstance(fields, dict):
        raise RuleLoadError(f"{path}: {where} must be a mapping.")
    unknown = sorted(set(fields) - set(COLUMN_NAMES))
    if unknown:
        raise RuleLoadError(
            f"{path}: {where} has field(s) {', '.join(unknown)} that are not household columns."
        )
    return dict(fields)


def run_cases(scheme: str | None = None, root: Path | None = None) -> list[CaseResult]:
    """Run the cases of every rule (or of `scheme`) under `root`; one result per case."""
    results = []
    for rule in load_rules(schemes=[scheme] if scheme else None, root=root):
        cases = load_cases(rule)
        for year in sorted({c.year for c in cases}):
            results += _run_year(rule, year, [c for c in cases if c.year == year])
    return results


def _run_year(rule: Rule, year: int, cases: list[Case]) -> list[CaseResult]:
    try:
        compiled = compile_rule(rule, year)
    except RuleCompileError as exc:
        return [_compile_refused(rule, case, str(exc)) for case in cases]
    con = duckdb.connect()
    try:
        con.register("case_households", _table(cases))
        rows = evaluate(con, "case_households", [compiled]).fetchall()
        columns = [c for c, _ in OUTPUT_COLUMNS]
        by_pid = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    finally:
        con.close()
    return [_compare(rule, case, by_pid[_pid(case)]) for case in cases]


def _pid(case: Case) -> str:
    return f"case-{case.index:03d}"


def _table(cases: list[Case]) -> pa.Table:
    """The cases as rows of the household table, with the types of its schema."""
    rows = []
    for case in cases:
        row = {name: None for name in COLUMN_NAMES}
        row.update(case.household)
        row["household_pid"] = _pid(case)
        row["applicant_pid"] = f"applicant-{case.index:03d}"
        for field in HOUSEHOLD_SCHEMA:
            if pa.types.is_decimal(field.type) and row[field.name] is not None:
                row[field.name] = Decimal(str(row[field.name]))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=HOUSEHOLD_SCHEMA)


def _compile_refused(rule: Rule, case: Case, message: str) -> CaseResult:
    expected = case.expect.get("compile_error")
    if expected is not None and expected in message:
        return CaseResult(rule.id, case.year, case.name, True, (), {"compile_error": message})
    problem = (
        f"compile error {message!r} does not contain {expected!r}"
        if expected
        else f"rule did not compile: {message}"
    )
    return CaseResult(rule.id, case.year, case.name, False, (problem,), {"compile_error": message})


def _compare(rule: Rule, case: Case, actual: dict[str, Any]) -> CaseResult:
    problems = []
    for key, expected in case.expect.items():
        problem = _check(key, expected, actual)
        if problem:
            problems.append(problem)
    return CaseResult(rule.id, case.year, case.name, not problems, tuple(problems), actual)


def _check(key: str, expected: Any, actual: dict[str, Any]) -> str | None:
    if key == "compile_error":
        return f"expected compile error containing {expected!r}, but the rule compiled"
    if key in ("explanation_contains", "explanation_nl_contains"):
        text = actual["explanation" if key == "explanation_contains" else "explanation_nl"]
        missing = [part for part in expected if part not in text]
        return f"{key}: {missing!r} not in {text!r}" if missing else None
    got = actual[key]
    if key == "estimated_annual_amount":
        want = None if expected is None else Decimal(str(expected))
        ok = got == want
    elif key == "failed_conditions":
        ok = sorted(got) == sorted(expected)
    elif key == "confidence":
        ok = got is not None and abs(got - float(expected)) < 1e-9
    else:
        ok = got == expected
    return None if ok else f"{key}: expected {expected!r}, got {got!r}"
