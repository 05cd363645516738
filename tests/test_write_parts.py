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


def test_finalise_drops_unfinished_writes_and_publishes_empty_household_and_evaluation_tables(
    tmp_path,
):
    from pipelines import household
    from pipelines.evaluate import EVALUATION_SCHEMA
    from pipelines.publish import finalise

    (tmp_path / "audit_parts").mkdir()
    for name in ("households", "evaluations"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".part-0a1b.parquet.9f8e.tmp").write_bytes(b"half a part")
    counts = finalise(tmp_path, {})
    assert counts["households"] == counts["evaluations"] == counts["signals"] == 0
    for name, schema in (("households", household.SCHEMA), ("evaluations", EVALUATION_SCHEMA)):
        (part,) = (tmp_path / name).iterdir()
        assert part.name.endswith(".parquet") and pq.read_schema(part).equals(schema), name


def test_finalise_counts_the_evaluation_parts_the_pipeline_wrote(tmp_path):
    from pipelines.evaluate import EVALUATION_SCHEMA
    from pipelines.publish import finalise

    (tmp_path / "audit_parts").mkdir()
    rows = {n: [None] * 3 for n in EVALUATION_SCHEMA.names} | {"household_pid": ["a", "b", "c"]}
    table = pa.table(rows, schema=EVALUATION_SCHEMA)
    (tmp_path / "evaluations").mkdir()
    for part in (table.slice(0, 2), table.slice(2)):
        name = part_name(part, "evaluations", ("household_pid",))
        write_part(part, tmp_path / "evaluations" / name)
    assert finalise(tmp_path, {})["evaluations"] == 3
    assert len(list((tmp_path / "evaluations").glob(PART_GLOB))) == 2
