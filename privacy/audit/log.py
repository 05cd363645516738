"""The append-only purpose audit log across runs: Parquet segments under signed Merkle checkpoints.

Where and what (`<out>/audit-log/`, next to the run folders it covers):

    public_key.pem                   the current signing key (Ed25519, PEM): publish it
    public_keys/<fingerprint>.pem    every key that ever signed a checkpoint (rotation)
    segments/segment-<seq>.parquet   one segment per appended batch (a run): the batch's
                                     audit records in log order, with `leaf_index` (their
                                     position in the log) and `leaf_hash` (RFC 6962)
    checkpoints/<seq>.json           the signed tree head after that batch: tree size, root,
                                     the segment's file digest, the consistency proof from
                                     the previous checkpoint, the frontier for the next append
    .lock                            serialises appends (flock)

Any DuckDB user reads the records directly:
`SELECT name, COUNT(*) FROM 'audit-log/segments/*.parquet' GROUP BY name`.

The leaves are the records' canonical bytes (privacy/audit/leaf.py) in segment order; the
tree is RFC 6962's (privacy/audit/merkle.py). A checkpoint's signed body is its JSON
without `signature`, serialised canonically (sorted keys, no whitespace, UTF-8), signed
with Ed25519 by the keyring's `audit-signing` key. Ids in text are base64, never hex.

Append, atomicity and reruns:
- Only a keyring that holds the key of the latest checkpoint (active or retired) extends
  the log: one from before an audit-signing key rotation, or another log's, is refused.
- A batch is appended once: its id (the run id for runs) is looked up in the checkpoints
  first, so a rerun or a retried task never duplicates records (`append` returns the
  existing checkpoint). Within a batch, copies of a record (same span id, operation and
  subject) are kept once.
- The checkpoint is the commit point. The segment is written to a temporary file, synced
  and renamed, then the checkpoint the same way. A crash before the checkpoint's rename
  leaves an uncovered segment that no reader counts (readers list segments through the
  checkpoints) and that the next append replaces; `verify` reports it meanwhile.
- The central run appends after finalising and before publishing its folder
  (`append_run`). A run that fails before the append leaves the log untouched. A run whose
  append succeeded but whose publication failed is reconciled by its rerun: same inputs,
  same run id, so the append is found and not repeated, and the rerun's run folder gets
  the segment the log holds for that run (same span ids, checked; the times are those of
  the attempt that was logged), so the published copy and the log agree.
- Appending reads the records and writes the segment a chunk (CHUNK_ROWS) at a time, and
  so does verification: a 1M-person run has ~9M records, which never sit in memory whole.
- The run's records are written once, into the segment, straight from the pipeline's
  audit parts (privacy/audit/parts.py). The run folder's `audit/segment-00000.parquet` is
  that segment file (a hard link; a copy where links cannot be made), and
  `audit/_log_entry.json` names the checkpoint and leaf range that hold them. The log is
  the record of authority; the run's file is what the log says, nothing more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.machine import cores
from privacy.audit import merkle, sha256, signing
from privacy.audit.leaf import LEAF_FORMAT, leaf_hashes
from privacy.audit.parts import PARTS_DIR, AuditParts, first_of_each
from privacy.audit.schema import AUDIT_SCHEMA
from privacy.files import written_whole

LOG_DIRNAME = "audit-log"
CHECKPOINT_FORMAT = "signals-audit-checkpoint/1"
HASH_ALGORITHM = "RFC 6962 SHA-256 (leaf 0x00, node 0x01)"
SEGMENT_SCHEMA = pa.schema(
    [pa.field("leaf_index", pa.int64(), nullable=False)]
    + list(AUDIT_SCHEMA)
    + [pa.field("leaf_hash", pa.binary(32))]
)
RUN_COPY = Path("audit") / "segment-00000.parquet"
LOG_ENTRY = Path("audit") / "_log_entry.json"  # "_": Parquet dataset readers skip it
_CHECKPOINT_NAME = re.compile(r"^(\d{8})\.json$")
# Segment encoding. Ids, pseudonyms and hashes are random: a dictionary or min/max
# statistics of them help no reader and cost the writer (at 1M records 0.48 s -> 0.36 s
# without them, and a smaller file). The columns readers filter on keep their statistics.
_DICTIONARY = [
    "trace_id",
    "parent_span_id",
    "name",
    "status",
    "run_id",
    "processing_activity_id",
    "register_version",
    "attributes",
]
_STATISTICS = [
    "leaf_index",
    "name",
    "status",
    "start_time",
    "end_time",
    "run_id",
    "processing_activity_id",
    "register_version",
]
# Leaf indices count up by one and pseudonyms share their prefix: delta encodings store
# them smaller and cost the writer less, the append's one writing thread (a 1M-person
# run's segment, six writes each: 2.21-2.35 s -> 1.90-2.13 s). Standard Parquet: DuckDB
# and pyarrow read them as any other.
_ENCODING = {"leaf_index": "DELTA_BINARY_PACKED", "data_subject_pid": "DELTA_BYTE_ARRAY"}


class AuditLogError(Exception):
    """The audit log cannot be read or appended to as asked; the message says why."""


# A segment names data subjects (pseudonyms) and what was done to them: its owner and the
# owner's group (the auditors') read it, nobody else. Checkpoints and public keys hold no
# personal data and stay readable, for outsiders to check proofs against.
SEGMENT_MODE = 0o640


def segment_name(sequence: int) -> str:
    return f"segment-{sequence:08d}.parquet"


def checkpoint_name(sequence: int) -> str:
    return f"{sequence:08d}.json"


def file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint: `body` is what is signed, `signature` the base64 Ed25519 signature."""

    body: dict
    signature: str

    @property
    def sequence(self) -> int:
        return self.body["sequence"]

    @property
    def tree_size(self) -> int:
        return self.body["tree_size"]

    @property
    def first_leaf(self) -> int:
        return self.body["first_leaf"]

    @property
    def leaf_count(self) -> int:
        return self.body["leaf_count"]

    @property
    def batch_id(self) -> str:
        return self.body["batch_id"]

    @property
    def root(self) -> bytes:
        return signing.unb64(self.body["root_hash"])

    @property
    def frontier(self) -> dict[int, bytes]:
        hashes = [signing.unb64(h) for h in self.body["frontier"]]
        levels = merkle.frontier_levels(self.tree_size)
        if len(hashes) != len(levels):
            raise AuditLogError(
                f"checkpoint {self.sequence}: frontier has {len(hashes)} hashes, "
                f"a tree of {self.tree_size} leaves needs {len(levels)}"
            )
        return dict(zip(levels, hashes, strict=True))

    @property
    def consistency_proof(self) -> list[bytes]:
        return [signing.unb64(h) for h in self.body["consistency_proof"]]

    @property
    def public_key(self):
        return signing.public_from_raw(signing.unb64(self.body["signing_key"]["public_key"]))

    def signature_valid(self) -> bool:
        """The signature checks out with the public key the checkpoint names (trust is separate)."""
        try:
            return signing.signature_valid(self.public_key, self.body, self.signature)
        except (KeyError, ValueError):
            return False

    def digest(self) -> str:
        """Base64 SHA-256 of the canonical JSON of the whole checkpoint, signature included."""
        whole = dict(self.body, signature=self.signature)
        return signing.b64(hashlib.sha256(signing.canonical(whole)).digest())

    def to_json(self) -> str:
        return json.dumps(dict(self.body, signature=self.signature), indent=1, sort_keys=True)

    @classmethod
    def parse(cls, text: str, where: str) -> Checkpoint:
        try:
            doc = json.loads(text)
            signature = doc.pop("signature")
            if doc.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format is not {CHECKPOINT_FORMAT}")
            for name in ("sequence", "tree_size", "first_leaf", "leaf_count"):
                if not isinstance(doc[name], int) or doc[name] < 0:
                    raise ValueError(f"{name} must be a whole number >= 0")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise AuditLogError(f"{where}: not a readable checkpoint ({e})") from None
        return cls(doc, signature)


@dataclass(frozen=True)
class AppendResult:
    checkpoint: Checkpoint
    appended: bool  # False: the batch was in the log already (idempotent rerun)


def _write_atomic(path: Path, data: bytes) -> None:
    with written_whole(path, durable=True) as tmp:
        tmp.write_bytes(data)


def fixed_bytes(column: pa.ChunkedArray | pa.Array) -> bytes:
    """The values of a fixed-size binary column, concatenated (nulls as zero bytes)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.byte_width
    if len(array) == 0:
        return b""
    data = array.buffers()[1]
    return data.to_pybytes()[array.offset * width : (array.offset + len(array)) * width]


# Chunks small enough that the hashing workers share a run evenly. Measured on 2 cores,
# 6 M records hashed in workers: chunks of 250,000 12.8-13.0 s, of 100,000 12.1-12.3 s
# (19.0 s in this process).
CHUNK_ROWS = 100_000
# From this many records on, a run's leaves are hashed in worker processes (hashlib, no C
# loop). Below, they gain nothing: 600,000 records took 1.6-1.7 s here and with them.
PARALLEL_RECORDS = 1_000_000


def _parallel_from() -> int:
    """Records from which a run is hashed in workers: threads, with the C loop, cost
    nothing to start, so any run of two chunks or more (600,000 records: 1.1 s -> 0.8 s)."""
    return 2 * CHUNK_ROWS if sha256.NATIVE else PARALLEL_RECORDS


def _conform(records: pa.Table) -> pa.Table:
    missing = set(AUDIT_SCHEMA.names) - set(records.column_names)
    if missing:
        raise AuditLogError(f"audit records lack column(s) {', '.join(sorted(missing))}")
    return records.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA)


def _first_occurrences(records: pa.Table) -> np.ndarray | None:
    """A keep-mask with each record's first copy (parts.first_of_each), or None when every
    span id is distinct. `records` holds span_id, name and data_subject_pid."""
    spans = records.column("span_id")
    if spans.null_count:
        raise AuditLogError("an audit record without a span id cannot be logged")
    ids = np.frombuffer(fixed_bytes(spans), dtype=np.uint64)
    if len(np.unique(ids)) == len(ids):
        return None
    names = records.column("name").combine_chunks()
    return first_of_each(ids, names, records.column("data_subject_pid").combine_chunks())


class _Records:
    """Audit records to append, read a chunk at a time (a table, or a Parquet file on disk).

    Memory stays at one chunk whatever the run's size: a 1M-person run has ~9M records.
    """

    def __init__(self, source: pa.Table | Path | AuditParts):
        self.source = source
        if isinstance(source, AuditParts):
            self.keep = None  # the parts drop their own repeats
            return
        if isinstance(source, pa.Table):
            keys = _conform(source)
        else:
            keys = pq.read_table(source, columns=["span_id", "name", "data_subject_pid"])
        self.keep = _first_occurrences(keys) if keys.num_rows else None

    def hashed_chunks(self, first: int):
        """(chunk, its leaf hashes, its Merkle subtrees or None), leaves numbered from `first`.

        A big run's parts are hashed, leaves and subtrees, in workers (one per core) while
        this thread writes (privacy/audit/parts.py hashed_tables). Hashed here, the
        subtrees are None.
        """
        if isinstance(self.source, AuditParts):
            big = self.source.records >= _parallel_from()
            workers = cores() if big else 1
            yield from self.source.hashed_tables(CHUNK_ROWS, first, workers)
            return
        for chunk in self.chunks():
            yield chunk, leaf_hashes(chunk, first), None
            first += chunk.num_rows

    def chunks(self):
        if isinstance(self.source, pa.Table):
            table = _conform(self.source)
            pieces = (table.slice(i, CHUNK_ROWS) for i in range(0, table.num_rows, CHUNK_ROWS))
        else:
            reader = pq.ParquetFile(self.source).iter_batches(batch_size=CHUNK_ROWS)
            pieces = (_conform(pa.Table.from_batches([b])) for b in reader)
        at = 0
        for piece in pieces:
            n = piece.num_rows
            if self.keep is not None:
                piece = piece.filter(pa.array(self.keep[at : at + n]))
            at += n
            yield piece


class AuditLog:
    """One audit log folder. Reading needs nothing; appending needs a `signing.Signer`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.segments_dir = self.root / "segments"
        self.checkpoints_dir = self.root / "checkpoints"
        self.keys_dir = self.root / "public_keys"

    # -- reading ---------------------------------------------------------------------------

    def checkpoint_files(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.iterdir() if _CHECKPOINT_NAME.match(p.name))

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, parsed (not verified), in sequence order."""
        return [Checkpoint.parse(p.read_text(), str(p)) for p in self.checkpoint_files()]

    def latest(self) -> Checkpoint | None:
        files = self.checkpoint_files()
        return Checkpoint.parse(files[-1].read_text(), str(files[-1])) if files else None

    def find(self, batch_id: str) -> Checkpoint | None:
        return next((c for c in self.checkpoints() if c.batch_id == batch_id), None)

    def segment_path(self, checkpoint: Checkpoint) -> Path:
        return self.segments_dir / checkpoint.body["segment"]

    def committed_segments(self) -> list[Path]:
        """The segments covered by a checkpoint: what readers may count."""
        return [self.segment_path(c) for c in self.checkpoints()]

    def batch_records(self, batch_id: str) -> pa.Table:
        """The records a batch holds in the log (AUDIT_SCHEMA plus leaf_index and leaf_hash)."""
        checkpoint = self.find(batch_id)
        if checkpoint is None:
            raise AuditLogError(f"{self.root}: batch {batch_id!r} is not in the audit log")
        return pq.read_table(self.segment_path(checkpoint))

    def public_key_files(self) -> list[Path]:
        return sorted(self.keys_dir.glob("*.pem")) if self.keys_dir.is_dir() else []

    # -- appending ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Hold the log's lock: one appender (or consistent reader) at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def check_signer(self, signer: signing.Signer) -> None:
        """Refuse, before any work, a keyring that cannot extend this log (_check_signer)."""
        head = self.latest() if self.checkpoints_dir.is_dir() else None
        if head is not None:
            _check_signer(head, signer, self.root)

    def _head(self) -> Checkpoint | None:
        """The latest checkpoint, checked enough to build on: sequence, signature, frontier."""
        files = self.checkpoint_files()
        for i, path in enumerate(files):
            if path.name != checkpoint_name(i):
                raise AuditLogError(f"{path}: checkpoints must be numbered 0, 1, 2 ... (no gaps)")
        if not files:
            return None
        head = Checkpoint.parse(files[-1].read_text(), str(files[-1]))
        if head.sequence != len(files) - 1 or not head.signature_valid():
            raise AuditLogError(f"{files[-1]}: the latest checkpoint is not validly signed")
        if merkle.frontier_root(head.frontier) != head.root:
            raise AuditLogError(f"{files[-1]}: its frontier does not give its root")
        if not (self.keys_dir / f"{head.body['signing_key']['fingerprint']}.pem").is_file():
            raise AuditLogError(f"{files[-1]}: its signing key is not published in {self.keys_dir}")
        return head

    def _publish_key(self, signer: signing.Signer) -> None:
        """The signer's key under its fingerprint, before a checkpoint it signs is written."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        path = self.keys_dir / f"{signer.fingerprint}.pem"
        if not path.is_file():
            _write_atomic(path, signing.public_pem(signer.public))

    def _publish_current_key(self, pem: bytes) -> None:
        """public_key.pem: the key of the latest checkpoint, written after it. A crash in
        between is mended by the next append, from the head's published key."""
        current = self.root / "public_key.pem"
        if not current.is_file() or current.read_bytes() != pem:
            _write_atomic(current, pem)

    def _write_segment(self, sequence: int, records: _Records, tree: merkle.TreeStream):
        """Stream the records into the segment file and their leaves into `tree`.

        Returns (path, records per operation).
        """
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        path = self.segments_dir / segment_name(sequence)
        counts, at = {}, tree.size
        with written_whole(path, durable=True) as tmp:
            with pq.ParquetWriter(
                tmp,
                SEGMENT_SCHEMA,
                compression="zstd",
                use_dictionary=_DICTIONARY,
                write_statistics=_STATISTICS,
                column_encoding=_ENCODING,
            ) as writer:
                for chunk, hashes, subtrees in records.hashed_chunks(at):
                    n = chunk.num_rows
                    if subtrees is None:
                        tree.add(hashes)
                    elif subtrees.count != n:
                        raise AuditLogError(f"{n} records hashed as {subtrees.count} leaves")
                    else:
                        tree.add_subtrees(subtrees)
                    index = pa.array(np.arange(at, at + n, dtype=np.int64))
                    digest = pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(32), n, [None, pa.py_buffer(hashes)]
                    )
                    columns = [index] + list(chunk.columns) + [digest]
                    writer.write_table(pa.Table.from_arrays(columns, schema=SEGMENT_SCHEMA))
                    names = chunk.column("name").combine_chunks()
                    for d in pc.value_counts(names).to_pylist():
                        counts[d["values"]] = counts.get(d["values"], 0) + d["counts"]
                    at += n
            os.chmod(tmp, SEGMENT_MODE)
        return path, counts

    def append(
        self, records: pa.Table | Path, batch_id: str, signer: signing.Signer, kind: str = "run"
    ) -> AppendResult:
        """Append one batch of audit records (once per batch id) and sign the new tree head.

        `records` is a table of AUDIT_SCHEMA rows, a Parquet file of them, or a run's audit
        parts (privacy/audit/parts.py); files are read in chunks.
        """
        source = _Records(records)
        with self.locked():
            head = self._head()
            if head is not None:
                _check_signer(head, signer, self.root)
                fp = head.body["signing_key"]["fingerprint"]
                self._publish_current_key((self.keys_dir / f"{fp}.pem").read_bytes())
            existing = self.find(batch_id) if head else None
            if existing is not None:
                return AppendResult(existing, appended=False)
            sequence = head.sequence + 1 if head else 0
            first = head.tree_size if head else 0
            # An uncovered segment of this sequence is an interrupted append: replaced here.
            stream = merkle.TreeStream(first, head.frontier if head else {})
            segment, counts = self._write_segment(sequence, source, stream)
            tree = stream.finish()
            self._publish_key(signer)
            body = self._body(head, sequence, batch_id, kind, counts, tree, segment, signer)
            checkpoint = Checkpoint(body, signer.sign(body))
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(
                self.checkpoints_dir / checkpoint_name(sequence), checkpoint.to_json().encode()
            )
            self._publish_current_key(signing.public_pem(signer.public))
            return AppendResult(checkpoint, appended=True)

    def _body(self, head, sequence, batch_id, kind, counts, tree, segment, signer) -> dict:
        previous = None
        if head is not None:
            previous = {
                "sequence": head.sequence,
                "tree_size": head.tree_size,
                "root_hash": head.body["root_hash"],
                "checkpoint_sha256": head.digest(),
            }
        log_id = head.body["log_id"] if head else signing.b64(os.urandom(16))
        return {
            "format": CHECKPOINT_FORMAT,
            "log_id": log_id,
            "sequence": sequence,
            "batch_id": batch_id,
            "kind": kind,
            "segment": segment.name,
            "segment_sha256": signing.b64(file_sha256(segment)),
            "first_leaf": tree.old_size,
            "leaf_count": tree.size - tree.old_size,
            "tree_size": tree.size,
            "root_hash": signing.b64(tree.root()),
            "previous": previous,
            "consistency_proof": [signing.b64(h) for h in tree.consistency_proof()],
            "frontier": [signing.b64(h) for _, h in sorted(tree.frontier().items(), reverse=True)],
            "records_per_operation": dict(sorted(counts.items())),
            "leaf_format": LEAF_FORMAT,
            "hash": HASH_ALGORITHM,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "signing_key": {
                "id": signer.key_id,
                "fingerprint": signer.fingerprint,
                "public_key": signing.b64(signing.raw_public(signer.public)),
            },
        }


def _check_signer(head: Checkpoint, signer: signing.Signer, root: Path) -> None:
    """Refuse a signer whose keyring never held the key of the log's latest checkpoint: a
    keyring from before an audit-signing key rotation would sign with the retired key
    after the new one, and another programme's keyring is not this log's."""
    signed_by = head.body["signing_key"]["fingerprint"]
    if signed_by not in signer.known:
        raise AuditLogError(
            f"{root}: its latest checkpoint ({head.sequence}) was signed with key {signed_by}, "
            f"which this keyring does not hold (it signs with {signer.fingerprint}): it is "
            "older than the log, or another log's. Use the current central keyring, or a "
            "controller keyring rebuilt from it (keys init --role controller --force --import "
            "...). If that key is lost, the log cannot be extended: start a new runs folder "
            "and keep this one for its auditors"
        )


def _span_ids(path: Path) -> np.ndarray:
    spans = pq.read_table(path, columns=["span_id"]).column("span_id")
    return np.unique(np.frombuffer(fixed_bytes(spans), dtype=np.uint64))


def append_run(run_folder: Path, run_id: str, log_root: Path, signer: signing.Signer) -> Checkpoint:
    """Append a finalised run's audit records to the log, or reconcile a rerun with it.

    `run_folder` is the staging folder about to be published, holding the pipeline's
    audit parts (`audit_parts/`, privacy/audit/parts.py). The records are
    written once, into the log's segment; afterwards the run's `audit/segment-00000.parquet`
    is that segment (a hard link where the file system allows, else a copy): exactly the
    log's records for the run, with their leaf index and hash, and `audit/_log_entry.json`
    says where they are in the log. The parts are removed.
    """
    run_folder = Path(run_folder)
    if not (run_folder / PARTS_DIR).is_dir():
        raise AuditLogError(f"{run_folder}: the run has no audit records to log ({PARTS_DIR}/)")
    source = AuditParts(run_folder / PARTS_DIR)
    log = AuditLog(log_root)
    result = log.append(source, run_id, signer)
    logged = log.segment_path(result.checkpoint)
    if not result.appended and not np.array_equal(_span_ids(logged), source.span_ids()):
        raise AuditLogError(
            f"{log_root}: run {run_id} is in the audit log (checkpoint "
            f"{result.checkpoint.sequence}) with other records than this rerun made; "
            "the inputs or the code changed under the same run id"
        )
    _link_segment(logged, run_folder / RUN_COPY)
    shutil.rmtree(run_folder / PARTS_DIR, ignore_errors=True)
    write_log_entry(run_folder, log_root, result.checkpoint)
    return result.checkpoint


def _link_segment(segment: Path, target: Path) -> None:
    """`target` becomes the log's segment file: a hard link (no second copy), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(target) as tmp:
        tmp.unlink(missing_ok=True)  # a leftover of a killed run: a link needs a free name
        try:
            os.link(segment, tmp)
        except OSError:  # another file system, or links not allowed: copy the bytes
            shutil.copyfile(segment, tmp)


def write_log_entry(run_folder: Path, log_root: Path, checkpoint: Checkpoint) -> None:
    entry = {
        "audit_log": os.path.relpath(Path(log_root).resolve(), Path(run_folder).resolve().parent),
        "checkpoint": checkpoint_name(checkpoint.sequence),
        "log_id": checkpoint.body["log_id"],  # which log (a run folder may be copied elsewhere)
        "segment": checkpoint.body["segment"],
        "first_leaf": checkpoint.first_leaf,
        "leaf_count": checkpoint.leaf_count,
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.body["root_hash"],
    }
    _write_atomic(
        run_folder / LOG_ENTRY, (json.dumps(entry, indent=1, sort_keys=True) + "\n").encode()
    )
