"""The compiler and evaluate(): golden SQL, SQL style, the rule language, the output contract."""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from entitlement_rules import (
    OUTPUT_COLUMNS,
    RuleEvaluationError,
    RuleLoadError,
    compile_rule,
    evaluate,
    load_rules,
    rules_fields,
)
from entitlement_rules.compiler import HOUSEHOLDS_PLACEHOLDER
from entitlement_rules.expressions import parse_expression
from pipelines.household import COLUMN_NAMES, SCHEMA

GOLDEN = Path(__file__).parent / "golden" / "zorgtoeslag_2025.sql"
RULE = load_rules(schemes=["zorgtoeslag"])[0]


@pytest.fixture(scope="module")
def compiled_2025():
    return compile_rule(RULE, 2025)


def households(*overrides: dict) -> pa.Table:
    """Households of the household schema: an insured single adult on 20,000, plus overrides."""
    rows = []
    for i, override in enumerate(overrides):
        row = dict.fromkeys(COLUMN_NAMES)
        row |= {
            "household_pid": f"h{i}",
            "applicant_pid": f"a{i}",
            "applicant_age": 40,
            "has_partner": False,
            "applicant_deregistered": False,
            "applicant_insured": True,
            "income_known": True,
            "income_year": 2025,
            "income_status": "definitive",
            "combined_income": Decimal("20000.00"),
            "combined_assets": Decimal("0.00"),
            "receiving_schemes": [],
        }
        rows.append(row | override)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


# -- golden file ------------------------------------------------------------------------------


def test_compiled_zorgtoeslag_2025_matches_the_golden_file(compiled_2025):
    # Regenerate deliberately, then read the diff:
    #   UPDATE_GOLDEN=1 pytest tests/test_rules_compiler.py
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(compiled_2025.sql, encoding="utf-8")
    assert compiled_2025.sql == GOLDEN.read_text(encoding="utf-8"), (
        "compiled SQL changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    )


def test_compiling_twice_gives_identical_sql(compiled_2025):
    assert compile_rule(load_rules(schemes=["zorgtoeslag"])[0], 2025).sql == compiled_2025.sql


# -- SQL style --------------------------------------------------------------------------------


def code_only(sql: str) -> str:
    """The SQL without comments and string literals: what the keywords are checked in."""
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


def test_the_header_names_rule_versions_year_law_and_grain(compiled_2025):
    header = compiled_2025.sql.split("WITH\n")[0]
    assert header.startswith("-- Rule zorgtoeslag: Zorgtoeslag / Healthcare allowance\n")
    assert f"Rule version {RULE.rule_version}, benefit year 2025" in header
    assert f"parameter version {compiled_2025.parameter_version}" in header
    assert "Wet op de zorgtoeslag (BWBR0018451)" in header
    assert "https://wetten.overheid.nl/BWBR0018451/2025-01-01" in header
    assert "Grain: one row per household" in header


def test_keywords_are_upper_case(compiled_2025):
    code = code_only(compiled_2025.sql)
    for keyword in (
        "select",
        "from",
        "with",
        "case",
        "when",
        "then",
        "else",
        "end",
        "as",
        "and",
        "or",
        "not",
        "cast",
        "join",
        "null",
        "is",
        "lambda",
    ):
        assert not re.search(rf"\b{keyword}\b", code), keyword


def test_the_ctes_are_named_for_what_they_hold(compiled_2025):
    names = re.findall(r"^(\w+) AS \($", compiled_2025.sql, flags=re.MULTILINE)
    assert names == [
        "parameters",
        "household",
        "rule_values",
        "conditions",
        "decision",
        "outcome",
        "shown",
    ]


def test_every_parameter_is_a_typed_literal_with_its_source(compiled_2025):
    params = RULE.parameter_sets[2025].values
    for name, value in params.items():
        line = next(x for x in compiled_2025.sql.splitlines() if f" AS {name}" in x)
        assert line.strip().startswith("CAST("), line
        assert value.source.split()[0] in line and f"[{value.status}]" in line, line


def test_household_columns_are_read_with_explicit_casts_and_nothing_else(compiled_2025):
    block = compiled_2025.sql.split("household AS (")[1].split("\n),")[0]
    read = set(re.findall(r"CAST\(h\.(\w+) AS", block))
    assert read == rules_fields(RULE) == set(compiled_2025.fields)
    assert "district_code" not in block and "municipality_code" not in block


def test_render_puts_in_a_quoted_table_name(compiled_2025):
    assert HOUSEHOLDS_PLACEHOLDER in compiled_2025.sql
    sql = compiled_2025.render('odd "name"')
    assert 'FROM "odd ""name""" AS h' in sql and HOUSEHOLDS_PLACEHOLDER not in sql


def test_versions_change_when_a_file_is_edited_in_place(tmp_path):
    import shutil

    from entitlement_rules.loader import DEFAULT_ROOT

    root = tmp_path / "rules"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = root / "parameters" / "zorgtoeslag" / "2025.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('value: "2112"', 'value: "2113"'),
        encoding="utf-8",
    )
    edited = load_rules(schemes=["zorgtoeslag"], root=root)[0]
    assert edited.rule_version == RULE.rule_version
    before = RULE.parameter_sets[2025].parameter_version
    after = edited.parameter_sets[2025].parameter_version
    assert before.split("+")[0] == after.split("+")[0] == "2025.1"
    assert before != after


# -- the rule language ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "sql"),
    [
        ("a + b * c", "a + b * c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("a - b - c", "a - b - c"),
        ("-a * b", "-a * b"),
        ("2 if has_partner else 1", "CASE WHEN has_partner THEN 2 WHEN NOT has_partner THEN 1 END"),
        ("not a or b is not None", "NOT a OR b IS NOT NULL"),
        ("not (a or b)", "NOT (a OR b)"),
        ("a and (b or c)", "a AND (b OR c)"),
        ("x is None", "x IS NULL"),
        ("tenure in ['social_rent', 'private_rent']", "tenure IN ('social_rent', 'private_rent')"),
        ("tenure not in ['owner_occupied']", "tenure NOT IN ('owner_occupied')"),
        ("0 <= x <= 12", "(0 <= x) AND (x <= 12)"),
        ("a != b", "a <> b"),
        ('a == "it\'s"', "a = 'it''s'"),
        ("max(0, a - b)", "CASE WHEN (a - b) IS NOT NULL THEN GREATEST(0, a - b) END"),
        ("min(a, b)", "CASE WHEN a IS NOT NULL AND b IS NOT NULL THEN LEAST(a, b) END"),
        (
            "contains(receiving_schemes, 'aow')",
            "COALESCE(LIST_CONTAINS(receiving_schemes, 'aow'), FALSE)",
        ),
        ("length(children_ages)", "CAST(COALESCE(LEN(children_ages), 0) AS INTEGER)"),
        (
            "count_at_least(children_ages, 12)",
            "CAST(COALESCE(LEN(LIST_FILTER(children_ages, LAMBDA item: item >= 12)), 0)"
            " AS INTEGER)",
        ),
    ],
)
def test_expressions_compile_to_sql(expression, sql):
    assert parse_expression(expression, "test").to_sql() == sql


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("a.b", "Attribute is not allowed"),
        ("a[0]", "Subscript is not allowed"),
        ("a / 2", "Div is not allowed"),
        ("1.5 * a", "must be a parameter with a source"),
        ("100 * a", "must be a parameter with a source"),
        ("lambda: 1", "Lambda is not allowed"),
        ("open('f')", "only these helpers may be called"),
        ("__import__('os')", "only these helpers may be called"),
        ("max(a)", "takes 2..n positional arguments"),
        ("x is 3", "may only compare with None"),
        ("x in y", "needs a literal list"),
        ("A + b", "must be lower_snake_case"),
        ("a if b", "not a valid expression"),
        ("", "must be a non-empty expression"),
    ],
)
def test_expressions_outside_the_rule_language_are_refused(expression, why):
    with pytest.raises(RuleLoadError, match=re.escape(why)):
        parse_expression(expression, "schemes/x.yaml: values[0].expr")


def test_an_unknown_input_makes_max_unknown_not_zero():
    con = duckdb.connect()
    sql = parse_expression("max(0, a - b)", "test").to_sql()
    query = f"SELECT {sql} FROM (SELECT NULL::DECIMAL(10,2) AS a, 1 AS b)"
    assert con.sql(query).fetchall() == [(None,)]


# -- evaluate() -------------------------------------------------------------------------------


def test_evaluate_returns_the_output_contract_one_row_per_household_scheme_and_year():
    con = duckdb.connect()
    con.register("households", households({}, {"has_partner": True, "partner_insured": True}))
    compiled = [compile_rule(RULE, 2024), compile_rule(RULE, 2025)]
    result = evaluate(con, "households", compiled)
    assert [(c, str(t)) for c, t in zip(result.columns, result.types, strict=True)] == [
        (c, t) for c, t in OUTPUT_COLUMNS
    ]
    rows = result.order("benefit_year, household_pid").fetchall()
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("h0", "zorgtoeslag", 2024),
        ("h1", "zorgtoeslag", 2024),
        ("h0", "zorgtoeslag", 2025),
        ("h1", "zorgtoeslag", 2025),
    ]
    amounts = [r[8] for r in rows]
    assert amounts == [
        Decimal("1483.07"),
        Decimal("2832.58"),
        Decimal("1573.42"),
        Decimal("3010.21"),
    ]


def test_evaluate_is_set_based_over_two_hundred_thousand_households(compiled_2025):
    con = duckdb.connect()
    con.register("template", households({}))
    con.sql(
        "CREATE TABLE households AS SELECT * REPLACE ("
        "'h' || i AS household_pid, CAST(i * 3 % 60000 AS DECIMAL(14, 2)) AS combined_income) "
        "FROM template, range(200000) AS r(i)"
    )
    result = evaluate(con, "households", [compiled_2025])
    [(count, entitled)] = result.aggregate("count(*), count(*) FILTER (WHERE entitled)").fetchall()
    assert count == 200_000
    # Incomes 0..59,997 in steps of 3, evenly: entitled up to and including 39,719.
    assert entitled == len([i for i in range(200_000) if i * 3 % 60000 <= 39719])


def test_evaluate_with_no_rules_gives_an_empty_result_with_the_contract_columns():
    con = duckdb.connect()
    con.register("households", households({}))
    result = evaluate(con, "households", [])
    assert result.fetchall() == []
    assert result.columns == [c for c, _ in OUTPUT_COLUMNS]


def test_evaluate_names_the_missing_columns_and_the_rule(compiled_2025):
    con = duckdb.connect()
    con.register("households", households({}).drop_columns(["combined_assets", "income_year"]))
    with pytest.raises(
        RuleEvaluationError, match=r"lacks column\(s\) combined_assets, income_year"
    ):
        evaluate(con, "households", [compiled_2025])


def test_evaluate_names_a_table_that_does_not_exist(compiled_2025):
    with pytest.raises(RuleEvaluationError, match="'nowhere' cannot be read"):
        evaluate(duckdb.connect(), "nowhere", [compiled_2025])


def test_the_explanation_never_contains_a_pseudonym():
    con = duckdb.connect()
    con.register("households", households({}))
    [row] = evaluate(con, "households", [compile_rule(RULE, 2025)]).fetchall()
    assert "h0" not in row[10] and "a0" not in row[10]
