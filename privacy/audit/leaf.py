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
`leaf_hashes` computes the same bytes column-wise with Arrow for millions of records.
"""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privacy.audit import merkle
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


def _fixed(values: np.ndarray, width: int) -> pa.Array:
    """A binary array whose every value is the big-endian bytes of one number."""
    buffer = pa.py_buffer(np.ascontiguousarray(values).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buffer]).cast(
        pa.binary()
    )


def _prefixed(column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(length prefix, value) of a binary-like column, nulls as 0xFFFFFFFF and no bytes."""
    if pa.types.is_timestamp(column.type):
        micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        values = _fixed(micros.fill_null(0).to_numpy().astype(">i8"), 8)
        lengths = pc.if_else(pc.is_null(micros), NULL_LENGTH, 8)
    else:
        values = column.cast(pa.binary())
        lengths = pc.if_else(pc.is_null(values), NULL_LENGTH, pc.binary_length(values))
        values = values.fill_null(b"")
    lengths = lengths.cast(pa.uint32()).to_numpy(zero_copy_only=False).astype(">u4")
    return _fixed(lengths, 4), values


def leaf_hashes(table: pa.Table, first_index: int, chunk_rows: int = 100_000) -> bytes:
    """Leaf hashes of the records of `table` (AUDIT_SCHEMA columns), numbered from first_index.

    Returns the 32-byte hashes concatenated. The canonical bytes of every record are
    built column-wise with Arrow, a chunk at a time (bounded memory, 32-bit offsets);
    only the SHA-256 itself runs per record.
    """
    out = []
    for start in range(0, table.num_rows, chunk_rows):
        chunk = table.slice(start, chunk_rows)
        out.append(_chunk_hashes(chunk, first_index + start))
    return b"".join(out)


def _chunk_hashes(table: pa.Table, first_index: int) -> bytes:
    n = table.num_rows
    indices = np.arange(first_index, first_index + n, dtype=np.uint64).astype(">u8")
    parts = [pa.array([merkle.LEAF_PREFIX] * n, pa.binary())]
    parts += [_fixed(np.full(n, 8, dtype=">u4"), 4), _fixed(indices, 8)]
    for name in AUDIT_SCHEMA.names:
        parts.extend(_prefixed(table.column(name).combine_chunks()))
    joined = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)
    offsets = offsets[joined.offset : joined.offset + n + 1]
    return merkle.hash_prefixed(joined.buffers()[2], offsets.tolist())
