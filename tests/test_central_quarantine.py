"""Rows the central run refuses are quarantined under their own source, and counted.

The bodies quarantine bad rows before pseudonymising; the central run refuses what
should not have passed them: an identifier that is not a body pseudonym (a raw BSN, a
domain pseudonym). The two reading steps (the objections, then every other source) write
their quarantine parts into one folder; finalise must still give each source its own rows
and counts.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from population import REFERENCE_DATE
from service_support import PASSPHRASE, prepare_deliveries

from flows.cli import main
from pipelines.read_deliveries import sha256_of

# Row (0-based) of each delivery to spoil, and with what: both must be refused centrally.
SPOILED = {
    "tax": (0, "bsn", "999999990"),
    "arrears": (0, "bsn", "d1.notabodypseudonym"),
    "objections": (0, "bsn", "999999990"),  # read in a step of its own
}


def _spoil(delivery, row: int, column: str, value: str) -> None:
    data = delivery / "data.parquet"
    table = pq.read_table(data)
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values)), data)
    manifest = json.loads((delivery / "manifest.json").read_text())
    manifest["sha256"] = sha256_of(data)
    (delivery / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("central-quarantine")
    prepared = prepare_deliveries(root)
    for source, (row, column, value) in SPOILED.items():
        _spoil(prepared.deliveries / source / REFERENCE_DATE, row, column, value)
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    args = ["run", "--deliveries", str(prepared.deliveries), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(prepared.central_keyring), "--out", str(root / "runs")]
    assert main(args + ["--buckets", "2"]) == 0
    mp.undo()
    (run_dir,) = [p for p in (root / "runs").iterdir() if (p / "manifest.json").is_file()]
    return run_dir


def test_each_source_gets_its_own_centrally_quarantined_rows(run):
    counts = json.loads((run / "manifest.json").read_text())["counts"]["sources"]
    for source, (row, column, _) in SPOILED.items():
        assert counts[source]["quarantined_centrally"] == 1, source
        rows = pq.read_table(run / "quarantine" / f"{source}.parquet").to_pylist()
        central = [r for r in rows if r["cause"] == f"{column}: not a pseudonym"]
        assert [(r["source"], r["row_number"]) for r in central] == [(source, row + 1)]
    others = set(counts) - set(SPOILED)
    assert others and all(counts[s]["quarantined_centrally"] == 0 for s in others)


def test_counts_still_reconcile_with_the_delivered_rows(run):
    for source, counts in json.loads((run / "manifest.json").read_text())["counts"][
        "sources"
    ].items():
        assert counts["accepted"] + counts["quarantined"] == counts["rows_in"], source
        on_disk = pq.read_metadata(run / "quarantine" / f"{source}.parquet").num_rows
        assert on_disk == counts["quarantined"], source
