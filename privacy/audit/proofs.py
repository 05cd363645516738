"""Inclusion proofs an outsider can check: every record about one data subject, proven in the log.

A proof bundle (`signals-audit-proof/1`, JSON) holds:

    subject        the pseudonym the records are about
    records        each record's fields, its leaf index, the checkpoint whose tree it is
                   proven in (the one that appended it) and its inclusion proof (base64
                   hashes, leaf level first: RFC 6962 PATH)
    checkpoints    the signed checkpoints from the earliest of those to the log's latest,
                   each with its consistency proof from the one before
    public_keys    the PEM public keys that signed them (pin your own copy to trust them)

To check a bundle without our code: for each record rebuild its leaf bytes
(privacy/audit/leaf.py: fixed field order, 4-byte length prefixes; binary ids are given in
base64, times as microseconds since the epoch), hash SHA-256(0x00 || bytes), and run
RFC 9162 2.1.3.2 with the proof against its checkpoint's root_hash; check every
checkpoint's Ed25519 signature over its canonical JSON without `signature`; and check that
each checkpoint's consistency proof (RFC 9162 2.1.4.2) leads from the previous one's
size and root to its own. Then the latest checkpoint commits to every record.
`check_bundle` below does exactly that.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from privacy.audit import merkle, signing
from privacy.audit.leaf import LEAF_FORMAT, leaf_bytes
from privacy.audit.log import AuditLog, AuditLogError, Checkpoint, fixed_bytes
from privacy.audit.schema import AUDIT_SCHEMA
from privacy.audit.verify import link_problems, require_as_signed, signature_problem

PROOF_FORMAT = "signals-audit-proof/1"
_BINARY = ("trace_id", "span_id", "parent_span_id")
_TIMES = ("start_time", "end_time")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def record_to_json(record: dict) -> dict:
    """A record (AUDIT_SCHEMA fields) in JSON: binary as base64, times as epoch microseconds."""
    out = {}
    for name in AUDIT_SCHEMA.names:
        value = record[name]
        if value is None:
            out[name] = None
        elif name in _BINARY:
            out[name] = signing.b64(value)
        elif name in _TIMES:
            delta = value - _EPOCH
            out[name] = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        else:
            out[name] = value
    return out


def record_from_json(doc: dict) -> dict:
    out = {}
    for name in AUDIT_SCHEMA.names:
        value = doc[name]
        if value is None:
            out[name] = None
        elif name in _BINARY:
            out[name] = signing.unb64(value)
        elif name in _TIMES:
            out[name] = _EPOCH + dt.timedelta(microseconds=value)
        else:
            out[name] = value
    return out


def _segment_of(checkpoints: list[Checkpoint], leaf: int) -> Checkpoint:
    for cp in checkpoints:
        if cp.first_leaf <= leaf < cp.tree_size:
            return cp
    raise AuditLogError(f"leaf {leaf} is in no checkpoint")


def _subject_rows(log: AuditLog, subject: str) -> pa.Table:
    files = [str(p) for p in log.committed_segments()]
    if not files:
        return pa.table({"leaf_index": pa.array([], pa.int64())})
    con = duckdb.connect()
    try:
        return con.sql(
            "SELECT * FROM read_parquet($files) WHERE data_subject_pid = $s ORDER BY leaf_index",
            params={"files": files, "s": subject},
        ).to_arrow_table()
    finally:
        con.close()


def make_bundle(log_root: Path, subject: str) -> dict:
    """Proofs for every record about `subject` in the log (see the module docstring)."""
    log = AuditLog(log_root)
    with log.locked():  # a consistent view: no append between reading segments and heads
        require_as_signed(log_root, "proof")  # every record of theirs, or none
        checkpoints = log.checkpoints()
        rows = _subject_rows(log, subject).to_pylist()
        if not rows:
            raise AuditLogError(f"{log_root}: no audit record about {subject}")
        leaves = [row["leaf_index"] for row in rows]
        segment_of = {leaf: _segment_of(checkpoints, leaf) for leaf in leaves}
        by_segment: dict[int, list[int]] = {}
        for leaf, cp in segment_of.items():
            by_segment.setdefault(cp.sequence, []).append(leaf)
        trees = {
            sequence: _segment_tree(log, checkpoints, checkpoints[sequence], asked)
            for sequence, asked in by_segment.items()
        }
        records = []
        for row in rows:
            cp = segment_of[row["leaf_index"]]
            proof = trees[cp.sequence].inclusion_proof(row["leaf_index"])
            records.append(
                {
                    "leaf_index": row["leaf_index"],
                    "checkpoint": cp.sequence,
                    "record": record_to_json(row),
                    "inclusion_proof": [signing.b64(h) for h in proof],
                }
            )
    first = min(r["checkpoint"] for r in records)
    chain = [dict(c.body, signature=c.signature) for c in checkpoints[first:]]
    fps = {c["signing_key"]["fingerprint"] for c in chain}
    keys = {fp: (log.keys_dir / f"{fp}.pem").read_text() for fp in sorted(fps)}
    bundle = {
        "format": PROOF_FORMAT,
        "leaf_format": LEAF_FORMAT,
        "subject": subject,
        "records": records,
        "checkpoints": chain,
        "public_keys": keys,
    }
    # Checked as its reader will check it: a log that no longer holds up (a record altered
    # since it was signed) gives no bundle, rather than one that fails in the reader's hands.
    problems = check_bundle(bundle)
    if problems:
        raise AuditLogError(
            f"{log_root}: the records of {subject} do not check out against the signed log "
            f"({problems[0]}); no proof made: run `signals audit verify` on it"
        )
    return bundle


def _segment_tree(
    log: AuditLog, checkpoints: list[Checkpoint], cp: Checkpoint, proofs_for: list[int]
) -> merkle.Tree:
    """The tree of one segment on top of the previous checkpoint's frontier, checked, holding
    the inclusion proofs of the leaves `proofs_for`. Its stored leaf hashes are read a row
    group at a time: a segment of a 10M-person run has ~60 M of them."""
    previous = checkpoints[cp.sequence - 1].frontier if cp.sequence else {}
    stream = merkle.TreeStream(cp.first_leaf, previous, proofs_for=proofs_for)
    segment = pq.ParquetFile(log.segment_path(cp))
    for group in range(segment.num_row_groups):
        stream.add(fixed_bytes(segment.read_row_group(group, columns=["leaf_hash"])["leaf_hash"]))
    tree = stream.finish()
    if tree.size != cp.tree_size or tree.root() != cp.root:
        raise AuditLogError(
            f"{log.segment_path(cp)}: does not give the root checkpoint {cp.sequence} signed; "
            "run `signals audit verify` to find the altered record"
        )
    return tree


def check_bundle(bundle: dict, pinned: list[Path] | None = None) -> list[str]:
    """Problems with a proof bundle (empty: every record is proven in the latest checkpoint)."""
    if bundle.get("format") != PROOF_FORMAT or bundle.get("leaf_format") != LEAF_FORMAT:
        return [f"not a {PROOF_FORMAT} bundle with {LEAF_FORMAT} leaves"]
    pems = (
        [Path(p).read_bytes() for p in pinned]
        if pinned
        else [pem.encode() for pem in bundle["public_keys"].values()]
    )
    keys = {signing.fingerprint(k): k for k in (signing.load_public_pem(p) for p in pems)}
    checkpoints = [
        Checkpoint({k: v for k, v in c.items() if k != "signature"}, c["signature"])
        for c in bundle["checkpoints"]
    ]
    problems = []
    previous = None
    for cp in checkpoints:
        problem = signature_problem(cp, keys)
        if problem:
            return problems + [problem]
        if previous is not None:
            problems += link_problems(cp, previous)
        previous = cp
    by_sequence = {c.sequence: c for c in checkpoints}
    for item in bundle["records"]:
        index, cp = item["leaf_index"], by_sequence.get(item["checkpoint"])
        record = record_from_json(item["record"])
        where = f"leaf {index} ({record['name']})"
        if record["data_subject_pid"] != bundle["subject"]:
            problems.append(f"{where}: is about another data subject")
        if cp is None or not cp.first_leaf <= index < cp.tree_size:
            problems.append(f"{where}: its checkpoint is not in the bundle or does not hold it")
            continue
        leaf = merkle.leaf_hash(leaf_bytes(index, record))
        proof = [signing.unb64(h) for h in item["inclusion_proof"]]
        if not merkle.verify_inclusion(leaf, index, cp.tree_size, proof, cp.root):
            problems.append(f"{where}: its inclusion proof does not lead to the signed root")
    return problems
