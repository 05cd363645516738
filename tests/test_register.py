"""The processing register as data: the shipped files load, bad files are refused with the file,
field and cause named, the version id follows the content, and lineage resolves every household
column to its source fields and their legal basis."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import join
from pipelines.contract import SOURCES
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS
from privacy import minimise
from privacy.purpose_check import needed_fields
from privacy.register import (
    CONDITIONS,
    DEFAULT_ROOT,
    RegisterError,
    allowed_fields,
    canonical_digest,
    column_lineage,
    household_lineage,
    load_register,
)

PES = "proactive-entitlement-signalling"
DRO = "debt-relief-outreach"


@pytest.fixture
def register_copy(tmp_path) -> Path:
    """A writable copy of the shipped register."""
    root = tmp_path / "register"
    root.mkdir()
    for path in DEFAULT_ROOT.glob("*.yaml"):
        shutil.copy(path, root / path.name)
    return root


def edit(root: Path, activity: str, change) -> None:
    path = root / f"{activity}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


# -- the shipped register -------------------------------------------------------------------


def test_the_shipped_register_holds_both_processing_activities():
    register = load_register()
    assert set(register.activities) == {PES, DRO}
    assert re.fullmatch(r"[0-9a-f]{64}", register.version)


def test_the_version_id_is_the_sha256_of_the_canonical_content():
    register = load_register()
    raw = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(DEFAULT_ROOT.glob("*.yaml"))}
    assert register.version == canonical_digest(raw)
    assert load_register().version == register.version


def test_every_activity_records_controller_purpose_retention_and_dpia():
    for activity in load_register().activities.values():
        assert activity.controller and activity.purpose
        assert re.fullmatch(r"P\d+[YMWD]", activity.retention["period"])
        assert activity.dpia["reference"] and activity.dpia["status"] == "approved"
        assert {"dpia_recorded", "retention_set", "objections_honoured"} <= set(activity.conditions)


def test_every_field_of_every_registered_source_has_a_decision_and_a_reason():
    for activity in load_register().activities.values():
        for entry in activity.sources.values():
            assert set(entry.fields) == set(SOURCES[entry.name].column_names), (
                f"{activity.id}: {entry.name}"
            )
            assert all(rule.why for rule in entry.fields.values())


def test_every_assumed_basis_says_why_and_every_established_one_was_checked():
    for activity in load_register().activities.values():
        bases = list(activity.general_basis)
        bases += [b for e in activity.sources.values() for b in e.legal_basis]
        for basis in bases:
            if basis.assumption:
                assert len(basis.note) > 40, basis.citation()
            else:
                assert basis.checked and basis.article and basis.url, basis.citation()
            if basis.bwb_id:
                assert basis.bwb_id in basis.url, basis.citation()


def test_proactive_signalling_is_marked_as_resting_on_an_assumed_basis():
    activity = load_register().activity(PES)
    assert all(b.assumption for b in activity.general_basis)
    assert activity.sources["tax"].assumption  # AWR art. 67: no exception found
    assert not activity.sources["objections"].assumption  # AVG art. 21: established


def test_debt_relief_outreach_rests_on_the_wgs_and_reads_only_brp_arrears_and_objections():
    activity = load_register().activity(DRO)
    assert set(activity.sources) == {"brp", "arrears", "objections"}
    assert not any(b.assumption for b in activity.general_basis)
    assert {b.bwb_id for b in activity.general_basis} == {"BWBR0031331"}
    assert activity.schemes == ()


# -- minimisation and lineage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("purpose", "source", "expected"),
    [
        (PES, "housing", {"address_id", "tenure", "monthly_rent", "service_costs"}),
        (PES, "health_insurance", {"bsn", "insured_from", "insured_to"}),
        (DRO, "brp", set(SOURCES["brp"].column_names) - {"birth_date"}),
        (DRO, "tax", set()),
        ("marketing", "brp", set()),
    ],
)
def test_allowed_fields_are_what_a_purpose_may_use_of_a_source(purpose, source, expected):
    assert allowed_fields(load_register(), purpose, source) == expected


def test_every_household_column_resolves_to_registered_source_fields():
    lineage = household_lineage(load_register(), PES)
    assert set(lineage) == {c.name for c in HOUSEHOLD_COLUMNS}
    for items in lineage.values():
        for item in items:
            assert item.rule is not None and item.rule.usable, item.source_field
            assert item.basis


def test_combined_income_traces_to_assessed_income_under_the_awr():
    (item,) = column_lineage(load_register(), PES, "combined_income")
    assert item.source_field == "tax.assessed_income"
    assert item.rule.status == "allowed"
    assert "BWBR0002320" in item.as_dict()["legal_basis"][0]


def test_the_reference_date_column_derives_from_no_source():
    assert column_lineage(load_register(), PES, "reference_date") == []


def test_district_codes_are_for_aggregate_reports_only():
    (item,) = column_lineage(load_register(), PES, "district_code")
    assert item.rule.conditions == ("aggregate_only",)


def test_an_unknown_column_has_no_lineage():
    with pytest.raises(KeyError, match="shoe_size"):
        column_lineage(load_register(), PES, "shoe_size")


def test_the_check_and_the_body_side_minimisation_agree_on_the_needed_fields():
    needed = needed_fields()
    for name, source in SOURCES.items():
        assert set(needed[name]) == set(minimise.needed_fields(source)), name


def test_every_source_column_the_join_sql_names_is_a_needed_field():
    sql = " ".join(
        getattr(join, n) for n in ("PERSON_AT_ADDRESS_SQL", "PERSON_FACTS_SQL", "HOUSEHOLD_SQL")
    )
    words = set(re.findall(r"[a-z_]+", sql))
    needed = needed_fields()
    for name, source in SOURCES.items():
        named = {c for c in source.column_names if c in words}
        # birth_date arrives coarsened as `age` (privacy/minimise.py), so the SQL names `age`.
        assert named <= set(needed[name]), f"{name}: {sorted(named - set(needed[name]))}"


# -- versioning -----------------------------------------------------------------------------


def test_a_change_of_content_gives_a_new_version(register_copy):
    before = load_register(register_copy).version

    def tighten(data):
        data["sources"]["tax"]["fields"]["assets"]["why"] = "asset limits of the toeslagen only"

    edit(register_copy, PES, tighten)
    after = load_register(register_copy)
    assert after.version != before
    assert after.activity(DRO).digest == load_register().activity(DRO).digest


def test_a_change_of_comments_or_layout_keeps_the_version(register_copy):
    before = load_register(register_copy).version
    path = register_copy / f"{PES}.yaml"
    path.write_text("# reviewed by the DPO\n" + path.read_text(encoding="utf-8") + "\n\n")
    assert load_register(register_copy).version == before


# -- invalid files: each refused with file, field and cause ---------------------------------


def _set(*keys, value):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _drop(*keys):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


INVALID = [
    (
        "an unknown source",
        _set("sources", "pension", value={"legal_basis": [], "fields": {}}),
        r"unknown source 'pension'",
    ),
    (
        "a field the contract does not have",
        _set("sources", "brp", "fields", "shoe_size", value={"status": "allowed", "why": "x"}),
        r"sources\.brp\.fields\.shoe_size: source brp has no field 'shoe_size'",
    ),
    (
        "a status that is no decision",
        _set("sources", "tax", "fields", "assets", "status", value="maybe"),
        r"sources\.tax\.fields\.assets\.status must be one of allowed, conditional",
    ),
    (
        "a conditional field without conditions",
        _set("sources", "tax", "fields", "assets", "status", value="conditional"),
        r"a field has conditions exactly when its status is conditional",
    ),
    (
        "an activity condition put on a field",
        _set(
            "sources",
            "tax",
            "fields",
            "assets",
            value={"status": "conditional", "why": "x", "conditions": ["dpia_recorded"]},
        ),
        r"'dpia_recorded' is no condition for the field level",
    ),
    (
        "an activity condition nobody can check",
        _set("conditions", value=["dpia_recorded", "vibes"]),
        r"conditions: 'vibes' is no condition for the activity level",
    ),
    (
        "a malformed BWB id",
        _set("sources", "objections", "legal_basis", 0, "bwb_id", value="BWB123"),
        r"legal_basis\[0\]\.bwb_id must be a BWB id",
    ),
    (
        "an established basis that was never checked against the law",
        _set("sources", "objections", "legal_basis", 0, "checked", value=False),
        r"an established basis \(assumption: false\) must have been checked",
    ),
    (
        "an assumed basis that does not say why",
        _drop("sources", "tax", "legal_basis", 0, "note"),
        r"sources\.tax\.legal_basis\[0\]\.note is required: say why",
    ),
    (
        "a source without a legal basis",
        _set("sources", "tax", "legal_basis", value=[]),
        r"sources\.tax\.legal_basis must be a non-empty list",
    ),
    (
        "an id that is not the file name",
        _set("id", value="signalling"),
        r"id must equal the file name 'proactive-entitlement-signalling'",
    ),
    (
        "a retention period in words",
        _set("retention", "period", value="one year"),
        r"retention\.period must be an ISO 8601 duration",
    ),
    (
        "an unknown scheme",
        _set("schemes", value=["zorgtoeslag", "lottery"]),
        r"unknown scheme\(s\) lottery",
    ),
    (
        "a field restricted to a scheme the activity does not evaluate",
        _set("sources", "tax", "fields", "assets", "schemes", value=["bijstand"]),
        r"scheme\(s\) bijstand are not schemes of this activity",
    ),
    (
        "an unknown key",
        _set("lawful", value=True),
        r"top level has unknown field\(s\) lawful",
    ),
    (
        "a DPIA status outside the list",
        _set("dpia", "status", value="fine"),
        r"dpia\.status must be one of approved, in_progress, not_started",
    ),
]


@pytest.mark.parametrize(("what", "change", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_an_invalid_register_is_refused_naming_file_field_and_cause(
    register_copy, what, change, message
):
    edit(register_copy, PES, change)
    with pytest.raises(RegisterError, match=message) as error:
        load_register(register_copy)
    assert f"{PES}.yaml" in str(error.value)


def test_a_file_that_is_not_yaml_is_refused(register_copy):
    (register_copy / f"{PES}.yaml").write_text("id: [unclosed\n")
    with pytest.raises(RegisterError, match="not valid YAML"):
        load_register(register_copy)


def test_an_empty_register_folder_is_refused(tmp_path):
    with pytest.raises(RegisterError, match="no processing activity files"):
        load_register(tmp_path)


def test_every_condition_says_where_it_may_stand_and_how_it_is_enforced():
    for condition in CONDITIONS.values():
        assert condition.kind in ("check", "obligation")
        assert condition.scope in ("activity", "field", "automatic")
        assert condition.text
