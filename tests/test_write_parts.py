"""A step's output is written as Parquet parts: whole, named after the rows they hold, so a
retried bundle cannot leave a second copy; only the schema's columns, in its types."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.options import pipeline_options
from pipelines.write_parts import PART_GLOB, WriteParts, part_name, write_part

SCHEMA = pa.schema([("pid", pa.string()), ("amount", pa.decimal128(12, 2))])
KEY = ("pid",)


def _batch(pids):
    columns = {"pid": pids, "amount": [1.5] * len(pids), "explanation": ["text"] * len(pids)}
    return pa.table(columns).to_batches()[0] if pids else pa.table(columns)


def test_a_pipeline_writes_each_element_once_with_the_schemas_columns(tmp_path):
    # The first batch again, in another order, as a retried bundle may make it; and nothing.
    elements = [_batch(["a", "b"]), _batch(["c"]), _batch(["b", "a"]), _batch([])]
    with beam.Pipeline(options=pipeline_options()) as p:
        (
            p
            | beam.Create([0, 1, 2, 3])
            | beam.Map(lambda i: elements[i]).with_output_types(pa.RecordBatch)
            | WriteParts(tmp_path / "out", SCHEMA, "test", KEY)
        )
    parts = sorted((tmp_path / "out").glob(PART_GLOB))
    assert len(parts) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in parts]
    table = pq.read_table(parts)
    assert table.schema.equals(SCHEMA)
    assert sorted(table.column("pid").to_pylist()) == ["a", "b", "c"]


def test_a_part_is_named_after_its_label_rows_and_least_keys():
    def name(pids, label="test", key=KEY):
        return part_name(pa.Table.from_batches([_batch(pids)]), label, key)

    assert name(["a", "b"]) == name(["b", "a"])
    assert len({name(["a", "b"]), name(["a", "c", "d"]), name(["c"]), name(["a", "b"], "x")}) == 4
    assert name(["a", "b"], key=("pid", "amount")) != name(["a", "b"])


def test_a_write_that_fails_leaves_nothing(tmp_path):
    table = pa.table({"x": [1]})
    assert write_part(table, tmp_path / "part-x.parquet").is_file()
    # The rename fails (a folder is in the way) after the temporary file was written.
    (tmp_path / "part-y.parquet" / "in-the-way").mkdir(parents=True)
    with pytest.raises(OSError):
        write_part(table, tmp_path / "part-y.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-x.parquet", "part-y.parquet"]


def test_finalise_drops_unfinished_writes_and_publishes_an_empty_household_table(tmp_path):
    from pipelines import household
    from pipelines.publish import finalise

    (tmp_path / "households").mkdir()
    (tmp_path / "audit_parts").mkdir()
    (tmp_path / "households" / ".part-0a1b.parquet.9f8e.tmp").write_bytes(b"half a part")
    counts = finalise(tmp_path, {})
    assert counts["households"] == 0 and counts["signals"] == 0
    (part,) = (tmp_path / "households").iterdir()
    assert part.name.endswith(".parquet") and pq.read_schema(part).equals(household.SCHEMA)
