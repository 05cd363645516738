"""The fairness guard and the extension path: rules written as data by someone else.

A small made-up scheme with municipal parameters (the shape kwijtschelding will have) is
written to a temporary rules root; it compiles and evaluates without code changes, and
each way of reaching for a protected attribute or an unknown field is refused by name.
"""

from __future__ import annotations

import copy
import re
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml
from test_rules_meta import edit as _edit

from entitlement_rules import (
    IdentifyingFieldError,
    MissingParameterError,
    ProtectedAttributeError,
    RuleCompileError,
    RuleLoadError,
    UnknownFieldError,
    compile_rule,
    evaluate,
    load_rules,
    rules_fields,
    run_cases,
)
from entitlement_rules.guard import (
    HOUSEHOLD_TYPES,
    IDENTIFYING_COLUMNS,
    check_rule,
    identifying_literal,
    protected_reason,
)
from entitlement_rules.loader import DEFAULT_ROOT
from flows.cli import main as signals
from pipelines.household import COLUMN_NAMES, SCHEMA
from privacy.pseudonyms import PSEUDONYM_PATTERN

SOURCE = {"status": "verified", "source": "made-up test value, not law"}

SCHEME = {
    "id": "example_municipal",
    "version": "0.1.0",
    "label": {"en": "Example municipal scheme", "nl": "Voorbeeld gemeentelijke regeling"},
    "description": {"en": "A test fixture, not law.", "nl": "Een testgeval, geen wet."},
    "legal_basis": {
        "law": "Invorderingswet 1990",
        "bwb_id": "BWBR0004770",
        "articles": ["26"],
        "url": "https://wetten.overheid.nl/BWBR0004770",
    },
    "inputs": ["applicant_age", "combined_assets", "municipality_code", "n_children"],
    "parameters": {
        "minimum_age": {"type": "integer", "label": {"en": "age", "nl": "leeftijd"}, "legal": "x"},
    },
    "parameter_tables": {
        "municipal": {
            "key": "municipality_code",
            "columns": {
                "max_assets": {"type": "money", "label": {"en": "max", "nl": "max"}, "legal": "x"},
                "tax_amount": {
                    "type": "money",
                    "label": {"en": "tax", "nl": "heffing"},
                    "legal": "x",
                },
            },
        }
    },
    "values": [
        {
            "id": "relief",
            "type": "money",
            "expr": "tax_amount",
            "label": {"en": "relief", "nl": "kwijtschelding"},
            "legal": "x",
        }
    ],
    "conditions": [
        {
            "id": "adult",
            "expr": "applicant_age >= minimum_age",
            "legal": "x",
            "explain": {"en": "age {applicant_age}", "nl": "leeftijd {applicant_age}"},
        },
        {
            "id": "assets_low",
            "expr": "combined_assets <= max_assets and length(children_ages) >= 0 "
            "and n_children >= 0",
            "legal": "x",
            "explain": {"en": "assets {combined_assets}", "nl": "vermogen {combined_assets}"},
        },
    ],
    "amount": {
        "value": "relief",
        "rounding": "half_away_from_zero_to_cents",
        "legal": "x",
        "explain": {"en": "{relief}", "nl": "{relief}"},
    },
    "income_uncertainty": False,
}
SCHEME["inputs"].append("children_ages")

PARAMETERS = {
    "scheme": "example_municipal",
    "year": 2025,
    "version": 1,
    "valid_from": "2025-01-01",
    "valid_to": "2025-12-31",
    "values": {"minimum_age": {"value": 18, "unit": "years", **SOURCE}},
    "tables": {
        "municipal": [
            {"key": "GM0344", "values": {"max_assets": "2000", "tax_amount": "312.40"}, **SOURCE},
            {"key": "GM0363", "values": {"max_assets": "3000", "tax_amount": "401.05"}, **SOURCE},
        ]
    },
}

CASES = {
    "scheme": "example_municipal",
    "household": {
        "applicant_age": 40,
        "combined_assets": "1500.00",
        "children_ages": [],
        "n_children": 0,
    },
    "cases": [
        {
            "name": "A household in a municipality with parameters gets its relief",
            "year": 2025,
            "household": {"municipality_code": "GM0344"},
            "expect": {"entitled": True, "estimated_annual_amount": "312.40"},
        },
        {
            "name": "A household in a municipality without parameters is not signalled",
            "year": 2025,
            "household": {"municipality_code": "GM0999"},
            "expect": {
                "entitled": False,
                "failed_conditions": ["municipal_parameters_known", "assets_low"],
            },
        },
    ],
}


def write_root(root: Path, scheme: dict, parameters: dict = PARAMETERS, cases=CASES) -> Path:
    """A rules root with one scheme, its 2025 parameters and its cases."""
    (root / "schemes").mkdir(parents=True)
    (root / "parameters" / scheme["id"]).mkdir(parents=True)
    (root / "cases").mkdir()
    (root / "schemes" / f"{scheme['id']}.yaml").write_text(yaml.safe_dump(scheme))
    params = yaml.safe_dump(parameters).replace("'2025-01-01'", "2025-01-01")
    params = params.replace("'2025-12-31'", "2025-12-31")
    (root / "parameters" / scheme["id"] / "2025.yaml").write_text(params)
    if cases:
        (root / "cases" / f"{scheme['id']}.yaml").write_text(yaml.safe_dump(cases))
    return root


def load(root: Path):
    (rule,) = load_rules(root=root)
    return rule


def with_change(path: str, value) -> dict:
    """SCHEME with one field (dotted path, list indexes as numbers) replaced."""
    scheme = copy.deepcopy(SCHEME)
    *parents, last = path.split(".")
    target = scheme
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    return scheme


# -- the extension path -------------------------------------------------------------------


def test_a_scheme_with_municipal_parameters_compiles_and_evaluates_without_code(tmp_path):
    rule = load(write_root(tmp_path, SCHEME))
    compiled = compile_rule(rule, 2025)
    assert "municipal AS (" in compiled.sql
    assert "LEFT JOIN municipal ON household.municipality_code = municipal.municipal_key" in (
        compiled.sql
    )
    assert re.search(r"\(CAST\('GM0344' AS VARCHAR\), .*\),  -- made-up test value", compiled.sql)
    results = run_cases(root=tmp_path)
    assert [(r.name, r.passed, r.problems) for r in results] == [
        (c["name"], True, ()) for c in CASES["cases"]
    ]


def test_the_municipal_key_is_read_but_only_to_select_parameters(tmp_path):
    rule = load(write_root(tmp_path, SCHEME))
    assert "municipality_code" in rules_fields(rule)
    assert "district_code" not in rules_fields(rule)


def test_an_unverified_municipal_row_is_left_out_and_only_its_municipality_is_unserved(tmp_path):
    parameters = copy.deepcopy(PARAMETERS)
    parameters["tables"]["municipal"][1]["status"] = "unverified"
    rule = load(write_root(tmp_path, SCHEME, parameters))
    compiled = compile_rule(rule, 2025)
    assert "'GM0344'" in compiled.sql and "'GM0363'" not in compiled.sql
    assert rule.skipped_rows(2025) == [("municipal", "GM0363", ["the row is unverified"])]
    con = duckdb.connect()
    rows = [
        dict.fromkeys(COLUMN_NAMES)
        | {"household_pid": f"h{i}", "applicant_pid": f"a{i}", "applicant_age": 30}
        | {"combined_assets": Decimal("10.00"), "municipality_code": code, "children_ages": []}
        | {"n_children": 0}
        for i, code in enumerate(["GM0344", "GM0363"])
    ]
    con.register("households", pa.Table.from_pylist(rows, schema=SCHEMA))
    got = evaluate(con, "households", [compiled]).select("entitled, failed_conditions").fetchall()
    assert got == [(True, []), (False, ["municipal_parameters_known", "assets_low"])]


def test_a_year_without_any_confirmed_municipal_row_is_refused(tmp_path):
    parameters = copy.deepcopy(PARAMETERS)
    for row in parameters["tables"]["municipal"]:
        row["status"] = "unverified"
    rule = load(write_root(tmp_path, SCHEME, parameters))
    with pytest.raises(MissingParameterError, match="table municipal has no row with confirmed"):
        compile_rule(rule, 2025)


def test_a_scheme_without_income_uncertainty_has_full_confidence(tmp_path):
    rule = load(write_root(tmp_path, SCHEME))
    con = duckdb.connect()
    row = dict.fromkeys(COLUMN_NAMES) | {
        "household_pid": "h",
        "applicant_pid": "a",
        "applicant_age": 30,
        "combined_assets": Decimal("10.00"),
        "municipality_code": "GM0363",
        "children_ages": [3],
        "n_children": 1,
    }
    con.register("households", pa.Table.from_pylist([row], schema=SCHEMA))
    [(confidence, risk, amount)] = (
        evaluate(con, "households", [compile_rule(rule, 2025)])
        .select("confidence, repayment_risk, estimated_annual_amount")
        .fetchall()
    )
    assert (confidence, risk, amount) == (1.0, False, Decimal("401.05"))


# -- the fairness guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("conditions.0.expr", "nationality == 'NL'", "nationality"),
        ("conditions.0.expr", "applicant_country_of_birth != 'NL'", "applicant_country_of_birth"),
        ("conditions.0.expr", "district_code == 'WK034401'", "district_code"),
        ("conditions.0.expr", "postcode in ['1234AB']", "postcode"),
        ("conditions.0.expr", "not partner_gender is None", "partner_gender"),
        ("conditions.0.expr", "ethnicity is None", "ethnicity"),
        ("values.0.expr", "tax_amount * (1 if sex == 'f' else 2)", "sex"),
        (
            "values.0.expr",
            "max(tax_amount, migration_background_factor)",
            "migration_background_factor",
        ),
        ("conditions.1.explain.en", "lives in {district_code}", "district_code"),
        ("amount.explain.nl", "{relief} voor {nationality}", "nationality"),
        ("parameter_tables.municipal.key", "district_code", "district_code"),
    ],
)
def test_a_rule_reading_a_protected_attribute_is_refused_naming_rule_and_field(
    tmp_path, path, value, field
):
    rule = load(write_root(tmp_path, with_change(path, value)))
    with pytest.raises(ProtectedAttributeError) as error:
        compile_rule(rule, 2025)
    assert "rule example_municipal" in str(error.value)
    assert repr(field) in str(error.value)


def test_a_protected_name_declared_as_a_parameter_is_refused(tmp_path):
    scheme = copy.deepcopy(SCHEME)
    scheme["parameters"]["gender_factor"] = scheme["parameters"]["minimum_age"]
    rule = load(write_root(tmp_path, scheme))
    with pytest.raises(ProtectedAttributeError, match="'gender_factor'"):
        compile_rule(rule, 2025)


def test_the_municipality_code_may_not_decide_entitlement(tmp_path):
    rule = load(
        write_root(tmp_path, with_change("conditions.0.expr", "municipality_code == 'GM0344'"))
    )
    with pytest.raises(ProtectedAttributeError, match="may only select municipal parameters"):
        compile_rule(rule, 2025)


@pytest.mark.parametrize(
    "name",
    [
        "nationality",
        "partner_nationality",
        "country_of_birth",
        "district_code",
        "postcode",
        "applicant_sex",
        "gender",
        "street_name",
        "house_number",
        "ethnic_group",
    ],
)
def test_protected_names_are_recognised_by_whole_words(name):
    assert protected_reason(name)


def test_no_household_column_the_zorgtoeslag_rule_reads_is_protected():
    (rule,) = load_rules(schemes=["zorgtoeslag"])
    assert [f for f in rules_fields(rule) if protected_reason(f)] == []
    assert protected_reason("essex_count") is None and protected_reason("assets") is None


def test_the_district_code_of_the_household_table_is_protected():
    assert "district_code" in HOUSEHOLD_TYPES and protected_reason("district_code")


@pytest.mark.parametrize(
    ("path", "value", "error", "message"),
    [
        ("conditions.0.expr", "income_tax_bracket > 2", UnknownFieldError, "'income_tax_bracket'"),
        ("amount.explain.en", "{relief_total}", UnknownFieldError, "'relief_total'"),
        ("parameter_tables.municipal.key", "gemeente", UnknownFieldError, "'gemeente'"),
        ("values.0.expr", "relief * 2", RuleCompileError, "value relief uses relief"),
        ("inputs", ["applicant_age"], RuleCompileError, "missing: children_ages, combined_assets"),
        (
            "values.0.id",
            "combined_income",
            RuleCompileError,
            "combined_income is a household column",
        ),
    ],
)
def test_a_rule_reading_an_unknown_or_undeclared_field_is_refused(
    tmp_path, path, value, error, message
):
    scheme = with_change(path, value)
    if path == "values.0.id":
        scheme["amount"]["value"] = value
        scheme["amount"]["explain"] = {"en": "x", "nl": "x"}
    rule = load(write_root(tmp_path, scheme))
    with pytest.raises(error, match=re.escape(message)):
        compile_rule(rule, 2025)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("values.0.id", "entitled", "'entitled' is reserved"),
        ("values.0.id", "cond_x", "'cond_x' is reserved"),
        ("id", "other", "must equal the file name"),
        ("legal_basis.bwb_id", "0018451", "must be a BWB id"),
        ("legal_basis.url", "https://example.org/law", "https://wetten.overheid.nl/"),
        ("amount.rounding", "banker", "must be one of half_away_from_zero_to_cents"),
        ("conditions.0.expr", "applicant_age >= 21.5", "must be a parameter with a source"),
        ("label", {"en": "only English"}, "label.nl is required"),
    ],
)
def test_malformed_scheme_files_are_refused_when_loading(tmp_path, path, value, message):
    scheme = with_change(path, value)
    root = write_root(tmp_path, scheme)
    if path == "id":
        (root / "schemes" / "example_municipal.yaml").write_text(yaml.safe_dump(scheme))
    with pytest.raises(RuleLoadError, match=re.escape(message)):
        load_rules(root=root)


# -- identifiers: rules decide on the law's conditions, never on who someone is ----------------

PSEUDONYM = "d1.eaofeplcndojggihkffjjdmjjlpdfgnp"  # the walkthrough's example, made up


def reading(path: str, value, *inputs: str) -> dict:
    """SCHEME with one field replaced and `inputs` added to what it declares it reads."""
    scheme = with_change(path, value)
    scheme["inputs"] = scheme["inputs"] + list(inputs)
    return scheme


@pytest.mark.parametrize(
    ("scheme", "field"),
    [
        (
            reading(
                "conditions.0.expr",
                f"applicant_age >= minimum_age and applicant_pid not in ['{PSEUDONYM}']",
                "applicant_pid",
            ),
            "applicant_pid",
        ),
        (reading("conditions.0.expr", "partner_pid is None", "partner_pid"), "partner_pid"),
        (
            reading("conditions.1.expr", "household_pid != 'h1'", "household_pid"),
            "household_pid",
        ),
        (
            reading("values.0.expr", "tax_amount * length(member_pids)", "member_pids"),
            "member_pids",
        ),
        (reading("parameter_tables.municipal.key", "applicant_pid"), "applicant_pid"),
        (reading("inputs", ["member_pids", *SCHEME["inputs"]]), "member_pids"),
        (reading("amount.explain.en", "{relief} for {applicant_pid}"), "applicant_pid"),
    ],
)
def test_a_rule_reading_an_identifier_column_is_refused_naming_file_field_and_why(
    tmp_path, scheme, field
):
    rule = load(write_root(tmp_path, scheme))
    with pytest.raises(IdentifyingFieldError) as error:
        compile_rule(rule, 2025)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'schemes' / 'example_municipal.yaml'}: ")
    assert "rule example_municipal" in message and repr(field) in message
    assert "never on who someone is" in message
    assert PSEUDONYM not in message  # the refusal does not spread the pseudonym


@pytest.mark.parametrize(
    ("path", "value", "inputs", "kind"),
    [
        (
            "conditions.0.expr",
            f"applicant_age >= minimum_age and not contains(receiving_schemes, '{PSEUDONYM}')",
            ["receiving_schemes"],
            "a pseudonym",
        ),
        (
            "conditions.0.expr",
            "applicant_age >= minimum_age"
            " and tenure not in ['b7.aaaabbbbccccddddeeeeffffgggghhhh']",
            ["tenure"],
            "a pseudonym",
        ),
        (
            "conditions.0.expr",
            "applicant_age >= minimum_age and not contains(arrears_sectors, '123456782')",
            ["arrears_sectors"],
            "a BSN-like nine-digit number",
        ),
        ("conditions.1.explain.nl", "alleen voor 1234.56.782", [], "a BSN-like nine-digit number"),
    ],
)
def test_a_rule_with_an_identifying_literal_is_refused(tmp_path, path, value, inputs, kind):
    rule = load(write_root(tmp_path, reading(path, value, *inputs)))
    with pytest.raises(IdentifyingFieldError, match=re.escape(kind)) as error:
        compile_rule(rule, 2025)
    assert str(error.value).startswith(str(tmp_path / "schemes" / "example_municipal.yaml"))
    assert PSEUDONYM not in str(error.value) and "123456782" not in str(error.value)


def test_an_identifier_named_parameter_is_refused(tmp_path):
    scheme = copy.deepcopy(SCHEME)
    scheme["parameters"]["excluded_pids"] = {
        "type": "string",
        "label": {"en": "x", "nl": "x"},
        "legal": "x",
    }
    parameters = copy.deepcopy(PARAMETERS)
    parameters["values"]["excluded_pids"] = {"value": "x", "unit": "text", **SOURCE}
    rule = load(write_root(tmp_path, scheme, parameters))
    with pytest.raises(IdentifyingFieldError, match="parameter: 'excluded_pids' is named as an"):
        compile_rule(rule, 2025)


@pytest.mark.parametrize(
    ("value", "kind"),
    [(PSEUDONYM, "a pseudonym"), ("123456782", "a BSN-like"), (123456782, "a BSN-like")],
)
def test_an_identifying_parameter_value_is_refused_naming_the_parameter_file(tmp_path, value, kind):
    scheme = copy.deepcopy(SCHEME)
    kind_of = "integer" if isinstance(value, int) else "string"
    scheme["parameters"]["excluded_scheme"] = {
        "type": kind_of,
        "label": {"en": "x", "nl": "x"},
        "legal": "x",
    }
    scheme["conditions"][0]["expr"] = "applicant_age >= minimum_age and excluded_scheme is not None"
    parameters = copy.deepcopy(PARAMETERS)
    parameters["values"]["excluded_scheme"] = {"value": value, "unit": "text", **SOURCE}
    rule = load(write_root(tmp_path, scheme, parameters))
    with pytest.raises(IdentifyingFieldError) as error:
        compile_rule(rule, 2025)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "parameters" / "example_municipal" / "2025.yaml"))
    assert f"parameter excluded_scheme contains {kind}" in message


def test_a_pseudonym_as_a_municipal_table_key_is_refused(tmp_path):
    parameters = copy.deepcopy(PARAMETERS)
    parameters["tables"]["municipal"][1]["key"] = PSEUDONYM
    rule = load(write_root(tmp_path, SCHEME, parameters))
    with pytest.raises(IdentifyingFieldError, match="parameter table municipal row 2 key contains"):
        compile_rule(rule, 2025)


def test_the_identifier_columns_come_from_the_household_lineage():
    assert set(IDENTIFYING_COLUMNS) == {
        "household_pid",
        "applicant_pid",
        "partner_pid",
        "member_pids",
    }
    # derived from an id, but a count or a flag: identifies nobody
    assert "n_persons" not in IDENTIFYING_COLUMNS and "has_partner" not in IDENTIFYING_COLUMNS


@pytest.mark.parametrize(
    "text",
    [
        "d1.eaofeplcndojggihkffjjdmjjlpdfgnp",
        "b12.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "k-x2.pppppppppppppppppppppppppppppppp",
        "d1.eaofeplcndojggihkffjjdmjjlpdfgn",  # 31 letters
        "d1.eaofeplcndojggihkffjjdmjjlpdfgnq",  # q is no hex letter
        "1d.eaofeplcndojggihkffjjdmjjlpdfgnp",  # a key id starts with a letter
        "wetten.overheid.nl",
    ],
)
def test_the_guard_recognises_exactly_what_privacy_calls_a_pseudonym(text):
    is_pseudonym = re.fullmatch(PSEUDONYM_PATTERN.strip("^$"), text) is not None
    assert (identifying_literal(text) is not None) == is_pseudonym
    assert (identifying_literal(f"not for {text}, please") is not None) == is_pseudonym


def test_the_shipped_rules_pass_and_the_compiler_still_carries_the_ids_itself():
    for rule in load_rules():
        check_rule(rule)
        assert {"household_pid", "applicant_pid"} <= rules_fields(rule)
        for year in rule.ready_years()[:1]:  # a scheme may have no confirmed year yet
            assert "applicant_pid" in compile_rule(rule, year).sql


@pytest.fixture
def package_copy(tmp_path):
    copy_root = tmp_path / "rules"
    shutil.copytree(DEFAULT_ROOT, copy_root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy_root


def _target_applicant(root: Path) -> None:
    """The walkthrough's edit: zorgtoeslag skips one applicant by pseudonym."""
    path = root / "schemes" / "zorgtoeslag.yaml"
    _edit(path, "inputs:\n  - applicant_age\n", "inputs:\n  - applicant_age\n  - applicant_pid\n")
    _edit(
        path,
        "expr: applicant_age >= minimum_age\n",
        f"expr: applicant_age >= minimum_age and applicant_pid not in ['{PSEUDONYM}']\n",
    )


def test_signals_rules_test_refuses_a_rule_targeting_an_applicant(capsys, package_copy):
    _target_applicant(package_copy)
    args = ["rules", "test", "--scheme", "zorgtoeslag", "--root", str(package_copy)]
    assert signals(args) == 1
    out = capsys.readouterr().out
    assert "'applicant_pid' is an identifier" in out and "0 passed, 60 failed" in out


def test_signals_register_check_refuses_a_rule_targeting_an_applicant(capsys, package_copy):
    _target_applicant(package_copy)
    purpose = "proactive-entitlement-signalling"
    args = ["register", "check", "--purpose", purpose, "--rules-root", str(package_copy)]
    assert signals(args) == 1
    out = capsys.readouterr().out
    assert "  zorgtoeslag: REFUSED by the rule guard" in out
    assert "'applicant_pid' is an identifier" in out
    assert "  aio: allowed" in out
    # The last word says what the exit code says, not the register's "may proceed" alone.
    assert out.rstrip().endswith(
        "1 rule(s) above may not run: a run would stop when it compiles them."
    )


def test_signals_rules_test_reports_a_guard_refusal_once_per_rule(capsys, package_copy):
    path = package_copy / "schemes" / "zorgtoeslag.yaml"
    _edit(path, "inputs:\n  - applicant_age\n", "inputs:\n  - applicant_age\n  - district_code\n")
    _edit(
        path,
        "expr: applicant_age >= minimum_age\n",
        "expr: applicant_age >= minimum_age and district_code != 'WK034401'\n",
    )
    args = ["rules", "test", "--scheme", "zorgtoeslag", "--root", str(package_copy)]
    assert signals(args) == 1
    out = capsys.readouterr().out
    assert out.count("references protected field 'district_code'") == 1
    assert "FAIL zorgtoeslag 2024, 2025, 2026: 60 cases, the rule did not compile" in out
    assert "0 passed, 60 failed (zorgtoeslag)" in out
