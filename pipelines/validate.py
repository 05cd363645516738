"""Row validation against the delivery contract, vectorised over Arrow batches.

A batch of raw string columns goes in; a typed batch of valid rows and a batch of
quarantine records (one per bad row, naming the field and every cause) come out.
Causes never quote a value: a BSN, or an amount of a row the body can trace, must not
reach a quarantine file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract import (
    ADDRESS_ID,
    BSN,
    DATE,
    DECIMAL,
    ENUM,
    HOUSEHOLD_ID,
    INT,
    STRING,
    Column,
    Source,
)
from pipelines.household import MONEY

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("row_number", pa.int64()),  # 1-based data row; the header is not counted
        pa.field("field", pa.string()),  # the first field that failed
        pa.field("cause", pa.string()),  # every problem of the row, "; "-separated
    ]
)

TYPED = {
    STRING: pa.string(),
    ENUM: pa.string(),
    BSN: pa.string(),
    ADDRESS_ID: pa.string(),
    HOUSEHOLD_ID: pa.string(),
    DATE: pa.date32(),
    INT: pa.int64(),
    DECIMAL: MONEY,
}

_PATTERNS = {
    DATE: r"^\d{4}-\d{2}-\d{2}$",
    INT: r"^-?\d{1,12}$",
    DECIMAL: r"^-?\d{1,12}(\.\d{1,2})?$",
    ADDRESS_ID: r"^\d{16}$",
}


def typed_schema(source: Source) -> pa.Schema:
    """The Arrow schema of a source's valid rows (natural types)."""
    return pa.schema([pa.field(c.name, TYPED[c.kind], nullable=c.nullable) for c in source.columns])


def _problem(mask: pa.Array, text: str) -> pa.Array:
    """A string array holding `text` where mask is true, null elsewhere."""
    return pc.if_else(pc.fill_null(mask, False), pa.scalar(text), pa.scalar(None, pa.string()))


def _with_value(mask: pa.Array, col: pa.Array, name: str, what: str) -> pa.Array:
    """Problem text for a bad value, without the value: quarantine records travel with the
    delivery to the central party and stay in the run in plain, so they name the row and
    field (enough for the body to find it in its own extract), never what the row holds."""
    return _problem(pc.fill_null(mask, False), f"{name}: {what}")


def _eleven_proef(col: pa.Array) -> pa.Array:
    """True where a 9-digit string passes the 11-proef; vectorised over the digits."""
    digits = np.frombuffer(
        pc.fill_null(col, "000000000").cast(pa.binary()).cast(pa.binary(9)).buffers()[1],
        dtype=np.uint8,
    ).reshape(-1, 9)[: len(col)].astype(np.int64) - ord("0")
    weights = np.array([9, 8, 7, 6, 5, 4, 3, 2, -1])
    total = digits @ weights
    return pa.array((total % 11 == 0) & (total != 0))


def _bsn_problems(col: pa.Array, name: str) -> pa.Array:
    nine = pc.match_substring_regex(col, r"^\d{9}$")
    eight = pc.match_substring_regex(col, r"^\d{8}$")
    not_nine = pc.invert(pc.fill_null(nine, True))
    # Only 9-digit values go through the 11-proef; others already have their cause.
    safe = pc.if_else(pc.fill_null(nine, False), col, pa.scalar("000000000"))
    fails = pc.and_(pc.fill_null(nine, False), pc.invert(_eleven_proef(safe)))
    return pc.coalesce(
        _problem(pc.fill_null(eight, False), f"{name}: 8 digits (leading zero lost?)"),
        _problem(not_nine, f"{name}: not 9 digits"),
        _problem(fails, f"{name}: fails the 11-proef"),
    )


def is_bsn(col: pa.Array) -> pa.Array:
    """True where a value is a BSN (9 digits passing the 11-proef), False elsewhere."""
    return pc.and_(pc.is_valid(col), pc.is_null(_bsn_problems(col, "bsn")))


def _column_problems(column: Column, col: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Per-row problem text (null = fine) and the typed column for one contract column."""
    name = column.name
    problems = []
    if not column.nullable:
        problems.append(_problem(pc.is_null(col), f"{name}: empty but required"))
    typed = col
    if column.kind == BSN:
        problems.append(_bsn_problems(col, name))
    elif column.kind == ADDRESS_ID:
        bad = pc.invert(pc.match_substring_regex(col, _PATTERNS[ADDRESS_ID]))
        problems.append(_problem(bad, f"{name}: not a 16-digit BAG identifier"))
    elif column.kind == ENUM:
        bad = pc.invert(pc.is_in(col, value_set=pa.array(column.values)))
        allowed = ", ".join(column.values)
        problems.append(_with_value(bad, col, name, f"is not one of: {allowed}"))
    elif column.kind == DATE:
        shaped = pc.match_substring_regex(col, _PATTERNS[DATE])
        parsed = pc.strptime(
            pc.if_else(pc.fill_null(shaped, False), col, pa.scalar(None, pa.string())),
            format="%Y-%m-%d",
            unit="s",
            error_is_null=True,
        )
        # strptime rolls 2024-02-30 over to March: only a round trip proves the date exists.
        round_trip = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), col)
        bad = pc.and_(pc.is_valid(col), pc.invert(pc.fill_null(round_trip, False)))
        problems.append(_with_value(bad, col, name, "is not a date (YYYY-MM-DD)"))
        typed = pc.if_else(bad, pa.scalar(None, pa.timestamp("s")), parsed).cast(pa.date32())
    elif column.kind in (INT, DECIMAL):
        shaped = pc.fill_null(pc.match_substring_regex(col, _PATTERNS[column.kind]), True)
        problems.append(_with_value(pc.invert(shaped), col, name, f"is not a valid {column.kind}"))
        clean = pc.if_else(shaped, col, pa.scalar(None, pa.string()))
        typed = clean.cast(TYPED[column.kind])
        if column.non_negative:
            negative = pc.less(typed, pa.scalar(0, TYPED[column.kind]))
            problems.append(_with_value(negative, col, name, "is negative"))
        if column.min_value is not None:
            low = pc.less(typed, pa.scalar(column.min_value, TYPED[column.kind]))
            problems.append(_with_value(low, col, name, f"is before {column.min_value}"))
    elif column.kind not in (STRING, HOUSEHOLD_ID):
        raise ValueError(f"unknown column kind {column.kind!r}")
    if not problems:  # a nullable free-text column cannot be wrong
        return pa.nulls(len(col), pa.string()), typed
    merged = pc.coalesce(*problems) if len(problems) > 1 else problems[0]
    return merged, typed


def _join_problems(problems: list[pa.Array]) -> pa.Array:
    """Join per-column problems with '; ', null where a row has none."""
    # binary_join_element_wise(null_handling="skip") drops all-null rows (pyarrow 25).
    joined = problems[0]
    for p in problems[1:]:
        both = pc.binary_join_element_wise(joined, p, "; ")
        joined = pc.coalesce(both, joined, p)
    return joined


def validate_batch(
    source: Source, batch: pa.RecordBatch, first_row: int
) -> tuple[pa.RecordBatch, pa.RecordBatch, pa.Array]:
    """Split a raw string batch into (typed valid rows, quarantine records, valid row numbers).

    `first_row` is the 1-based data row number of the batch's first row.
    """
    per_column = [_column_problems(c, batch.column(c.name)) for c in source.columns]
    causes = _join_problems([p for p, _ in per_column])
    bad = pc.is_valid(causes)
    fields = pc.coalesce(
        *[
            pc.if_else(pc.is_valid(p), pa.scalar(c.name), pa.scalar(None, pa.string()))
            for c, (p, _) in zip(source.columns, per_column, strict=True)
        ]
    )
    rows = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
    quarantine = pa.RecordBatch.from_arrays(
        [
            pa.array([source.name] * int(pc.sum(bad).as_py() or 0), pa.string()),
            rows.filter(bad),
            fields.filter(bad),
            causes.filter(bad),
        ],
        schema=QUARANTINE_SCHEMA,
    )
    good = pc.invert(bad)
    valid = pa.RecordBatch.from_arrays(
        [typed.filter(good) for _, typed in per_column], schema=typed_schema(source)
    )
    return valid, quarantine, rows.filter(good)


def quarantine_records(source: str, rows: pa.Array, field: str, causes: pa.Array) -> pa.RecordBatch:
    """Quarantine records for rows rejected after field validation (e.g. duplicates)."""
    return pa.RecordBatch.from_arrays(
        [pa.array([source] * len(rows), pa.string()), rows, pa.array([field] * len(rows)), causes],
        schema=QUARANTINE_SCHEMA,
    )
