"""Writing audit record batches to Parquet parts where they are made, inside the Beam stages.

A run makes about nine audit records per person. Sent through one Flatten into one
Parquet sink, every batch of them would wait in the runner's buffers until the last
producing stage finished (the in-memory DirectRunner holds a stage's outputs whole):
at 1M persons that is tens of GB. `WriteAuditPartsFn` writes each batch to its own
part file in the stage that made it, so audit records never pile up in memory.

A retried bundle may write a batch twice under another file name: harmless, because
finalise keeps each span id once (span ids are derived from run, operation and subject,
pipelines/audit_records.py), and the log keeps each span id once again on append.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines.audit_records import AUDIT_SCHEMA

_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


class WriteAuditPartsFn(beam.DoFn):
    """Writes each audit RecordBatch (or Table) to `<folder>/<operation>-<uuid>.parquet`.

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
        name = uuid.uuid4().hex.translate(_LETTERS)  # letters: no digit runs in any name
        path = Path(self.folder) / f"{self.label}-{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")  # finalise reads *.parquet: never a torn file
        pq.write_table(
            table.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA), tmp, compression="snappy"
        )
        os.replace(tmp, path)
        self.records.inc(table.num_rows)
