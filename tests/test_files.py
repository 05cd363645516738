"""privacy/files.py: files put in place whole, owner-only from their first byte when private."""

import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privacy.files import PRIVATE_MODE, written_whole


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """Files created as readable by everyone unless created otherwise (umask 0)."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_file_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "out.json"
    with written_whole(target) as tmp:
        tmp.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_copy(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with written_whole(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_private_file_is_owner_only_before_its_first_byte(tmp_path, open_umask):
    target = tmp_path / "worklist.parquet"
    with written_whole(target, private=True) as tmp:
        assert mode(tmp) == PRIVATE_MODE  # before anything is written
        pq.write_table(pa.table({"bsn": ["111222333"]}), tmp)
        assert mode(tmp) == PRIVATE_MODE
    assert mode(target) == PRIVATE_MODE
    assert pq.read_table(target).column("bsn").to_pylist() == ["111222333"]


def test_a_leftover_of_a_killed_writer_does_not_lend_its_mode(tmp_path, open_umask):
    target = tmp_path / "keyring.json"
    leftover = tmp_path / ".keyring.json.tmp"
    leftover.write_text("half")
    os.chmod(leftover, 0o644)
    with written_whole(target, private=True) as tmp:
        assert tmp == leftover and mode(tmp) == PRIVATE_MODE
        tmp.write_text("whole")
    assert mode(target) == PRIVATE_MODE and target.read_text() == "whole"


def test_a_writer_that_replaces_the_file_still_leaves_it_private(tmp_path, open_umask):
    target = tmp_path / "key.json"
    with written_whole(target, private=True) as tmp:
        other = tmp_path / "elsewhere"
        other.write_text("secret")
        os.replace(other, tmp)  # the writer put its own file, mode 0666, in place
    assert mode(target) == PRIVATE_MODE


def test_shared_writers_of_one_path_do_not_share_a_temporary_file(tmp_path):
    target = tmp_path / "part-1.parquet"
    with written_whole(target, shared=True) as first, written_whole(target, shared=True) as second:
        assert first != second
        first.write_text("same rows")
        second.write_text("same rows")
    assert target.read_text() == "same rows"
    assert [p.name for p in tmp_path.iterdir()] == ["part-1.parquet"]
