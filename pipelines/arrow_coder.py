"""The Beam coder of the pipeline's elements: Arrow tables, record batches and arrays.

Beam measures the size of the first elements of every step's output (then a sample), and
for an element without a coder of its own it does so by encoding it, for Arrow data with
pickle. Our elements are few and large (a bucket of households, a batch of 100,000 audit
records), so nearly every one was pickled just to be measured: at 100,000 persons ~950 MB
of copies in a run. `ArrowCoder` takes the size from Arrow (`nbytes`) and encodes, when
an element does cross between stages or workers, as an Arrow IPC stream.

Registered for pa.Table, pa.RecordBatch and pa.Array (on import: pipelines/options.py
imports it); a step declares which it emits with `with_output_types`. Decoding gives back
the kind that was encoded, so a step that emits a table where it declared a batch still
hands on a table.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.ipc as ipc

_TABLE, _BATCH, _ARRAY = b"T", b"B", b"A"
_COLUMN = "values"  # an array travels as the one column of a record batch


class ArrowCoder(beam.coders.Coder):
    """Arrow data as `kind byte || Arrow IPC stream`; sized by Arrow without encoding."""

    def encode(self, value) -> bytes:
        if isinstance(value, pa.Table):
            kind, batches, schema = _TABLE, value.to_batches(), value.schema
        elif isinstance(value, pa.RecordBatch):
            kind, batches, schema = _BATCH, [value], value.schema
        elif isinstance(value, pa.Array):
            batch = pa.record_batch([value], names=[_COLUMN])
            kind, batches, schema = _ARRAY, [batch], batch.schema
        else:
            raise TypeError(f"ArrowCoder encodes Arrow tables, batches and arrays, not {value!r}")
        sink = pa.BufferOutputStream()
        sink.write(kind)
        with ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes):
        kind, reader = encoded[:1], ipc.open_stream(pa.py_buffer(encoded)[1:])
        table = reader.read_all()
        if kind == _TABLE:
            return table
        batch = table.combine_chunks().to_batches()
        batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
        return batch if kind == _BATCH else batch.column(0)

    def estimate_size(self, value) -> int:
        return value.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return typing.Any  # any of the three kinds

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


for _kind in (pa.Table, pa.RecordBatch, pa.Array):
    beam.coders.registry.register_coder(_kind, ArrowCoder)
