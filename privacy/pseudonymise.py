"""The body-side step: validate a raw delivery, quarantine bad rows, minimise and
pseudonymise the rest.

Runs at the supplying body, before anything leaves it. Output is a pseudonymised
delivery in the same layout (data.parquet + manifest.json) plus quarantine.parquet,
which names bad rows by row number and cause, never by BSN. Only the fields the
purpose allows leave the body, coarsened where possible (privacy/minimise.py), and
identifiers leave as body-layer pseudonyms (privacy/pseudonyms.py). The central run
accepts only deliveries made here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.contract import BSN, Source
from pipelines.read_deliveries import (
    NAMED_BY_QUARANTINE,
    DeliveryRefused,
    NamedByQuarantine,
    open_delivery,
    sha256_of,
    undeclared_columns,
    validate_delivery,
)
from pipelines.validate import QUARANTINE_SCHEMA, is_bsn
from privacy.files import PRIVATE_MODE
from privacy.keys import Keyring, check_custody
from privacy.minimise import minimisation_record, minimise_batch, pseudonymised_schema
from privacy.pseudonyms import Pseudonymiser

PSEUDONYM_SCHEME = "hmac-sha256-128/letters"


@dataclass(frozen=True)
class PseudonymisedDelivery:
    source: str
    directory: Path
    rows: int
    accepted: int
    quarantined: int
    not_read: tuple[str, ...] = ()  # columns outside the contract, left out


def _pseudonymise_batch(
    source: Source, batch: pa.RecordBatch, p: Pseudonymiser, reference_date: dt.date
) -> pa.RecordBatch:
    batch = minimise_batch(source, batch, reference_date)
    for column in source.columns:
        if column.is_identifier:
            i = batch.schema.get_field_index(column.name)
            batch = batch.set_column(
                i, batch.schema.field(i), p.array(column.kind, batch.column(i))
            )
    return batch


def _write_named(named: NamedByQuarantine, pids: list[pa.Array], folder: Path) -> dict:
    """What quarantined rows name, once each, into their file; its manifest record."""
    values = pc.unique(pa.chunked_array(pids, pa.string()).combine_chunks())
    values = values.sort()  # sorted: the file says nothing of the rows' order
    path = folder / f"{named.key}.parquet"
    pq.write_table(pa.table([values], schema=named.schema), path)
    return {"file": path.name, "sha256": sha256_of(path), "row_count": len(values)}


def check_one_body_key(deliveries: dict) -> tuple[str, str | None]:
    """The body key all deliveries share (its id, and its fingerprint where the manifests
    record one); refuses deliveries made with different keys.

    Pseudonyms of different body keys never match, so such a run would join nothing and
    say nothing about why.
    """
    made = {n: d.manifest["pseudonymised"] for n, d in deliveries.items()}
    ids = {n: m["key_id"] for n, m in made.items()}
    # Deliveries from before fingerprints were recorded have none: compared by id only.
    prints = {n: m["key_fingerprint"] for n, m in made.items() if m.get("key_fingerprint")}
    if len(set(ids.values())) > 1 or len(set(prints.values())) > 1:
        listed = ", ".join(
            f"{n}: {k}" + (f" (fingerprint {prints[n]})" if n in prints else "")
            for n, k in sorted(ids.items())
        )
        raise DeliveryRefused(
            f"deliveries were pseudonymised with different body keys ({listed}); "
            "all bodies must use the same body key, from the key custodian"
        )
    return next(iter(ids.values()), ""), next(iter(prints.values()), None)


def pseudonymise_delivery(
    delivery_dir: Path, keyring: Keyring, out_root: Path
) -> PseudonymisedDelivery:
    """Validate, minimise and pseudonymise one raw delivery into out_root/<source>/<date>/."""
    check_custody(keyring, "body")
    delivery = open_delivery(Path(delivery_dir))
    source = delivery.source
    # Coarsening (age) is computed at the delivery's own reference date, from its manifest.
    reference_date = dt.date.fromisoformat(delivery.reference_date)
    key = keyring.active("body")
    pseudonymiser = Pseudonymiser(key)
    target = Path(out_root) / source.name / delivery.reference_date
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir(mode=0o700)  # pseudonymised personal data: the owner's only
    data_path, quarantine_path = staging / "data.parquet", staging / "quarantine.parquet"
    not_read = undeclared_columns(delivery)
    named = NAMED_BY_QUARANTINE.get(source.name)  # what its quarantined rows still name
    pids: list[pa.Array] = []

    def keep_named(bad: pa.RecordBatch) -> None:
        kind, values = source.column(named.column).kind, bad.column(named.column)
        valid = is_bsn(values) if kind == BSN else pc.greater(pc.utf8_length(values), 0)
        pids.append(pseudonymiser.array(kind, values.filter(pc.fill_null(valid, False))))

    try:
        with (
            pq.ParquetWriter(data_path, pseudonymised_schema(source)) as data,
            pq.ParquetWriter(quarantine_path, QUARANTINE_SCHEMA) as quarantine,
        ):
            counts = validate_delivery(
                delivery,
                on_valid=lambda b: data.write_batch(
                    _pseudonymise_batch(source, b, pseudonymiser, reference_date)
                ),
                on_quarantine=quarantine.write_batch,
                on_bad_rows=keep_named if named else None,
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
                # Which key, not only its id: a keyring made again reuses the id (b1).
                "key_fingerprint": key.fingerprint,
                "scheme": PSEUDONYM_SCHEME,
                "columns": list(source.identifier_columns),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            minimised=minimisation_record(source, delivery.reference_date) | {"not_read": not_read},
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
        if named:
            manifest[named.key] = _write_named(named, pids, staging)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for written in staging.iterdir():
            os.chmod(written, PRIVATE_MODE)
        # Publish whole or not at all: a reader never sees a half-written delivery.
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PseudonymisedDelivery(
        source.name, target, counts.rows, counts.accepted, counts.quarantined, tuple(not_read)
    )
