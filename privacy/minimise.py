"""Minimisation at the supplying body: keep only the fields the purpose needs, coarsened.

Runs in the body-side pseudonymise step, after validation and before anything leaves
the body. A field is kept only if the purpose needs it, taken from the lineage of the
household table (pipelines/household.py: every field some household column derives
from), plus the join keys and the date fields the join selects rows by. Everything
else is dropped. Where a coarser value serves the purpose it replaces the precise
one: the birth date becomes the age in whole years at the delivery's reference date,
and identifiers become pseudonyms (privacy/pseudonyms.py).

`pseudonymised_schema(source)` is the contract between this step and the central
run: the central run refuses a delivery whose columns differ from it.

The processing register (privacy/register.py, activity files under privacy/register/)
has the last word when it has an activity for the purpose: a field leaves the body only
if the purpose needs it AND the register allows it, and a needed field the register
does not allow is an error here, at the body, rather than a broken join later. Without
register files the need alone decides (the register is being written alongside).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import cache

import duckdb
import pyarrow as pa

from pipelines import household
from pipelines.contract import SOURCES, Source
from pipelines.validate import typed_schema
from privacy.keys import DEFAULT_DOMAIN

# Fields the join uses to select rows at the reference date without any household
# column deriving its value from them (so household.py's lineage does not list them).
SELECTION_FIELDS = frozenset(
    {
        "brp.registered_since",  # registered at the reference date
        "arrears.reported_on",  # arrears reported on or before the reference date
        "objections.objected_on",  # objections made on or before the reference date
    }
)


class MinimisationError(Exception):
    """The register does not allow a field the purpose needs; the message names the fields."""


class Coarsening:
    """A field replaced by a coarser one computed at the body."""

    def __init__(self, field: str, into: str, type_: pa.DataType, meaning: str):
        self.field, self.into, self.type, self.meaning = field, into, type_, meaning


COARSENED = {
    ("brp", "birth_date"): Coarsening(
        "birth_date", "age", pa.int32(), "age in whole years at the delivery's reference date"
    ),
}


def lineage_fields() -> frozenset[str]:
    """`source.field` names any household column derives from."""
    return frozenset(f for column in household.COLUMNS for f in column.derived_from)


def needed_fields(source: Source) -> tuple[str, ...]:
    """Fields the purpose needs: lineage, selection dates, and identifiers (the join keys)."""
    needed = lineage_fields() | SELECTION_FIELDS
    return tuple(
        c.name for c in source.columns if c.is_identifier or f"{source.name}.{c.name}" in needed
    )


def _register(purpose: str):
    """The processing register if it has an activity for the purpose, else None."""
    from privacy import register

    root = register.DEFAULT_ROOT
    if not (root.is_dir() and any(root.glob("*.yaml"))):
        return None
    loaded = register.load_register(root)
    return loaded if loaded.activity(purpose) else None


@cache
def allowed_fields(source_name: str, purpose: str = DEFAULT_DOMAIN) -> tuple[str, ...]:
    """The fields of a source that leave the body, in contract order (before coarsening)."""
    source = SOURCES[source_name]
    needed = needed_fields(source)
    reg = _register(purpose)
    if reg is None:
        return needed
    from privacy.register import allowed_fields as register_allowed

    allowed = register_allowed(reg, purpose, source_name)
    missing = [n for n in needed if n not in allowed]
    if missing:
        raise MinimisationError(
            f"processing register {reg.version[:12]}: purpose {purpose!r} does not allow "
            f"{', '.join(f'{source_name}.{n}' for n in missing)}, which the join needs; "
            "register them or change the join"
        )
    return needed


def minimisation_basis(purpose: str = DEFAULT_DOMAIN) -> str:
    reg = _register(purpose)
    need = "lineage of pipelines/household.py + join keys and selection dates"
    return f"{need}, allowed by register {reg.version[:12]}" if reg else need


def dropped_fields(source: Source) -> tuple[str, ...]:
    keep = set(allowed_fields(source.name))
    return tuple(n for n in source.column_names if n not in keep)


def withheld_fields(activity, evaluated: Iterable[str]) -> dict[str, str]:
    """Delivered fields this run may not read, "source.field" -> why, in name order.

    The register may allow a field for some schemes only (`schemes:` under the field, e.g.
    the rent for huurtoeslag). A run that evaluates none of them, because their parameters
    for the year are missing say, has no purpose for the field. The body delivers it all
    the same (it cannot know which schemes a run will evaluate); the central run blanks it
    on reading, before any join (pipelines/withhold.py). Join keys and the dates rows are
    selected by are never withheld: without them no other field could be used.
    """
    evaluated = set(evaluated)
    withheld = {}
    for source_name, entry in sorted(activity.sources.items()):
        source = SOURCES.get(source_name)
        if source is None:
            continue
        delivered = set(pseudonymised_schema(source).names)
        keys = {c.name for c in source.columns if c.is_identifier}
        for name, rule in sorted(entry.fields.items()):
            where = f"{source_name}.{name}"
            if not rule.schemes or evaluated & set(rule.schemes):
                continue
            if name not in delivered or name in keys or where in SELECTION_FIELDS:
                continue
            schemes = ", ".join(rule.schemes)
            withheld[where] = f"allowed for {schemes} only, which this run does not evaluate"
    return withheld


def pseudonymised_schema(source: Source) -> pa.Schema:
    """The schema of a pseudonymised delivery: allowed fields, coarsened, in contract order."""
    typed = typed_schema(source)
    fields = []
    for name in allowed_fields(source.name):
        coarse = COARSENED.get((source.name, name))
        field = typed.field(name)
        fields.append(
            pa.field(coarse.into, coarse.type, nullable=field.nullable) if coarse else field
        )
    return pa.schema(fields)


def _ages(birth_dates: pa.Array, reference_date: dt.date) -> pa.Array:
    """Whole years at the reference date, as the join computed them before (DuckDB date_sub)."""
    con = duckdb.connect(config={"threads": 1})
    try:
        con.register("b", pa.table({"birth_date": birth_dates}))
        table = con.sql(
            "SELECT CAST(date_sub('year', birth_date, $ref) AS INTEGER) AS age FROM b",
            params={"ref": reference_date},
        ).to_arrow_table()
    finally:
        con.close()
    return table.column("age").combine_chunks()


def minimise_batch(
    source: Source, batch: pa.RecordBatch, reference_date: dt.date
) -> pa.RecordBatch:
    """Drop what the purpose does not allow and coarsen what can be (identifiers untouched)."""
    schema = pseudonymised_schema(source)
    columns = []
    for name in allowed_fields(source.name):
        coarse = COARSENED.get((source.name, name))
        values = batch.column(name)
        columns.append(_ages(values, reference_date).cast(coarse.type) if coarse else values)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def minimisation_record(source: Source, reference_date: str) -> dict:
    """What the manifest says about minimisation: dropped and coarsened fields, and why."""
    return {
        "basis": minimisation_basis(),
        "dropped": list(dropped_fields(source)),
        "coarsened": {
            c.field: f"{c.into}: {c.meaning} ({reference_date})"
            for (s, _), c in COARSENED.items()
            if s == source.name
        },
    }
