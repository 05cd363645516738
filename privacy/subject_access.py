"""A person's pseudonyms from their BSN, for a subject access request (AVG art. 15).

The audit log names data subjects by domain pseudonym (`d1.…`); a person who asks what
was done with their data gives a BSN. Only the controller can link the two: layer 1
needs a body key and layer 2 the domain keys, which no other party holds together
(privacy/pseudonyms.py). Every key of both layers is tried, retired ones too, so the
records made before a key rotation are found as well.

The lookup itself processes a BSN, so it is logged before any pseudonym is shown: one
`subject_lookup` record per pseudonym looked up, naming who asked and the event, never
the BSN. The command reads BSNs from standard input, never from its arguments (which
land in shell history and the process list).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.audit_records import AuditContext, audit_batch, canonical_json
from pipelines.contract import bsn_is_valid
from privacy.audit.events import actor, append_events, new_event_id
from privacy.audit.log import AuditLog, AuditLogError, Checkpoint
from privacy.audit.signing import Signer
from privacy.keys import DEFAULT_DOMAIN, Keyring, KeyringError, check_custody
from privacy.pseudonyms import TwoLayerPseudonymiser
from privacy.register import load_register

OPERATION = "subject_lookup"
PURPOSE = "subject access request (AVG art. 15)"


class SubjectAccessError(Exception):
    """The lookup cannot be done; the message says why (and never quotes a BSN)."""


@dataclass(frozen=True)
class Subject:
    line: int  # the line of the input that gave the BSN
    records: dict[str, int]  # each pseudonym of the person -> audit records naming it before


@dataclass(frozen=True)
class Lookup:
    subjects: list[Subject]
    event: str
    checkpoint: Checkpoint
    logged: int  # subject_lookup records appended


def read_bsns(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, BSN) of each non-blank line; a line that is no BSN is refused by number."""
    bsns = []
    for number, line in enumerate(lines, start=1):
        value = line.strip()
        if not value:
            continue
        if not bsn_is_valid(value):
            raise SubjectAccessError(
                f"line {number} of the input is not a BSN (nine digits passing the 11-proef); "
                "nothing was looked up"
            )
        bsns.append((number, value))
    if not bsns:
        raise SubjectAccessError("no BSN on standard input: give one per line")
    return bsns


def _keys(keyring: Keyring, domain: str, role: str) -> list:
    keys = [k for k in keyring.keys if k.role == role and k.domain == domain]
    if not keys:
        raise KeyringError(f"the keyring holds no {role} key{f' of {domain!r}' if domain else ''}")
    return keys


def pseudonyms(bsn: str, keyring: Keyring, domain: str = DEFAULT_DOMAIN) -> list[str]:
    """The person's domain pseudonyms under every body key and every key of `domain`."""
    return [
        TwoLayerPseudonymiser(body, key).one("bsn", bsn)
        for body in _keys(keyring, None, "body")
        for key in _keys(keyring, domain, "domain")
    ]


def _counts(log_root: Path, subjects: list[str]) -> dict[str, int]:
    files = [str(p) for p in AuditLog(log_root).committed_segments()]
    if not files:
        raise AuditLogError(f"{log_root}: the audit log holds no checkpoint yet")
    con = duckdb.connect()
    try:
        found = con.sql(
            "SELECT data_subject_pid AS pid, COUNT(*) AS n FROM read_parquet($files) "
            "WHERE list_contains($pids, data_subject_pid) GROUP BY pid",
            params={"files": files, "pids": subjects},
        ).fetchall()
    finally:
        con.close()
    return dict(found)


def _records(subjects: list[str], domain: str, event: str) -> pa.Table:
    register = load_register()
    context = AuditContext(f"subject-access/{event}", domain, register.version)
    attributes = canonical_json({"purpose": PURPOSE, "actor": actor(), "event": event})
    batch = audit_batch(
        context,
        OPERATION,
        pa.array(subjects, pa.string()),
        "looked_up",
        attributes,
        discriminator=pa.repeat(pa.scalar(event, pa.string()), len(subjects)),
    )
    return pa.Table.from_batches([batch])


def look_up(
    bsns: list[tuple[int, str]], keyring: Keyring, log_root: Path, domain: str = DEFAULT_DOMAIN
) -> Lookup:
    """Each person's pseudonyms and how many audit records name each; the lookup is logged
    (one `subject_lookup` record per pseudonym) before anything is returned."""
    check_custody(keyring, "controller")
    found = [(line, pseudonyms(bsn, keyring, domain)) for line, bsn in bsns]
    every = sorted({p for _, pids in found for p in pids})
    before = _counts(Path(log_root), every)
    event = new_event_id()
    records = _records(every, domain, event)
    checkpoint = append_events(Path(log_root), records, f"subject-access/{event}", Signer(keyring))
    subjects = [Subject(line, {p: before.get(p, 0) for p in pids}) for line, pids in found]
    return Lookup(subjects, event, checkpoint, records.num_rows)
