"""Shuffling record batches through files: a grouping moves paths, not data.

A GroupByKey makes the runner hold (or ship) every element it groups until the group
is complete. The DirectRunner holds them in memory, encoded, so the three join
shuffles kept the whole population in memory: ~1.9 KB a person, ~20 GB at 10M
persons. Here the batches that go into a grouping are first written as Arrow IPC files
under the run's staging folder (a file per SPILL_ROWS rows, pipelines/join.py), a record
batch per key (join bucket); the grouping carries only the path, batch number and row
count, and the join reads its bucket's batches back when it runs. Memory is then one
bucket's data per thread, whatever the population.

The staging folder must be reachable by every worker at the same path (a shared file
system on a cluster: docs/scaling.md, Paths), as it already must be for the run's
parts. File names are random, so a retried bundle writes new files and never
overwrites what another attempt wrote; the runner only passes on the paths of the
attempt that succeeded. Files are removed with the rest of the staging scratch when the
run is finalised (pipelines/publish.py), not after reading: a retried join must find
them again.
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
    """Record batch number `batch` of the Arrow IPC file at `path`, with `rows` rows."""

    path: str
    rows: int
    batch: int = 0


def spill_pieces(
    batch: pa.RecordBatch, pieces: list[tuple[int, int]], folder: Path | str, prefix: str = ""
) -> list[Spilled]:
    """Writes the (offset, length) pieces of `batch` to one new file in `folder`, a record
    batch each; returns a handle per piece.

    One file for all pieces, not one per piece: with a piece per join bucket, files would
    be batches x buckets, most of them a few hundred rows (~100,000 files at 10M persons),
    and opening files would cost more than the rows.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}{uuid.uuid4().hex}.arrow"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
        for offset, length in pieces:
            writer.write_batch(batch.slice(offset, length))
    return [Spilled(str(path), length, i) for i, (_, length) in enumerate(pieces)]


def load(spilled: list[Spilled], schema: pa.Schema) -> pa.Table:
    """The batches behind `spilled` as one table of `schema` (empty when there are none)."""
    batches = []
    for handle in spilled:
        try:
            with pa.memory_map(handle.path) as source:
                batch = ipc.open_file(source).get_batch(handle.batch)
        except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
            raise RuntimeError(
                f"shuffle file {handle.path} cannot be read ({e}); the staging folder must be "
                "reachable by every worker and left alone while the run is going"
            ) from e
        if batch.num_rows != handle.rows:
            raise RuntimeError(
                f"shuffle file {handle.path} holds {batch.num_rows} rows in batch "
                f"{handle.batch}, {handle.rows} were written to it"
            )
        batches.append(batch)
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)
