"""End to end on the hand-made population: the CLI pseudonymises at the bodies, the Prefect
flow runs the Beam pipeline, and the published run is checked against hand computations.

Zorgtoeslag 2025, Wet op de zorgtoeslag art. 2 (parameters: standaardpremie 2,112
(Regeling vaststelling standaardpremie 2025, BWBR0050536 art. 1); drempelinkomen
28,406 (108% of 12 x WML Jan 2025 of 2,191.80); normpremie percentages 1.896% single,
4.273% with partner, afbouw 13.700% (Wzt art. 2 lid 3, as indexed for 2025)):

    H1  single, income 20,000 (below the drempelinkomen):
        2,112 - 1.896% x 28,406 = 2,112 - 538.57776 = 1,573.42
    H10 single, income 31,000:
        2,112 - (538.57776 + 13.7% x (31,000 - 28,406) = 355.378) = 1,218.04
    H11 couple, combined income 42,000:
        2 x 2,112 - (4.273% x 28,406 = 1,213.78838 + 13.7% x 13,594 = 1,862.378) = 1,147.83

Kindgebonden budget 2025 (Wkb art. 2): H2, a couple with one child of 5, combined income
25,000 below the partner threshold 37,545 (28,406 + 9,139), assets 0: the per-child amount
2,511 without age supplement (under 12) or reduction = 2,511.00. (H2 already receives
zorgtoeslag, so that scheme is not signalled.)

Kwijtschelding 2025 (Uitvoeringsregeling Invorderingswet 1990, national norms, Utrecht
levies): H4, a single person with an income of 3,000 a year, far below 90% of the
bijstandsnorm, has no payment capacity: the whole afvalstoffenheffing for a one-person
household, 313.05, is remitted. Huurtoeslag is not evaluated: its 2025 normhuur factors are
not sourced, so the rule does not compile for 2025 (recorded in the manifest).
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
import pytest
from bsn_scan import scan_tree
from population import HOUSEHOLDS, REFERENCE_DATE, SIGNALLED, B, write_population

from flows.cli import main
from pipelines.contract import SOURCES
from privacy.audit.log import LOG_DIRNAME, AuditLog
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.retention import KEY_STORE, read_run_table

PASSPHRASE = "an end-to-end passphrase"

EXPECTED_2025 = {
    ("H1", "zorgtoeslag"): Decimal("1573.42"),
    ("H10", "zorgtoeslag"): Decimal("1218.04"),
    ("H11", "zorgtoeslag"): Decimal("1147.83"),
    ("H2", "kindgebonden_budget"): Decimal("2511.00"),
    ("H4", "kwijtschelding"): Decimal("313.05"),
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Pseudonymise every source with the CLI, then run the central flow; the run folder."""
    root = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    write_population(root / "raw")
    key_file, central = root / "keys" / "body.keyring", root / "keys" / "central.keyring"
    assert main(["keys", "init", "--key-file", str(key_file)]) == 0
    assert main(["keys", "init", "--role", "central", "--key-file", str(central)]) == 0
    for source in SOURCES:
        delivery = root / "raw" / source / REFERENCE_DATE
        args = ["pseudonymise", "--delivery", str(delivery), "--key-file", str(key_file)]
        assert main(args + ["--out", str(root / "pseudo")]) == 0
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(central)]
    assert main(args + ["--out", str(root / "runs"), "--buckets", "4"]) == 0
    (run_dir,) = [p for p in (root / "runs").iterdir() if (p / "manifest.json").is_file()]
    body, domain = load_keyring(key_file, PASSPHRASE), load_keyring(central, PASSPHRASE)
    yield (
        root,
        run_dir,
        TwoLayerPseudonymiser(body.active("body"), domain.active("domain", DEFAULT_DOMAIN)),
    )
    mp.undo()


def _household_names(p: TwoLayerPseudonymiser) -> dict[str, str]:
    return {p.one("household_id", hh): hh for hh in HOUSEHOLDS}


def _read(run_dir, name):
    """A personal-data output of the run, decrypted in memory with the central keyring."""
    ring = load_keyring(run_dir.parent.parent / "keys" / "central.keyring", PASSPHRASE)
    return read_run_table(run_dir, name, ring)


def test_signals_go_exactly_to_entitled_households_not_yet_receiving(published):
    _, run_dir, p = published
    signals = _read(run_dir, "signals.parquet").to_pylist()
    names = _household_names(p)
    got = {(names[s["household_pid"]], s["scheme"]): s["estimated_annual_amount"] for s in signals}
    assert {hh for hh, scheme in got if scheme == "zorgtoeslag"} == SIGNALLED
    assert got == EXPECTED_2025
    for s in signals:
        assert s["benefit_year"] == 2025
        assert s["rule_id"] == s["scheme"] and s["rule_version"]
        assert s["explanation"] and s["signal_id"].startswith("s.")


def test_the_estimated_older_income_gives_a_lower_confidence(published):
    _, run_dir, p = published
    signals = _read(run_dir, "signals.parquet").to_pylist()
    names = _household_names(p)
    confidence = {names[s["household_pid"]]: s["confidence"] for s in signals}
    assert confidence["H10"] < confidence["H1"]


def test_objectors_and_deregistered_persons_are_never_signalled(published):
    _, run_dir, p = published
    signals = _read(run_dir, "signals.parquet")
    applicants = set(signals.column("applicant_pid").to_pylist())
    for bsn in (B[5], B[8], B[9]):  # objected (all), deregistered, objected (zorgtoeslag)
        assert p.one("bsn", bsn) not in applicants


def test_an_objector_appears_nowhere_downstream_but_in_the_exclusion_record(published):
    _, run_dir, p = published
    objector = p.one("bsn", B[5])
    con = duckdb.connect()
    con.register("households_table", _read(run_dir, "households"))
    households = con.execute(
        "SELECT COUNT(*) FROM households_table "
        f"WHERE list_contains(member_pids, '{objector}') OR partner_pid = '{objector}'"
    ).fetchone()[0]
    audit = con.execute(
        f"SELECT name FROM read_parquet('{run_dir}/audit/*.parquet') "
        f"WHERE data_subject_pid = '{objector}'"
    ).fetchall()
    assert households == 0
    assert audit == [("exclusion",)]


def test_counts_reconcile_per_source_in_the_manifest(published):
    root, run_dir, _ = published
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for source, counts in manifest["counts"]["sources"].items():
        raw = json.loads((root / "raw" / source / REFERENCE_DATE / "manifest.json").read_text())
        assert counts["rows_in"] == raw["row_count"]
        assert counts["accepted"] + counts["quarantined"] == counts["rows_in"]
        quarantined = pq.read_metadata(run_dir / "quarantine" / f"{source}.parquet").num_rows
        assert quarantined == counts["quarantined"]
    assert manifest["counts"]["households"] == len(HOUSEHOLDS)
    assert manifest["counts"]["signals"] == len(EXPECTED_2025)
    assert manifest["inputs"]["brp"]["sha256"]
    compiled = {r["rule_id"] for r in manifest["rules"]}
    assert compiled == {"aio", "kindgebonden_budget", "kwijtschelding", "zorgtoeslag"}
    assert [r["rule_id"] for r in manifest["rules_skipped"]] == ["huurtoeslag"]


def test_the_rent_huurtoeslag_alone_may_use_is_withheld_when_it_is_not_evaluated(published):
    """The register allows the rent and service costs for huurtoeslag only, which is not
    evaluated for 2025: the bodies deliver them, the run blanks them on reading."""
    _, run_dir, _ = published
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert sorted(manifest["fields_withheld"]) == ["housing.monthly_rent", "housing.service_costs"]
    assert "huurtoeslag only" in manifest["fields_withheld"]["housing.monthly_rent"]
    households = _read(run_dir, "households")
    assert households.num_rows == len(HOUSEHOLDS)
    for column in ("monthly_rent", "service_costs"):
        assert households.column(column).null_count == households.num_rows, column
    # The tenure, which kwijtschelding may use too, is still read.
    assert households.column("tenure").null_count < households.num_rows
    # The run's purpose_check record in the signed log says so too.
    ((attributes,),) = duckdb.sql(
        f"SELECT attributes FROM read_parquet('{run_dir}/audit/*.parquet') "
        "WHERE name = 'purpose_check'"
    ).fetchall()
    assert json.loads(attributes)["fields_withheld"] == manifest["fields_withheld"]


def test_no_file_written_by_the_run_or_the_bodies_holds_a_bsn(published):
    root, _, _ = published
    known = {bsn for members in HOUSEHOLDS.values() for bsn, _, _ in members}
    leaks = {}
    for folder in (root / "pseudo", root / "runs", root / "keys"):
        leaks |= scan_tree(folder, known)
    assert leaks == {}


def test_the_published_run_keeps_no_scratch_of_the_pipeline(published):
    _, run_dir, _ = published
    scratch = {"shuffle", "audit_parts", "signal_parts", "quarantine_parts", ".finalise-spill"}
    assert not scratch & {p.name for p in run_dir.rglob("*")}
    assert not list(run_dir.rglob("*.arrow"))  # shuffle files and audit parts alike


def test_a_rerun_with_the_same_inputs_is_a_no_op_with_the_same_run(published):
    root, run_dir, _ = published
    before = (run_dir / "signals.parquet.enc").read_bytes()
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(root / "keys" / "central.keyring")]
    assert main(args + ["--out", str(root / "runs"), "--buckets", "4"]) == 0
    runs = [p for p in (root / "runs").iterdir() if (p / "manifest.json").is_file()]
    assert runs == [run_dir]
    assert (run_dir / "signals.parquet.enc").read_bytes() == before


def test_a_run_whose_report_fails_is_published_without_it_and_a_rerun_writes_it(
    published, tmp_path, capsys
):
    """The report is built before publication, beside the audit log append. If it fails
    the run is still published (the signals must reach the operators) and the run fails
    with the report's error; running it again writes the report and nothing else."""
    from test_purpose_check import copy_register

    root, first, _ = published
    out = tmp_path / "runs"
    shutil.copytree(root / "runs", out)
    damaged = out / first.name / "report" / "report-tables" / "suppression.json"
    kept = damaged.read_text()
    damaged.write_text("{ not json")

    def reviewed(data):  # another register version: another run id of the same date
        data["retention"]["basis"] += " Reviewed."

    register = copy_register(tmp_path / "register", reviewed)
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(root / "keys" / "central.keyring"), "--register", str(register)]
    args += ["--out", str(out), "--buckets", "4"]
    capsys.readouterr()
    assert main(args) != 0
    assert str(damaged) in capsys.readouterr().err
    (second,) = [
        p for p in out.iterdir() if (p / "manifest.json").is_file() and p != out / first.name
    ]
    assert (second / "signals.parquet.enc").is_file() and not (second / "report").exists()
    assert AuditLog(out / LOG_DIRNAME).find(second.name) is not None

    damaged.write_text(kept)
    before = (second / "signals.parquet.enc").read_bytes()
    assert main(args) == 0
    assert (second / "report" / "report.html").is_file()
    assert (second / "signals.parquet.enc").read_bytes() == before


def test_a_report_of_a_published_run_logs_its_decryption_first(published, tmp_path, capsys):
    """`signals report` on a published run decrypts its personal data in memory: one
    `decryption` record per person the run holds data on, for the aggregate report, is
    appended to the run's log before; a run whose log is not beside it is not reported."""
    from privacy.audit.verify import verify_log

    root, first, _ = published
    out = tmp_path / "runs"
    shutil.copytree(root / "runs", out)
    run, log = out / first.name, AuditLog(out / LOG_DIRNAME)
    key = ["--key-file", str(root / "keys" / "central.keyring")]
    assert main(["report", "--run", str(run), "--out", str(tmp_path / "report"), *key]) == 0
    (event,) = [c for c in log.checkpoints() if c.batch_id.startswith(f"{run.name}/decryption/")]
    records = log.batch_records(event.batch_id).to_pylist()
    subjects = pq.read_table(run / "audit" / "segment-00000.parquet").to_pylist()
    members = {r["data_subject_pid"] for r in subjects if r["name"] in ("join", "resolution")}
    assert {r["data_subject_pid"] for r in records} == members and len(records) == len(members)
    attributes = json.loads(records[0]["attributes"])
    assert attributes["purpose"] == "aggregate report"
    assert "signals.parquet" in attributes["files"]
    assert {f.split("/")[0] for f in attributes["files"]} >= {"households", "evaluations"}
    assert verify_log(out / LOG_DIRNAME).ok

    elsewhere = tmp_path / "copied" / run.name  # with its data key, without its log
    shutil.copytree(run, elsewhere)
    shutil.copytree(out / KEY_STORE, elsewhere.parent / KEY_STORE)
    target = tmp_path / "report-elsewhere"
    capsys.readouterr()
    assert main(["report", "--run", str(elsewhere), "--out", str(target), *key]) == 2
    assert "not the audit log of run" in capsys.readouterr().err
    assert not target.exists()


def test_the_scan_itself_finds_a_planted_bsn(tmp_path):
    import pyarrow as pa

    (tmp_path / "leak.json").write_text(json.dumps({"x": f"id {B[0]} here"}))
    pq.write_table(pa.table({"l": [[f"x{B[1]}y"]]}), tmp_path / "nested.parquet")
    found = scan_tree(tmp_path, {B[1]})
    assert set(found) == {str(tmp_path / "leak.json"), str(tmp_path / "nested.parquet")}
