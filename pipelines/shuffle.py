"""Shuffling record batches through files: a grouping moves paths, not data.

A GroupByKey makes the runner hold (or ship) every element it groups until the group
is complete. The DirectRunner holds them in memory, encoded, so the three join
shuffles kept the whole population in memory: ~1.9 KB a person, ~20 GB at 10M
persons. Here every sub-batch that goes into a grouping is first written as an Arrow
IPC file under the run's staging folder; the grouping carries only its path and row
count, and the join reads its bucket's files back when it runs. Memory is then one
bucket's data, whatever the population.

The staging folder must be reachable by every worker at the same path (a shared file
system on a cluster: docs/scaling.md, Paths), as it already must be for the run's
parts. File names are random, so a retried bundle writes new files and never
overwrites what another attempt wrote; the runner only passes on the paths of the
attempt that succeeded. Files are
removed with the rest of the staging scratch when the run is finalised
(pipelines/publish.py), not after reading: a retried join must find them again.
Uncompressed: the columns are mostly pseudonyms, random text that compresses little,
and an uncompressed file is read back by memory-mapping it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

SHUFFLE_DIR = "shuffle"


@dataclass(frozen=True)
class Spilled:
    """A record batch written to `path` (Arrow IPC file) with `rows` rows."""

    path: str
    rows: int


def spill(batch: pa.RecordBatch, folder: Path | str, prefix: str = "") -> Spilled:
    """Writes `batch` to a new file in `folder`; returns its handle."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}{uuid.uuid4().hex}.arrow"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return Spilled(str(path), batch.num_rows)


def load(spilled: list[Spilled], schema: pa.Schema) -> pa.Table:
    """The batches behind `spilled` as one table of `schema` (empty when there are none)."""
    tables = []
    for handle in spilled:
        try:
            with pa.memory_map(handle.path) as source:
                table = ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid) as e:
            raise RuntimeError(
                f"shuffle file {handle.path} cannot be read ({e}); the staging folder must be "
                "reachable by every worker and left alone while the run is going"
            ) from e
        if table.num_rows != handle.rows:
            raise RuntimeError(
                f"shuffle file {handle.path} holds {table.num_rows} rows, "
                f"{handle.rows} were written to it"
            )
        tables.append(table)
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).cast(schema)
