"""Controlled re-identification: the controller's worklist of signalled households.

This is the only place where a domain pseudonym becomes a BSN again, and it can only
happen here by construction: mapping back needs the body key (held by the bodies
and the controller, never the central party) and the domain key (held by the
central party and the controller, never the bodies), plus the raw BRP delivery
(held by the municipality). Only the controller holds all three. The central run
refuses a keyring with a body key; the bodies' step refuses one with a domain key.

What happens:
1. the run's signals (and households, for the priority) are decrypted in memory;
2. the raw BRP delivery is checked to be the very delivery the run used (checksum
   in the run manifest), validated, and every BSN in it pseudonymised with both
   layers (body key of the run's inputs, domain key named by the pseudonyms);
3. each signal's applicant is looked up; every signal must be found;
4. one `reidentification` audit record per signal is appended to the audit log
   (privacy/audit, `<runs>/audit-log/`, signed with the audit-signing key) BEFORE the
   worklist is written: if the log cannot be written, no BSN is written either;
5. the worklist (CSV and Parquet) is written atomically: one row per household, its
   signals across schemes grouped, sorted by priority (pipelines/priority.py builds the
   table under pseudonyms; the BSN is added here and nowhere else).

Only signalled applicants come out: the rest of the BRP is used to compute
pseudonyms and then dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.audit_records import AUDIT_SCHEMA, AuditContext, audit_batch, canonical_json
from pipelines.priority import WORKLIST_SCHEMA as PRIORITY_WORKLIST
from pipelines.priority import worklist_table
from pipelines.read_deliveries import open_delivery, validate_delivery
from privacy.audit.events import actor as who
from privacy.audit.events import new_event_id
from privacy.files import written_whole
from privacy.keys import Keyring, KeyringError, check_custody
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.register import load_register
from privacy.retention import read_run_table

# The worklist of pipelines/priority.py with the applicant's BSN in front, and without its
# pseudonyms: the people who work the list need the BSN and the signal ids (feedback), and a
# list holding both BSN and pseudonym would be a key from one to the other.
PSEUDONYM_COLUMNS = ("household_pid", "applicant_pid")
WORKLIST_SCHEMA = pa.schema(
    [pa.field("bsn", pa.string())]
    + [f for f in PRIORITY_WORKLIST if f.name not in PSEUDONYM_COLUMNS]
)
OPERATION = "reidentification"


class ReidentificationError(Exception):
    """The worklist cannot be made; the message says which input is wrong and why."""


@dataclass(frozen=True)
class Worklist:
    csv: Path
    parquet: Path
    audit: object  # the audit log checkpoint of the reidentification records (None: no rows)
    rows: int  # households on the worklist
    signals: int  # the signals they carry
    records: int  # reidentification records appended to the audit log


def _manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ReidentificationError(f"{run_dir}: not a published run (no manifest.json)")
    return json.loads(path.read_text())


def _brp_bsns(brp_dir: Path, manifest: dict) -> pa.Array:
    """Valid BSNs of the raw BRP delivery, which must be the one the run used."""
    delivery = open_delivery(Path(brp_dir), "brp")
    used = manifest["inputs"]["brp"]["original_sha256"]
    if delivery.manifest["sha256"] != used:
        raise ReidentificationError(
            f"{delivery.data_path}: not the BRP delivery run {manifest['run_id']} used "
            f"(its sha256 is {delivery.manifest['sha256']}, the run's {used})"
        )
    chunks: list[pa.Array] = []
    validate_delivery(
        delivery, on_valid=lambda b: chunks.append(b.column("bsn")), on_quarantine=lambda b: None
    )
    return pa.chunked_array(chunks, pa.string()).combine_chunks()


def _domain_key(keyring: Keyring, applicants: pa.Array, manifest: dict):
    key_ids = pc.unique(pc.utf8_slice_codeunits(applicants, 0, -33)).to_pylist()
    if len(key_ids) != 1:
        raise ReidentificationError(f"signals carry pseudonyms of several keys: {key_ids}")
    key = keyring.by_id(key_ids[0])
    if key.role != "domain" or key.domain != manifest["processing_activity_id"]:
        raise KeyringError(
            f"key {key.id} is not a domain key of {manifest['processing_activity_id']!r}"
        )
    return key


def _audit_records(
    manifest: dict, signals: pa.Table, brp_sha256: str
) -> tuple[pa.RecordBatch, str]:
    context = AuditContext(
        manifest["run_id"], manifest["processing_activity_id"], manifest["register_version"]
    )
    event = new_event_id()
    actor = who()
    # One record per signal, once per worklist: a plain loop over a few thousand rows.
    attributes = pa.array(
        [
            canonical_json(
                {
                    "purpose": "worklist",
                    "signal_id": s["signal_id"],
                    "household_pid": s["household_pid"],
                    "scheme": s["scheme"],
                    "benefit_year": s["benefit_year"],
                    "actor": actor,
                    "event": event,
                    "brp_sha256": brp_sha256,
                }
            )
            for s in signals.select(
                ["signal_id", "household_pid", "scheme", "benefit_year"]
            ).to_pylist()
        ],
        pa.string(),
    )
    signal_ids = signals.column("signal_id").combine_chunks()
    # The event id in the span key: every re-identification is its own record, even of
    # the same signal twice.
    return audit_batch(
        context,
        OPERATION,
        signals.column("applicant_pid").combine_chunks(),
        "reidentified",
        attributes,
        discriminator=pc.binary_join_element_wise(signal_ids, event, "\x00"),
    ), event


def _log(run_dir: Path, batch: pa.RecordBatch, event: str, keyring: Keyring):
    """Append the records to the run's audit log as one batch; returns its checkpoint."""
    from privacy.audit.events import append_to_run_log

    records = pa.Table.from_batches([batch], schema=AUDIT_SCHEMA)
    return append_to_run_log(run_dir, records, f"{OPERATION}/{event}", keyring)


def _write_private(table: pa.Table, path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path, private=True) as tmp:
        write(table, tmp)


def _check_room_for(out: Path) -> None:
    """The worklist's folder must take it before anyone is re-identified: the log would
    otherwise record re-identifications that gave nobody a list."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReidentificationError(
            f"{out.parent}: cannot hold the worklist ({e.strerror}); nobody re-identified"
        ) from None
    for path in (out, out.with_suffix(".parquet")):
        if path.exists() and not path.is_file():
            raise ReidentificationError(f"{path}: not a file; nobody re-identified")


def write_worklist(
    run_dir: Path,
    brp_dir: Path,
    keyring: Keyring,
    out: Path,
    key_store: Path | None = None,
) -> Worklist:
    """Re-identify the signalled households of a run for the controller; see the module doc."""
    check_custody(keyring, "controller")
    run_dir, out = Path(run_dir), Path(out)
    if out.suffix != ".csv":
        raise ReidentificationError(f"{out}: the worklist is a .csv file (a .parquet comes along)")
    manifest = _manifest(run_dir)
    signals = read_run_table(run_dir, "signals.parquet", keyring, key_store)
    households = read_run_table(run_dir, "households", keyring, key_store)
    bsns = _brp_bsns(brp_dir, manifest)
    body_id = manifest["inputs"]["brp"]["pseudonym_key_id"]
    if body_id not in {k.id for k in keyring.keys if k.role == "body"}:
        raise KeyringError(
            f"run {manifest['run_id']} was made with body key {body_id}, which the controller "
            "keyring does not hold: rebuild it from the key custodian's body keyring (keys "
            "init --role controller --force --import body.keyring --import central.keyring)"
        )
    body = keyring.by_id(body_id)
    made_with = manifest["inputs"]["brp"].get("pseudonym_key_fingerprint")
    if made_with and body.fingerprint != made_with:
        raise KeyringError(
            f"the controller keyring's body key {body_id} (fingerprint {body.fingerprint}) is "
            f"not the one run {manifest['run_id']}'s deliveries were made with ({made_with}): "
            "rebuild the controller keyring from the key custodian's body keyring"
        )
    applicants = signals.column("applicant_pid").combine_chunks()
    domain = _domain_key(keyring, applicants, manifest) if len(applicants) else None
    at = (
        pc.index_in(applicants, value_set=TwoLayerPseudonymiser(body, domain).array("bsn", bsns))
        if domain
        else pa.array([], pa.int32())
    )
    if at.null_count:
        raise ReidentificationError(
            f"{at.null_count} signal(s) of run {manifest['run_id']} have no applicant in "
            f"{brp_dir}; nothing written"
        )
    purpose = manifest["processing_activity_id"]
    grouped = worklist_table(signals, households, register=load_register(), purpose=purpose)
    # Each household row's applicant is a signal's applicant, found above.
    first_signal = pc.index_in(grouped.column("applicant_pid"), value_set=applicants)
    bsn = bsns.take(at.take(first_signal)) if len(applicants) else pa.array([], pa.string())
    table = grouped.add_column(0, "bsn", bsn).drop_columns(PSEUDONYM_COLUMNS).cast(WORKLIST_SCHEMA)
    _check_room_for(out)
    checkpoint, records = None, 0  # no signal, nobody re-identified: nothing to log
    if table.num_rows:
        sha = manifest["inputs"]["brp"]["original_sha256"]
        batch, event = _audit_records(manifest, signals, sha)
        checkpoint, records = _log(run_dir, batch, event, keyring), len(batch)
    parquet_path = out.with_suffix(".parquet")
    _write_private(table, parquet_path, pq.write_table)
    _write_private(table, out, pacsv.write_csv)
    return Worklist(out, parquet_path, checkpoint, table.num_rows, signals.num_rows, records)
