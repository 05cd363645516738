"""Objections (opt-out) end to end: the CLI pseudonymises at the bodies, the Prefect flow runs the
Beam pipeline, and the published run is searched for every trace of the objectors.

An objection with scope `all` removes the person before the join, so after the exclusion no
stage (ingest, household table, join, rule evaluation, proportionality, signal) has anything
about them: the exclusion record is all there is (it names the sources their rows were
read from and dropped in). An objection with a scheme scope suppresses
that scheme only: the person stays in the household table and is signalled for other schemes.

Every adult below is single (or a couple), 2024 income 20,000 definitive, no assets, insured:
entitled to zorgtoeslag 2025 (2,112 - 1.896% x 28,406 = 1,573.42 for a single adult) unless an
objection or a withheld partner (unknown household income) stops it.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import write_delivery
from population import valid_bsns
from service_support import prepare_deliveries

from flows.cli import main
from pipelines.contract import SOURCES
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.retention import read_run_table

PASSPHRASE = "an objections passphrase"
REFERENCE_DATE = "2025-01-01"
X = valid_bsns(10, start=300_000_000)

# household -> members (bsn, birth date, role, partner)
HOUSEHOLDS = {
    "A1": [(X[0], "1990-01-01", "head", "")],  # objected to all processing
    "A2": [(X[1], "1980-01-01", "head", X[2]), (X[2], "1981-01-01", "partner", X[1])],
    "S1": [(X[3], "1985-01-01", "head", "")],  # objected to zorgtoeslag only
    "S2": [(X[4], "1985-01-01", "head", "")],  # objected to huurtoeslag only
    "S3": [(X[5], "1985-01-01", "head", "")],  # no objection
    # Objected to zorgtoeslag after the reference date, before the run: it applies as well
    # (an objection stops processing from when it is made; this run happens after it).
    "S4": [(X[6], "1985-01-01", "head", "")],
    # Objected, but the body quarantined the row: a scope misspelt, a date that does not
    # exist. They are objectors all the same, to everything (the strictest reading).
    "Q1": [(X[7], "1985-01-01", "head", "")],
    "Q2": [(X[8], "1985-01-01", "head", "")],
}
OBJECTIONS = [
    (X[0], "2024-05-01", "all"),
    (X[2], "2024-05-01", "all"),  # the partner in A2
    (X[3], "2024-05-01", "zorgtoeslag"),
    (X[4], "2024-05-01", "huurtoeslag"),
    (X[6], "2025-03-01", "zorgtoeslag"),
    (X[7], "2024-05-01", "zorgtoeslagg"),
    (X[8], "2024-02-30", "zorgtoeslag"),
    (X[9][1:], "2024-05-01", "all"),  # a BSN that lost its leading zero: nobody known
]
SCOPE_ALL = (X[0], X[2])
QUARANTINED = (X[7], X[8])


def _address(household: str) -> str:
    return f"0344010{sum(map(ord, household)):09d}"


def write_objections_population(root):
    brp, tax, hi = [], [], []
    for hh, members in HOUSEHOLDS.items():
        for bsn, born, role, partner in members:
            row = [bsn, born, hh, role, partner, _address(hh), "GM0344", "WK034401"]
            brp.append(row + ["2000-01-01", ""])
            tax.append([bsn, "2024", "20000.00", "0.00", "definitive"])
            hi.append([bsn, "ZK01", "2010-01-01", ""])
    housing = [
        [_address(hh), "social_rent", "650.00", "40.00", "L1", "2015-01-01"] for hh in HOUSEHOLDS
    ]
    rows = {
        "brp": brp,
        "tax": tax,
        "health_insurance": hi,
        "housing": housing,
        "benefits": [],
        "arrears": [],
        "objections": [list(o) for o in OBJECTIONS],
    }
    for source, data in rows.items():
        write_delivery(root, source, list(SOURCES[source].column_names), data, REFERENCE_DATE)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The published run and the controller's view (both keys) of the pseudonyms."""
    root = tmp_path_factory.mktemp("objections")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    prepare_deliveries(root, write_objections_population, PASSPHRASE)
    body, central = root / "keys" / "body.keyring", root / "keys" / "central.keyring"
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    assert main(args + ["--key-file", str(central), "--out", str(root / "runs")]) == 0
    (run_dir,) = [p for p in (root / "runs").iterdir() if p.name.startswith(REFERENCE_DATE)]
    central_ring = load_keyring(central, PASSPHRASE)
    pseudonyms = TwoLayerPseudonymiser(
        load_keyring(body, PASSPHRASE).active("body"), central_ring.active("domain", DEFAULT_DOMAIN)
    )
    yield run_dir, central_ring, pseudonyms
    mp.undo()


def _households(run_dir, ring) -> list[dict]:
    return read_run_table(run_dir, "households", ring).to_pylist()


def _signals(run_dir, ring) -> list[dict]:
    return read_run_table(run_dir, "signals.parquet", ring).to_pylist()


def _audit(run_dir) -> list[dict]:
    con = duckdb.connect()
    return (
        con.sql(f"SELECT * FROM read_parquet('{run_dir}/audit/*.parquet')")
        .to_arrow_table()
        .to_pylist()
    )


def _mentions(value, pid: str) -> bool:
    """Whether a pseudonym occurs anywhere in a value (strings, lists, JSON text)."""
    if isinstance(value, str):
        return pid in value
    if isinstance(value, list | tuple):
        return any(_mentions(v, pid) for v in value)
    return False


# An objection the body quarantined counts as one to everything: without that, the persons
# of QUARANTINED were evaluated and signalled for zorgtoeslag like S3.
OBJECTORS = SCOPE_ALL + QUARANTINED
OBJECTOR_IDS = ["objecting head", "objecting partner", "scope misspelt", "no such date"]


@pytest.mark.parametrize("bsn", OBJECTORS, ids=OBJECTOR_IDS)
def test_an_objection_to_all_processing_leaves_only_the_exclusion_record(published, bsn):
    run_dir, _, p = published
    pid = p.one("bsn", bsn)
    records = [r for r in _audit(run_dir) if _mentions(list(r.values()), pid)]
    assert [(r["name"], r["status"]) for r in records] == [("exclusion", "excluded")]
    # Their rows, where they had any, were read and dropped: the record names the sources.
    assert json.loads(records[0]["attributes"]) == {
        "reason": "objection",
        "scope": "all",
        "sources_checked": ["arrears", "benefits", "brp", "health_insurance", "tax"],
    }


@pytest.mark.parametrize("bsn", OBJECTORS, ids=OBJECTOR_IDS)
def test_an_objection_to_all_processing_removes_the_person_from_the_household_table(published, bsn):
    run_dir, ring, p = published
    pid = p.one("bsn", bsn)
    assert not [h for h in _households(run_dir, ring) if _mentions(list(h.values()), pid)]
    assert not [s for s in _signals(run_dir, ring) if _mentions(list(s.values()), pid)]


def test_a_household_whose_head_objected_to_everything_is_not_evaluated(published):
    run_dir, ring, p = published
    households = {h["household_pid"] for h in _households(run_dir, ring)}
    assert p.one("household_id", "A1") not in households


def test_an_objecting_partner_is_withheld_so_the_household_income_is_unknown(published):
    run_dir, ring, p = published
    (a2,) = [
        h for h in _households(run_dir, ring) if h["household_pid"] == p.one("household_id", "A2")
    ]
    assert a2["has_partner"] is True and a2["partner_pid"] is None
    assert a2["income_known"] is False
    assert a2["member_pids"] == [p.one("bsn", X[1])]


def test_a_scheme_objection_suppresses_only_that_scheme(published):
    run_dir, ring, p = published
    signalled = {(s["household_pid"], s["scheme"]) for s in _signals(run_dir, ring)}
    assert (p.one("household_id", "S1"), "zorgtoeslag") not in signalled  # objected zorgtoeslag
    assert (p.one("household_id", "S4"), "zorgtoeslag") not in signalled  # objected later
    assert (p.one("household_id", "S2"), "zorgtoeslag") in signalled  # objected huurtoeslag
    assert (p.one("household_id", "S3"), "zorgtoeslag") in signalled  # control
    assert {hh for hh, _ in signalled} == {p.one("household_id", "S2"), p.one("household_id", "S3")}


def test_a_scheme_objector_stays_in_the_household_table_with_the_objection(published):
    run_dir, ring, p = published
    objected = {h["household_pid"]: h["objected_schemes"] for h in _households(run_dir, ring)}
    assert objected[p.one("household_id", "S1")] == ["zorgtoeslag"]
    assert objected[p.one("household_id", "S2")] == ["huurtoeslag"]
    assert objected[p.one("household_id", "S3")] == []
    assert objected[p.one("household_id", "S4")] == ["zorgtoeslag"]


def test_a_scheme_objector_is_not_excluded_but_their_objection_is_ingested(published):
    run_dir, _, p = published
    pid = p.one("bsn", X[3])
    names = {r["name"] for r in _audit(run_dir) if r["data_subject_pid"] == pid}
    assert "exclusion" not in names
    assert {"ingest", "join"} <= names
    assert "signal" not in names


def test_the_run_counts_the_objectors_of_quarantined_rows_and_publishes_none_of_them(published):
    run_dir, _, _ = published
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]["sources"]
    # Three rows quarantined; the person of two of them is known (a BSN that lost its leading
    # zero names nobody, and is never repaired by guessing).
    assert counts["objections"]["quarantined_at_body"] == 3
    assert counts["objections"]["objectors_of_quarantined_rows"] == 2
    assert not list(run_dir.rglob("quarantined_objectors*"))
