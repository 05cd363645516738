"""Finalising a run's staging folder into the output contract, and publishing it atomically.

The pipeline leaves Parquet parts in staging; here they become the files users read:

    <out>/<run_id>/signals.parquet            one row per signal, sorted by signal_id
    <out>/<run_id>/suppressed.parquet         candidates not signalled, with their reasons
    <out>/<run_id>/lifecycle.parquet          earlier signals resolved by this run
    <out>/<run_id>/households/part-*.parquet  the joined, minimised household table
    <out>/<run_id>/evaluations/part-00000.parquet every rule decision (for aggregate reports)
    <out>/<run_id>/quarantine/<source>.parquet every rejected row (body and central)
    <out>/<run_id>/audit/segment-00000.parquet per-record purpose audit, deduplicated
    <out>/<run_id>/manifest.json              inputs, counts per stage, versions

Publication is one rename of the staging folder: a run is there whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.audit_records import AUDIT_SCHEMA
from pipelines.evaluate import EVALUATION_SCHEMA, SIGNAL_SCHEMA
from pipelines.lifecycle import LIFECYCLE_SCHEMA
from pipelines.proportionality import SUPPRESSED_SCHEMA
from pipelines.read_deliveries import Delivery, quarantine_path
from pipelines.validate import QUARANTINE_SCHEMA


class PublicationError(Exception):
    """A run could not be published; nothing was changed in the output folder."""


def _parts(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []


# DuckDB sorts within this much memory and spills the rest to staging: the largest output
# (the audit, ~9 records a person) never has to fit in memory (docs/scaling.md).
FINALISE_MEMORY = "1GB"
FINALISE_BATCH_ROWS = 1 << 18


def _consolidate(
    con,
    parts: list[str],
    schema: pa.Schema,
    target: Path,
    order_by: str,
    distinct_on: str | None = None,
) -> int:
    """Merge part files into one Parquet file in a deterministic order; returns rows.

    Streamed: DuckDB sorts, the rows go to the file batch by batch. `distinct_on` must be
    the last sort key and determine the keys before it (span_id determines operation and
    subject), so copies of a row (a retried bundle) are adjacent: all but the first go.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        pq.write_table(schema.empty_table(), target)
        return 0
    if distinct_on and order_by.split(",")[-1].strip() != distinct_on:
        raise ValueError(f"distinct_on {distinct_on!r} must be the last key of {order_by!r}")
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in parts) + "]"
    query = f"SELECT * FROM read_parquet({files}) ORDER BY {order_by}"
    rows, last = 0, None
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for batch in con.sql(query).to_arrow_reader(batch_size=FINALISE_BATCH_ROWS):
            if distinct_on:
                batch, last = _drop_repeats(batch, distinct_on, last)
            writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
            rows += batch.num_rows
    return rows


def _drop_repeats(batch: pa.RecordBatch, key: str, last) -> tuple[pa.RecordBatch, object]:
    """The rows whose `key` differs from the row before (for the first: the last batch's)."""
    if batch.num_rows == 0:
        return batch, last
    keys = batch.column(key)
    before = pa.concat_arrays([pa.array([last], keys.type), keys.slice(0, len(keys) - 1)])
    return batch.filter(pc.fill_null(pc.not_equal(keys, before), True)), keys[-1].as_py()


def finalise(staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """Turn staging parts into the published layout; returns counts per output."""
    staging = Path(staging)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{FINALISE_MEMORY}'")
    spill = str(staging / ".finalise-spill").replace("'", "''")
    con.execute(f"SET temp_directory = '{spill}'")
    counts: dict = {"quarantine": {}}
    counts["signals"] = _consolidate(
        con,
        _parts(staging / "signal_parts"),
        SIGNAL_SCHEMA,
        staging / "signals.parquet",
        "signal_id",
    )
    for name, delivery in deliveries.items():
        central = _parts(staging / "quarantine_parts" / name)
        parts = [str(quarantine_path(delivery))] + central
        counts["quarantine"][name] = {
            "body": int(delivery.manifest["quarantine"]["row_count"]),
            "central": sum(pq.read_metadata(p).num_rows for p in central),
        }
        _consolidate(
            con,
            parts,
            QUARANTINE_SCHEMA,
            staging / "quarantine" / f"{name}.parquet",
            "row_number",
        )
    counts["audit_records"] = _consolidate(
        con,
        _parts(staging / "audit_parts"),
        AUDIT_SCHEMA,
        staging / "audit" / "segment-00000.parquet",
        "name, data_subject_pid, span_id",
        distinct_on="span_id",
    )
    counts["evaluations"] = _consolidate(
        con,
        _parts(staging / "evaluation_parts"),
        EVALUATION_SCHEMA,
        staging / "evaluations" / "part-00000.parquet",
        "household_pid, scheme, benefit_year",
    )
    counts["suppressed"] = _consolidate(
        con,
        _parts(staging / "suppressed_parts"),
        SUPPRESSED_SCHEMA,
        staging / "suppressed.parquet",
        "signal_id",
    )
    counts["resolved"] = _consolidate(
        con,
        _parts(staging / "lifecycle_parts"),
        LIFECYCLE_SCHEMA,
        staging / "lifecycle.parquet",
        "signal_id",
    )
    counts["households"] = sum(pq.read_metadata(p).num_rows for p in _parts(staging / "households"))
    con.close()
    parts = ("signal_parts", "suppressed_parts", "lifecycle_parts", "evaluation_parts")
    for folder in parts + ("quarantine_parts", "audit_parts", ".finalise-spill"):
        shutil.rmtree(staging / folder, ignore_errors=True)
    return counts


def write_manifest(staging: Path, manifest: dict) -> None:
    (Path(staging) / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    )


def publish(staging: Path, target: Path) -> Path:
    """Move a finalised staging folder into place with one atomic rename."""
    staging, target = Path(staging), Path(target)
    if not (staging / "manifest.json").is_file():
        raise PublicationError(f"{staging}: not finalised (no manifest.json); nothing published")
    if target.exists():
        raise PublicationError(f"{target}: a run with this id is already published")
    os.replace(staging, target)
    return target
