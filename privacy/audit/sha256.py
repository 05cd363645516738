"""SHA-256 of many messages at once: audit leaves, Merkle nodes and span ids.

The audit log hashes about two messages a record, 12 M at 1M persons. hashlib costs
~0.45 us a call on top of the hashing itself however it is driven, so the loop runs in
a small C extension (`_sha256many.c`, OpenSSL's SHA-256, the library hashlib uses, with
the GIL released): 0.43 us instead of 0.89 us a 575-byte leaf, 0.16 us instead of
0.61 us a 65-byte node, measured here. Where the extension could not be built (no C
compiler or OpenSSL headers when the package was installed) the same digests come from
hashlib, slower; `NATIVE` says which, and `signals bench` prints it.
"""

from __future__ import annotations

import hashlib

import numpy as np

try:
    from privacy.audit import _sha256many
except ImportError:  # built optionally (pyproject.toml): hashlib gives the same digests
    _sha256many = None

NATIVE = _sha256many is not None
SIZE = 32


def slices(data, offsets: np.ndarray, prefix: bytes = b"") -> bytes:
    """SHA-256(prefix || data[offsets[i]:offsets[i+1]]) for each i, concatenated.

    `offsets` is a 1-d int32 or int64 array, ascending, within `data`.
    """
    offsets = np.ascontiguousarray(offsets)
    if offsets.dtype not in (np.int32, np.int64):
        raise TypeError(f"offsets must be int32 or int64, not {offsets.dtype}")
    if _sha256many is not None:
        return _sha256many.slices(data, offsets, prefix)
    view, prefix = memoryview(data).cast("B"), _bytes(prefix)  # what the C code's y* takes
    if offsets.ndim != 1:
        raise TypeError("offsets must be a 1-d array of int32 or int64")
    if len(offsets) == 0:
        raise ValueError("offsets must hold at least one value")
    bounds = offsets.tolist()
    if bounds[0] < 0 or bounds[-1] > len(view) or (np.diff(offsets) < 0).any():
        raise ValueError("offsets lie outside the data or are not ascending")
    return _hashlib_each(prefix, (view[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)))


def chunks(data, width: int, prefix: bytes = b"") -> bytes:
    """SHA-256(prefix || chunk) for each consecutive `width`-byte chunk of data, concatenated."""
    if _sha256many is not None:
        return _sha256many.chunks(data, width, prefix)
    view, prefix = memoryview(data).cast("B"), _bytes(prefix)
    if width <= 0 or len(view) % width:
        raise ValueError(f"{len(view)} bytes are not whole chunks of {width}")
    return _hashlib_each(prefix, (view[i : i + width] for i in range(0, len(view), width)))


def gathered(n: int, pieces: list[tuple]) -> bytes:
    """SHA-256 of each of n records whose bytes are its pieces side by side, concatenated.

    A piece is (data, width): record i's bytes are data[i*width:(i+1)*width]; or (data,
    offsets, codes): value j is data[offsets[j]:offsets[j+1]], and record i's bytes are
    value codes[i] (int64), or value i when codes is None. Only with the C extension
    (NATIVE): without it, privacy/audit/leaf.py joins the pieces itself and calls slices.
    """
    if _sha256many is None:
        raise RuntimeError("gathered needs the C extension (sha256.NATIVE)")
    return _sha256many.gathered(n, pieces)


def _bytes(prefix) -> bytes:
    """A bytes-like prefix as bytes; str, None and the like refused, as by the C code."""
    return memoryview(prefix).cast("B").tobytes()


def _hashlib_each(prefix: bytes, messages) -> bytes:
    sha = hashlib.sha256
    if prefix:
        return b"".join([sha(prefix + m).digest() for m in messages])
    return b"".join([sha(m).digest() for m in messages])
