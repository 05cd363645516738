"""Questions auditors ask of the log, answered with DuckDB over the committed segments.

Why was this record processed, under which legal basis, for which purpose, with which
outcome: every record names its operation (`name`), outcome (`status`), processing
activity (`processing_activity_id`, the register entry, at `register_version`), run, and
in `attributes` (canonical JSON) the sources and their legal bases (ingest), the rule, its
version and parameter version (rule evaluation, signal), the household joined into, and
so on. Filters combine with AND; only segments covered by a signed checkpoint are read.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from privacy.audit.log import AuditLog, AuditLogError

COLUMNS = (
    "leaf_index",
    "start_time",
    "end_time",
    "run_id",
    "name",
    "status",
    "data_subject_pid",
    "processing_activity_id",
    "register_version",
    "attributes",
    "trace_id",
    "span_id",
    "parent_span_id",
)
GROUPABLE = ("name", "status", "run_id", "processing_activity_id", "register_version", "scheme")


@dataclass(frozen=True)
class Filters:
    purpose: str | None = None
    legal_basis: str | None = None
    scheme: str | None = None
    run: str | None = None
    operation: str | None = None
    status: str | None = None
    subject: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive

    def where(self) -> tuple[str, dict]:
        """The WHERE clause and its parameters (values are bound, never pasted into SQL)."""
        terms, params = ["TRUE"], {}
        # With a scheme, a rule evaluation's status is its outcome for that scheme.
        status = _SCHEME_STATUS if self.scheme is not None else "status"
        for column, name in (
            ("processing_activity_id", "purpose"),
            ("run_id", "run"),
            ("name", "operation"),
            (status, "status"),
            ("data_subject_pid", "subject"),
        ):
            if getattr(self, name) is not None:
                terms.append(f"{column} = ${name}")
                params[name] = getattr(self, name)
        if self.scheme is not None:
            # A rule_evaluation record lists every scheme evaluated for its subject.
            terms.append(
                "(json_extract_string(attributes, '$.scheme') = $scheme OR list_contains("
                "json_extract_string(attributes, '$.evaluations[*].scheme'), $scheme))"
            )
            params["scheme"] = self.scheme
        if self.legal_basis is not None:
            # The basis is text or a list of citations: match any part of it, any case. An
            # ingest record gives the basis of each source read (`sources`), a signal that of
            # every source field its rule read (`fields_used`).
            terms.append(
                "concat_ws(' ', CAST(json_extract(attributes, '$.legal_basis') AS VARCHAR), "
                "CAST(json_extract(attributes, '$.sources.*.legal_basis') AS VARCHAR), "
                "CAST(json_extract(attributes, '$.fields_used') AS VARCHAR)) "
                "ILIKE '%' || $legal_basis || '%'"
            )
            params["legal_basis"] = self.legal_basis
        if self.since is not None:
            terms.append("start_time >= CAST($since AS DATE)")
            params["since"] = self.since.isoformat()
        if self.until is not None:
            terms.append("start_time < CAST($until AS DATE) + INTERVAL 1 DAY")
            params["until"] = self.until.isoformat()
        return " AND ".join(terms), params


def _source(log_root: Path, filters: Filters) -> tuple[str, str, dict]:
    """(FROM, WHERE, their parameters) for the committed segments and the filters."""
    files = [str(p) for p in AuditLog(log_root).committed_segments()]
    if not files:
        raise AuditLogError(f"{log_root}: the audit log holds no checkpoint yet")
    where, params = filters.where()
    return "read_parquet($files)", where, params | {"files": files}


def _segments_read(func):
    """A segment gone or cut short ends a read in one line, not DuckDB's traceback: the
    reader was warned that the log is not as signed, and `verify` says more."""

    @functools.wraps(func)
    def read(log_root: Path, *args, **kwargs):
        try:
            return func(log_root, *args, **kwargs)
        except (duckdb.IOException, duckdb.InvalidInputException) as e:
            raise AuditLogError(
                f"{log_root}: a segment of the audit log cannot be read "
                f"({str(e).splitlines()[0]}); `signals audit verify` names what changed"
            ) from None

    return read


@_segments_read
def select(log_root: Path, filters: Filters, limit: int | None = None) -> tuple[pa.Table, int]:
    """Matching records in log order (at most `limit`) and how many match in all."""
    source, where, params = _source(log_root, filters)
    con = duckdb.connect()
    try:
        count = con.sql(f"SELECT COUNT(*) AS n FROM {source} WHERE {where}", params=params)
        total = count.to_arrow_table().column("n")[0].as_py()
        cap = f"LIMIT {int(limit)}" if limit is not None else ""
        rows = con.sql(
            f"SELECT {', '.join(COLUMNS)} FROM {source} WHERE {where} ORDER BY leaf_index {cap}",
            params=params,
        ).to_arrow_table()
    finally:
        con.close()
    return rows, total


# DuckDB's memory for an export. Without a limit it takes what it may (80% of the machine)
# to keep the rows in order: 11.5 GB for the 37 M ingest records of a 10M-person log,
# where 1 GB gave the same file in 49 s.
EXPORT_MEMORY = "1GB"


def export_records(log_root: Path, filters: Filters, path: Path) -> int:
    """The matching records, in log order, written to Parquet at `path` by DuckDB as it
    reads them (a broad selection of a national log holds tens of millions of records,
    more than fit in memory). Returns how many were written."""
    source, where, params = _source(log_root, filters)
    target = str(path).replace("'", "''")
    config = {"preserve_insertion_order": True, "memory_limit": EXPORT_MEMORY}  # log order
    with tempfile.TemporaryDirectory(prefix=".export-spill-", dir=Path(path).parent) as spill:
        con = duckdb.connect(config=config | {"temp_directory": spill})
        try:
            written = con.execute(
                f"COPY (SELECT {', '.join(COLUMNS)} FROM {source} WHERE {where}) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)",
                params,
            )
            return written.fetchall()[0][0]
        finally:
            con.close()


# A rule_evaluation record covers every scheme evaluated for its household; its status says
# whether any held. Counted for one scheme, it is that scheme's outcome that counts (a
# record of one scheme only, without an evaluations list, has its own status).
_SCHEME_STATUS = (
    "CASE WHEN name <> 'rule_evaluation' OR json_extract(attributes, '$.evaluations') IS NULL "
    "THEN status WHEN list_bool_or(list_transform(from_json("
    'json_extract(attributes, \'$.evaluations\'), \'[{"scheme":"VARCHAR","entitled":'
    "\"BOOLEAN\"}]'), lambda e: e.scheme = $scheme AND e.entitled)) THEN 'entitled' "
    "ELSE 'not_entitled' END"
)


def _group_expression(group: str, filters: Filters) -> str:
    if group == "scheme" and filters.scheme is not None:
        return "$scheme AS scheme"  # every record it selects concerns that scheme
    if group == "scheme":  # a rule evaluation covers several: no one scheme (shown as -)
        return "json_extract_string(attributes, '$.scheme') AS scheme"
    if group == "status" and filters.scheme is not None:
        return f"{_SCHEME_STATUS} AS status"
    return group


@_segments_read
def count_by(log_root: Path, filters: Filters, groups: list[str]) -> pa.Table:
    """Record counts per combination of `groups` (columns, or `scheme` from the attributes).

    With a scheme filter, a rule_evaluation record counts under its outcome for that
    scheme (`entitled`, `not_entitled`), not under its household-wide status."""
    bad = [g for g in groups if g not in GROUPABLE]
    if bad:
        raise AuditLogError(f"cannot count by {', '.join(bad)}: choose from {', '.join(GROUPABLE)}")
    if len(set(groups)) < len(groups):
        raise AuditLogError(f"count by each field once: {', '.join(groups)}")
    source, where, params = _source(log_root, filters)
    exprs = [_group_expression(g, filters) for g in groups]
    names = ", ".join(str(i) for i in range(1, len(groups) + 1))  # the expressions, by place
    con = duckdb.connect()
    try:
        return con.sql(
            f"SELECT {', '.join(exprs)}, COUNT(*) AS records FROM {source} WHERE {where} "
            f"GROUP BY {names} ORDER BY {names}",
            params=params,
        ).to_arrow_table()
    finally:
        con.close()
