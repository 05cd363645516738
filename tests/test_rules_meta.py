"""Keeps the rule data honest: every rule has a legal reference and cases, every parameter value a
source and a status, and malformed parameter or case files are refused with the file and field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from entitlement_rules import (
    MissingParameterError,
    RuleLoadError,
    compile_rule,
    explain,
    list_rules,
    load_rules,
)
from entitlement_rules.cases import load_cases
from entitlement_rules.compiler import display
from entitlement_rules.loader import DEFAULT_ROOT, read_yaml
from entitlement_rules.model import STATUSES

RULES = load_rules()
PACKAGE = Path(DEFAULT_ROOT)


def test_the_five_schemes_are_there():
    assert [r.id for r in RULES] == [
        "aio",
        "huurtoeslag",
        "kindgebonden_budget",
        "kwijtschelding",
        "zorgtoeslag",
    ]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_a_legal_reference(rule):
    basis = rule.legal_basis
    assert re.fullmatch(r"BWBR\d{7}", basis.bwb_id)
    assert basis.url == f"https://wetten.overheid.nl/{basis.bwb_id}"
    assert basis.law and basis.articles
    assert all(c.legal.strip() for c in rule.conditions)
    assert all(v.legal.strip() for v in rule.values)
    assert all(p.legal.strip() for p in rule.parameters.values())
    assert rule.amount.legal.strip()


def test_the_zorgtoeslag_rule_cites_the_wet_op_de_zorgtoeslag():
    (rule,) = load_rules(schemes=["zorgtoeslag"])
    assert (rule.legal_basis.law, rule.legal_basis.bwb_id) == (
        "Wet op de zorgtoeslag",
        "BWBR0018451",
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_has_cases_for_every_year_with_parameters(rule):
    cases = load_cases(rule)
    assert cases, f"{rule.id} has no cases/{rule.id}.yaml"
    assert {c.year for c in cases} >= set(rule.years)
    for year in set(rule.years) - set(rule.ready_years()):
        assert any("compile_error" in c.expect for c in cases if c.year == year), year


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_expected_amount_comes_with_its_hand_computation(rule):
    for case in load_cases(rule):
        if case.expect.get("estimated_annual_amount") is not None:
            assert case.computation.strip(), case.name


PARAMETER_VALUES = [
    (rule, params, value)
    for rule in RULES
    for params in rule.parameter_sets.values()
    for value in params.values.values()
]


@pytest.mark.parametrize(
    ("rule", "params", "value"),
    PARAMETER_VALUES,
    ids=[f"{r.id}-{p.year}-{v.name}" for r, p, v in PARAMETER_VALUES],
)
def test_every_parameter_value_has_a_source_and_a_status(rule, params, value):
    assert value.source.strip() and value.unit.strip()
    assert value.status in STATUSES
    if value.status != "verified":
        assert len(value.note) > 20, "say why it is not verified, and how it was checked"
    if value.value is None:
        assert value.status == "unverified"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_year_file_lists_every_parameter_of_its_rule(rule):
    for params in rule.parameter_sets.values():
        assert set(params.values) == set(rule.parameters), params.path


@pytest.mark.parametrize(
    ("rule", "params", "value"),
    [(r, p, v) for r, p, v in PARAMETER_VALUES if v.status == "unverified"],
    ids=lambda x: getattr(x, "name", ""),
)
def test_an_unverified_value_stops_its_year_from_compiling(rule, params, value):
    with pytest.raises(MissingParameterError, match=value.name):
        compile_rule(rule, params.year)


def test_no_rule_code_or_rule_test_reads_the_shared_facts_at_run_time():
    forbidden = "/work/" + "shared"
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.yaml")]
    files += list(Path(__file__).parent.glob("test_rules_*.py"))
    assert [f for f in files if forbidden in f.read_text(encoding="utf-8")] == []


# -- explain and list ---------------------------------------------------------------------------


def test_explain_shows_every_parameter_with_its_value_status_and_source():
    text = explain("zorgtoeslag", 2025)
    assert "Benefit year 2025" in text and "ready to compile" in text
    (rule,) = load_rules(schemes=["zorgtoeslag"])
    for name, value in rule.parameter_sets[2025].values.items():
        assert f"{name} = {display(value)} {value.unit} [{value.status}]" in text
        assert value.source.split(":")[0] in text
    for condition in rule.conditions:
        assert f"{condition.id}: {condition.expr.source}" in text


def test_explain_says_why_a_year_is_not_compiled():
    text = explain("huurtoeslag", 2026)
    assert "NOT compiled: parameter minimum_basishuur_single is unknown" in text
    assert "parameter afbouw_income_single is unknown (MISSING: the minimum-inkomensijkpunt" in text


def test_explain_of_an_unknown_scheme_names_the_available_ones():
    with pytest.raises(RuleLoadError, match="no scheme file for wohngeld.*zorgtoeslag"):
        explain("wohngeld", 2025)


def test_list_rules_summarises_each_rule():
    (entry,) = [r for r in list_rules() if r["id"] == "zorgtoeslag"]
    assert entry["bwb_id"] == "BWBR0018451"
    assert entry["years"] == [2024, 2025, 2026]
    assert entry["ready_years"] == [2024, 2025, 2026]
    assert entry["cases"] >= 30
    assert "district_code" not in entry["reads"]


# -- malformed parameter and case files -----------------------------------------------------


@pytest.fixture
def root(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


PARAMETER_EDITS = [
    ('value: "1.896"', "value: 1.896", "quoted decimal string"),
    ('value: "2112"', 'value: "2112.001"', "at most 2 decimals"),
    (
        'value: "2112"\n    unit: EUR a year\n    status: verified',
        "value: null\n    unit: EUR a year\n    status: verified",
        "status must be unverified",
    ),
    ("status: verified", "status: checked", "must be one of verified, corroborated, unverified"),
    (
        "    source: Dienst Toeslagen, published income limit zorgtoeslag 2025 without",
        "    sauce: Dienst Toeslagen, published income limit zorgtoeslag 2025 without",
        "unknown field(s) sauce",
    ),
    ("year: 2025", "year: 2024", "must be 2025 (the file name)"),
    (
        "values:\n",
        "values:\n  bonus:\n    value: '1'\n    unit: x\n    status: verified\n    source: x\n",
        "values bonus are not parameters of zorgtoeslag",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "message"), PARAMETER_EDITS, ids=[m for *_, m in PARAMETER_EDITS]
)
def test_a_malformed_parameter_file_is_refused_naming_file_and_field(root, old, new, message):
    path = root / "parameters" / "zorgtoeslag" / "2025.yaml"
    edit(path, old, new)
    with pytest.raises(RuleLoadError) as error:
        load_rules(root=root)
    assert str(path) in str(error.value) and message in str(error.value)


def test_an_unverified_value_without_a_reason_is_refused(root):
    path = root / "parameters" / "zorgtoeslag" / "2025.yaml"
    edit(
        path,
        'value: "2112"\n    unit: EUR a year\n    status: verified',
        'value: "2112"\n    unit: EUR a year\n    status: unverified',
    )
    with pytest.raises(RuleLoadError, match=r"values\.standaardpremie\.note is required"):
        load_rules(root=root)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  municipality_code: GM0344\n",
            "  municipality_code: GM0344\n  nationality: NL\n",
            "nationality that are not household columns",
        ),
        (
            "expect: {entitled: false, estimated_annual_amount: null, failed_conditions: [appl",
            "expect: {eligible: false, estimated_annual_amount: null, failed_conditions: [appl",
            "expect must map some of",
        ),
        ("scheme: zorgtoeslag", "scheme: huurtoeslag", "scheme must be 'zorgtoeslag'"),
    ],
)
def test_a_malformed_case_file_is_refused(root, old, new, message):
    path = root / "cases" / "zorgtoeslag.yaml"
    edit(path, old, new)
    (rule,) = load_rules(schemes=["zorgtoeslag"], root=root)
    with pytest.raises(RuleLoadError, match=re.escape(message)):
        load_cases(rule)


def test_yaml_syntax_errors_name_the_file(root):
    path = root / "schemes" / "zorgtoeslag.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n  bad: [\n", encoding="utf-8")
    with pytest.raises(RuleLoadError, match=re.escape(f"{path}: not valid YAML")):
        load_rules(root=root)


def test_the_scheme_file_is_yaml_a_person_can_read():
    data = yaml.safe_load((PACKAGE / "schemes" / "zorgtoeslag.yaml").read_text(encoding="utf-8"))
    assert list(data)[:5] == ["id", "version", "label", "description", "legal_basis"]


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml: one loader")
def test_every_shipped_yaml_file_reads_the_same_with_the_fast_loader():
    """read_yaml uses libyaml's loader for speed; it must read our files as PyYAML does."""
    repo = PACKAGE.parent
    paths = sorted(repo.glob("entitlement_rules/**/*.yaml")) + sorted(
        repo.glob("privacy/**/*.yaml")
    )
    assert len(paths) > 20
    for path in paths:
        assert read_yaml(path) == yaml.safe_load(path.read_text(encoding="utf-8")), path
