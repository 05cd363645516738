"""Rows shuffled through files come back as written, or fail with a message naming the file."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from pipelines.shuffle import load, spill_pieces

SCHEMA = pa.schema([("pid", pa.string()), ("n", pa.int64())])


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch([[f"p{i}" for i in range(n)], list(range(n))], schema=SCHEMA)


def test_each_piece_is_a_batch_of_one_file_and_loads_back_alone(tmp_path):
    batch = _batch(10)
    handles = spill_pieces(batch, [(0, 3), (3, 0), (3, 7)], tmp_path / "s")
    assert len({h.path for h in handles}) == 1  # one file for the whole batch
    assert [(h.batch, h.rows) for h in handles] == [(0, 3), (1, 0), (2, 7)]
    assert load([handles[2]], SCHEMA).column("n").to_pylist() == list(range(3, 10))
    assert load([handles[2], handles[0]], SCHEMA).num_rows == 10
    assert load([], SCHEMA).num_rows == 0


def test_a_file_that_changed_or_went_is_named_in_the_error(tmp_path):
    (handle,) = spill_pieces(_batch(4), [(0, 4)], tmp_path / "s")
    with pytest.raises(RuntimeError, match="holds 4 rows in batch 0, 5 were written"):
        load([dataclasses.replace(handle, rows=5)], SCHEMA)
    with pytest.raises(RuntimeError, match=f"shuffle file {handle.path} cannot be read"):
        load([dataclasses.replace(handle, batch=3)], SCHEMA)
    (tmp_path / "s").joinpath(handle.path.rsplit("/", 1)[1]).unlink()
    with pytest.raises(RuntimeError, match="reachable by every worker"):
        load([handle], SCHEMA)
