"""A step's output is written as Parquet parts: whole, named after their bytes, so a
retried bundle cannot leave a second copy; only the schema's columns, in its types."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.options import pipeline_options
from pipelines.write_parts import PART_GLOB, WriteParts, part_bytes, write_part

SCHEMA = pa.schema([("pid", pa.string()), ("amount", pa.decimal128(12, 2))])


def _batch(pids, extra=True):
    columns = {"pid": pids, "amount": [1.5] * len(pids)}
    if extra:
        columns["explanation"] = ["long text"] * len(pids)
    return pa.table(columns).to_batches()[0] if pids else pa.table(columns)


def test_a_pipeline_writes_each_element_once_with_the_schemas_columns(tmp_path):
    elements = [_batch(["a", "b"]), _batch(["c"]), _batch(["a", "b"]), _batch([])]
    with beam.Pipeline(options=pipeline_options()) as p:
        (
            p
            | beam.Create([0, 1, 2, 3])
            | beam.Map(lambda i: elements[i]).with_output_types(pa.RecordBatch)
            | WriteParts(tmp_path / "out", SCHEMA, "test")
        )
    parts = sorted((tmp_path / "out").glob(PART_GLOB))
    # The same batch twice (as a retried bundle would write it) is one part; empty is none.
    assert len(parts) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in parts]
    table = pq.read_table(parts)
    assert table.schema.equals(SCHEMA)
    assert sorted(table.column("pid").to_pylist()) == ["a", "b", "c"]


def test_a_part_is_named_after_its_bytes(tmp_path):
    one = part_bytes(_batch(["a", "b"]), SCHEMA)
    assert part_bytes(pa.Table.from_batches([_batch(["a", "b"])]), SCHEMA) == one
    assert part_bytes(_batch(["a", "c"]), SCHEMA) != one
    first, again = write_part(one, tmp_path), write_part(one, tmp_path)
    assert first == again and first.read_bytes() == one
    assert write_part(part_bytes(_batch(["a", "c"]), SCHEMA), tmp_path) != first
    assert len(list(tmp_path.iterdir())) == 2
