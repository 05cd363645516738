"""Writing a step's Arrow output to staging as Parquet parts, one per element.

Beam's Parquet sink makes four stages of every output (set up, write, group, finalise)
to give each bundle's file a final name exactly once. Six outputs made 24 of a run's 41
stages and ~0.7 s of every run, whatever its size. A part here is written whole or not
at all (a temporary name, then a rename) and named after its bytes, so a retried bundle
writes the same file again instead of a second copy: the same guarantee, in the step.
The flow finalises the parts (pipelines/publish.py).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

PART_GLOB = "part-*.parquet"


def part_bytes(element: pa.Table | pa.RecordBatch, schema: pa.Schema) -> bytes:
    """The Parquet bytes of one element, columns in `schema`'s order and types."""
    table = element if isinstance(element, pa.Table) else pa.Table.from_batches([element])
    sink = pa.BufferOutputStream()
    pq.write_table(table.select(schema.names).cast(schema), sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def write_part(data: bytes, folder: Path) -> Path:
    """`data` as `<folder>/part-<first 32 hex digits of its SHA-256>.parquet`, atomically."""
    path = Path(folder) / f"part-{hashlib.sha256(data).hexdigest()[:32]}.parquet"
    # Listed by PART_GLOB, so never torn; two attempts of one bundle may write at once.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


class WritePartsFn(beam.DoFn):
    """Writes each non-empty element as one Parquet part in `folder`."""

    def __init__(self, folder: Path, schema: pa.Schema, label: str):
        self.folder, self.schema = str(folder), schema
        self.rows = Metrics.counter("write", f"{label}_rows")

    def setup(self):
        os.makedirs(self.folder, exist_ok=True)

    def process(self, element):
        if element.num_rows:
            write_part(part_bytes(element, self.schema), Path(self.folder))
            self.rows.inc(element.num_rows)


class WriteParts(beam.PTransform):
    """Writes a PCollection of Arrow tables or record batches as Parquet parts.

    In: pa.Table or pa.RecordBatch elements with (at least) the columns of `schema`.
    Out: nothing; `<folder>/part-<digest>.parquet`, one per non-empty element, with the
    columns of `schema` (no element, no part: finalise makes the empty outputs).
    """

    def __init__(self, folder: Path, schema: pa.Schema, label: str):
        super().__init__()
        self.folder, self.schema, self.label = Path(folder), schema, label

    def expand(self, pcoll):
        return pcoll | beam.ParDo(WritePartsFn(self.folder, self.schema, self.label))
