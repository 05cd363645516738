"""The body-side step: validate a raw delivery, quarantine bad rows, pseudonymise the rest.

Runs at the supplying body, before anything leaves it. Output is a pseudonymised
delivery in the same layout (data.parquet + manifest.json) plus quarantine.parquet,
which names bad rows by row number and cause, never by BSN. The central run accepts
only deliveries made here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contract import Source
from pipelines.read_deliveries import open_delivery, sha256_of, validate_delivery
from pipelines.validate import QUARANTINE_SCHEMA, typed_schema
from privacy.keys import Keyring
from privacy.pseudonyms import Pseudonymiser

PSEUDONYM_SCHEME = "hmac-sha256-128/letters"


@dataclass(frozen=True)
class PseudonymisedDelivery:
    source: str
    directory: Path
    rows: int
    accepted: int
    quarantined: int


def _pseudonymise_batch(source: Source, batch: pa.RecordBatch, p: Pseudonymiser) -> pa.RecordBatch:
    columns = []
    for column in source.columns:
        values = batch.column(column.name)
        columns.append(p.array(column.kind, values) if column.is_identifier else values)
    return pa.RecordBatch.from_arrays(columns, schema=typed_schema(source))


def pseudonymise_delivery(
    delivery_dir: Path, keyring: Keyring, out_root: Path
) -> PseudonymisedDelivery:
    """Validate and pseudonymise one raw delivery into out_root/<source>/<reference_date>/."""
    delivery = open_delivery(Path(delivery_dir))
    source = delivery.source
    key = keyring.active("body")
    pseudonymiser = Pseudonymiser(key)
    target = Path(out_root) / source.name / delivery.reference_date
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    data_path, quarantine_path = staging / "data.parquet", staging / "quarantine.parquet"
    try:
        with (
            pq.ParquetWriter(data_path, typed_schema(source)) as data,
            pq.ParquetWriter(quarantine_path, QUARANTINE_SCHEMA) as quarantine,
        ):
            counts = validate_delivery(
                delivery,
                on_valid=lambda b: data.write_batch(_pseudonymise_batch(source, b, pseudonymiser)),
                on_quarantine=quarantine.write_batch,
            )
        manifest = {
            key_: delivery.manifest[key_]
            for key_ in ("source", "supplier_oin", "reference_date", "extracted_at")
        }
        manifest.update(
            schema_version=delivery.manifest["schema_version"],
            row_count=counts.accepted,
            sha256=sha256_of(data_path),
            pseudonymised={
                "key_id": key.id,
                "scheme": PSEUDONYM_SCHEME,
                "columns": list(source.identifier_columns),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            original={
                "file": delivery.data_path.name,
                "sha256": delivery.manifest["sha256"],
                "row_count": delivery.row_count,
            },
            quarantine={
                "file": quarantine_path.name,
                "sha256": sha256_of(quarantine_path),
                "row_count": counts.quarantined,
            },
        )
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        # Publish whole or not at all: a reader never sees a half-written delivery.
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PseudonymisedDelivery(
        source.name, target, counts.rows, counts.accepted, counts.quarantined
    )
