"""Verifying an audit log: signatures, sequence, every record's leaf, roots, proofs, history.

`verify_log` checks, in log order, and names the first thing that is wrong:

1. checkpoints: numbered 0, 1, 2 ... without gaps; each signed (Ed25519) by a trusted
   key (the keys published with the log, or the ones the auditor pins); each names the
   one before it (sequence, size, root, file digest), starts where it ended, and carries
   a consistency proof from it that verifies (RFC 9162 2.1.4.2): the log only grew.
2. segments: exactly one per checkpoint, none uncovered; its file digest as signed; its
   records' `leaf_index` runs first_leaf, first_leaf+1, ... (a deleted, moved or
   appended record breaks the run); every record's leaf hash recomputed from its
   canonical bytes equals the stored one (an edited record) and, all together, give the
   signed root and frontier (an edited record whose stored hash was rewritten too).
3. inclusion: for sampled records of every segment an inclusion proof is made and
   checked against the signed root as an outsider would (RFC 9162 2.1.3.2).
4. history: checkpoints the auditor kept from earlier visits (`trusted`) must be in the
   log unchanged; a log rewritten and re-signed since then differs from them. So must
   the checkpoint each published run beside the log names (`audit/_log_entry.json`):
   removing the newest checkpoints shows there too, without a kept one.
5. the published `public_key.pem` is the key that signed the latest checkpoint.

A record is named by leaf index, segment and row, operation, subject pseudonym and span
id (base64), never by anything else.
"""

from __future__ import annotations

import contextlib
import json
import random
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flows import faults
from pipelines.machine import cores
from privacy.audit import merkle, signing
from privacy.audit.leaf import leaf_hashes
from privacy.audit.log import (
    CHUNK_ROWS,
    LOG_ENTRY,
    PARALLEL_RECORDS,
    SEGMENT_SCHEMA,
    AuditLog,
    AuditLogError,
    Checkpoint,
    checkpoint_name,
    file_sha256,
    fixed_bytes,
    segment_name,
)
from privacy.audit.pool import in_order

INCLUSION_SAMPLES = 8


class VerificationIncomplete(Exception):
    """Verification could not finish (a hashing process died): the log was not judged."""


@dataclass
class Report:
    """What verification found: `problems` in log order (empty: the log holds)."""

    root: Path
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0
    records: int = 0
    inclusion_proofs: int = 0
    consistency_proofs: int = 0
    trusted_checked: int = 0
    runs_checked: int = 0  # published runs beside the log whose log entry was checked
    runs_without_entry: list[str] = field(default_factory=list)  # published, no log entry
    key_fingerprints: set[str] = field(default_factory=set)
    latest: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def trusted_keys(log: AuditLog, pinned: list[Path] | None) -> dict[str, object]:
    """Fingerprint -> public key: the pinned key files if given, else those published."""
    files = pinned if pinned else log.public_key_files()
    keys = {}
    for path in files:
        key = signing.load_public_pem(Path(path).read_bytes(), str(path))
        keys[signing.fingerprint(key)] = key
    return keys


def _record_name(path: Path, row: int, leaf: int) -> str:
    """How a problem names a record: leaf, segment and row, operation, subject, span id."""
    columns = ["span_id", "name", "data_subject_pid"]
    record = pq.read_table(path, columns=columns).slice(row, 1).to_pylist()[0]
    span = signing.b64(record["span_id"]) if record["span_id"] else "none"
    return (
        f"leaf {leaf} ({path.name} row {row}: {record['name']} of "
        f"{record['data_subject_pid']}, span {span})"
    )


def signature_problem(cp: Checkpoint, keys: dict) -> str | None:
    """Why a checkpoint's signature cannot be trusted, or None when it can."""
    where = f"checkpoint {checkpoint_name(cp.sequence)}"
    fp = cp.body.get("signing_key", {}).get("fingerprint")
    key = keys.get(fp)
    if key is None:
        return f"{where}: signed by key {fp}, which is not a trusted key"
    named = cp.body["signing_key"].get("public_key", "")
    if signing.b64(signing.raw_public(key)) != named:
        return f"{where}: names another public key than the trusted key {fp}"
    if not signing.signature_valid(key, cp.body, cp.signature):
        return f"{where}: the signature does not verify (checkpoint altered)"
    return None


def link_problems(cp: Checkpoint, previous: Checkpoint | None) -> list[str]:
    """Whether `cp` follows `previous`: same log, chained, contiguous, consistency proven."""
    where = f"checkpoint {checkpoint_name(cp.sequence)}"
    if previous is None:
        if cp.sequence != 0 or cp.first_leaf != 0 or cp.body["previous"] is not None:
            return [f"{where}: the first checkpoint must be number 0 and start at leaf 0"]
        return []
    problems = []
    expected = {
        "sequence": previous.sequence,
        "tree_size": previous.tree_size,
        "root_hash": previous.body["root_hash"],
        "checkpoint_sha256": previous.digest(),
    }
    if cp.sequence != previous.sequence + 1 or cp.body["previous"] != expected:
        problems.append(
            f"{where}: does not chain to checkpoint {checkpoint_name(previous.sequence)} "
            "(its previous number, size, root or digest differ)"
        )
    if cp.body["log_id"] != previous.body["log_id"]:
        problems.append(f"{where}: belongs to another log (log_id differs)")
    if cp.first_leaf != previous.tree_size or cp.tree_size != cp.first_leaf + cp.leaf_count:
        problems.append(
            f"{where}: covers leaves {cp.first_leaf}..{cp.tree_size - 1} but the log had "
            f"{previous.tree_size} leaves before it"
        )
    if not merkle.verify_consistency(
        previous.tree_size, cp.tree_size, previous.root, cp.root, cp.consistency_proof
    ):
        problems.append(
            f"{where}: its consistency proof from tree size {previous.tree_size} does not "
            "verify: the log was not only appended to"
        )
    return problems


def _check_checkpoint(cp: Checkpoint, previous: Checkpoint | None, keys: dict, report) -> bool:
    """Signature and chaining of one checkpoint; False when it cannot be trusted at all."""
    problem = signature_problem(cp, keys)
    if problem:
        report.problems.append(problem)
        return False
    report.key_fingerprints.add(cp.body["signing_key"]["fingerprint"])
    report.problems.extend(link_problems(cp, previous))
    report.consistency_proofs += previous is not None
    return True


def _open_segment(path: Path, cp: Checkpoint, report) -> pq.ParquetFile | None:
    name = path.name
    if not path.is_file():
        report.problems.append(f"{name}: missing (checkpoint {cp.sequence} covers it)")
        return None
    try:
        segment = pq.ParquetFile(path)
        schema = segment.schema_arrow
    except Exception as e:  # any Parquet decoding failure is the finding itself
        report.problems.append(_unreadable(name, e))
        return None
    if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in SEGMENT_SCHEMA]:
        report.problems.append(f"{name}: its columns are not those of an audit segment")
        return None
    return segment


def _unreadable(name: str, e: Exception) -> str:
    return f"{name}: unreadable as Parquet, the file was altered ({type(e).__name__}: {e})"


def _check_sequence(segment: pq.ParquetFile, path: Path, cp: Checkpoint, report) -> bool:
    """leaf_index must run first_leaf, first_leaf+1, ... and stop at tree_size.

    Read a chunk at a time (a 10M-person run has ~60 M records); only a segment found
    out of sequence is read whole, to say what is wrong with it.
    """
    count = 0
    for batch in segment.iter_batches(batch_size=CHUNK_ROWS, columns=["leaf_index"]):
        found = batch.column(0).to_numpy(zero_copy_only=False)
        start = cp.first_leaf + count
        count += len(found)
        if not np.array_equal(found, np.arange(start, start + len(found), dtype=np.int64)):
            return _sequence_problem(segment, path, cp, report)
    if count != cp.leaf_count:
        return _sequence_problem(segment, path, cp, report)
    return True


def _sequence_problem(segment: pq.ParquetFile, path: Path, cp: Checkpoint, report) -> bool:
    """Names what breaks the sequence of leaf_index (reads the column whole)."""
    name = path.name
    found = segment.read(columns=["leaf_index"]).column("leaf_index")
    found = found.to_numpy(zero_copy_only=False)
    expected = np.arange(cp.first_leaf, cp.first_leaf + len(found), dtype=np.int64)
    wrong = np.flatnonzero(found != expected)
    if len(wrong):
        row = int(wrong[0])
        leaf, there = int(expected[row]), int(found[row])
        at = np.flatnonzero(found == leaf)
        if len(at) == 0 and len(found) == cp.leaf_count:  # as many records as signed
            what = f"its leaf_index reads {there} where leaf {leaf} belongs (altered)"
        elif len(at) == 0:
            what = f"leaf {leaf} is missing (deleted)"
        elif np.count_nonzero(found == there) > 1:
            what = f"leaf {there} appears more than once"
        else:
            what = f"records out of order: leaf {leaf} is at row {int(at[0])}"
        report.problems.append(
            f"{name} row {row}: {what}; the record there is {_record_name(path, row, there)}"
        )
        return False
    if len(found) < cp.leaf_count:  # numbered without a gap, but fewer: renumbered?
        first = _first_mismatch(path, segment, cp)
        if first is not None:
            report.problems.append(
                f"{name}: holds {len(found)} records, checkpoint {cp.sequence} signed "
                f"{cp.leaf_count}; from row {first} on the records no longer match their leaf "
                f"hashes: records were deleted there and the rest renumbered; the record there "
                f"is {_record_name(path, first, cp.first_leaf + first)}"
            )
            return False
    if len(found) != cp.leaf_count:
        first_missing = cp.first_leaf + len(found)
        report.problems.append(
            f"{name}: holds {len(found)} records, checkpoint {cp.sequence} signed "
            f"{cp.leaf_count}: "
            + (
                f"leaves {first_missing}..{cp.tree_size - 1} are missing (truncated)"
                if len(found) < cp.leaf_count
                else f"records after leaf {cp.tree_size - 1} were added"
            )
        )
        return False
    report.problems.append(f"{name}: its leaf indices changed while it was read (being altered?)")
    return False


def _first_mismatch(path: Path, segment: pq.ParquetFile, cp: Checkpoint) -> int | None:
    """The row of the first record whose stored leaf hash differs from its content's, or None
    (a segment that failed its sequence check; read a row group at a time, here)."""
    row = 0
    for g in range(segment.num_row_groups):
        bad, _ = check_group(str(path), g, cp.first_leaf + row, frozenset())
        if bad is not None:
            return row + bad
        row += segment.metadata.row_group(g).num_rows
    return None


def check_group(
    path: str, group: int, first: int, proofs_for: frozenset[int]
) -> tuple[int | None, merkle.Subtrees | None]:
    """One row group of a segment, its first record being leaf `first`: every record's leaf
    hash recomputed from its canonical bytes. Returns the row (in the group) of the first
    record whose stored hash differs, or the group's Merkle subtrees with the nodes of
    the inclusion proofs of `proofs_for` (run in a worker process for a big segment)."""
    faults.point("verify_worker")
    chunk = pq.ParquetFile(path).read_row_group(group)
    hashes = leaf_hashes(chunk, first)
    stored = chunk.column("leaf_hash")
    if stored.null_count or fixed_bytes(stored) != hashes:
        mine = np.frombuffer(hashes, dtype=np.uint8).reshape(-1, 32)
        theirs = fixed_bytes(stored).ljust(len(hashes), b"\0")
        theirs = np.frombuffer(theirs, dtype=np.uint8).reshape(-1, 32)
        return int(np.flatnonzero((mine != theirs).any(axis=1))[0]), None
    return None, merkle.subtrees(hashes, first, proofs_for)


def _check_leaves(
    segment: pq.ParquetFile,
    path: Path,
    cp: Checkpoint,
    tree: merkle.TreeStream,
    samples: list[int],
    report,
    progress,
) -> bool:
    """Every record's leaf hash recomputed, a row group at a time, and fed to `tree`; names
    the first record that no longer matches its stored hash. A segment of PARALLEL_RECORDS
    or more is hashed in worker processes, one per core: a process the out-of-memory killer
    ends is then reported as such (VerificationIncomplete), not the whole verification."""
    rows = [segment.metadata.row_group(g).num_rows for g in range(segment.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).tolist()
    samples = frozenset(samples)
    jobs = [(str(path), g, cp.first_leaf + starts[g], samples) for g in range(len(rows))]
    workers = min(cores(), len(rows)) if cp.leaf_count >= PARALLEL_RECORDS else 1
    try:
        with contextlib.closing(in_order(check_group, jobs, workers)) as results:
            for group, (bad, part) in enumerate(results):
                if bad is not None:
                    row = starts[group] + bad
                    report.problems.append(
                        f"{_record_name(path, row, cp.first_leaf + row)}: its content does "
                        "not match its leaf hash (record altered)"
                    )
                    return False
                tree.add_subtrees(part)
                progress(rows[group])
    except BrokenProcessPool as e:
        raise VerificationIncomplete(
            f"{path.name}: a process hashing its records died ({e}); nothing was judged. "
            "Was it out of memory? Run again with fewer cores (taskset -c 0) or more memory."
        ) from None
    return True


def _samples(cp: Checkpoint, rng: random.Random) -> list[int]:
    """The leaves of a checkpoint's segment whose inclusion proofs are checked."""
    count = cp.leaf_count
    if not count:
        return []
    picks = {0, count - 1, count // 2} | {rng.randrange(count) for _ in range(INCLUSION_SAMPLES)}
    return sorted(cp.first_leaf + offset for offset in picks)


def _check_tree(tree: merkle.Tree, cp: Checkpoint, samples: list[int], name: str, report):
    if tree.root() != cp.root:
        report.problems.append(
            f"{name} (leaves {cp.first_leaf}..{cp.tree_size - 1}): the records give another "
            f"root than checkpoint {cp.sequence} signed (records altered and their stored "
            "hashes rewritten)"
        )
        return
    frontier = [signing.b64(h) for _, h in sorted(tree.frontier().items(), reverse=True)]
    if frontier != cp.body["frontier"]:
        report.problems.append(f"checkpoint {cp.sequence}: its frontier does not fit its records")
    if [signing.b64(h) for h in tree.consistency_proof()] != cp.body["consistency_proof"]:
        report.problems.append(
            f"checkpoint {cp.sequence}: its consistency proof is not the one its records give"
        )
    for index in samples:
        leaf = tree.node(0, index)
        proof = tree.inclusion_proof(index)
        if not merkle.verify_inclusion(leaf, index, cp.tree_size, proof, cp.root):
            report.problems.append(f"{name}: inclusion proof of leaf {index} does not verify")
        report.inclusion_proofs += 1


def _check_segment(
    log: AuditLog, cp: Checkpoint, previous: Checkpoint | None, report, rng, progress
):
    path = log.segment_path(cp)
    name = path.name
    if cp.body["segment"] != segment_name(cp.sequence):
        report.problems.append(f"checkpoint {cp.sequence}: names segment {cp.body['segment']}")
        return
    found = len(report.problems)
    segment = _open_segment(path, cp, report)
    try:
        if segment is not None and _check_sequence(segment, path, cp, report):
            samples = _samples(cp, rng)
            frontier = previous.frontier if previous else {}
            stream = merkle.TreeStream(cp.first_leaf, frontier, proofs_for=samples)
            if _check_leaves(segment, path, cp, stream, samples, report, progress):
                report.records += cp.leaf_count
                _check_tree(stream.finish(), cp, samples, name, report)
    except (pa.ArrowException, OSError) as e:  # a page that no longer decodes, found later
        report.problems.append(_unreadable(name, e))
    digest_ok = path.is_file() and signing.b64(file_sha256(path)) == cp.body["segment_sha256"]
    if not digest_ok and len(report.problems) == found and path.is_file():
        report.problems.append(
            f"{name}: the file's digest differs from the one checkpoint {cp.sequence} signed, "
            "though its records still check out (the file was rewritten)"
        )


def _check_stray_files(
    log: AuditLog, checkpoints: list[Checkpoint], unchecked: list[Path], report
) -> None:
    covered = {c.body["segment"] for c in checkpoints}
    # Verification stopped at unchecked[0], a checkpoint it could not trust: its segment
    # and the later ones are not stray, just not checked.
    numbers = [int(p.name[:8]) for p in unchecked if p.name[:8].isdigit()]
    covered |= {segment_name(n) for n in numbers}
    if len(unchecked) > 1:
        later = f"the later checkpoint {unchecked[1].name} and its segment"
        if len(unchecked) > 2:
            later = (
                f"{len(unchecked) - 1} later checkpoints, {unchecked[1].name} .. "
                f"{unchecked[-1].name}, and their segments"
            )
        report.problems.append(
            f"not checked: {later}, since checkpoint {unchecked[0].name} before them cannot be "
            "trusted"
        )
    if log.segments_dir.is_dir():
        for path in sorted(log.segments_dir.iterdir()):
            if path.name not in covered and not path.name.startswith("."):
                report.problems.append(
                    f"{path.name}: not covered by any signed checkpoint (an interrupted append, "
                    "or a file put there)"
                )


def _check_trusted(checkpoints: list[Checkpoint], trusted: list[Path], keys: dict, report):
    by_sequence = {c.sequence: c for c in checkpoints}
    for path in trusted:
        kept = Checkpoint.parse(Path(path).read_text(), str(path))
        report.trusted_checked += 1
        if signature_problem(kept, keys):
            report.problems.append(f"{path}: the kept checkpoint is not signed by a trusted key")
            continue
        current = by_sequence.get(kept.sequence)
        if current is None:
            report.problems.append(
                f"history rewritten: the log ends before checkpoint {kept.sequence} "
                f"(tree size {kept.tree_size}) that {path} holds"
            )
        elif current.body != kept.body:
            report.problems.append(
                f"history rewritten: checkpoint {kept.sequence} (tree size {kept.tree_size}) "
                f"in the log differs from the one kept in {path} (root "
                f"{current.body['root_hash']} now, {kept.body['root_hash']} then)"
            )


def _check_published_key(log: AuditLog, latest: Checkpoint | None, report) -> None:
    """public_key.pem, the key the docs tell outsiders to pin, must be the latest signer's."""
    path = log.root / "public_key.pem"
    if latest is None or not path.is_file():
        return
    try:
        fp = signing.fingerprint(signing.load_public_pem(path.read_bytes(), str(path)))
    except signing.SignerError as e:
        report.problems.append(f"public_key.pem: {e}")
        return
    signer = latest.body["signing_key"]["fingerprint"]
    if fp != signer:
        report.problems.append(
            f"public_key.pem: holds key {fp}, but the latest checkpoint ({latest.sequence}) was "
            f"signed by {signer}: the published key was replaced, or the log re-signed"
        )


def _check_runs(
    log: AuditLog, checkpoints: list[Checkpoint], unchecked: list[Path], report
) -> None:
    """Every published run beside the log says where its records are (audit/_log_entry.json,
    written when it was appended): that checkpoint must be in the log, unchanged. This is
    how removing the newest checkpoints of a log shows without a kept checkpoint."""
    by_sequence = {c.sequence: c for c in checkpoints}
    not_checked = {p.name for p in unchecked}  # said already: "not checked"
    here = log.root.resolve()
    log_id = checkpoints[0].body["log_id"] if checkpoints else None
    # A published run without its entry may be a copy from elsewhere, or one whose entry was
    # removed to hide the checkpoints after it: not judged, but named (cmd_verify says so).
    report.runs_without_entry = sorted(
        m.parent.name
        for m in log.root.parent.glob("*/manifest.json")
        if not (m.parent / LOG_ENTRY).is_file()
    )
    for entry_path in sorted(log.root.parent.glob(f"*/{LOG_ENTRY.as_posix()}")):
        run = entry_path.parent.parent
        try:
            entry = json.loads(entry_path.read_text())
            if (run.parent / entry["audit_log"]).resolve() != here:
                continue
            if log_id and entry.get("log_id", log_id) != log_id:
                continue  # a run of another log, copied beside this one
            sequence = int(str(entry["checkpoint"]).removesuffix(".json"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            report.problems.append(f"{run.name}: its {LOG_ENTRY} is unreadable ({e})")
            continue
        cp = by_sequence.get(sequence)
        if cp is None and checkpoint_name(sequence) in not_checked:
            continue
        report.runs_checked += 1
        if cp is None:
            report.problems.append(
                f"run {run.name}: its records were logged in checkpoint {sequence} (tree size "
                f"{entry.get('tree_size')}, its {LOG_ENTRY}), which the log no longer holds "
                "checked: checkpoints were removed"
            )
        elif (cp.body["root_hash"], cp.tree_size, cp.first_leaf) != (
            entry.get("root_hash"),
            entry.get("tree_size"),
            entry.get("first_leaf"),
        ):
            report.problems.append(
                f"run {run.name}: checkpoint {sequence} in the log (root {cp.body['root_hash']}) "
                f"is not the one the run was published with (root {entry.get('root_hash')}, its "
                f"{LOG_ENTRY}): the log was rewritten"
            )


def quick_check(root: Path) -> list[str]:
    """What reading the log without verifying it must not hide: every committed segment's
    file is the one its checkpoint signed, and the checkpoints' signatures (with the
    published keys) and chain hold. Reads each file once (SHA-256, ~1.6 GB/s here); no
    record is hashed, so an OK here is not `verify_log`'s."""
    log = AuditLog(root)
    try:
        keys = trusted_keys(log, None)
    except signing.SignerError as e:
        return [str(e)]
    problems, previous = [], None
    for i, path in enumerate(log.checkpoint_files()):
        if path.name != checkpoint_name(i):  # a checkpoint removed: its records are not read
            problems.append(f"checkpoint {checkpoint_name(i)} is missing")
            break
        try:
            cp = Checkpoint.parse(path.read_text(), str(path))
        except (AuditLogError, OSError) as e:
            problems.append(str(e))
            break
        problems.extend(link_problems(cp, previous))  # chained, contiguous, only grown
        previous = cp
        problem = signature_problem(cp, keys)
        if problem:
            problems.append(problem)
            continue
        path = log.segment_path(cp)
        if not path.is_file():
            problems.append(f"{path.name}: missing (checkpoint {cp.sequence} signed it)")
        elif signing.b64(file_sha256(path)) != cp.body["segment_sha256"]:
            problems.append(f"{path.name}: not the file checkpoint {cp.sequence} signed")
    return problems


def require_as_signed(root: Path, what: str) -> None:
    """Refuse (AuditLogError) to give `what` from a log whose files are not as signed
    (quick_check): a record deleted from a segment leaves the others provable, so an answer
    read from it would be short without saying so."""
    problems = quick_check(root)
    if problems:
        more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
        raise AuditLogError(
            f"{root}: the audit log is not as signed ({problems[0]}{more}); no {what} from "
            "it, which could leave records out: `signals audit verify` names what changed"
        )


def _signed_records(files: list[Path]) -> int:
    """The tree size the last readable checkpoint signed (for progress only)."""
    for path in reversed(files):
        try:
            return Checkpoint.parse(path.read_text(), str(path)).tree_size
        except (AuditLogError, OSError):
            continue
    return 0


def verify_log(
    root: Path,
    public_keys: list[Path] | None = None,
    trusted: list[Path] | None = None,
    seed: int | None = None,
    progress=None,
) -> Report:
    """Verify the whole log; see the module docstring. Never raises for a finding.

    `progress(records_done, records_signed)`, if given, is called as the records are
    checked (a log of 10M persons has ~60 M of them).
    """
    log = AuditLog(root)
    report = Report(Path(root))
    if not log.checkpoints_dir.is_dir():
        report.problems.append(f"{root}: no checkpoints folder: not an audit log")
        return report
    try:
        keys = trusted_keys(log, public_keys)
    except signing.SignerError as e:
        report.problems.append(str(e))
        return report
    if not keys:
        report.problems.append(f"{root}: no public key to check signatures with")
    for path in [] if public_keys else log.public_key_files():  # named by their fingerprint
        fp = signing.fingerprint(signing.load_public_pem(path.read_bytes(), str(path)))
        if fp != path.stem:
            report.problems.append(
                f"public_keys/{path.name}: holds key {fp}, not the key its name says (replaced)"
            )
    rng = random.Random(seed)
    checkpoints: list[Checkpoint] = []
    previous = None
    files = log.checkpoint_files()
    signed = _signed_records(files)
    done = 0

    def checked(records: int) -> None:
        nonlocal done
        done += records
        if progress:
            progress(done, signed)

    if not files:
        report.problems.append(
            f"{root}: the log holds no checkpoint, so nothing in it is signed (emptied, or "
            "never appended to)"
        )
    unchecked: list[Path] = []
    for i, path in enumerate(files):
        unchecked = files[i:]
        if path.name != checkpoint_name(i):
            report.problems.append(f"{path.name}: checkpoint {checkpoint_name(i)} is missing")
            break
        try:
            cp = Checkpoint.parse(path.read_text(), str(path))
        except AuditLogError as e:
            report.problems.append(str(e))
            break
        if cp.sequence != i:
            report.problems.append(f"{path.name}: says it is checkpoint {cp.sequence}")
            break
        if not _check_checkpoint(cp, previous, keys, report):
            break
        _check_segment(log, cp, previous, report, rng, checked)
        checkpoints.append(cp)
        previous = cp
    else:
        unchecked = []
    report.checkpoints = len(checkpoints)
    report.latest = previous
    _check_stray_files(log, checkpoints, unchecked, report)
    _check_published_key(log, previous if not unchecked else None, report)
    _check_runs(log, checkpoints, unchecked, report)
    _check_trusted(checkpoints, list(trusted or []), keys, report)
    return report
