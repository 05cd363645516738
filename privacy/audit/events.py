"""Audit records made outside a run's pipeline, and appending them to the log.

The central run logs its own records (ingest, exclusion, join, rule evaluation,
signal) through `log.append_run`. Later steps on a published run log theirs here, as
rows of AUDIT_SCHEMA under the run's trace, appended as one batch with a batch id that
names the event, so retrying the same event never logs it twice:

    records = deletion_records(context, pids, dataset="households", reason="retention")
    append_events(log_root, records, f"{run_id}/deletion/households", signer)

`re-identification` records are made by privacy/reidentify.py; it appends them with
`append_events` (batch id `<run_id>/reidentification/<event>`) before writing the
worklist. `decryption` records are appended the same way by privacy/retention.py
(`<run_id>/decryption/<event>`) before plain copies of a run's personal data are written,
and before the report of a published run decrypts it in memory (flows/report.py).
`subject_lookup` records are made by privacy/subject_access.py (batch id
`subject-access/<event>`, a trace of its own) before a person's pseudonyms are shown.
`pseudonym_link` records are made by privacy/body_links.py (batch `pseudonym-link/<event>`)
before the link table of a body-key rotation is written.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import secrets
from pathlib import Path

import pyarrow as pa

from pipelines.audit_records import OPERATIONS as RUN_OPERATIONS
from pipelines.audit_records import AuditContext, audit_batch, canonical_json
from privacy.audit.log import LOG_DIRNAME, AuditLog, AuditLogError, Checkpoint
from privacy.audit.signing import Signer

# Every operation a record can name: the run's own, then the later steps'.
OPERATIONS = (
    "purpose_check",
    *RUN_OPERATIONS,
    "reidentification",
    "decryption",
    "deletion",
    "subject_lookup",
    "pseudonym_link",
)


def deletion_records(
    context: AuditContext,
    subjects: pa.Array,
    dataset: str,
    reason: str,
    at: dt.datetime | None = None,
    part: str | None = None,
) -> pa.Table:
    """One `deletion` record per data subject whose data in `dataset` of the run was destroyed.

    The span id depends on run, dataset (and `part` of it, for a dataset deleted a part at
    a time) and subject only: deleting the same data again (a retried retention job)
    gives the same records, which the log keeps once.
    """
    subjects = subjects.cast(pa.string())
    attributes = canonical_json({"dataset": dataset, "reason": reason})
    key = dataset if part is None else f"{dataset}/{part}"
    dataset_key = pa.array([key] * len(subjects), pa.string())
    batch = audit_batch(
        context, "deletion", subjects, "deleted", attributes, discriminator=dataset_key, started=at
    )
    return pa.Table.from_batches([batch])


def actor() -> str:
    """Who runs this step, for the record: the login name, or the uid where there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry or $USER
        return f"uid {os.getuid()}"


def new_event_id() -> str:
    """An id for one event on a run (a worklist, a decryption): when, and 4 random bytes."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)


def decryption_records(
    context: AuditContext,
    subjects: pa.Array,
    files: list[str],
    event: str,
    actor: str,
    purpose: str = "plain copies",
) -> pa.Table:
    """One `decryption` record per data subject of a run whose personal data was written
    out in plain: which files, by whom, in which event, for what (`signals decrypt`: plain
    copies of the whole run; `signals subject-access --extract`: one person's rows).

    The event is in the span key: every decryption is its own record, even of the same run.
    """
    subjects = subjects.cast(pa.string())
    attributes = canonical_json(
        {"files": sorted(files), "actor": actor, "event": event, "purpose": purpose}
    )
    batch = audit_batch(
        context,
        "decryption",
        subjects,
        "decrypted",
        attributes,
        discriminator=pa.repeat(pa.scalar(event, pa.string()), len(subjects)),
    )
    return pa.Table.from_batches([batch])


def append_events(log_root: Path, records: pa.Table, batch_id: str, signer: Signer) -> Checkpoint:
    """Append event records as one batch (once per batch id); returns the covering checkpoint."""
    return AuditLog(log_root).append(records, batch_id, signer, kind="events").checkpoint


def append_to_run_log(run_dir: Path, records: pa.Table, event: str, keyring) -> Checkpoint:
    """Append a later step's records on a published run to the log that holds the run (beside
    it, as published), as batch `<run_id>/<event>`.

    A run copied elsewhere has no such log: appending would start a stray one no auditor
    reads, so it is refused before anything is done.
    """
    run_dir = Path(run_dir)
    root = run_dir.parent / LOG_DIRNAME
    if not (root / "checkpoints").is_dir() or AuditLog(root).find(run_dir.name) is None:
        raise AuditLogError(f"{root}: not the audit log of run {run_dir.name}; nothing done")
    return append_events(root, records, f"{run_dir.name}/{event}", Signer(keyring))
