"""A row quarantined at the body can leave what we know of a household incomplete: held back.

In the hand-made population H11 is a couple (incomes 30,000 and 12,000) signalled for
zorgtoeslag. Break the partner's BRP row (a birth date that does not exist) and the body
quarantines it: without the household's name kept, the run saw H11 as the head alone, a
single person, and judged it on her income only.

H2 already receives zorgtoeslag. Break that benefits row (a start date that does not
exist) and, without its person's name kept, the run saw a household entitled and not paid:
it was signalled for a benefit it has.

H1 (single, income 20,000 in 2024) also has a 2023 assessment. Break the 2024 row and,
without her name kept, the run judged her on the older income.

With the names kept, the household is evaluated (the aggregate report counts it) but never
signalled: its candidates fail the completeness check, which names the source.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import write_delivery
from population import REFERENCE_DATE, SIGNALLED, B, write_population
from service_support import PASSPHRASE, prepare_deliveries

from flows.cli import main
from pipelines.contract import SOURCES
from pipelines.read_deliveries import NAMED_BY_QUARANTINE
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.retention import read_run_table


def _broken(source: str, bsn: str, field: str, value: str, added: tuple = ()):
    """Writes the population with `field` of `bsn`'s row of `source` set to `value`, and
    the rows `added`."""

    def write(folder):
        write_population(folder)
        path = folder / source / REFERENCE_DATE / "data.csv"
        columns = list(SOURCES[source].column_names)
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        for row in rows:
            if row[0] == bsn:
                row[columns.index(field)] = value
        write_delivery(folder, source, columns, rows + list(added), REFERENCE_DATE)

    return write


# source -> (the household it leaves incomplete, how its raw delivery is broken)
BROKEN = {
    "brp": ("H11", _broken("brp", B[14], "birth_date", "1985-02-30")),  # H11's partner
    "benefits": ("H2", _broken("benefits", B[1], "start_date", "2024-02-30")),  # H2's head
    # H1's 2024 assessment has negative assets; without it, her 2023 one would be used.
    "tax": (
        "H1",
        _broken(
            "tax", B[0], "assets", "-1000.00", [[B[0], "2023", "18000.00", "0.00", "definitive"]]
        ),
    ),
}


@pytest.fixture(scope="module", params=sorted(BROKEN))
def run(request, tmp_path_factory):
    source = request.param
    held, write_raw = BROKEN[source]
    root = tmp_path_factory.mktemp(f"incomplete-{source}")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    prepared = prepare_deliveries(root, write_raw=write_raw)
    args = ["run", "--deliveries", str(prepared.deliveries), "--reference-date", REFERENCE_DATE]
    assert (
        main(args + ["--key-file", str(prepared.central_keyring), "--out", str(root / "runs")]) == 0
    )
    (run_dir,) = [p for p in (root / "runs").iterdir() if p.name.startswith(REFERENCE_DATE)]
    ring = load_keyring(prepared.central_keyring, PASSPHRASE)
    body = load_keyring(root / "keys" / "body.keyring", PASSPHRASE).active("body")
    pseudonyms = TwoLayerPseudonymiser(body, ring.active("domain", DEFAULT_DOMAIN))
    yield source, held, run_dir, ring, pseudonyms
    mp.undo()


def test_the_household_a_quarantined_row_leaves_incomplete_is_not_signalled(run):
    _, held, run_dir, ring, p = run
    pid = p.one("household_id", held)
    signals = read_run_table(run_dir, "signals.parquet", ring).to_pylist()
    assert pid not in {s["household_pid"] for s in signals}
    zorgtoeslag = {s["household_pid"] for s in signals if s["scheme"] == "zorgtoeslag"}
    assert zorgtoeslag == {p.one("household_id", h) for h in SIGNALLED - {held}}  # as ever
    suppressed = read_run_table(run_dir, "suppressed.parquet", ring).to_pylist()
    reasons = {s["scheme"]: s["reasons"] for s in suppressed if s["household_pid"] == pid}
    assert reasons["zorgtoeslag"] == ["incomplete_household"]
    assert all("incomplete_household" in r for r in reasons.values())


def test_its_proportionality_record_names_the_source_and_the_run_counts_it(run):
    source, held, run_dir, _, p = run
    pid = p.one("household_id", held)
    records = duckdb.sql(
        f"SELECT attributes FROM read_parquet('{run_dir}/audit/*.parquet') "
        "WHERE name = 'proportionality'"
    ).fetchall()
    records = [json.loads(a) for (a,) in records]
    (attributes,) = [
        a for a in records if a["household_pid"] == pid and a["scheme"] == "zorgtoeslag"
    ]
    assert attributes["checks"]["completeness"] == {"outcome": "fail", "quarantined": [source]}
    assert attributes["decision"] == "suppressed"
    others = [a["checks"]["completeness"] for a in records if a["household_pid"] != pid]
    assert others and all(c == {"outcome": "pass", "quarantined": None} for c in others)
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]["sources"][source]
    assert counts["quarantined_at_body"] == 1
    assert counts[NAMED_BY_QUARANTINE[source].counted_as] == 1
    assert not list(run_dir.rglob("quarantined_*"))
