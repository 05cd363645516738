"""A register row quarantined at the body leaves its household incomplete: held back.

In the hand-made population H11 is a couple (incomes 30,000 and 12,000) signalled for
zorgtoeslag. Here the partner's BRP row has a birth date that does not exist, so the body
quarantines it. Without the household's name kept, the run saw H11 as the head alone, a
single person, and judged it on her income only. With it, H11 is evaluated (the aggregate
report counts it) but never signalled: its candidates fail the completeness check.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import write_delivery
from population import REFERENCE_DATE, B, write_population
from service_support import PASSPHRASE, prepare_deliveries

from flows.cli import main
from pipelines.contract import SOURCES
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.retention import read_run_table


def _partner_row_broken(folder):
    write_population(folder)
    path = folder / "brp" / REFERENCE_DATE / "data.csv"
    lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        if row[0] == B[14]:  # H11's partner
            row[1] = "1985-02-30"
    write_delivery(folder, "brp", list(SOURCES["brp"].column_names), rows, REFERENCE_DATE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("incomplete")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    prepared = prepare_deliveries(root, write_raw=_partner_row_broken)
    args = ["run", "--deliveries", str(prepared.deliveries), "--reference-date", REFERENCE_DATE]
    assert (
        main(args + ["--key-file", str(prepared.central_keyring), "--out", str(root / "runs")]) == 0
    )
    (run_dir,) = [p for p in (root / "runs").iterdir() if p.name.startswith(REFERENCE_DATE)]
    ring = load_keyring(prepared.central_keyring, PASSPHRASE)
    body = load_keyring(root / "keys" / "body.keyring", PASSPHRASE).active("body")
    pseudonyms = TwoLayerPseudonymiser(body, ring.active("domain", DEFAULT_DOMAIN))
    yield run_dir, ring, pseudonyms
    mp.undo()


def test_the_household_of_a_quarantined_register_row_is_not_signalled(run):
    run_dir, ring, p = run
    h11 = p.one("household_id", "H11")
    signals = read_run_table(run_dir, "signals.parquet", ring).to_pylist()
    assert h11 not in {s["household_pid"] for s in signals}
    zorgtoeslag = {s["household_pid"] for s in signals if s["scheme"] == "zorgtoeslag"}
    assert zorgtoeslag == {p.one("household_id", h) for h in ("H1", "H10")}  # as ever
    held = read_run_table(run_dir, "suppressed.parquet", ring).to_pylist()
    assert {(s["scheme"], tuple(s["reasons"])) for s in held if s["household_pid"] == h11} == {
        ("zorgtoeslag", ("incomplete_household",))
    }


def test_its_proportionality_record_says_why_and_the_run_counts_it(run):
    run_dir, _, p = run
    h11 = p.one("household_id", "H11")
    records = duckdb.sql(
        f"SELECT attributes FROM read_parquet('{run_dir}/audit/*.parquet') "
        "WHERE name = 'proportionality'"
    ).fetchall()
    (attributes,) = [json.loads(a) for (a,) in records if json.loads(a)["household_pid"] == h11]
    assert attributes["checks"]["completeness"] == {"outcome": "fail"}
    assert attributes["decision"] == "suppressed"
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]["sources"]["brp"]
    assert counts["quarantined_at_body"] == 1 and counts["households_of_quarantined_rows"] == 1
    assert not list(run_dir.rglob("quarantined_households*"))
