"""Per-record purpose audit: one record per data subject per operation, made inside the pipeline.

The record follows the data model of the Dutch standard Logboek Dataverwerkingen:
a trace id (16 bytes) for the run, an operation (span) id (8 bytes) per record, the
parent operation, name, status, times, the processing activity of the register, and
the data subject as a pseudonym. Ids are derived from run, operation and subject, so
a retried bundle or a rerun produces the same ids and duplicates can be dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

AUDIT_SCHEMA = pa.schema(
    [
        ("trace_id", pa.binary(16)),
        ("span_id", pa.binary(8)),
        ("parent_span_id", pa.binary(8)),
        ("name", pa.string()),
        ("status", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("end_time", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("processing_activity_id", pa.string()),
        ("register_version", pa.string()),
        ("data_subject_pid", pa.string()),
        ("attributes", pa.string()),  # canonical JSON: source, legal basis, rule, outcome...
    ]
)

OPERATIONS = ("ingest", "exclusion", "join", "rule_evaluation", "signal")


def trace_id(run_id: str) -> bytes:
    return hashlib.sha256(b"trace\x00" + run_id.encode()).digest()[:16]


def operation_span(run_id: str, operation: str) -> bytes:
    """The span of a whole operation in a run: the parent of its per-subject records."""
    return hashlib.sha256(f"op\x00{run_id}\x00{operation}".encode()).digest()[:8]


def canonical_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _span_ids(run_id: str, operation: str, keys: pa.Array) -> pa.Array:
    """8-byte ids: SHA-256 of (run, operation, key), computed vectorised in DuckDB."""
    con = duckdb.connect(config={"threads": 1})
    try:
        con.register("k", pa.table({"key": keys.cast(pa.string())}))
        prefix = f"{run_id}|{operation}|"
        ids = (
            con.sql(
                "SELECT unhex(left(sha256($prefix || key), 16)) AS id FROM k",
                params={"prefix": prefix},
            )
            .to_arrow_table()
            .column("id")
        )
    finally:
        con.close()
    return ids.combine_chunks().cast(pa.binary(8))


def audit_batch(
    context: AuditContext,
    operation: str,
    subjects: pa.Array,
    status: pa.Array | str,
    attributes: pa.Array | str,
    discriminator: pa.Array | None = None,
    started: dt.datetime | None = None,
) -> pa.RecordBatch:
    """Audit records for `subjects` (one each) under one operation.

    `discriminator` distinguishes several records of one subject in one operation
    (e.g. the scheme in rule evaluation); it defaults to the subject itself.
    """
    n = len(subjects)
    now = dt.datetime.now(dt.UTC)
    started = started or now
    keys = (
        subjects
        if discriminator is None
        else pc.binary_join_element_wise(subjects, discriminator, "\x00")
    )
    if isinstance(status, str):
        status = pa.array([status] * n, pa.string())
    if isinstance(attributes, str):
        attributes = pa.array([attributes] * n, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array([trace_id(context.run_id)] * n, pa.binary(16)),
            _span_ids(context.run_id, operation, keys),
            pa.array([operation_span(context.run_id, operation)] * n, pa.binary(8)),
            pa.array([operation] * n, pa.string()),
            status,
            pa.array(np.full(n, started), pa.timestamp("us", tz="UTC")),
            pa.array(np.full(n, now), pa.timestamp("us", tz="UTC")),
            pa.array([context.run_id] * n, pa.string()),
            pa.array([context.processing_activity_id] * n, pa.string()),
            pa.array([context.register_version] * n, pa.string()),
            subjects.cast(pa.string()),
            attributes,
        ],
        schema=AUDIT_SCHEMA,
    )


class AuditContext:
    """What every audit record of a run shares: run, processing activity, register version."""

    def __init__(self, run_id: str, processing_activity_id: str, register_version: str):
        self.run_id = run_id
        self.processing_activity_id = processing_activity_id
        self.register_version = register_version


class IngestAuditFn(beam.DoFn):
    """One `ingest` record per distinct subject of a source batch."""

    def __init__(self, context: AuditContext, source: str, subject: str, basis: dict):
        self.context, self.source, self.subject, self.basis = context, source, subject, basis

    def process(self, batch: pa.RecordBatch):
        subjects = pc.unique(batch.column(self.subject))
        attrs = canonical_json({"source": self.source, "legal_basis": self.basis})
        source = pa.array([self.source] * len(subjects), pa.string())
        yield audit_batch(self.context, "ingest", subjects, "accepted", attrs, discriminator=source)


def exclusion_audit(context: AuditContext):
    def make(pids: pa.Array):
        attrs = canonical_json({"reason": "objection", "scope": "all"})
        return audit_batch(context, "exclusion", pc.unique(pids), "excluded", attrs)

    return make


def join_audit(context: AuditContext):
    """One `join` record per household member: which household the subject was joined into."""

    def make(batch: pa.RecordBatch):
        members = pc.list_flatten(batch.column("member_pids"))
        households = pc.take(
            batch.column("household_pid"), pc.list_parent_indices(batch.column("member_pids"))
        )
        attrs = pc.binary_join_element_wise('{"household_pid":"', households, '"}', "")
        return audit_batch(context, "join", members, "joined", attrs)

    return make


def _json_fields(table: pa.Table, strings: tuple[str, ...], literals: tuple[str, ...]) -> pa.Array:
    """Canonical JSON objects built column-wise (keys sorted), without a per-row loop.

    `strings` are quoted values (pseudonyms, ids: no characters that need escaping);
    `literals` are numbers or booleans written as they are.
    """
    parts = []
    for name in sorted(strings + literals):
        col = pc.cast(table.column(name), pa.string())
        if name in strings:
            col = pc.binary_join_element_wise('"', col, '"', "")
        parts.append(pc.binary_join_element_wise(f'"{name}":', pc.fill_null(col, "null"), ""))
    return pc.binary_join_element_wise("{", pc.binary_join_element_wise(*parts, ","), "}", "")


def evaluation_records(
    context: AuditContext, evaluations: pa.Table, households: pa.Table
) -> pa.RecordBatch:
    """One record per household member per (scheme, year): rule, versions and outcome."""
    # Every evaluated household is in `households` (same batch): look members up by index.
    evaluated = evaluations.select(
        [
            "household_pid",
            "scheme",
            "benefit_year",
            "rule_id",
            "rule_version",
            "parameter_version",
            "entitled",
            "already_receiving",
        ]
    )
    at = pc.index_in(
        evaluated.column("household_pid"), value_set=households.column("household_pid")
    )
    members = households.column("member_pids").take(at).combine_chunks()
    per_member = evaluated.take(pc.list_parent_indices(members))
    attrs = _json_fields(
        per_member,
        ("household_pid", "scheme", "rule_id", "rule_version", "parameter_version"),
        ("benefit_year", "entitled", "already_receiving"),
    )
    status = pc.if_else(per_member.column("entitled"), "entitled", "not_entitled")
    disc = pc.binary_join_element_wise(
        per_member.column("scheme"), pc.cast(per_member.column("benefit_year"), pa.string()), "/"
    )
    return audit_batch(
        context,
        "rule_evaluation",
        pc.list_flatten(members),
        status.combine_chunks(),
        attrs.combine_chunks(),
        discriminator=disc.combine_chunks(),
    )


def signal_records(context: AuditContext, signals: pa.Table) -> pa.RecordBatch:
    """One `signal` record per signal, for its applicant: scheme, rule and amount."""
    attrs = _json_fields(
        signals,
        ("signal_id", "household_pid", "scheme", "rule_id", "rule_version", "parameter_version"),
        ("benefit_year", "estimated_annual_amount", "confidence", "repayment_risk"),
    )
    return audit_batch(
        context,
        "signal",
        signals.column("applicant_pid").combine_chunks(),
        "signalled",
        attrs.combine_chunks(),
        discriminator=signals.column("signal_id").combine_chunks(),
    )
