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


def test_pseudonym_columns_are_written_without_a_dictionary_and_read_back_the_same(tmp_path):
    """The households' and evaluations' parts are published as written: their pseudonyms
    are delta-encoded, without a dictionary or statistics; the rest keeps both."""
    from pipelines.central import DISTINCT

    rows = 3000
    table = pa.table(
        {
            "household_pid": [
                f"d1.{i:032x}".translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
                for i in range(rows)
            ],
            "member_pids": [[f"d1.m{i}", f"d1.n{i}"] for i in range(rows)],
            "scheme": ["zorgtoeslag", "aio"] * (rows // 2),
            "amount": pa.array(range(rows), pa.int64()),
        }
    )
    path = write_part(table, tmp_path / "part-z.parquet", ("household_pid", "member_pids"))
    assert pq.read_table(path).equals(table)
    chunks = {
        c.path_in_schema: c
        for c in (pq.ParquetFile(path).metadata.row_group(0).column(i) for i in range(4))
    }
    pid, members, scheme, amount = (
        chunks[n] for n in ("household_pid", "member_pids.list.element", "scheme", "amount")
    )
    assert "DELTA_BYTE_ARRAY" in pid.encodings and not pid.has_dictionary_page
    assert pid.statistics is None and members.statistics is None and not members.has_dictionary_page
    assert scheme.has_dictionary_page and scheme.statistics.min == "aio"
    assert amount.statistics.max == rows - 1
    from pipelines import household
    from pipelines.evaluate import EVALUATION_SCHEMA

    schemas = {"households": household.SCHEMA, "evaluations": EVALUATION_SCHEMA}
    for label, columns in DISTINCT.items():
        assert set(columns) <= set(schemas[label].names), label
