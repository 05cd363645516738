"""Canonical leaf bytes of an audit record: what the Merkle tree hashes, and how to recompute it.

Format `signals-audit-leaf/1`. A record's leaf bytes are its fields in this fixed order,
each written as a 4-byte big-endian length followed by that many bytes:

    leaf_index                8 bytes, unsigned big-endian: the record's position in the log
    trace_id                  16 bytes as stored
    span_id                   8 bytes as stored
    parent_span_id            8 bytes as stored
    name                      UTF-8
    status                    UTF-8
    start_time                8 bytes, signed big-endian microseconds since 1970-01-01T00:00Z
    end_time                  same
    run_id                    UTF-8
    processing_activity_id    UTF-8
    register_version          UTF-8
    data_subject_pid          UTF-8
    attributes                UTF-8 (canonical JSON: sorted keys, no spaces)

A null field is the length 0xFFFFFFFF with no bytes. The leaf hash is
SHA-256(0x00 || leaf bytes) (privacy/audit/merkle.py). Putting the leaf index in the
leaf binds every record to its position: a moved record no longer matches its hash.
`leaf_bytes` below is the reference, one record at a time, written for reading;
`leaf_hashes` computes the same bytes column-wise (Arrow, numpy) for millions of records.
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privacy.audit import merkle, sha256
from privacy.audit.schema import AUDIT_SCHEMA

LEAF_FORMAT = "signals-audit-leaf/1"
NULL_LENGTH = 0xFFFFFFFF
LEAF_FIELDS = ("leaf_index",) + tuple(AUDIT_SCHEMA.names)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _field(value) -> bytes:
    if value is None:
        return struct.pack(">I", NULL_LENGTH)
    if isinstance(value, dt.datetime):
        data = struct.pack(">q", _micros(value))
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = bytes(value)
    return struct.pack(">I", len(data)) + data


def leaf_bytes(leaf_index: int, record: dict) -> bytes:
    """The canonical bytes of one record (a dict with the AUDIT_SCHEMA fields)."""
    parts = [struct.pack(">I", 8) + struct.pack(">Q", leaf_index)]
    parts += [_field(record[name]) for name in AUDIT_SCHEMA.names]
    return b"".join(parts)


# Building the leaf bytes column-wise. Arrow joins binary columns element-wise at a cost per
# column and record, so neighbouring columns are merged first: fixed-width ones (ids, times,
# length prefixes, equal-length pseudonyms) side by side in one numpy record array, and
# low-cardinality ones (name, status, run, register) as one code into the table of their
# combinations. A chunk of a run's records then joins a handful of arrays instead of 27
# (figures in docs/scaling.md, seventh round).
_COMBINATIONS = 4096  # the most value combinations of neighbouring coded columns merged
_NO_SEPARATOR = pa.scalar(b"", pa.binary())
_CODED = {"name", "status", "run_id", "processing_activity_id", "register_version"}
_SMALL = 10_000  # batches smaller than this are combined: each costs ~0.5 ms however small


class _Coded(NamedTuple):
    """A column (or neighbouring columns) as one code a record into the bytes of each value."""

    codes: np.ndarray
    values: list[bytes]


class _Block(list):
    """Fixed-width fields of every record: (numpy dtype, values), written side by side."""

    def dtype(self) -> np.dtype:
        return np.dtype([(f"f{i}", d) for i, (d, _) in enumerate(self)])

    def rows(self, n: int) -> np.ndarray:
        """The records' fields side by side: n rows of a numpy record type."""
        rows = np.empty(n, self.dtype())
        for i, (_, values) in enumerate(self):
            rows[f"f{i}"] = values
        return rows

    def binary(self, n: int) -> pa.Array:
        width = self.dtype().itemsize
        if (n + 1) * width >= 2**31:  # the offsets are 32-bit
            raise ValueError(f"{n:,} records of {width} bytes are too many for one chunk")
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.BinaryArray.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(self.rows(n))]
        )


def _length(lengths, nulls: np.ndarray | None = None):
    return (">u4", lengths if nulls is None else np.where(nulls, NULL_LENGTH, lengths))


def _bytes(data: np.ndarray, n: int, width: int):
    return (("u1", (width,)), data.reshape(n, width))


def _pieces(column: pa.Array, name: str) -> list:
    """A column's length prefix and bytes: a _Block, _Coded, or a binary array."""
    n = len(column)
    if pa.types.is_timestamp(column.type):
        micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        if not micros.null_count:
            return [_Block([_length(8), (">i8", micros.to_numpy())])]
        block = _Block([(">i8", micros.fill_null(0).to_numpy(zero_copy_only=False))])
        column = pc.if_else(micros.is_null(), pa.scalar(None, pa.binary()), block.binary(n))
    if pa.types.is_fixed_size_binary(column.type) and not column.null_count:
        width = column.type.byte_width
        data = np.frombuffer(column.buffers()[1], np.uint8)
        data = data[column.offset * width : (column.offset + n) * width]
        return [_Block([_length(width), _bytes(data, n, width)])]
    if name in _CODED:
        encoded = column.dictionary_encode(null_encoding="encode")
        values = [_field(v) for v in encoded.dictionary.to_pylist()]
        return [_Coded(encoded.indices.to_numpy(zero_copy_only=False), values)]
    binary = column.cast(pa.binary())
    offsets = _offsets(binary)
    lengths = np.diff(offsets)
    if not binary.null_count and n and (lengths == lengths[0]).all():  # equal lengths
        data = np.frombuffer(binary.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        return [_Block([_length(lengths[0]), _bytes(data, n, int(lengths[0]))])]
    nulls = binary.is_null().to_numpy(zero_copy_only=False) if binary.null_count else None
    return [_Block([_length(lengths, nulls)]), binary.fill_null(b"")]


def _offsets(binary: pa.Array) -> np.ndarray:
    """The n + 1 int32 offsets of a binary array's values into its data buffer."""
    at = binary.offset
    return np.frombuffer(binary.buffers()[1], np.int32)[at : at + len(binary) + 1]


def _merged(pieces: list) -> list:
    """Neighbouring blocks as one, neighbouring coded columns as one code."""
    out = []
    for piece in pieces:
        last = out[-1] if out else None
        if isinstance(piece, _Block) and isinstance(last, _Block):
            last.extend(piece)
        elif (
            isinstance(piece, _Coded)
            and isinstance(last, _Coded)
            and len(last.values) * len(piece.values) <= _COMBINATIONS
        ):
            codes = last.codes.astype(np.int64) * len(piece.values) + piece.codes
            out[-1] = _Coded(codes, [a + b for a in last.values for b in piece.values])
        else:
            out.append(piece)
    return out


def _binary(piece, n: int) -> pa.Array:
    if isinstance(piece, _Block):
        return piece.binary(n)
    if isinstance(piece, _Coded):
        return pa.array(piece.values, pa.binary()).take(pa.array(piece.codes))
    return piece


def leaf_hashes(table: pa.Table, first_index: int, chunk_rows: int = 100_000) -> bytes:
    """Leaf hashes of the records of `table` (AUDIT_SCHEMA columns), numbered from first_index.

    Returns the 32-byte hashes concatenated. A chunk at a time (bounded memory, 32-bit
    offsets), the columns are cut into pieces with Arrow and numpy; the C extension then
    gathers each record's leaf from them and hashes it (sha256.gathered). Without it the
    pieces are joined into every leaf column-wise first, for sha256.slices: 4.1 -> 3.3 s
    a thread for a 1M-person run's 3.76 M leaves, measured here.
    """
    # Cast first: a dictionary or string_view column would be encoded differently below.
    table = table.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA)
    out, at = [], first_index
    for chunk in _chunks(table, chunk_rows):
        out.append(_chunk_hashes(chunk, at))
        at += chunk.num_rows
    return b"".join(out)


def _chunks(table: pa.Table, chunk_rows: int):
    """Record batches of at most chunk_rows: large ones as they are (a batch's columns are
    whole, nothing is copied), runs of small ones combined."""
    run, held = [], 0
    for batch in table.to_batches():
        for start in range(0, batch.num_rows, chunk_rows):
            piece = batch.slice(start, chunk_rows)
            if run and (held + piece.num_rows > chunk_rows or piece.num_rows >= _SMALL):
                yield _combined(run)
                run, held = [], 0
            if piece.num_rows >= _SMALL:
                yield piece
            else:
                run.append(piece)
                held += piece.num_rows
    if run:
        yield _combined(run)


def _combined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _gathered(piece, n: int) -> tuple:
    """A piece as the C loop takes it (sha256.gathered): (data, width) or (data, offsets, codes)."""
    if isinstance(piece, _Block):
        rows = piece.rows(n)
        return rows.view(np.uint8), rows.dtype.itemsize
    if isinstance(piece, _Coded):
        values = np.frombuffer(b"".join(piece.values), np.uint8)
        offsets = np.cumsum([0] + [len(v) for v in piece.values], dtype=np.int64)
        return values, offsets, piece.codes.astype(np.int64, copy=False)
    data = piece.buffers()[2]  # None when every value is empty
    values = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    return values, _offsets(piece)


def _chunk_hashes(batch: pa.RecordBatch, first_index: int) -> bytes:
    n = batch.num_rows
    if not n:
        return b""
    indices = np.arange(first_index, first_index + n, dtype=np.uint64)
    pieces = [_Block([("u1", merkle.LEAF_PREFIX[0]), _length(8), (">u8", indices)])]
    for name in AUDIT_SCHEMA.names:
        pieces += _pieces(batch.column(name), name)
    if sha256.NATIVE:  # each leaf gathered from the pieces in C, never joined whole
        return sha256.gathered(n, [_gathered(p, n) for p in _merged(pieces)])
    arrays = [_binary(p, n) for p in _merged(pieces)]
    joined = arrays[0] if len(arrays) == 1 else pc.binary_join_element_wise(*arrays, _NO_SEPARATOR)
    return sha256.slices(
        joined.buffers()[2], _offsets(joined)
    )  # each leaf starts with its 0x00 prefix
