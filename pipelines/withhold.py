"""Blanking, on reading, the delivered fields this run has no purpose for.

The processing register may allow a field for some schemes only; in a run that
evaluates none of them the field is withheld (privacy/minimise.py `withheld_fields`):
its values are replaced by nulls in every batch, before the exclusions and the join, so
no household row, output or log of the run holds them. The column stays, with its type:
the join reads it and gets nulls, as it would for a person without that data.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa


def blank(batch: pa.RecordBatch, fields: tuple[str, ...]) -> pa.RecordBatch:
    """`batch` with the columns `fields` all null."""
    for name in fields:
        i = batch.schema.get_field_index(name)
        if i < 0:
            raise KeyError(f"cannot withhold {name}: the batch has no such column")
        field = batch.schema.field(name).with_nullable(True)
        batch = batch.set_column(i, field, pa.nulls(batch.num_rows, field.type))
    return batch


class WithholdFields(beam.PTransform):
    """Nulls `fields` in every record batch of one source.

    In: PCollection[RecordBatch] of a source as read. Out: the same batches, with those
    columns null (same names and types).
    """

    def __init__(self, fields: tuple[str, ...]):
        super().__init__()
        self.fields = tuple(fields)

    def expand(self, batches):
        return batches | beam.Map(blank, self.fields).with_output_types(pa.RecordBatch)
