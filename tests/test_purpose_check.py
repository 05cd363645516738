"""The purpose check: a run is allowed, conditional or refused by the processing register before
any data file is opened; a rule may read only what its purpose and scheme allow; and a run
records the register version, its conditions and its legal bases in the manifest and the audit
trail. The flow tests run the real Prefect flow and Beam pipeline on the hand-made population."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from population import REFERENCE_DATE
from service_support import prepare_deliveries

from entitlement_rules import RuleCompileError, compile_rule, load_rules, rules_fields
from flows.cli import main
from pipelines.audit_records import AUDIT_SCHEMA, AuditContext, operation_span
from pipelines.contract import SOURCES
from privacy.purpose_check import (
    PurposeNotAllowed,
    RuleFieldNotAllowed,
    check_fields,
    check_purpose,
    check_rule_fields,
    enforce,
    purpose_check_record,
)
from privacy.register import DEFAULT_ROOT, RegisterError, load_register

PES = "proactive-entitlement-signalling"
DRO = "debt-relief-outreach"
PASSPHRASE = "a purpose-check passphrase"


def copy_register(root: Path, change=None, activity: str = PES) -> Path:
    """A copy of the shipped register under root, with `change(data)` applied to one activity."""
    root.mkdir(parents=True)
    for path in DEFAULT_ROOT.glob("*.yaml"):
        shutil.copy(path, root / path.name)
    if change is not None:
        path = root / f"{activity}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return root


def fields_of(data: dict, source: str) -> dict:
    return data["sources"][source]["fields"]


# -- the decision flow on the shipped register ----------------------------------------------


def test_proactive_signalling_may_run_under_conditions():
    outcome = check_purpose(load_register(), PES)
    assert outcome.decision == "conditional"
    assert not outcome.refusals
    assert {c.id for c in outcome.conditions} == {
        "dpia_recorded",
        "retention_set",
        "objections_honoured",
        "aggregate_only",
        "compatibility_assessed",
        "assumed_legal_basis",
    }


def test_every_condition_says_where_it_applies():
    scopes = {c.id: c.scopes for c in check_purpose(load_register(), PES).conditions}
    assert scopes["dpia_recorded"] == ("activity",)
    assert "brp.district_code" in scopes["aggregate_only"]
    assert "arrears.amount_overdue" in scopes["compatibility_assessed"]
    assert "source tax" in scopes["assumed_legal_basis"]
    assert "source objections" not in scopes["assumed_legal_basis"]


def test_every_field_of_every_source_gets_a_decision():
    outcome = check_purpose(load_register(), PES)
    assert len(outcome.fields) == sum(len(s.column_names) for s in SOURCES.values())
    decided = {f"{d.source}.{d.field}": d.decision for d in outcome.fields}
    assert decided["tax.assessed_income"] == "allowed"
    assert decided["brp.district_code"] == "conditional"
    dropped = {k for k, v in decided.items() if v == "dropped"}
    assert dropped == {
        "housing.landlord_id",
        "housing.contract_start",
        "health_insurance.insurer_id",
    }


def test_the_table_and_the_flow_are_readable():
    outcome = check_purpose(load_register(), PES)
    table = outcome.table().splitlines()
    assert table[0].split()[:4] == ["source", "field", "used", "decision"]
    assert any(line.split()[:4] == ["brp", "district_code", "yes", "conditional"] for line in table)
    flow = outcome.flow_text()
    assert "1. Is the purpose registered? yes" in flow
    assert "Outcome: CONDITIONAL" in flow


def test_a_purpose_without_conditions_and_with_established_bases_is_simply_allowed(tmp_path):
    def plain(data):
        data["conditions"] = []
        basis = {
            "law": "Testwet",
            "bwb_id": "BWBR0000001",
            "article": "1",
            "url": "https://wetten.overheid.nl/BWBR0000001",
            "assumption": False,
            "checked": True,
        }
        data["general_basis"] = [basis]
        for entry in data["sources"].values():
            entry["legal_basis"] = [basis]
            for rule in entry["fields"].values():
                if rule["status"] == "conditional":
                    rule["status"] = "allowed"
                    del rule["conditions"]

    outcome = check_purpose(load_register(copy_register(tmp_path / "r", plain)), PES)
    assert outcome.decision == "allowed"
    assert outcome.conditions == ()


def _without(*keys):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


REFUSALS = [
    ("an unregistered source", _without("sources", "housing"), "source housing is not registered"),
    (
        "an unregistered field",
        _without("sources", "brp", "fields", "role"),
        "field brp.role is not covered by the register",
    ),
    (
        "an unregistered field the run does not even need",
        _without("sources", "housing", "fields", "landlord_id"),
        "field housing.landlord_id is not covered by the register",
    ),
    (
        "a needed field the purpose does not allow",
        lambda d: fields_of(d, "tax")["assets"].update(status="not_allowed"),
        "field tax.assets is needed by the run (household column combined_assets",
    ),
    (
        "a DPIA that is not approved",
        lambda d: d["dpia"].update(status="in_progress"),
        "condition dpia_recorded does not hold",
    ),
    ("no DPIA at all", _without("dpia"), "no DPIA is recorded for this activity"),
    ("no retention period", _without("retention"), "no retention period is set"),
    (
        "objections that are not registered",
        _without("sources", "objections"),
        "condition objections_honoured does not hold",
    ),
]


@pytest.mark.parametrize(("what", "change", "cause"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_anything_the_register_does_not_cover_refuses_the_run(tmp_path, what, change, cause):
    outcome = check_purpose(load_register(copy_register(tmp_path / "r", change)), PES)
    assert outcome.decision == "refused"
    assert any(cause in r for r in outcome.refusals), outcome.refusals
    with pytest.raises(PurposeNotAllowed, match="run refused for purpose") as error:
        enforce(outcome)
    assert "Action:" in str(error.value) and "No data file was opened" in str(error.value)


def test_an_unregistered_purpose_is_refused_with_what_to_do():
    outcome = check_purpose(load_register(), "marketing")
    assert outcome.decision == "refused"
    (refusal,) = outcome.refusals
    assert "'marketing' is not in the processing register" in refusal
    assert "marketing.yaml" in refusal and "Action:" in refusal


def test_debt_relief_outreach_cannot_use_the_joined_entitlement_pipeline():
    outcome = check_purpose(load_register(), DRO)
    assert outcome.decision == "refused"
    refused_sources = {r.split()[1] for r in outcome.refusals if r.startswith("source ")}
    assert refused_sources == {"tax", "benefits", "housing", "health_insurance"}
    assert any(r.startswith("field brp.birth_date is needed") for r in outcome.refusals)


def test_debt_relief_outreach_may_read_brp_arrears_and_objections():
    outcome = check_purpose(load_register(), DRO, sources=("brp", "arrears", "objections"))
    birth_date = [d for d in outcome.fields if d.field == "birth_date"]
    assert birth_date[0].decision == "refused"  # the household table derives ages from it
    assert {d.source for d in outcome.fields} == {"brp", "arrears", "objections"}
    assert not any(d.decision == "refused" for d in outcome.fields if d.source != "brp")


def test_ingest_records_get_the_basis_and_conditions_of_their_source():
    bases = check_purpose(load_register(), PES).ingest_bases()
    assert set(bases) == set(SOURCES)
    tax = bases["tax"]
    assert tax["purpose"] == PES and tax["assumption"] is True
    assert tax["legal_basis"][0].startswith("Algemene wet inzake rijksbelastingen (AWR)")
    assert "assumed_legal_basis" in tax["conditions"]
    assert "compatibility_assessed" in bases["arrears"]["conditions"]
    assert "compatibility_assessed" not in tax["conditions"]
    assert "assumed_legal_basis" not in bases["objections"]["conditions"]


def test_the_run_level_audit_record_concerns_the_run_not_a_person():
    outcome = check_purpose(load_register(), PES)
    record = purpose_check_record(AuditContext("run-1", PES, outcome.register_version), outcome)
    assert record.schema == AUDIT_SCHEMA and record.num_rows == 1
    row = record.to_pylist()[0]
    assert row["name"] == "purpose_check" and row["status"] == "conditional"
    assert row["data_subject_pid"] is None and row["parent_span_id"] is None
    assert row["span_id"] == operation_span("run-1", "purpose_check")
    attributes = json.loads(row["attributes"])
    assert attributes["register_version"] == outcome.register_version
    assert {c["id"] for c in attributes["conditions"]} >= {"dpia_recorded", "aggregate_only"}


# -- rules: the compile-time lineage check --------------------------------------------------


def test_every_rule_reads_only_fields_proactive_signalling_allows():
    register = load_register()
    for rule in load_rules():
        lineage = check_fields(register, PES, rule.id, rule.scheme, rules_fields(rule))
        assert lineage, rule.id


def test_no_rule_may_be_compiled_for_debt_relief_outreach():
    register = load_register()
    for rule in load_rules():
        with pytest.raises(RuleFieldNotAllowed, match=f"scheme {rule.scheme} is not a scheme"):
            check_fields(register, DRO, rule.id, rule.scheme, rules_fields(rule))


@pytest.fixture(scope="module")
def zorgtoeslag_2025():
    (rule,) = load_rules(years=[2025], schemes=["zorgtoeslag"])
    return compile_rule(rule, 2025)


def test_a_rule_reading_a_field_its_scheme_may_not_use_fails_to_compile(tmp_path, zorgtoeslag_2025):
    def restrict(data):
        fields_of(data, "tax")["assessed_income"]["schemes"] = ["huurtoeslag"]

    register = load_register(copy_register(tmp_path / "r", restrict))
    with pytest.raises(RuleFieldNotAllowed) as error:
        check_rule_fields(register, PES, zorgtoeslag_2025)
    message = str(error.value)
    assert message.startswith(
        f"rule zorgtoeslag (scheme zorgtoeslag) may not be compiled for purpose '{PES}'"
    )
    assert (
        "column combined_income <- source field tax.assessed_income: allowed for purpose "
        f"'{PES}' only for scheme(s) huurtoeslag, not for zorgtoeslag"
    ) in message
    assert isinstance(error.value, RuleCompileError)


def test_a_rule_may_not_read_an_aggregate_only_column(zorgtoeslag_2025):
    widened = dataclasses.replace(
        zorgtoeslag_2025, fields=zorgtoeslag_2025.fields | {"district_code"}
    )
    with pytest.raises(
        RuleFieldNotAllowed, match=r"district_code <- source field brp\.district_code"
    ):
        check_rule_fields(load_register(), PES, widened)


def test_a_rule_may_not_read_a_column_without_lineage(zorgtoeslag_2025):
    widened = dataclasses.replace(zorgtoeslag_2025, fields=zorgtoeslag_2025.fields | {"shoe_size"})
    with pytest.raises(RuleFieldNotAllowed, match="column shoe_size is not a household column"):
        check_rule_fields(load_register(), PES, widened)


def test_a_rule_for_an_unregistered_purpose_fails_to_compile(zorgtoeslag_2025):
    with pytest.raises(RuleFieldNotAllowed, match="'marketing': the purpose is not in the"):
        check_rule_fields(load_register(), "marketing", zorgtoeslag_2025)


# -- the CLI ---------------------------------------------------------------------------------


def test_register_check_prints_the_flow_the_table_and_the_rules(capsys):
    assert main(["register", "check", "--purpose", PES]) == 0
    out = capsys.readouterr().out
    assert "Purpose check: proactive-entitlement-signalling" in out
    assert "Outcome: CONDITIONAL" in out
    assert "health_insurance  insurer_id" in out
    assert "  zorgtoeslag: allowed" in out


def test_register_check_exits_1_and_explains_a_refusal(capsys):
    assert main(["register", "check", "--purpose", DRO, "--format", "flow"]) == 1
    out = capsys.readouterr().out
    assert "Outcome: REFUSED" in out
    assert "source tax is not registered for purpose 'debt-relief-outreach'" in out


def test_register_show_lists_activities_with_their_bases(capsys):
    assert main(["register", "show"]) == 0
    out = capsys.readouterr().out
    assert f"version {load_register().version}" in out
    assert "Wet gemeentelijke schuldhulpverlening (Wgs) (BWBR0031331)" in out
    assert "why an assumption:" in out


def test_register_show_of_an_unknown_purpose_is_a_usage_error(capsys):
    assert main(["register", "show", "--purpose", "marketing"]) == 2
    assert "'marketing' is not in the register" in capsys.readouterr().err


# -- the flow: refused before any data file is opened; conditions and versions recorded -----

_WATCHED: list[str] = []
_ARMED: list[bool] = [False]


def _audit_hook(event: str, args: tuple) -> None:
    # Python's audit events for opening files and listing folders: the flow's own reads.
    if _ARMED[0] and event in ("open", "os.listdir", "os.scandir") and args:
        try:
            _WATCHED.append(os.fsdecode(args[0]))
        except TypeError:
            pass  # a file descriptor, not a path


@pytest.fixture(scope="module")
def watch_opens():
    """A list that collects every path the process opens or lists while a test is armed."""
    if not getattr(sys, "_signals_test_hook", False):
        sys.addaudithook(_audit_hook)
        sys._signals_test_hook = True

    class Watch:
        def __enter__(self):
            _WATCHED.clear()
            _ARMED[0] = True
            return _WATCHED

        def __exit__(self, *exc):
            _ARMED[0] = False

    return Watch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Raw population -> body and central keyrings -> pseudonymised deliveries (the CLI)."""
    root = tmp_path_factory.mktemp("purpose")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    prepare_deliveries(root, passphrase=PASSPHRASE)
    yield root
    mp.undo()


def run(world: Path, register: Path, purpose: str = PES, out: str = "runs") -> Path:
    from flows.run import run_flow

    return Path(
        run_flow(
            deliveries=str(world / "pseudo"),
            reference_date=dt.date.fromisoformat(REFERENCE_DATE),
            out=str(world / out),
            buckets=4,
            key_file=str(world / "keys" / "central.keyring"),
            purpose=purpose,
            register_dir=str(register),
        )
    )


REFUSED_RUNS = [
    ("an unregistered purpose", "marketing", None, "'marketing' is not in the processing register"),
    (
        "an unregistered source",
        PES,
        _without("sources", "health_insurance"),
        "source health_insurance",
    ),
    (
        "an unregistered field",
        PES,
        _without("sources", "tax", "fields", "year"),
        "field tax.year is not covered",
    ),
]


@pytest.mark.parametrize(
    ("what", "purpose", "change", "cause"), REFUSED_RUNS, ids=[r[0] for r in REFUSED_RUNS]
)
def test_a_refused_run_opens_no_data_file(
    world, watch_opens, tmp_path, what, purpose, change, cause
):
    register = copy_register(tmp_path / "register", change)
    deliveries = str(world / "pseudo")
    with watch_opens() as opened, pytest.raises(PurposeNotAllowed, match="run refused") as error:
        run(world, register, purpose, out=f"refused-{what.replace(' ', '-')}")
    assert cause in str(error.value)
    assert [p for p in opened if p.startswith(deliveries)] == []
    assert not (world / f"refused-{what.replace(' ', '-')}").exists()


def test_a_rule_the_register_does_not_allow_stops_the_run_before_any_data_is_read(
    world, watch_opens, tmp_path
):
    def restrict(data):
        fields_of(data, "health_insurance")["insured_from"]["schemes"] = ["huurtoeslag"]

    register = copy_register(tmp_path / "register", restrict)
    with watch_opens() as opened, pytest.raises(RuleFieldNotAllowed) as error:
        run(world, register, out="refused-rule")
    message = str(error.value)
    for part in ("rule zorgtoeslag", "applicant_insured", "health_insurance.insured_from", PES):
        assert part in message
    assert [p for p in opened if p.startswith(str(world / "pseudo"))] == []


@pytest.fixture(scope="module")
def conditional_run(world, watch_opens, tmp_path_factory):
    """A run on a copy of the shipped register, watching which files it opens."""
    register = copy_register(tmp_path_factory.mktemp("reg") / "register")
    with watch_opens() as opened:
        run_dir = run(world, register)
        seen = list(opened)
    return run_dir, register, seen


def _audit(run_dir: Path) -> list[dict]:
    con = duckdb.connect()
    table = con.sql(f"SELECT * FROM read_parquet('{run_dir}/audit/*.parquet')").to_arrow_table()
    return table.to_pylist()


def test_the_watch_does_see_a_permitted_run_read_its_deliveries(world, conditional_run):
    _, _, seen = conditional_run
    assert any(p.startswith(str(world / "pseudo")) and p.endswith(".parquet") for p in seen)


def test_a_conditional_run_records_its_conditions_in_the_manifest(conditional_run):
    run_dir, register, _ = conditional_run
    version = load_register(register).version
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["processing_activity_id"] == PES
    assert manifest["register_version"] == version
    check = manifest["purpose_check"]
    assert check["outcome"] == "conditional" and check["register_version"] == version
    assert {c["id"] for c in check["conditions"]} == {
        "dpia_recorded",
        "retention_set",
        "objections_honoured",
        "aggregate_only",
        "compatibility_assessed",
        "assumed_legal_basis",
    }
    tax = check["sources"]["tax"]
    assert tax["legal_basis"][0]["bwb_id"] == "BWBR0002320"
    assert tax["fields"]["assessed_income"]["decision"] == "allowed"
    assert check["columns"]["combined_income"][0]["field"] == "tax.assessed_income"
    assert check["flow"][0].startswith("Purpose check: proactive-entitlement-signalling")


def test_a_conditional_run_records_its_conditions_in_the_audit_trail(conditional_run):
    run_dir, register, _ = conditional_run
    version = load_register(register).version
    records = _audit(run_dir)
    assert {r["register_version"] for r in records} == {version}
    assert {r["processing_activity_id"] for r in records} == {PES}
    (check,) = [r for r in records if r["name"] == "purpose_check"]
    assert check["status"] == "conditional" and check["data_subject_pid"] is None
    attributes = json.loads(check["attributes"])
    assert {c["id"] for c in attributes["conditions"]} >= {"assumed_legal_basis", "aggregate_only"}
    ingest = [json.loads(r["attributes"]) for r in records if r["name"] == "ingest"]
    tax = [a["sources"]["tax"] for a in ingest if "tax" in a["sources"]]
    assert tax and all("assumed_legal_basis" in basis["conditions"] for basis in tax)
    assert all(basis["legal_basis"][0].startswith("Algemene wet inzake") for basis in tax)
    # One record per data subject per operation: only the run-level check has no subject.
    assert [r["name"] for r in records if r["data_subject_pid"] is None] == ["purpose_check"]


def test_a_register_change_gives_the_next_run_a_new_version(world, conditional_run):
    first, register, _ = conditional_run
    old = load_register(register).version
    path = register / f"{PES}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["retention"]["period"] = "P13M"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    new = load_register(register).version
    assert new != old

    second = run(world, register)
    assert second != first
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["register_version"] == new
    assert manifest["purpose_check"]["register_version"] == new
    assert {r["register_version"] for r in _audit(second)} == {new}
    assert json.loads((first / "manifest.json").read_text())["register_version"] == old


def test_the_configured_register_is_the_one_runs_checks_and_retention_follow(
    world, watch_opens, tmp_path, capsys
):
    """`paths.register` in signals.toml points every command at the municipality's own
    register: here one without health_insurance, and with a retention period of two years."""
    from prefect.logging.handlers import APILogWorker

    def change(data):
        data["sources"].pop("health_insurance")
        data["retention"]["period"] = "P2Y"

    register = copy_register(tmp_path / "register", change)
    config = tmp_path / "signals.toml"
    config.write_text(f'[paths]\nregister = "{register}"\n')
    at = ["--config", str(config)]
    assert main(["register", "check", "--purpose", PES, "--format", "flow"] + at) == 1
    assert "source health_insurance is not registered" in capsys.readouterr().out
    argv = ["run", "--deliveries", str(world / "pseudo"), "--reference-date", REFERENCE_DATE]
    argv += ["--out", str(tmp_path / "runs"), "--key-file", str(world / "keys" / "central.keyring")]
    with watch_opens() as opened:
        assert main(argv + at) == 2
    APILogWorker.drain_all()  # the refused flow's logs, before the test's server goes
    assert "source health_insurance" in capsys.readouterr().err
    assert [p for p in opened if p.startswith(str(world / "pseudo"))] == []
    # Retention takes the configured register's period: 18 months is shorter than its P2Y.
    (tmp_path / "runs").mkdir(exist_ok=True)
    assert (
        main(["retention", "status", "--runs", str(tmp_path / "runs"), "--period", "P18M"] + at)
        == 0
    )
    assert main(["retention", "status", "--runs", str(tmp_path / "runs"), "--period", "P18M"]) == 2
    assert "longer than the processing register's retention period P1Y" in capsys.readouterr().err


def test_a_refused_run_is_recorded_in_the_audit_log_of_its_output_folder(
    world, conditional_run, watch_opens, tmp_path
):
    """The DPO sees the attempt in the log, not only on the operator's screen: one
    purpose_check record, status refused, with the refusals; still no data file opened."""
    from prefect.logging.handlers import APILogWorker

    from privacy.audit.log import AuditLog

    run_dir, _, _ = conditional_run
    log = AuditLog(run_dir.parent / "audit-log")
    before = [c.batch_id for c in log.checkpoints()]
    register = copy_register(tmp_path / "register", _without("sources", "health_insurance"))
    with watch_opens() as opened, pytest.raises(PurposeNotAllowed):
        run(world, register, out=run_dir.parent.name)
    APILogWorker.drain_all()  # the refused flow's logs, while its server runs
    assert [p for p in opened if p.startswith(str(world / "pseudo"))] == []
    added = [c.batch_id for c in log.checkpoints()][len(before) :]
    assert len(added) == 1 and added[0].startswith("refused/")
    (record,) = log.batch_records(added[0]).to_pylist()
    assert (record["name"], record["status"], record["data_subject_pid"]) == (
        "purpose_check",
        "refused",
        None,
    )
    assert record["register_version"] == load_register(register).version
    refusals = json.loads(record["attributes"])["refusals"]
    assert any("source health_insurance is not registered" in r for r in refusals)
    assert sorted(p.name for p in run_dir.parent.iterdir() if p.name.startswith(".staging")) == []
    # A purpose the register does not have (and no key is made for) is recorded too.
    with pytest.raises(PurposeNotAllowed):
        run(world, register, purpose="marketing", out=run_dir.parent.name)
    APILogWorker.drain_all()
    last = log.checkpoints()[-1].batch_id
    assert last.startswith("refused/") and last != added[0]
    (record,) = log.batch_records(last).to_pylist()
    assert record["processing_activity_id"] == "marketing" and record["status"] == "refused"
    assert main(["audit", "verify", "--log", str(run_dir.parent)]) == 0  # the log still holds


def _tax_basis_valid(**dates):
    def change(data):
        for basis in data["sources"]["tax"]["legal_basis"]:
            basis.update(dates)

    return change


def test_a_legal_basis_that_does_not_hold_on_the_reference_date_refuses_the_run(
    world, watch_opens, tmp_path
):
    """Laws change: a provision repealed before the reference date (or not yet in force)
    covers no run of that date. Refused before anything is read."""
    register = copy_register(tmp_path / "register", _tax_basis_valid(valid_until="2024-06-30"))
    reg = load_register(register)
    on = dt.date.fromisoformat(REFERENCE_DATE)
    outcome = check_purpose(reg, PES, on=on)
    assert outcome.decision == "refused"
    assert outcome.refusals  # one per basis of the tax source
    for refusal in outcome.refusals:
        assert refusal.startswith("source tax: legal basis ")
        assert "holds until 2024-06-30, not on the reference date 2025-01-01" in refusal
    # The day before it ended, the same register holds; a basis from the future does not.
    assert check_purpose(reg, PES, on=dt.date(2024, 6, 30)).decision != "refused"
    later = load_register(copy_register(tmp_path / "r2", _tax_basis_valid(valid_from="2026-01-01")))
    assert "holds from 2026-01-01" in check_purpose(later, PES, on=on).refusals[0]
    with watch_opens() as opened, pytest.raises(PurposeNotAllowed, match="holds until 2024-06-30"):
        run(world, register, out="refused-expired-basis")
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()  # the refused flow's logs, while its server runs
    assert [p for p in opened if p.startswith(str(world / "pseudo"))] == []


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        ({"valid_until": "30-06-2024"}, "valid_until must be a date (YYYY-MM-DD)"),
        (
            {"valid_from": "2025-01-01", "valid_until": "2024-01-01"},
            "valid_until must be on or after valid_from (2025-01-01)",
        ),
    ],
)
def test_a_basis_with_a_malformed_validity_is_refused_by_the_loader(tmp_path, dates, message):
    with pytest.raises(RegisterError, match=re.escape(message)):
        load_register(copy_register(tmp_path / "r", _tax_basis_valid(**dates)))


def _confirm(source: str, **confirmed):
    def change(data):
        for basis in data["sources"][source]["legal_basis"]:
            basis["confirmed"] = dict(confirmed)

    return change


def test_the_dpo_confirms_an_assumed_basis_on_record(tmp_path, capsys):
    """An assumed basis stays an assumption; the DPO's confirmation (who, when, where it is
    written down) is recorded with it and travels with every run's condition."""
    confirmed = {"by": "DPO gemeente", "on": "2025-11-03", "reference": "DPO-2025-17"}
    register = copy_register(tmp_path / "register", _confirm("brp", **confirmed))
    outcome = check_purpose(load_register(register), PES)
    (assumed,) = [c for c in outcome.conditions if c.id == "assumed_legal_basis"]
    said = "source brp (confirmed by DPO gemeente on 2025-11-03 (DPO-2025-17))"
    assert said in assumed.scopes
    assert "source tax" in assumed.scopes  # not confirmed: the plain scope
    assert main(["register", "show", "--purpose", PES, "--register", str(register)]) == 0
    out = capsys.readouterr().out
    assert "confirmed by DPO gemeente on 2025-11-03 (DPO-2025-17)" in out
    assert "NOT CONFIRMED by the DPO" in out  # the others


@pytest.mark.parametrize(
    ("source", "confirmed", "message"),
    [
        ("objections", {"by": "DPO", "on": "2025-11-03"}, "only an assumed basis"),
        ("brp", {"by": "DPO"}, "confirmed.on is required"),
        ("brp", {"by": "DPO", "on": "2025-11-03", "when": "x"}, "unknown field(s) when"),
    ],
)
def test_a_malformed_confirmation_is_refused_by_the_loader(tmp_path, source, confirmed, message):
    with pytest.raises(RegisterError, match=re.escape(message)):
        load_register(copy_register(tmp_path / "r", _confirm(source, **confirmed)))
