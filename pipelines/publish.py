"""Finalising a run's staging folder into the output contract, and publishing it atomically.

The pipeline leaves Parquet parts in staging; here they become the files users read:

    <out>/<run_id>/signals.parquet            one row per signal, sorted by signal_id
    <out>/<run_id>/suppressed.parquet         candidates not signalled, with their reasons
    <out>/<run_id>/lifecycle.parquet          earlier signals resolved by this run
    <out>/<run_id>/households/part-*.parquet  the joined, minimised household table
    <out>/<run_id>/evaluations/part-*.parquet every rule decision (for aggregate reports)
    <out>/<run_id>/quarantine/<source>.parquet every rejected row (body and central)
    <out>/<run_id>/audit/segment-00000.parquet the run's records in the audit log (a link to
                                              its log segment, made by the log append)
    <out>/<run_id>/manifest.json              inputs, counts per stage, versions

Publication is one rename of the staging folder: a run is there whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import household
from pipelines.evaluate import EVALUATION_SCHEMA, SIGNAL_SCHEMA
from pipelines.lifecycle import LIFECYCLE_SCHEMA
from pipelines.proportionality import SUPPRESSED_SCHEMA
from pipelines.read_deliveries import Delivery, quarantine_path
from pipelines.shuffle import SHUFFLE_DIR
from pipelines.validate import QUARANTINE_SCHEMA
from pipelines.write_parts import TMP_GLOB
from privacy.audit.parts import PARTS_DIR, AuditParts


class PublicationError(Exception):
    """A run could not be published; nothing was changed in the output folder."""


def _parts(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []


# DuckDB sorts within this much memory and spills the rest to staging: the evaluations
# (a row per household and scheme) never have to fit in memory (docs/scaling.md).
FINALISE_MEMORY = "1GB"
FINALISE_BATCH_ROWS = 1 << 18


def _file_list(parts: list[str]) -> str:
    """A SQL list literal of file paths, for read_parquet."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in parts) + "]"


def _rows_per_source(con, parts: list[str]) -> dict[str, int]:
    if not parts:
        return {}
    sql = f"SELECT source, count(*) FROM read_parquet({_file_list(parts)}) GROUP BY source"
    return dict(con.execute(sql).fetchall())


def _consolidate(
    con, parts: list[str], schema: pa.Schema, target: Path, order_by: str, where: str = "TRUE"
) -> int:
    """Merge part files into one Parquet file in a deterministic order; returns rows.

    Streamed: DuckDB sorts (spilling past FINALISE_MEMORY), the rows go to the file batch
    by batch.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        pq.write_table(schema.empty_table(), target)
        return 0
    query = f"SELECT * FROM read_parquet({_file_list(parts)}) WHERE {where} ORDER BY {order_by}"
    rows = 0
    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        for batch in con.sql(query).to_arrow_reader(batch_size=FINALISE_BATCH_ROWS):
            writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
            rows += batch.num_rows
    return rows


def finalise(staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """Turn staging parts into the published layout; returns counts per output."""
    staging = Path(staging)
    # Counting the audit parts (reading every span id) runs beside DuckDB's sorts: both
    # spend their time outside the GIL, so on 2 cores they overlap.
    with ThreadPoolExecutor(1) as pool:
        audit = pool.submit(AuditParts, staging / PARTS_DIR)
        with duckdb.connect() as con:
            counts = _consolidate_all(con, staging, deliveries)
        # The audit parts stay: the log append streams them into its segment, the one
        # place the records are written whole (privacy/audit/log.py append_run).
        counted = audit.result()
        counts["audit_records"] = counted.records
        counts["audit_per_operation"] = counted.per_operation
    parts = ("signal_parts", "suppressed_parts", "lifecycle_parts")
    for folder in parts + ("quarantine_parts", ".finalise-spill", SHUFFLE_DIR):
        shutil.rmtree(staging / folder, ignore_errors=True)
    return counts


def _consolidate_all(con, staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """The parts become the output files (the audit's stay for the log append, the
    households' and evaluations' are published as they are); returns counts per output."""
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
    central = _parts(staging / "quarantine_parts")  # every source's, each row names it
    per_source = _rows_per_source(con, central)
    for name, delivery in deliveries.items():
        counts["quarantine"][name] = {
            "body": int(delivery.manifest["quarantine"]["row_count"]),
            "central": per_source.pop(name, 0),
        }
        _consolidate(
            con,
            [str(quarantine_path(delivery))] + central,
            QUARANTINE_SCHEMA,
            staging / "quarantine" / f"{name}.parquet",
            "row_number",
            where="source = '" + name.replace("'", "''") + "'",
        )
    if per_source:
        raise PublicationError(f"quarantined rows of unknown source(s): {sorted(per_source)}")
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
    # The pipeline writes these as published, a part per household batch.
    for name, schema in (("households", household.SCHEMA), ("evaluations", EVALUATION_SCHEMA)):
        counts[name] = _published_parts(con, staging / name, schema)
    return counts


def _published_parts(con, folder: Path, schema: pa.Schema) -> int:
    """Rows in the parts the pipeline wrote to `folder`; an empty part when there are none."""
    for unfinished in folder.glob(TMP_GLOB):  # a write that failed
        unfinished.unlink()
    parts = _parts(folder)
    if not parts:  # a part per batch: none when no household
        _consolidate(con, [], schema, folder / "part-empty.parquet", "")
    return sum(pq.read_metadata(p).num_rows for p in parts)


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
