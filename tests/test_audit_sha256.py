"""SHA-256 of many messages at once (privacy/audit/sha256.py): the C loop and its hashlib
stand-in give hashlib's digests, and refuse what does not describe the data."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from privacy.audit import sha256

IMPLEMENTATIONS = ["native", "hashlib"]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request, monkeypatch):
    if request.param == "native":
        if not sha256.NATIVE:
            pytest.skip("the C extension was not built here (see test_the_c_loop_is_built)")
    else:
        monkeypatch.setattr(sha256, "_sha256many", None)
    return sha256


def _reference(data: bytes, bounds: list[int], prefix: bytes = b"") -> bytes:
    pairs = zip(bounds[:-1], bounds[1:], strict=True)
    return b"".join(hashlib.sha256(prefix + data[a:b]).digest() for a, b in pairs)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("prefix", [b"", b"\x00", b"run-1|join|"])
def test_slices_match_hashlib_for_every_length(impl, dtype, prefix):
    rng = np.random.default_rng(7)
    lengths = np.concatenate([[0, 1, 55, 56, 63, 64, 65, 119, 120], rng.integers(0, 2000, 300)])
    data = rng.bytes(int(lengths.sum()) + 5)
    bounds = np.concatenate([[3], 3 + np.cumsum(lengths)]).astype(dtype)
    got = impl.slices(data, bounds, prefix)
    assert got == _reference(data, bounds.tolist(), prefix)
    assert len(got) == 32 * len(lengths)


def test_slices_read_a_memoryview_and_a_view_of_the_offsets(impl):
    data = os.urandom(1000)
    bounds = np.arange(0, 1001, 10, dtype=np.int64)[5:]  # a view, not starting at 0
    assert impl.slices(memoryview(data), bounds) == _reference(data, bounds.tolist())


@pytest.mark.parametrize("prefix", [b"", b"\x01"])
def test_chunks_match_hashlib(impl, prefix):
    data = os.urandom(64 * 257)
    expected = b"".join(
        hashlib.sha256(prefix + data[i : i + 64]).digest() for i in range(0, len(data), 64)
    )
    assert impl.chunks(data, 64, prefix) == expected
    assert impl.chunks(memoryview(data)[:0], 64, prefix) == b""


def test_no_message_gives_no_digest(impl):
    assert impl.slices(b"", np.zeros(1, np.int32)) == b""
    assert impl.slices(b"abc", np.array([2], np.int64)) == b""


@pytest.mark.parametrize(
    "bounds, error",
    [
        (np.array([0, 4], np.int32), ValueError),  # past the end
        (np.array([-1, 2], np.int64), ValueError),  # before the start
        (np.array([2, 1], np.int64), ValueError),  # descending
        (np.array([0.0, 1.0]), TypeError),  # not integers
        (np.array([0, 1], np.int16), TypeError),
    ],
)
def test_slices_refuse_offsets_that_do_not_describe_the_data(impl, bounds, error):
    with pytest.raises(error):
        impl.slices(b"abc", bounds)


def test_chunks_refuse_a_partial_chunk(impl):
    with pytest.raises(ValueError, match="whole chunks"):
        impl.chunks(b"abcde", 2)
    with pytest.raises(ValueError, match="whole chunks"):
        impl.chunks(b"abcd", 0)


# What the extension needs from the machine, asked of the compiler itself: wherever it finds
# OpenSSL's headers and library (not only /usr/include), the build would too.
_PROBE = """
#include <Python.h>
#include <openssl/evp.h>
int main(void) { return EVP_sha256() == NULL; }
"""


def _could_build(tmp_path: Path) -> bool:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False
    source = tmp_path / "probe.c"
    source.write_text(_PROBE)
    include = sysconfig.get_paths()["include"]
    probe = [compiler, str(source), f"-I{include}", "-lcrypto", "-o", str(tmp_path / "probe")]
    return subprocess.run(probe, capture_output=True).returncode == 0


def test_gathered_hashes_each_records_pieces_side_by_side():
    if not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    rng = np.random.default_rng(11)
    n = 200
    fixed = rng.bytes(n * 13)
    lengths = rng.integers(0, 300, n)
    varied = rng.bytes(int(lengths.sum()))
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = [b"", b"ingest", b"x" * 5000]  # longer than the C loop's first buffer
    value_bounds = np.cumsum([0] + [len(v) for v in values], dtype=np.int64)
    codes = rng.integers(0, len(values), n).astype(np.int64)
    pieces = [
        (fixed, 13),
        (b"".join(values), value_bounds, codes),
        (varied, bounds, None),
        (memoryview(fixed), 13),
    ]
    expected = b"".join(
        hashlib.sha256(
            fixed[i * 13 : (i + 1) * 13]
            + values[codes[i]]
            + varied[bounds[i] : bounds[i + 1]]
            + fixed[i * 13 : (i + 1) * 13]
        ).digest()
        for i in range(n)
    )
    assert sha256.gathered(n, pieces) == expected
    assert sha256.gathered(0, []) == b""
    assert sha256.gathered(2, []) == hashlib.sha256(b"").digest() * 2


def test_gathered_refuses_pieces_that_do_not_describe_the_records():
    if not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    bounds = np.array([0, 1, 3], np.int64)
    refused = [
        (ValueError, [(b"abc", 2)]),  # 3 bytes are not 2 records of 2
        (ValueError, [(b"abc", np.array([0, 3], np.int64), None)]),  # 1 value, 2 records
        (ValueError, [(b"abc", bounds, np.array([0, 2], np.int64))]),  # code 2 of 2 values
        (ValueError, [(b"abc", bounds, np.array([0, -1], np.int64))]),
        (TypeError, [(b"abc", bounds, np.array([0, 1], np.int32))]),  # codes not int64
        (TypeError, [(b"abc",)]),
        (TypeError, [b"abc"]),
        (ValueError, [(b"ab", np.array([0, 1, 3], np.int64), None)]),  # offset past the data
    ]
    for error, pieces in refused:
        with pytest.raises(error):
            sha256.gathered(2, pieces)


def test_the_c_loop_is_built_where_it_can_be(tmp_path):
    """The extension is optional (pyproject.toml): a build that fails for another reason
    than a missing compiler, OpenSSL or Python headers would otherwise go unnoticed, and
    every audit would quietly hash at hashlib's speed."""
    if not _could_build(tmp_path):
        pytest.skip("no C compiler, OpenSSL or Python headers here: the hashlib stand-in is used")
    assert sha256.NATIVE, "the C extension privacy/audit/_sha256many.c was not built"


def test_both_refuse_no_offsets_and_take_any_bytes_like_prefix(impl):
    with pytest.raises(ValueError):
        impl.slices(b"abc", np.array([], np.int64))
    with pytest.raises(TypeError):
        impl.slices(b"abc", np.zeros((2, 2), np.int64))
    expected = hashlib.sha256(b"pab").digest()
    assert impl.slices(b"abc", np.array([0, 2]), memoryview(b"p")) == expected
    assert impl.chunks(b"ab", 2, bytearray(b"p")) == expected
    for prefix in ("", None):
        with pytest.raises(TypeError):
            impl.chunks(b"ab", 2, prefix)


def test_the_c_loop_refuses_offsets_it_cannot_read_as_native_integers():
    """Called directly, past the wrapper's dtype check."""
    if not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    for bounds in (np.array([0, 1], ">i4"), np.array([0, 1], ">i8"), np.array([0, 1], np.uint32)):
        with pytest.raises(TypeError):
            sha256._sha256many.slices(b"abc", bounds)


_MOVING_OFFSETS = """
import threading, time, numpy as np
from privacy.audit import _sha256many
n = 2_000_000
offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int64)
def move():
    time.sleep(0.02)  # after the C code checked them, while it hashes without the GIL
    offsets[n - 10] = 1 << 45
threading.Thread(target=move).start()
try:
    _sha256many.slices(bytes(8 * n), offsets)
except ValueError:
    pass
"""


def test_offsets_written_by_another_thread_while_hashing_do_not_crash_it():
    import subprocess
    import sys

    if not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _MOVING_OFFSETS], cwd=root, capture_output=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def test_the_c_loop_is_not_older_than_its_source():
    """An optional build that fails leaves the module of an earlier build in place (an
    editable install builds it there), and that one is then imported without a word."""
    if not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    built = Path(sha256._sha256many.__file__)
    source = Path(sha256.__file__).with_name("_sha256many.c")
    if source.is_file():
        assert built.stat().st_mtime >= source.stat().st_mtime, f"{built.name} is stale: make"
