"""Bad-row injection: the realistic defects that ingestion must quarantine.

About `rate` of each source's rows are made bad, split evenly over the kinds that the
source and its file format can carry:

- bsn_checksum: a one-digit typo in the BSN, which always fails the 11-proef (changing
  one digit changes the weighted sum by w*delta with 0 < |w|, |delta| < 11, never a
  multiple of 11);
- bsn_8_digits: a BSN that started with 0 written as a number, losing the zero;
- negative_amount: a non-negative amount or count with its sign flipped (a reversal
  booked as a row);
- bad_date: an unparseable date such as '31-02-2024' or '2024/13/01' (CSV only: a
  Parquet date32 column cannot hold one);
- unknown_enum: a value outside the contract's list (e.g. a Dutch label 'koop');
- duplicate: an exact copy of a row, written right after the original.

Each bad row carries exactly one defect; rows in `protected` are never touched.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract import BSN, DATE, ENUM, Source

KINDS = ("bsn_checksum", "bsn_8_digits", "negative_amount", "bad_date", "unknown_enum", "duplicate")

UNKNOWN_ENUM_VALUES = {
    "role": ("kind", "inwonend", "ouder"),
    "assessment_status": ("voorlopig", "definitief_oud"),
    "scheme": ("wmo", "toeslag", "zorgtoeslag_oud"),
    "tenure": ("koop", "onbekend", "huur"),
    "creditor_sector": ("telecom", "overheid"),
    "scope": ("alles", "wmo"),
}


def applicable_kinds(source: Source, fmt: str) -> tuple[str, ...]:
    """The defect kinds a source can carry in the given format."""
    kinds = []
    if "bsn" in source.column_names and source.column("bsn").kind == BSN:
        kinds += ["bsn_checksum", "bsn_8_digits"]
    if any(c.non_negative for c in source.columns):
        kinds.append("negative_amount")
    if fmt == "csv" and any(c.kind == DATE for c in source.columns):
        kinds.append("bad_date")
    if any(c.kind == ENUM for c in source.columns):
        kinds.append("unknown_enum")
    kinds.append("duplicate")
    return tuple(kinds)


def inject(
    table: pa.Table,
    source: Source,
    fmt: str,
    rate: float,
    rng: np.random.Generator,
    protected: np.ndarray | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    """The table with bad rows injected, and the number of bad rows per kind."""
    kinds = applicable_kinds(source, fmt)
    n = table.num_rows
    n_bad = int(round(rate * n))
    counts = dict.fromkeys(kinds, 0)
    if n_bad == 0:
        return table, counts
    # Even split over the kinds; which kinds get the remainder is random.
    wanted = Counter(np.resize(rng.permutation(kinds), n_bad).tolist())
    free = np.ones(n, dtype=bool) if protected is None else ~np.asarray(protected, dtype=bool)
    edits: dict[str, list[tuple[np.ndarray, pa.Array]]] = {}
    duplicates = np.empty(0, dtype=np.int64)
    for kind in kinds:
        candidates = free & _kind_filter(kind, table, source)
        pool = np.flatnonzero(candidates)
        take = min(wanted.get(kind, 0), len(pool))
        rows = np.sort(rng.choice(pool, size=take, replace=False)) if take else pool[:0]
        free[rows] = False
        counts[kind] = len(rows)
        if kind == "duplicate":
            duplicates = rows
        elif len(rows):
            for column, (col_rows, values) in _defects(kind, table, source, rows, rng).items():
                edits.setdefault(column, []).append((col_rows, values))
    table = _apply(table, edits, as_text=(fmt == "csv"))
    if len(duplicates):
        order = np.sort(np.concatenate([np.arange(n), duplicates]), kind="stable")
        table = table.take(pa.array(order))
    return table, counts


def _kind_filter(kind: str, table: pa.Table, source: Source) -> np.ndarray:
    n = table.num_rows
    if kind == "bsn_8_digits":
        return _np_bool(pc.starts_with(table.column("bsn"), "0"))
    if kind == "negative_amount":
        return np.any([_positive(table, c.name) for c in source.columns if c.non_negative], axis=0)
    if kind == "bad_date":
        return np.any(
            [_np_bool(pc.is_valid(table.column(c.name))) for c in source.columns if c.kind == DATE],
            axis=0,
        )
    if kind == "unknown_enum":
        return np.any(
            [_np_bool(pc.is_valid(table.column(c.name))) for c in source.columns if c.kind == ENUM],
            axis=0,
        )
    return np.ones(n, dtype=bool)


def _np_bool(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _positive(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    return _np_bool(pc.greater(col, pa.scalar(0, pa.int8()).cast(col.type)))


def _defects(kind, table, source, rows, rng) -> dict[str, tuple[np.ndarray, pa.Array]]:
    """column -> (rows, replacement values) for one kind of defect."""
    if kind in ("bsn_checksum", "bsn_8_digits"):
        bsns = table.column("bsn").take(pa.array(rows)).to_pylist()
        fix = _typo if kind == "bsn_checksum" else (lambda b, _rng: b[1:])
        return {"bsn": (rows, pa.array([fix(b, rng) for b in bsns], pa.string()))}
    if kind == "negative_amount":
        names = [c.name for c in source.columns if c.non_negative]
        masks = np.stack([_positive(table, name)[rows] for name in names])
        return _per_column(
            names, masks, rows, rng, lambda name, r: pc.negate(table.column(name).take(pa.array(r)))
        )
    if kind == "bad_date":
        names = [c.name for c in source.columns if c.kind == DATE]
        masks = np.stack([_np_bool(pc.is_valid(table.column(name)))[rows] for name in names])
        return _per_column(
            names,
            masks,
            rows,
            rng,
            lambda name, r: pa.array(
                [_bad_date(d, rng) for d in table.column(name).take(pa.array(r)).to_pylist()]
            ),
        )
    # unknown_enum
    names = [c.name for c in source.columns if c.kind == ENUM]
    masks = np.stack([_np_bool(pc.is_valid(table.column(name)))[rows] for name in names])
    return _per_column(
        names,
        masks,
        rows,
        rng,
        lambda name, r: pa.array(
            [str(v) for v in rng.choice(UNKNOWN_ENUM_VALUES[name], size=len(r))], pa.string()
        ),
    )


def _per_column(names, masks, rows, rng, make) -> dict[str, tuple[np.ndarray, pa.Array]]:
    """Pick for each row one of the columns where the defect applies, then build values."""
    weights = masks * rng.random(masks.shape)
    pick = np.argmax(weights, axis=0)
    out = {}
    for i, name in enumerate(names):
        r = rows[pick == i]
        if len(r):
            out[name] = (r, make(name, r))
    return out


def _typo(bsn: str, rng: np.random.Generator) -> str:
    pos = int(rng.integers(0, 9))
    digit = (int(bsn[pos]) + int(rng.integers(1, 10))) % 10
    return bsn[:pos] + str(digit) + bsn[pos + 1 :]


def _bad_date(day: dt.date, rng: np.random.Generator) -> str:
    form = int(rng.integers(0, 4))
    if form == 0:
        return f"31-02-{day.year}"
    if form == 1:
        return f"{day.year}/13/{day.day:02d}"
    if form == 2:
        return f"{day.year}-02-{30 + int(rng.integers(0, 2))}"
    return f"{day.year}-{day.month:02d}-00"


def _apply(table: pa.Table, edits, as_text: bool) -> pa.Table:
    """Replace the edited cells; in CSV deliveries edited columns are written as text."""
    for name, parts in edits.items():
        rows = np.concatenate([r for r, _ in parts])
        chunks = [_array(v) for _, v in parts]
        values = pa.concat_arrays([v.cast(pa.string()) if as_text else v for v in chunks])
        order = np.argsort(rows, kind="stable")
        col = table.column(name).combine_chunks()
        if as_text:
            col = col.cast(pa.string())
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[rows] = True
        col = pc.replace_with_mask(col, pa.array(mask), values.take(pa.array(order)).cast(col.type))
        index = table.schema.get_field_index(name)
        table = table.set_column(index, pa.field(name, col.type), col)
    return table


def _array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
