"""Writing audit record batches to Parquet parts where they are made, inside the Beam stages.

A run makes several audit records per person. Sent through one Flatten into one
Parquet sink, every batch of them would wait in the runner's buffers until the last
producing stage finished (the in-memory DirectRunner holds a stage's outputs whole):
at 1M persons that is tens of GB. `WriteAuditPartsFn` writes each batch to its own
part file in the stage that made it, so audit records never pile up in memory.

A part is named after its content and its records are in span-id order, so the parts
of a run, taken in name order, are the same sequence whatever the runner, the order in
which bundles ran, or how often one was retried (a retry writes the same file again).
finalise concatenates them in that order (pipelines/publish.py) instead of sorting
millions of records. Span ids are derived from run, operation and subject
(pipelines/audit_records.py), so a copy of a record is recognised and kept once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines.audit_records import AUDIT_SCHEMA

_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


class WriteAuditPartsFn(beam.DoFn):
    """Writes each audit RecordBatch (or Table) to `<folder>/<label>-<content>.parquet`.

    In: PCollection of AUDIT_SCHEMA batches. Out: nothing (the files are the output).
    """

    def __init__(self, folder: Path, label: str):
        self.folder, self.label = str(folder), label
        self.records = Metrics.counter("audit", f"{label}_records")

    def setup(self):
        os.makedirs(self.folder, exist_ok=True)

    def process(self, batch):
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows == 0:
            return
        table, spans = in_span_order(table.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA))
        name = part_name(self.label, spans)
        path = Path(self.folder) / name
        tmp = path.with_name(f".{path.name}.tmp")  # finalise reads *.parquet: never a torn file
        pq.write_table(table, tmp, compression="snappy")
        os.replace(tmp, path)
        self.records.inc(table.num_rows)


def in_span_order(table: pa.Table) -> tuple[pa.Table, bytes]:
    """The records sorted by span id (as bytes), and their span ids concatenated.

    Batches from pipelines/audit_records.audit_batch come sorted: then nothing is copied.
    """
    spans = table.column("span_id").combine_chunks()
    raw = np.frombuffer(spans.buffers()[1], dtype=">u8")[spans.offset : spans.offset + len(spans)]
    if np.all(raw[1:] >= raw[:-1]):
        return table, raw.tobytes()
    order = np.argsort(raw, kind="stable")
    return table.take(pa.array(order)), raw[order].tobytes()


def part_name(label: str, spans: bytes) -> str:
    """`<label>-<32 letters>.parquet`: the letters hash the part's span ids (no digit runs)."""
    digest = hashlib.sha256(spans).hexdigest()[:32].translate(_LETTERS)
    return f"{label}-{digest}.parquet"
