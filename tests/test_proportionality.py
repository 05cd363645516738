"""The proportionality checks, each at and around its threshold, on a real Beam pipeline.

Reference date 2025-06-01 and the thresholds of privacy/proportionality.yaml:
zorgtoeslag minimum 23.50 a year (Awir art. 14 lid 4-5: under 24 after rounding to whole
euros is not paid), default minimum 0.01, minimum confidence 0.4, fatigue 12 months,
open case: contacted / applied / granted less than 6 months ago.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from proportionality_stage import (
    NECESSITY,
    REF,
    RUN,
    ZORGTOESLAG_FIELDS,
    candidate,
    history_row,
    run_stage,
)

from entitlement_rules import compile_rule, load_rules
from pipelines import lifecycle
from pipelines.audit_records import AuditContext, canonical_json
from pipelines.evaluate import CANDIDATE_SCHEMA
from pipelines.options import pipeline_options
from pipelines.proportionality import (
    CHECKS,
    REASONS,
    RESOLVED,
    SIGNALS,
    SUPPRESSED,
    ApplyProportionality,
    PolicyError,
    assess_necessity,
    load_policy,
)
from privacy.register import load_register

D = Decimal
PURPOSE = "proactive-entitlement-signalling"

# name -> (candidate changes, history changes or None, expected reasons; [] = signal)
CASES = {
    # minimum amount: zorgtoeslag 23.50
    "amount_23_49": ({"estimated_annual_amount": D("23.49")}, None, ["minimum_amount"]),
    "amount_23_50": ({"estimated_annual_amount": D("23.50")}, None, []),
    "amount_23_51": ({"estimated_annual_amount": D("23.51")}, None, []),
    # a scheme without its own minimum: the default 0.01
    "default_minimum_0_00": (
        {"scheme": "kwijtschelding", "estimated_annual_amount": D("0.00")},
        None,
        ["minimum_amount"],
    ),
    "default_minimum_0_01": (
        {"scheme": "kwijtschelding", "estimated_annual_amount": D("0.01")},
        None,
        [],
    ),
    # confidence 0.4
    "confidence_0_3999": ({"confidence": 0.3999}, None, ["confidence"]),
    "confidence_0_4": ({"confidence": 0.4}, None, []),
    "confidence_0_4001": ({"confidence": 0.4001}, None, []),
    "confidence_unknown": ({"confidence": None}, None, ["confidence"]),
    # fatigue: 12 months before 2025-06-01 is 2024-06-01
    "fatigue_exactly_12_months": ({}, {"last_signalled_on": dt.date(2024, 6, 1)}, []),
    "fatigue_one_day_short": ({}, {"last_signalled_on": dt.date(2024, 6, 2)}, ["fatigue"]),
    "fatigue_one_day_over": ({}, {"last_signalled_on": dt.date(2024, 5, 31)}, []),
    "fatigue_last_month": ({}, {"last_signalled_on": dt.date(2025, 5, 1)}, ["fatigue"]),
    "fatigue_counts_a_resolved_episode_too": (
        {},
        {"last_signalled_on": dt.date(2025, 3, 1), "episode_open": False},
        ["fatigue"],
    ),
    # open case: 6 months before 2025-06-01 is 2024-12-01
    "open_case_exactly_6_months": (
        {},
        {"case_outcome": "applied", "case_on": dt.date(2024, 12, 1)},
        [],
    ),
    "open_case_one_day_short": (
        {},
        {"case_outcome": "applied", "case_on": dt.date(2024, 12, 2)},
        ["open_case"],
    ),
    "open_case_contacted": (
        {},
        {"case_outcome": "contacted", "case_on": dt.date(2025, 5, 25)},
        ["open_case"],
    ),
    "open_case_granted": (
        {},
        {"case_outcome": "granted", "case_on": dt.date(2025, 5, 1)},
        ["open_case"],
    ),
    "declined_is_no_open_case": (
        {},
        {"case_outcome": "declined", "case_on": dt.date(2025, 5, 1)},
        [],
    ),
    "not_entitled_is_no_open_case": (
        {},
        {"case_outcome": "not_entitled", "case_on": dt.date(2025, 5, 1)},
        [],
    ),
    "unreachable_is_no_open_case": (
        {},
        {"case_outcome": "unreachable", "case_on": dt.date(2025, 5, 1)},
        [],
    ),
    # subsidiarity, objection, registration
    "already_receiving": ({"already_receiving": True}, None, ["already_receiving"]),
    "objected": ({"objected": True}, None, ["objection"]),
    "deregistered": ({"deregistered": True}, None, ["deregistered"]),
    "deregistration_unknown": ({"deregistered": None}, None, ["deregistered"]),
    # completeness: rows about the household quarantined at the body, or not known
    "quarantined_rows": ({"quarantined": ["brp", "tax"]}, None, ["incomplete_household"]),
    "quarantined_unknown": ({"quarantined": None}, None, ["incomplete_household"]),
    # necessity: a rule reading what the register refuses, a rule nobody assessed
    "necessity_refused": ({"scheme": "huurtoeslag"}, None, ["necessity"]),
    "necessity_not_assessed": ({"scheme": "kindgebonden_budget"}, None, ["necessity"]),
    # every failed check is named, in the order of REASONS
    "several_reasons": (
        {"estimated_annual_amount": D("10.00"), "confidence": 0.1, "objected": True},
        {"last_signalled_on": dt.date(2025, 5, 1)},
        ["minimum_amount", "confidence", "fatigue", "objection"],
    ),
}


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    rows = [candidate(name, **changes) for name, (changes, _, _) in CASES.items()]
    rows.append(candidate("not_entitled", entitled=False, estimated_annual_amount=None))
    history = [history_row(n, **h) for n, (_, h, _) in CASES.items() if h is not None]
    half = len(rows) // 2
    return run_stage(tmp_path_factory.mktemp("stage"), [rows[:half], rows[half:]], history)


def test_a_history_read_from_a_file_decides_as_the_table_does(outcome, tmp_path):
    """A run gives the stage its history as a file in staging: pickled into the graph, a
    table cost seconds at a large municipality's size (pipelines/proportionality.py)."""
    rows = [candidate(name, **changes) for name, (changes, _, _) in CASES.items()]
    rows.append(candidate("not_entitled", entitled=False, estimated_annual_amount=None))
    history = [history_row(n, **h) for n, (_, h, _) in CASES.items() if h is not None]
    half = len(rows) // 2
    from_file = run_stage(tmp_path, [rows[:half], rows[half:]], history, history_file=True)
    assert from_file[RESOLVED] and from_file[SIGNALS]  # the history took part
    for name in (SIGNALS, SUPPRESSED, RESOLVED):
        assert sorted(map(str, from_file[name])) == sorted(map(str, outcome[name])), name


def test_a_history_file_is_not_pickled_into_the_graph(tmp_path):
    state = pa.Table.from_pylist(
        [history_row(f"h{i:05d}") for i in range(5000)], schema=lifecycle.STATE_SCHEMA
    )
    pq.write_table(state, tmp_path / "history.parquet")
    audit = AuditContext(RUN, "proactive-entitlement-signalling", "test-register")
    sizes = {}
    for kind, history in (("table", state), ("file", tmp_path / "history.parquet")):
        p = beam.Pipeline(options=pipeline_options())
        stage = ApplyProportionality(load_policy(), NECESSITY, RUN, REF, audit, history)
        p | beam.Create([CANDIDATE_SCHEMA.empty_table()]) | stage
        sizes[kind] = len(p.to_runner_api().SerializeToString())
    assert sizes["table"] - sizes["file"] > 20_000  # the table, twice, even compressed


def test_without_a_history_no_step_gathers_the_households_to_find_who_is_gone():
    audit = AuditContext(RUN, "proactive-entitlement-signalling", "test-register")
    state = pa.Table.from_pylist([history_row("h1")], schema=lifecycle.STATE_SCHEMA)
    labels = {}
    for kind, history in (("none", None), ("history", state)):
        p = beam.Pipeline(options=pipeline_options())
        stage = ApplyProportionality(load_policy(), NECESSITY, RUN, REF, audit, history)
        out = p | beam.Create([CANDIDATE_SCHEMA.empty_table()]) | stage
        labels[kind] = (len(out[RESOLVED]), str(p.to_runner_api()))
    assert labels["none"][0] == 1 and "ResolveAbsent" not in labels["none"][1]
    assert labels["history"][0] == 2 and "ResolveAbsent" in labels["history"][1]


def _by_household(rows: list[dict]) -> dict[str, dict]:
    return {r["household_pid"].removeprefix("h."): r for r in rows}


@pytest.mark.parametrize("name", list(CASES))
def test_each_check_at_and_around_its_threshold(outcome, name):
    expected = CASES[name][2]
    signals = _by_household(outcome["signals"])
    suppressed = _by_household(outcome["suppressed"])
    if expected:
        assert name not in signals
        assert suppressed[name]["reasons"] == expected
    else:
        assert name in signals and name not in suppressed


def test_reasons_are_named_in_the_order_of_the_checks(outcome):
    for row in outcome["suppressed"]:
        assert row["reasons"] == sorted(row["reasons"], key=REASONS.index)


def test_a_household_that_is_not_entitled_is_no_candidate(outcome):
    everywhere = outcome["signals"] + outcome["suppressed"] + outcome["resolved"]
    assert "not_entitled" not in _by_household(everywhere)
    assert not [a for a in outcome["audit"] if a["data_subject_pid"] == "a.not_entitled"]


def _proportionality_records(outcome) -> dict[str, dict]:
    return {
        a["data_subject_pid"].removeprefix("a."): a
        for a in outcome["audit"]
        if a["name"] == "proportionality"
    }


def test_every_candidate_has_one_record_with_every_check_and_its_outcome(outcome):
    records = _proportionality_records(outcome)
    assert set(records) == set(CASES)
    for name, record in records.items():
        reasons = CASES[name][2]
        attributes = json.loads(record["attributes"])
        assert record["status"] == ("suppressed" if reasons else "signal")
        assert attributes["decision"] == record["status"]
        assert attributes["reasons"] == reasons
        assert set(attributes["checks"]) == set(CHECKS)
        failed = {c for c, v in attributes["checks"].items() if v["outcome"] == "fail"}
        assert failed == {_check_of(r) for r in reasons}


def _check_of(reason: str) -> str:
    return {
        "already_receiving": "subsidiarity",
        "open_case": "subsidiarity",
        "deregistered": "registration",
        "incomplete_household": "completeness",
    }.get(reason, reason)


def test_the_record_holds_thresholds_values_and_the_fields_read(outcome):
    checks = json.loads(_proportionality_records(outcome)["amount_23_49"]["attributes"])["checks"]
    assert checks["minimum_amount"] == {"amount": "23.49", "minimum": "23.50", "outcome": "fail"}
    assert checks["confidence"] == {"minimum": "0.4", "outcome": "pass", "value": "1.0000"}
    assert checks["necessity"] == {"fields": ZORGTOESLAG_FIELDS, "outcome": "pass"}
    assert checks["fatigue"] == {"last_signalled_on": None, "months": 12, "outcome": "pass"}
    assert checks["completeness"] == {"outcome": "pass", "quarantined": None}
    held = json.loads(_proportionality_records(outcome)["quarantined_rows"]["attributes"])
    assert held["checks"]["completeness"] == {"outcome": "fail", "quarantined": ["brp", "tax"]}
    case = json.loads(_proportionality_records(outcome)["open_case_granted"]["attributes"])
    assert case["checks"]["subsidiarity"] == {
        "already_receiving": False,
        "open_case": "granted",
        "outcome": "fail",
    }


def test_the_attributes_are_canonical_json(outcome):
    for record in _proportionality_records(outcome).values():
        assert canonical_json(json.loads(record["attributes"])) == record["attributes"]


def test_span_ids_are_unique_and_every_signal_also_has_a_signal_record(outcome):
    spans = [a["span_id"] for a in outcome["audit"]]
    assert len(spans) == len(set(spans))
    signalled = {a["data_subject_pid"] for a in outcome["audit"] if a["name"] == "signal"}
    assert signalled == {s["applicant_pid"] for s in outcome["signals"]}


def test_signals_keep_their_columns_and_carry_a_lifecycle_status(outcome):
    signals = _by_household(outcome["signals"])
    assert signals["amount_23_50"]["status"] == "new"
    assert signals["fatigue_exactly_12_months"]["status"] == "repeated"
    assert signals["amount_23_50"]["explanation"] == "entitled"
    assert signals["amount_23_50"]["estimated_annual_amount"] == D("23.50")


# -- the policy file ------------------------------------------------------------------------


def test_the_shipped_policy_loads_with_its_thresholds():
    policy = load_policy()
    assert policy.minimum_for("zorgtoeslag") == D("23.50")
    assert policy.minimum_for("aio") == D("0.01")
    assert policy.minimum_confidence == D("0.4")
    assert policy.fatigue_months == 12
    assert policy.open_case_outcomes == ("contacted", "applied", "granted")
    assert policy.open_case_months == 6
    assert len(policy.version) == 16


def _write_policy(tmp_path, edit) -> str:
    import yaml

    from pipelines.proportionality import DEFAULT_PATH

    data = yaml.safe_load(DEFAULT_PATH.read_text())
    edit(data)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@dataclass
class Broken:
    edit: object
    message: str


BROKEN = {
    "no reasoning": Broken(
        lambda d: d["fatigue_months"].pop("reasoning"), "fatigue_months.reasoning is required"
    ),
    "a law value without source": Broken(
        lambda d: d["minimum_annual_amount"]["schemes"].update(
            zorgtoeslag={"value": "23.50", "status": "corroborated", "reasoning": "Awir"}
        ),
        "minimum_annual_amount.schemes.zorgtoeslag.source is required",
    ),
    "an unquoted amount": Broken(
        lambda d: d["minimum_annual_amount"]["default"].update(value=0.01),
        "minimum_annual_amount.default.value must be a quoted decimal",
    ),
    "a confidence above 1": Broken(
        lambda d: d["minimum_confidence"].update(value="1.5"),
        "minimum_confidence.value must be a quoted decimal from 0 to 1, not '1.5'",
    ),
    "negative fatigue": Broken(
        lambda d: d["fatigue_months"].update(value=-1),
        "fatigue_months.value must be a whole number from 0 to 120, not -1",
    ),
    "an unknown outcome": Broken(
        lambda d: d["open_case"].update(outcomes=["phoned"]),
        "open_case.outcomes must be a list of",
    ),
    "a missing section": Broken(lambda d: d.pop("open_case"), "open_case is required"),
    "a bare value without reasoning": Broken(
        lambda d: d.update(fatigue_months=12), "fatigue_months must be a mapping"
    ),
    "a scheme name that is no name": Broken(
        lambda d: d["minimum_annual_amount"]["schemes"].update(
            {"x' OR '1": {"value": "1.00", "status": "policy", "reasoning": "r"}}
        ),
        "minimum_annual_amount.schemes has a bad name",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_policy_is_refused_naming_file_and_field(tmp_path, name):
    path = _write_policy(tmp_path, BROKEN[name].edit)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"{path}: ")
    assert BROKEN[name].message in str(err.value)


def test_the_policy_version_changes_with_any_value(tmp_path):
    path = _write_policy(tmp_path, lambda d: d["fatigue_months"].update(value=11))
    assert load_policy(path).version != load_policy().version


# -- necessity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """The parts of a CompiledRule that necessity reads."""

    scheme: str
    year: int
    fields: frozenset[str]


def _necessity(rule: Rule, register=None) -> dict:
    return assess_necessity([rule], register, PURPOSE).to_pylist()[0]


@pytest.fixture(scope="module")
def register():
    return load_register()


def test_the_zorgtoeslag_rule_reads_only_what_the_register_allows(register):
    (rule,) = [compile_rule(r, 2025) for r in load_rules(years=[2025]) if r.id == "zorgtoeslag"]
    row = assess_necessity([rule], register, PURPOSE).to_pylist()[0]
    assert row["necessary"] and row["not_allowed"] == []
    assert row["fields"] == sorted(rule.fields)


def test_a_field_allowed_for_another_scheme_only_is_not_necessary(register):
    row = _necessity(
        Rule("zorgtoeslag", 2025, frozenset({"household_pid", "monthly_rent"})), register
    )
    assert not row["necessary"]
    assert row["not_allowed"] == [
        "monthly_rent <- housing.monthly_rent: allowed for huurtoeslag only"
    ]


def test_arrears_for_aggregate_use_only_may_not_decide_a_signal(register):
    row = _necessity(Rule("zorgtoeslag", 2025, frozenset({"arrears_total"})), register)
    assert not row["necessary"]
    assert row["not_allowed"] == ["arrears_total <- arrears.amount_overdue: aggregate use only"]


def test_a_scheme_outside_the_purpose_is_not_necessary(register):
    row = _necessity(Rule("kinderbijslag", 2025, frozenset({"household_pid"})), register)
    assert row["not_allowed"] == [f"scheme kinderbijslag is not a scheme of {PURPOSE}"]


def test_without_a_register_the_household_lineage_bounds_the_fields():
    assert _necessity(Rule("zorgtoeslag", 2025, frozenset({"applicant_age"})))["necessary"]
    row = _necessity(Rule("zorgtoeslag", 2025, frozenset({"shoe_size"})))
    assert row["not_allowed"] == ["shoe_size: not a household column"]


def _reference_json(row: dict, policy, fields: dict) -> tuple[str, str]:
    """The checks and record attributes of one assessed row, made the plain way."""

    def outcome(flag):
        return "pass" if row[flag] else "fail"

    checks = {
        "completeness": {"outcome": outcome("ok_completeness"), "quarantined": row["quarantined"]},
        "confidence": {
            "minimum": str(policy.minimum_confidence),
            "outcome": outcome("ok_confidence"),
            "value": row["confidence_text"],
        },
        "fatigue": {
            "last_signalled_on": row["last_signalled_text"],
            "months": policy.fatigue_months,
            "outcome": outcome("ok_fatigue"),
        },
        "minimum_amount": {
            "amount": row["amount_text"],
            "minimum": row["minimum_text"],
            "outcome": outcome("ok_minimum_amount"),
        },
        "necessity": {
            "fields": fields.get((row["scheme"], row["benefit_year"])),
            "outcome": outcome("ok_necessity"),
        },
        "objection": {"outcome": outcome("ok_objection")},
        "registration": {"outcome": outcome("ok_registration")},
        "subsidiarity": {
            "already_receiving": row["already_receiving"],
            "open_case": row["open_case"],
            "outcome": outcome("ok_subsidiarity"),
        },
    }
    record = {
        "benefit_year": row["benefit_year"],
        "checks": checks,
        "decision": row["decision"],
        "household_pid": row["household_pid"],
        "lifecycle": row["status"],
        "policy_version": policy.version,
        "reasons": row["reasons"],
        "scheme": row["scheme"],
        "signal_id": row["signal_id"],
    }
    return canonical_json(checks), canonical_json(record)


def test_the_json_built_column_wise_equals_a_row_by_row_reference():
    """AssessedJson builds each combination's JSON once and joins the rows' values in: on
    random rows (nulls, lists, several schemes and years) it must equal the plain way."""
    import random

    import pyarrow as pa

    from pipelines.proportionality import NECESSITY_SCHEMA, AssessedJson

    rng = random.Random(7)
    policy = load_policy()
    fields = {("zorgtoeslag", 2025): ["applicant_age", "combined_income"], ("aio", 2024): []}
    necessity = pa.Table.from_pylist(
        [{"scheme": s, "benefit_year": y, "fields": f} for (s, y), f in fields.items()],
        schema=NECESSITY_SCHEMA,
    )

    # The values each field may take; a row's own values (ids, amounts, dates) vary freely.
    choices = {flag: [True, False, None] for flag in AssessedJson._FLAGS} | {
        "quarantined": [[], ["tax"], ["brp", "health_insurance"], None],
        "minimum_text": ["0.01", "23.50"],
        "already_receiving": [True, False, None],
        "open_case": ["granted", "applied", None],
        "scheme": ["zorgtoeslag", "aio", "kwijtschelding"],
        "benefit_year": [2024, 2025],
        "decision": ["signal", "suppressed"],
        "status": ["new", "repeated", "resolved"],
        "reasons": [[], ["fatigue"], ["necessity", "open_case"]],
    }
    # Rows that differ from a base row in one field only: each field must set the JSON apart.
    bases = [{k: rng.choice(v) for k, v in choices.items()} for _ in range(8)]
    shared = [b | {name: value} for b in bases for name, vs in choices.items() for value in vs]
    rows = []
    for i, row in enumerate(shared * 2):
        rows.append(
            row
            | {
                "confidence_text": rng.choice(["0.9000", "0.4000", None]),
                "last_signalled_text": rng.choice([f"2025-0{i % 9 + 1}-02", None]),
                "amount_text": rng.choice([f"{i}.{i % 100:02d}", None]),
                "household_pid": f"d1.{'abcdefghijklmnop'[i % 16] * 32}",
                "signal_id": rng.choice([f"s.{'qrstuvwxyz'[i % 10] * 32}", None]),
            }
        )
    table = pa.Table.from_pylist(rows)
    checks, attributes = AssessedJson(policy, necessity)(table)
    expected = [_reference_json(r, policy, fields) for r in rows]
    assert checks.to_pylist() == [c for c, _ in expected]
    assert attributes.to_pylist() == [a for _, a in expected]
    empty = AssessedJson(policy, necessity)(table.slice(0, 0))
    assert [len(a) for a in empty] == [0, 0]


@pytest.mark.parametrize(
    "changes, refused",
    [
        ({"quarantined": ["brp", None]}, "a quarantined list holds a null"),
        ({"quarantined": ["brp\x1ftax"]}, "a quarantined list holds a null or"),
        ({"household_pid": 'd1."x'}, "a household_pid needs JSON escaping"),
        ({"signal_id": "s.\\q"}, "a signal_id needs JSON escaping"),
    ],
)
def test_what_the_json_cannot_key_or_quote_is_refused_not_written_wrongly(changes, refused):
    """A null or the separator in a list would give two lists one key, and an id is
    joined in unescaped: none of these comes from the pipeline, and each is refused."""
    import pyarrow as pa

    from pipelines.proportionality import NECESSITY_SCHEMA, AssessedJson

    row = {flag: True for flag in AssessedJson._FLAGS} | {
        "quarantined": ["tax"],
        "confidence_text": "0.9000",
        "last_signalled_text": "2024-01-01",
        "amount_text": "10.00",
        "minimum_text": "0.01",
        "already_receiving": False,
        "open_case": "granted",
        "scheme": "zorgtoeslag",
        "benefit_year": 2025,
        "decision": "signal",
        "status": "new",
        "reasons": ["fatigue"],
        "household_pid": "d1.abc",
        "signal_id": "s.abc",
    }
    build = AssessedJson(load_policy(), NECESSITY_SCHEMA.empty_table())
    build(pa.Table.from_pylist([row, row | {"scheme": None}]))  # the plain row is fine
    with pytest.raises(ValueError, match=refused):
        build(pa.Table.from_pylist([row, row | changes]))
