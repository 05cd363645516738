"""Audit record batches written as parts where they are made, and read back in log order.

A run makes several audit records per person. Sent through one Flatten into one sink,
every batch of them would wait in the runner's buffers until the last producing stage
finished (the in-memory DirectRunner holds a stage's outputs whole): at 1M persons that
is tens of GB. `WriteAuditPartsFn` (pipelines/audit_records.py) writes each batch to its
own part file (Arrow IPC, `write_part`) in the stage that made it, so audit records never
pile up in memory. This module has no Beam in it: the log append's hashing processes
import it.

A part is named after its content and its records are in span-id order, so the parts
of a run, taken in name order, are the same sequence whatever the runner, the order in
which bundles ran, or how often one was retried (a retry writes the same file again).
The log append streams them in that order into the run's log segment (`AuditParts`,
privacy/audit/log.py) instead of sorting millions of records. Span ids are derived from
run, operation and subject (pipelines/audit_records.py), so a copy of a record is
recognised and kept once (`first_of_each`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from privacy.audit import merkle, sha256
from privacy.audit.leaf import leaf_hashes
from privacy.audit.pool import in_order
from privacy.audit.schema import AUDIT_SCHEMA, CODED_ATTRIBUTES, CODED_SCHEMA
from privacy.files import written_whole

_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


PARTS_DIR = "audit_parts"  # the folder of a run's staging area that holds its parts

# Parts live only until the log append: Arrow IPC with LZ4 reads back ~10x faster than
# Parquet (no decoding) at about the same size, measured on a run's rule_evaluation parts.
PART_SUFFIX = ".arrow"
_PART_OPTIONS = ipc.IpcWriteOptions(compression="lz4")


def write_part(table: pa.Table, folder: Path, label: str) -> Path:
    """One part: the records in span-id order, named after them, written whole or not at all.

    Attributes that come coded (CODED_SCHEMA: records sharing their text) stay coded.
    """
    table = table.select(AUDIT_SCHEMA.names)
    # One dictionary a part (an IPC file cannot replace it between batches): a table of
    # several batches is decoded instead.
    attributes = table.column("attributes")
    coded = attributes.type == CODED_ATTRIBUTES and attributes.num_chunks <= 1
    schema = CODED_SCHEMA if coded else AUDIT_SCHEMA
    table = table.cast(schema)
    table, spans = in_span_order(table)
    path = Path(folder) / part_name(label, spans)
    # Two attempts (threads, retried bundles) may write the same part at once.
    with written_whole(path, shared=True) as tmp:
        with ipc.new_file(tmp, schema, options=_PART_OPTIONS) as writer:
            writer.write_table(table)
    return path


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A part's records (AUDIT_SCHEMA), or only the `columns` named (the rest not decoded).

    Coded attributes are decoded here: what is hashed and logged is the text.
    """
    names = columns or AUDIT_SCHEMA.names
    options = ipc.IpcReadOptions(included_fields=[AUDIT_SCHEMA.get_field_index(n) for n in names])
    with pa.OSFile(str(path), "rb") as f:
        table = ipc.open_file(f, options=options).read_all()
    if "attributes" in names and table.schema.field("attributes").type == CODED_ATTRIBUTES:
        at = table.schema.get_field_index("attributes")
        table = table.set_column(
            at, AUDIT_SCHEMA.field("attributes"), table.column(at).cast(pa.string())
        )
    return table


def in_span_order(table: pa.Table) -> tuple[pa.Table, bytes]:
    """The records sorted by span id (as bytes), and their span ids concatenated.

    Batches from pipelines/audit_records.audit_batch come sorted: then nothing is copied.
    """
    spans = table.column("span_id").combine_chunks()
    raw = np.frombuffer(spans.buffers()[1], dtype=">u8")[spans.offset : spans.offset + len(spans)]
    if np.all(raw[1:] >= raw[:-1]):
        return table, raw.tobytes()
    order = np.argsort(raw, kind="stable")
    return table.take(pa.array(order)), raw[order].tobytes()


def part_name(label: str, spans: bytes) -> str:
    """`<label>-<32 letters>.arrow`: the letters hash the part's span ids (no digit runs)."""
    digest = hashlib.sha256(spans).hexdigest()[:32].translate(_LETTERS)
    return f"{label}-{digest}{PART_SUFFIX}"


def span_numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """8-byte span ids as numbers (native order: for equality and uniqueness only)."""
    spans = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(spans) == 0:
        return np.zeros(0, np.uint64)
    return np.frombuffer(spans.buffers()[1], np.uint64)[spans.offset : spans.offset + len(spans)]


def first_of_each(ids: np.ndarray, names: pa.Array, subjects: pa.Array) -> np.ndarray:
    """Keep-mask over records in log order: True for the first of each (span id, operation,
    data subject).

    A record repeated with all three is a copy of one record: a subject in two batches of
    one source, or a bundle retried under another name. Records that share only their
    span id are different records whose 8-byte ids collided (for a run of 60 M records
    about one chance in 10,000): both are kept. Two records of one subject and operation
    differ only in what the span id hashes besides (the source, the scheme, the signal):
    a collision among those (~1 in 10^11 for a national run) would still drop one, as
    telling them apart means reading every repeated record whole.
    """
    at = np.arange(len(ids), dtype=np.int64)
    table = pa.table({"id": ids, "name": names, "subject": subjects, "at": at})
    firsts = table.group_by(["id", "name", "subject"], use_threads=False).aggregate([("at", "min")])
    keep = np.zeros(len(ids), bool)
    keep[firsts.column("at_min").to_numpy()] = True
    return keep


def _first_occurrences(spans: list[np.ndarray], repeated: np.ndarray, read) -> np.ndarray:
    """Keep-mask over all parts' records (in log order): False for a copy of a record seen
    before. `spans` are the parts' span ids in log order, `repeated` the sorted ids that
    occur more than once, and `read(positions)` gives the operation names and subjects of
    the records at those (ascending) positions.

    One hash lookup of every record in the repeated ids (Arrow's is_in builds the table
    once); only the records that hit (at 10M persons 4.6 M of 62.7 M records) are read
    again and compared (`first_of_each`). np.unique with indices over all records peaked
    at 3.6 GB there; a sorted search part by part took 16 s.
    """
    total = sum(len(s) for s in spans)
    keep = np.ones(total, bool)
    if not len(repeated) or not total:
        return keep
    ids = pa.chunked_array([pa.array(s, pa.uint64()) for s in spans if len(s)], pa.uint64())
    hit = pc.is_in(ids, value_set=pa.array(repeated, pa.uint64()))
    where = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    candidates = ids.take(pa.array(where)).to_numpy()
    names, subjects = read(where)
    keep[where[~first_of_each(candidates, names, subjects)]] = False
    return keep


def _joined(columns: list[pa.ChunkedArray], type_: pa.DataType) -> pa.Array:
    return pa.chunked_array([c for col in columns for c in col.chunks], type_).combine_chunks()


def _value_counts(names: pa.ChunkedArray) -> dict[str, int]:
    return {d["values"]: d["counts"] for d in pc.value_counts(names.combine_chunks()).to_pylist()}


class AuditParts:
    """A run's audit parts in log order (part name, then span id), each span id once.

    A copy of a record seen before (same span id, operation and subject) is dropped: a
    subject in two batches of one source, or a bundle retried under another name. Only
    the span ids and operation names are read up front (a few bytes a record), and the
    subjects of records whose span id repeats; the records are streamed by `tables`.
    """

    SUMMARY = "_summary.npz"  # what __init__ found, for the next reader of the same parts

    def __init__(self, folder: Path):
        folder = Path(folder)
        self.folder = folder
        self.paths = sorted(folder.glob(f"*{PART_SUFFIX}")) if folder.is_dir() else []
        if not self._load_summary():
            self._scan()
            self._save_summary()

    def _scan(self) -> None:
        spans, counts = [], []
        for path in self.paths:
            table = read_part(path, ["span_id", "name"])
            # A copy: a view would keep each part's decoded columns alive.
            spans.append(span_numbers(table.column("span_id")).copy())
            counts.append(_value_counts(table.column("name")))
        self.sizes = [len(s) for s in spans]
        ids = np.concatenate(spans) if spans else np.zeros(0, np.uint64)
        # Sorted (in place), repeats sit side by side. A retried bundle repeats its
        # records, and an objector in two batches of objections their exclusion; only
        # those records are then looked at in log order (_first_occurrences).
        ids.sort()
        repeated = np.unique(ids[1:][ids[1:] == ids[:-1]])
        del ids
        self.keep = None
        self.records = sum(self.sizes)
        if len(repeated):
            self.keep = _first_occurrences(spans, repeated, self._names_and_subjects)
            self.records = int(self.keep.sum())
            counts = self._kept_counts(counts)
        del spans
        total: dict[str, int] = {}
        for part in counts:
            for name, n in part.items():
                total[name] = total.get(name, 0) + n
        self.per_operation = dict(sorted(total.items()))

    def _names_and_subjects(self, positions: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """Operation names and data subjects of the records at `positions` (ascending, in
        log order), reading only the parts that hold them."""
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        owners = np.searchsorted(starts, positions, side="right") - 1  # ascending
        held, first = np.unique(owners, return_index=True)
        ends = np.append(first[1:], len(positions)) if len(positions) else first
        names, subjects = [], []
        for part, a, b in zip(held, first, ends, strict=True):
            rows = positions[a:b] - starts[part]
            table = read_part(self.paths[part], ["name", "data_subject_pid"]).take(rows)
            names.append(table.column("name"))
            subjects.append(table.column("data_subject_pid"))
        return _joined(names, pa.string()), _joined(subjects, pa.string())

    def _load_summary(self) -> bool:
        """Take what a reader of these very parts found (finalise, then the log append).

        Parts are named after their contents, so the same names are the same records; a
        part added or removed since (a retried bundle) makes the summary stale.
        """
        try:
            with np.load(self.folder / self.SUMMARY, allow_pickle=False) as doc:
                if doc["parts"].tolist() != [p.name for p in self.paths]:
                    return False
                self.sizes = doc["sizes"].tolist()
                dropped = doc["dropped"]
                meta = json.loads(str(doc["meta"]))
        except (OSError, ValueError, KeyError):
            return False
        self.records, self.per_operation = meta["records"], meta["per_operation"]
        self.keep = None
        if len(dropped):
            self.keep = np.ones(sum(self.sizes), bool)
            self.keep[dropped] = False
        return True

    def _save_summary(self) -> None:
        if not self.folder.is_dir():
            return
        dropped = np.zeros(0, np.int64) if self.keep is None else np.flatnonzero(~self.keep)
        meta = json.dumps({"records": self.records, "per_operation": self.per_operation})
        with written_whole(self.folder / self.SUMMARY) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                parts=np.array([p.name for p in self.paths], dtype=str),
                sizes=np.array(self.sizes, np.int64),
                dropped=dropped,
                meta=np.array(meta),
            )

    def _all_span_ids(self) -> np.ndarray:
        """Every part's span ids, in log order, repeats included."""
        spans = [
            span_numbers(read_part(p, ["span_id"]).column("span_id")).copy() for p in self.paths
        ]
        return np.concatenate(spans) if spans else np.zeros(0, np.uint64)

    def _kept_counts(self, counts: list[dict[str, int]]) -> list[dict[str, int]]:
        """Records per operation name of each part, counting only the records kept."""
        kept, at = [], 0
        for path, size, whole in zip(self.paths, self.sizes, counts, strict=True):
            keep = self.keep[at : at + size]
            at += size
            if keep.all():
                kept.append(whole)
                continue
            names = read_part(path, ["name"]).column("name")
            kept.append(_value_counts(names.filter(pa.array(keep))))
        return kept

    def span_ids(self) -> np.ndarray:
        """The distinct span ids, sorted (to compare with what a log holds; read again)."""
        return np.unique(self._all_span_ids())

    def tables(self, chunk_rows: int):
        """AUDIT_SCHEMA tables of about `chunk_rows` records, in log order, repeats dropped."""
        for group, _ in self.plan(chunk_rows):
            yield read_group(group)

    def plan(self, chunk_rows: int) -> list[tuple[list[tuple[str, np.ndarray | None]], int]]:
        """The parts grouped into chunks of about `chunk_rows` records kept.

        Each chunk: its parts as (path, keep mask or None), and how many records it keeps.
        """
        groups, group, held, at = [], [], 0, 0
        for path, size in zip(self.paths, self.sizes, strict=True):
            keep = None if self.keep is None else self.keep[at : at + size]
            at += size
            if keep is not None and keep.all():
                keep = None  # filtering copies every record: ~1.4 s a process at 1M persons
            group.append((str(path), keep))
            held += size if keep is None else int(keep.sum())
            if held >= chunk_rows:
                groups.append((group, held))
                group, held = [], 0
        if group:
            groups.append((group, held))
        return groups

    def hashed_tables(self, chunk_rows: int, first_index: int, workers: int = 1):
        """(table, leaf hashes, subtrees) per chunk, in log order, leaves numbered from
        first_index.

        With workers > 1 each chunk's leaves (one SHA-256 a record: the largest part of
        appending a big run) and its Merkle subtrees (merkle.subtrees, one a node) are
        hashed in that many workers while the caller writes, so it only joins the chunks'
        subtrees. With the C hashing loop (sha256.NATIVE) the workers are threads that
        read each chunk for the caller too; else processes that read it for themselves,
        so that only hashes travel back. Hashed here, subtrees is None.
        """
        jobs, at = [], first_index  # (a chunk's parts, its first leaf)
        for group, rows in self.plan(chunk_rows):
            jobs.append((group, at))
            at += rows
        if workers <= 1 or len(jobs) <= 1:
            for group, first in jobs:
                table = read_group(group)
                yield table, leaf_hashes(table, first), None
            return
        if sha256.NATIVE:  # hashing releases the GIL: one read of each chunk serves both
            yield from in_order(hashed_group, jobs, workers, threads=True)
            return
        results = in_order(group_hashes, jobs, workers)
        for (group, _), (hashes, subtrees) in zip(jobs, results, strict=True):
            yield read_group(group), hashes, subtrees


def read_group(group: list[tuple[str, np.ndarray | None]]) -> pa.Table:
    """The records of a chunk's parts, repeats dropped, as one AUDIT_SCHEMA table."""
    tables = []
    for path, keep in group:
        table = read_part(Path(path))
        tables.append(table if keep is None else table.filter(pa.array(keep)))
    return pa.concat_tables(tables)


def group_hashes(
    group: list[tuple[str, np.ndarray | None]], first_index: int
) -> tuple[bytes, merkle.Subtrees]:
    """A chunk's leaf hashes and Merkle subtrees (run in a worker process by `hashed_tables`)."""
    _, hashes, subtrees = hashed_group(group, first_index)
    return hashes, subtrees


def hashed_group(
    group: list[tuple[str, np.ndarray | None]], first_index: int
) -> tuple[pa.Table, bytes, merkle.Subtrees]:
    """A chunk's records, their leaf hashes and their Merkle subtrees."""
    table = read_group(group)
    hashes = leaf_hashes(table, first_index)
    return table, hashes, merkle.subtrees(hashes, first_index)
