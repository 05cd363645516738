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
"""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
import pytest
from bsn_scan import scan_tree
from population import HOUSEHOLDS, REFERENCE_DATE, SIGNALLED, B, write_population

from flows.cli import main
from pipelines.contract import SOURCES
from privacy.keys import load_keyring
from privacy.pseudonyms import Pseudonymiser

EXPECTED_2025 = {"H1": Decimal("1573.42"), "H10": Decimal("1218.04"), "H11": Decimal("1147.83")}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Pseudonymise every source with the CLI, then run the central flow; the run folder."""
    root = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", "an end-to-end passphrase")
    write_population(root / "raw")
    key_file = root / "keys" / "body.keyring"
    assert main(["keys", "init", "--key-file", str(key_file)]) == 0
    for source in SOURCES:
        delivery = root / "raw" / source / REFERENCE_DATE
        args = ["pseudonymise", "--delivery", str(delivery), "--key-file", str(key_file)]
        assert main(args + ["--out", str(root / "pseudo")]) == 0
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    assert main(args + ["--out", str(root / "runs"), "--buckets", "4"]) == 0
    (run_dir,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    ring = load_keyring(key_file, "an end-to-end passphrase")
    yield root, run_dir, Pseudonymiser(ring.active("body"))
    mp.undo()


def _household_names(p: Pseudonymiser) -> dict[str, str]:
    return {p.one("household_id", hh): hh for hh in HOUSEHOLDS}


def test_signals_go_exactly_to_entitled_households_not_yet_receiving(published):
    _, run_dir, p = published
    signals = pq.read_table(run_dir / "signals.parquet").to_pylist()
    names = _household_names(p)
    got = {names[s["household_pid"]]: s["estimated_annual_amount"] for s in signals}
    assert set(got) == SIGNALLED
    assert got == EXPECTED_2025
    for s in signals:
        assert s["scheme"] == "zorgtoeslag" and s["benefit_year"] == 2025
        assert s["rule_id"] == "zorgtoeslag" and s["rule_version"]
        assert s["explanation"] and s["signal_id"].startswith("s.")


def test_the_estimated_older_income_gives_a_lower_confidence(published):
    _, run_dir, p = published
    signals = pq.read_table(run_dir / "signals.parquet").to_pylist()
    names = _household_names(p)
    confidence = {names[s["household_pid"]]: s["confidence"] for s in signals}
    assert confidence["H10"] < confidence["H1"]


def test_objectors_and_deregistered_persons_are_never_signalled(published):
    _, run_dir, p = published
    signals = pq.read_table(run_dir / "signals.parquet")
    applicants = set(signals.column("applicant_pid").to_pylist())
    for bsn in (B[5], B[8], B[9]):  # objected (all), deregistered, objected (zorgtoeslag)
        assert p.one("bsn", bsn) not in applicants


def test_an_objector_appears_nowhere_downstream_but_in_the_exclusion_record(published):
    _, run_dir, p = published
    objector = p.one("bsn", B[5])
    con = duckdb.connect()
    households = con.execute(
        f"SELECT COUNT(*) FROM read_parquet('{run_dir}/households/*.parquet') "
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
    assert manifest["counts"]["signals"] == len(SIGNALLED)
    assert manifest["inputs"]["brp"]["sha256"]
    assert manifest["rules"][0]["rule_id"] == "zorgtoeslag"


def test_no_file_written_by_the_run_or_the_bodies_holds_a_bsn(published):
    root, _, _ = published
    known = {bsn for members in HOUSEHOLDS.values() for bsn, _, _ in members}
    leaks = {}
    for folder in (root / "pseudo", root / "runs", root / "keys"):
        leaks |= scan_tree(folder, known)
    assert leaks == {}


def test_a_rerun_with_the_same_inputs_is_a_no_op_with_the_same_run(published):
    root, run_dir, _ = published
    before = (run_dir / "signals.parquet").read_bytes()
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    assert main(args + ["--out", str(root / "runs"), "--buckets", "4"]) == 0
    runs = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    assert runs == [run_dir]
    assert (run_dir / "signals.parquet").read_bytes() == before


def test_the_scan_itself_finds_a_planted_bsn(tmp_path):
    import pyarrow as pa

    (tmp_path / "leak.json").write_text(json.dumps({"x": f"id {B[0]} here"}))
    pq.write_table(pa.table({"l": [[f"x{B[1]}y"]]}), tmp_path / "nested.parquet")
    found = scan_tree(tmp_path, {B[1]})
    assert set(found) == {str(tmp_path / "leak.json"), str(tmp_path / "nested.parquet")}
