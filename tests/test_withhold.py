"""Blanking withheld fields on reading (pipelines/withhold.py), in a real Beam pipeline."""

from __future__ import annotations

from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that

from pipelines.options import pipeline_options
from pipelines.withhold import WithholdFields, blank


def _housing() -> pa.RecordBatch:
    schema = pa.schema(
        [
            pa.field("address_id", pa.string(), nullable=False),
            pa.field("tenure", pa.string(), nullable=False),
            pa.field("monthly_rent", pa.decimal128(10, 2)),
        ]
    )
    rent = pa.array([Decimal("650.00"), None], type=schema.field("monthly_rent").type)
    columns = [["A1", "A2"], ["social_rent", "owner_occupied"], rent]
    return pa.record_batch(columns, schema=schema)


def test_withheld_columns_keep_name_and_type_and_hold_only_nulls():
    batch = blank(_housing(), ("monthly_rent", "tenure"))
    assert batch.schema.names == ["address_id", "tenure", "monthly_rent"]
    assert batch.schema.field("monthly_rent").type == pa.decimal128(10, 2)
    assert batch.column("monthly_rent").null_count == 2
    assert batch.column("tenure").null_count == 2  # a required field becomes nullable
    assert batch.column("address_id").to_pylist() == ["A1", "A2"]


def test_a_field_the_batch_lacks_is_an_error_not_ignored():
    with pytest.raises(KeyError, match="cannot withhold rent"):
        blank(_housing(), ("rent",))


def test_the_step_blanks_every_batch_of_the_source():
    def check(batches):
        assert len(batches) == 3
        for b in batches:
            assert b.column("monthly_rent").null_count == b.num_rows
            assert b.column("tenure").null_count == 0

    with beam.Pipeline(options=pipeline_options()) as p:
        blanked = (
            p
            | beam.Create([_housing()] * 3).with_output_types(pa.RecordBatch)
            | WithholdFields(("monthly_rent",))
        )
        assert_that(blanked, check)
