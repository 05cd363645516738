"""Finalising a run's staging folder into the output contract, and publishing it atomically.

The pipeline leaves Parquet parts in staging; here they become the files users read:

    <out>/<run_id>/signals.parquet            one row per signal, sorted by signal_id
    <out>/<run_id>/households/part-*.parquet  the joined, minimised household table
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
import pyarrow.parquet as pq

from pipelines.audit_records import AUDIT_SCHEMA
from pipelines.evaluate import SIGNAL_SCHEMA
from pipelines.read_deliveries import Delivery, quarantine_path
from pipelines.validate import QUARANTINE_SCHEMA


class PublicationError(Exception):
    """A run could not be published; nothing was changed in the output folder."""


def _parts(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []


def _consolidate(
    con,
    parts: list[str],
    schema: pa.Schema,
    target: Path,
    order_by: str,
    distinct_on: str | None = None,
) -> int:
    """Merge part files into one Parquet file in a deterministic order; returns rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        pq.write_table(schema.empty_table(), target)
        return 0
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in parts) + "]"
    select = f"SELECT DISTINCT ON ({distinct_on}) *" if distinct_on else "SELECT *"
    table = con.sql(f"{select} FROM read_parquet({files}) ORDER BY {order_by}").to_arrow_table()
    pq.write_table(table.select(schema.names).cast(schema), target, compression="zstd")
    return table.num_rows


def finalise(staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """Turn staging parts into the published layout; returns counts per output."""
    staging = Path(staging)
    con = duckdb.connect()
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
    counts["households"] = sum(pq.read_metadata(p).num_rows for p in _parts(staging / "households"))
    con.close()
    for folder in ("signal_parts", "quarantine_parts", "audit_parts"):
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
