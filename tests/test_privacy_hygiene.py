"""A whole `signals demo` (generate, pseudonymise, central Prefect flow, worklist) in a fresh
process: no BSN in any file it writes (outputs, keys, Prefect's home and database, temporary
folders, its console log), except the controller's worklist."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bsn_scan import _hits

from pipelines.contract import SOURCES, bsn_is_valid
from pipelines.read_deliveries import find_delivery, iter_raw_batches, open_delivery

MAIN = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".json", ".csv", ".txt", ".toml", ".md", ".log", ".pem", ".key", ".keyring"}


def _known_bsns(raw: Path) -> set[str]:
    """Every valid BSN in the raw deliveries (persons and partners, accepted or not)."""
    known = set()
    for name, source in SOURCES.items():
        delivery = open_delivery(find_delivery(raw, name, dt.date(2025, 1, 1)), name)
        for batch in iter_raw_batches(delivery):
            for column in source.columns:
                if column.kind == "bsn":
                    known |= {v for v in batch.column(column.name).to_pylist() if v}
    return {b for b in known if bsn_is_valid(b)}


def _flat_strings(col) -> list[str]:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        col = pc.list_flatten(col)
    if pa.types.is_struct(col.type):
        return sum((_flat_strings(col.field(i)) for i in range(col.type.num_fields)), [])
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return [v for v in col.to_pylist() if v]
    if pa.types.is_binary(col.type) or pa.types.is_fixed_size_binary(col.type):
        return [v.decode("latin-1") for v in col.to_pylist() if v]
    if pa.types.is_integer(col.type):  # a BSN stored as a number loses its leading zero
        return [f"{v:09d}" for v in col.to_pylist() if v is not None and 10**7 <= v < 10**9]
    return []


def _leaks_in(path: Path, known: set[str]) -> list[str]:
    """BSNs in one file: the population's exact BSNs anywhere in its bytes, and any
    11-proef nine-digit number in its text values (read value by value, so that bytes
    of neighbouring binary fields are never glued into a false number)."""
    raw = path.read_bytes().decode("latin-1")
    hits = [b for b in known if b in raw]
    values: list[str] = []
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for name in table.column_names:
            values += _flat_strings(table.column(name))
    elif raw.startswith("SQLite format 3"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    values += [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row]
        finally:
            con.close()
    elif path.suffix in TEXT_SUFFIXES or not path.suffix:
        values.append(raw)
    # One pass over all values, each on its own line: no two values glue into a number.
    hits += _hits("\n".join(values), known)  # skips SHA-256 digests, which manifests carry
    return sorted(set(hits))


def _leaks(root: Path, known: set[str], skip: set[Path] = frozenset()) -> dict[str, list[str]]:
    """Per file, its first hits, each with what surrounds it where the bytes show it: a
    failure must say what wrote the number (a population's BSN, or chance digits)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            hits = _leaks_in(path, known)
            if hits:
                raw = path.read_bytes().decode("latin-1")
                found[str(path)] = [_in_context(hit, raw) for hit in hits[:5]]
    return found


def _in_context(hit: str, raw: str, width: int = 40) -> str:
    at = raw.find(hit)
    if at < 0:  # in a compressed page: found only as a value
        return f"{hit} (a value)"
    return f"{hit} in {raw[max(0, at - width) : at + len(hit) + width]!r}"


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(
        SIGNALS_HOME=str(root / "home"),
        PREFECT_HOME=str(root / "home" / "prefect"),
        TMPDIR=str(root / "tmp"),
        SIGNALS_KEYRING_PASSPHRASE="a hygiene test passphrase",
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hygiene")
    out = root / "out"
    (root / "tmp").mkdir()
    argv = [sys.executable, "-m", "flows.cli", "demo", "--persons", "1000", "--out", str(out)]
    env = _env(root)
    proc = subprocess.run(argv, cwd=MAIN, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "console.log").write_text(proc.stdout + proc.stderr)
    return root, _known_bsns(out / "raw")


@pytest.mark.slow
def test_no_file_of_a_full_run_holds_a_bsn_outside_the_worklist(demo):
    root, known = demo
    out = root / "out"
    assert len(known) >= 900  # the population's persons (a few BSNs are corrupted on purpose)
    skip = {out / "raw", out / "worklist.csv", out / "worklist.parquet"}  # the only BSN files
    leaks = _leaks(root, known, skip)
    assert leaks == {}
    # What was scanned includes Prefect's database, the keys, the runs and the audit log.
    assert (root / "home" / "prefect" / "prefect.db").is_file()
    assert list((out / "runs").glob("*/signals.parquet.enc"))
    assert (out / "runs" / "audit-log").is_dir() and (out / "keys").is_dir()


def test_prefect_persisted_no_task_result(demo):
    root, _ = demo
    storage = root / "home" / "prefect" / "storage"
    assert not storage.exists() or not any(storage.iterdir())


def test_the_demo_ends_with_a_worklist_whose_bsns_are_in_the_brp_delivery(demo):
    root, known = demo
    worklist = root / "out" / "worklist.csv"
    with open(worklist, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["bsn"] in known for r in rows)
    assert "re-identified" in (root / "console.log").read_text()
    # The scanner does see BSNs where they are: it is not blind.
    assert _leaks_in(worklist, known)


def test_the_demo_ends_with_commands_that_work_on_its_outputs(demo):
    root, _ = demo
    after = (root / "console.log").read_text().split("next, on these outputs", 1)[1]
    lines = [line.strip() for line in after.splitlines()[1:] if line.startswith("  ")]
    commands = [c for c in lines if not c.startswith("export ")]  # `signals` or its path first
    assert [c.split()[1] for c in commands] == ["runs", "audit", "audit", "report"]
    assert {os.path.basename(c.split()[0]) for c in commands} == {"signals"}
    for command in commands:
        argv = [sys.executable, "-m", "flows.cli", *shlex.split(command)[1:]]
        proc = subprocess.run(
            argv, cwd=MAIN, env=_env(root), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (command, proc.stderr[-2000:])


def test_the_scanner_reads_values_not_glued_bytes(tmp_path):
    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("CREATE TABLE t (a TEXT, b TEXT)")
    con.execute("INSERT INTO t VALUES ('2026-11-28 22:46:34.48206', '72026-11-28')")
    con.execute("INSERT INTO t VALUES ('id 123456782 here', '')")
    con.commit()
    con.close()
    assert _leaks_in(tmp_path / "x.db", set()) == ["123456782"]
    assert re.search("123456782", (tmp_path / "x.db").read_bytes().decode("latin-1"))


def test_the_scanner_finds_bsns_inside_parquet_values_but_not_small_numbers(tmp_path):
    table = pa.table({"l": [["x123456782y"], []], "n": [61, 111222333], "s": ["a", None]})
    pq.write_table(table, tmp_path / "x.parquet")
    assert _leaks_in(tmp_path / "x.parquet", {"123456782"}) == ["111222333", "123456782"]
    pq.write_table(pa.table({"age": [61, 73, 85]}), tmp_path / "ages.parquet")
    assert _leaks_in(tmp_path / "ages.parquet", set()) == []
