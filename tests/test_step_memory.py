"""The pipeline steps' DuckDB connections are bounded (pipelines/machine.step_connection):
a query past the limit spills to a folder of its own, which goes with the connection,
or fails with DuckDB's out-of-memory error, instead of taking the machine's memory."""

from __future__ import annotations

import tempfile

import duckdb
import pytest

from pipelines.machine import STEP_MEMORY_ENV, step_connection


def _setting(con, name: str) -> str:
    return con.sql(f"SELECT current_setting('{name}')").fetchall()[0][0]


def test_a_step_connection_has_one_thread_and_the_step_memory(monkeypatch):
    monkeypatch.delenv(STEP_MEMORY_ENV, raising=False)
    con = step_connection()
    assert _setting(con, "threads") == 1
    assert _setting(con, "memory_limit") == "1.8 GiB"  # 2 GB, as DuckDB writes it
    monkeypatch.setenv(STEP_MEMORY_ENV, "300MB")
    assert _setting(step_connection(), "memory_limit") == "286.1 MiB"


def test_a_query_past_the_limit_spills_to_its_own_folder_that_goes_with_the_connection(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(STEP_MEMORY_ENV, "64MB")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what gettempdir() answers
    con = step_connection()
    con.sql("CREATE TABLE t AS SELECT i, repeat('x', 100) AS s FROM range(2000000) r(i)")
    ordered = con.sql("SELECT count(*) FROM (SELECT * FROM t ORDER BY s, i DESC)")
    assert ordered.fetchall() == [(2_000_000,)]
    spilled = list(tmp_path.glob("signals-duckdb-*"))
    assert len(spilled) == 1 and any(spilled[0].iterdir())
    with pytest.raises(duckdb.OutOfMemoryException):  # a list cannot spill
        con.sql("SELECT list(s) FROM (SELECT repeat('x', 100) AS s FROM range(3000000))").fetchall()
    con.close()
    assert not list(tmp_path.glob("signals-duckdb-*"))


def test_a_memory_size_duckdb_cannot_read_is_named(monkeypatch):
    monkeypatch.setenv(STEP_MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match=f"{STEP_MEMORY_ENV}='lots'"):
        step_connection()
