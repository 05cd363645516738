"""Scanning every file a run wrote for anything that is, or looks like, a BSN.

Two nets: the exact BSNs of the population (so a leaked one is found even inside a
longer string), and the generic pattern (nine digits standing alone that pass the
11-proef). Parquet files are read value by value, since their pages are compressed;
DuckDB files are opened and every text column read; all other files as raw bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.contract import bsn_is_valid

NINE_DIGITS = re.compile(r"(?<!\d)\d{9}(?!\d)")
# Hex SHA-256 digests (manifests carry them, as the contract requires) and the 32-hex
# digest names of part files (pipelines/write_parts.py) may contain nine digits passing the
# 11-proef by chance; the generic net skips whole digests and names.
HEX_DIGEST = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{32})(?![0-9a-fA-F])")
# Prefect stores its run ids as UUID text; their hex groups can hold such digits by chance too.
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Integer columns that count positions 0, 1, 2 ... (the audit log's leaf index): any
# number in them passes the 11-proef now and then without being anyone's BSN.
POSITION_COLUMNS = {"leaf_index"}


def _text_values(col) -> Iterable[str]:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        col = pc.list_flatten(col)
    if pa.types.is_struct(col.type):
        for i in range(col.type.num_fields):
            yield from _text_values(col.field(i))
        return
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        yield from (v for v in col.to_pylist() if v)
    elif pa.types.is_binary(col.type) or pa.types.is_fixed_size_binary(col.type):
        yield from (v.decode("latin-1") for v in col.to_pylist() if v)
    elif pa.types.is_integer(col.type):
        # A BSN stored as a number loses its leading zero: 8 or 9 digits. Smaller integers (ages,
        # counts, positions) padded to nine digits would only be false alarms.
        yield from (f"{v:09d}" for v in col.to_pylist() if v is not None and 10**7 <= v < 10**9)


def _hits(text: str, known: set[str]) -> list[str]:
    generic = UUID.sub(" ", HEX_DIGEST.sub(" ", text))
    found = [m for m in NINE_DIGITS.findall(generic) if bsn_is_valid(m)]
    found += [b for b in known if b in text]
    return found


def _scan_values(values: Iterable[str], known: set[str]) -> list[str]:
    hits = []
    for v in values:
        hits += _hits(v, known)
    return hits


def scan_file(path: Path, known: set[str]) -> list[str]:
    """BSN-like values found in one file."""
    hits = _hits(path.read_bytes().decode("latin-1"), known)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for name in table.column_names:
            if name in POSITION_COLUMNS and pa.types.is_integer(table.schema.field(name).type):
                continue
            hits += _scan_values(_text_values(table.column(name)), known)
    elif path.suffix in (".duckdb", ".ddb"):
        con = duckdb.connect(str(path), read_only=True)
        try:
            for (table,) in con.execute(
                "SELECT table_name FROM information_schema.tables"
            ).fetchall():
                arrow = con.sql(f'SELECT * FROM "{table}"').to_arrow_table()
                for name in arrow.column_names:
                    hits += _scan_values(_text_values(arrow.column(name)), known)
        finally:
            con.close()
    return hits


def scan_tree(root: Path, known: set[str] = frozenset()) -> dict[str, list[str]]:
    """Every file under root with the BSN-like values found in it (empty dict: clean)."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            hits = scan_file(path, set(known))
            if hits:
                found[str(path)] = sorted(set(hits))[:5]
    return found
