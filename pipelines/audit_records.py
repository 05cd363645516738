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
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from privacy.audit import sha256
from privacy.audit.parts import write_part
from privacy.audit.schema import AUDIT_SCHEMA, CODED_SCHEMA

# The operations whose records the pipeline makes (privacy/audit/events.py lists them all).
OPERATIONS = (
    "ingest",
    "exclusion",
    "join",
    "rule_evaluation",
    "proportionality",
    "signal",
    "resolution",
)


def trace_id(run_id: str) -> bytes:
    return hashlib.sha256(b"trace\x00" + run_id.encode()).digest()[:16]


def operation_span(run_id: str, operation: str) -> bytes:
    """The span of a whole operation in a run: the parent of its per-subject records."""
    return hashlib.sha256(f"op\x00{run_id}\x00{operation}".encode()).digest()[:8]


def canonical_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _span_ids(context: AuditContext, operation: str, keys: pa.Array) -> pa.Array:
    """8-byte ids: the first 8 bytes of SHA-256(run|operation|key), hashed in one call."""
    n = len(keys)
    if keys.null_count:
        raise ValueError(f"{operation}: {keys.null_count} audit record(s) without a data subject")
    binary = keys.cast(pa.string()).cast(pa.binary())  # the same bytes: no copy
    data = binary.buffers()[2] or b""
    offsets = np.frombuffer(binary.buffers()[1], np.int32)[binary.offset : binary.offset + n + 1]
    digests = sha256.slices(data, offsets, f"{context.run_id}|{operation}|".encode())
    ids = np.frombuffer(digests, np.uint8).reshape(n, sha256.SIZE)[:, :8]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(8), n, [None, pa.py_buffer(np.ascontiguousarray(ids))]
    )


def audit_batch(
    context: AuditContext,
    operation: str,
    subjects: pa.Array,
    status: pa.Array | str,
    attributes: pa.Array | str,
    discriminator: pa.Array | None = None,
    started: dt.datetime | None = None,
    rows: pa.Array | None = None,
) -> pa.RecordBatch:
    """Audit records for `subjects` (one each) under one operation, in span-id order.

    `discriminator` distinguishes several records of one subject in one operation (e.g.
    the signal of a `signal` record); it defaults to the subject itself. With `rows`,
    record i takes its status and attributes from position rows[i] of those arrays
    (records that share long attributes are built once and picked, in one pass with the
    sort); the attributes then stay coded (CODED_SCHEMA): a record points at its text
    instead of holding a copy.
    Span-id order makes a batch the same whatever order its subjects came in
    (privacy/audit/parts.py names and concatenates parts on it).
    """
    subjects, discriminator, rows = _whole(subjects), _whole(discriminator), _whole(rows)
    status, attributes = _whole(status), _whole(attributes)
    n = len(subjects)
    now = dt.datetime.now(dt.UTC)
    started = started or now
    keys = (
        subjects
        if discriminator is None
        else pc.binary_join_element_wise(subjects, discriminator, "\x00")
    )
    spans = _span_ids(context, operation, keys)
    order = span_order(spans)
    picks = order if rows is None else pc.take(rows, order)

    def same(value, field: str) -> pa.Array:
        # One value for every record, repeated in C++ (a Python list of n costs ~1 s per 1M).
        return pa.repeat(pa.scalar(value, AUDIT_SCHEMA.field(field).type), n)

    def picked(value, field: str) -> pa.Array:
        return same(value, field) if isinstance(value, str) else pc.take(value, picks)

    coded = rows is not None and not isinstance(attributes, str)
    if coded:  # copying the picked texts was ~1 s of a 1M-person run (ingest, rule_evaluation)
        texts = pa.DictionaryArray.from_arrays(picks.cast(pa.int32()), attributes)
    else:
        texts = picked(attributes, "attributes")
    return pa.RecordBatch.from_arrays(
        [
            same(trace_id(context.run_id), "trace_id"),
            pc.take(spans, order),
            same(operation_span(context.run_id, operation), "parent_span_id"),
            same(operation, "name"),
            picked(status, "status"),
            same(started, "start_time"),
            same(now, "end_time"),
            same(context.run_id, "run_id"),
            same(context.processing_activity_id, "processing_activity_id"),
            same(context.register_version, "register_version"),
            pc.take(subjects, order).cast(pa.string()),
            texts,
        ],
        schema=CODED_SCHEMA if coded else AUDIT_SCHEMA,
    )


def _whole(values):
    """A column in one piece (a record batch holds arrays, and the ids hash one buffer)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def span_order(spans: pa.Array) -> pa.Array:
    """Positions that sort 8-byte span ids as bytes (big-endian numbers sort the same)."""
    if len(spans) == 0:
        return pa.array([], pa.int64())
    raw = np.frombuffer(spans.buffers()[1], dtype=">u8")[spans.offset : spans.offset + len(spans)]
    return pa.array(np.argsort(raw, kind="stable"))


class AuditContext:
    """What every audit record of a run shares: run, processing activity, register version."""

    def __init__(self, run_id: str, processing_activity_id: str, register_version: str):
        self.run_id = run_id
        self.processing_activity_id = processing_activity_id
        self.register_version = register_version


class IngestRecords:
    """One `ingest` record per data subject of a join bucket, naming every source read for them.

    Made where a subject's rows from all sources meet, the join bucket
    (pipelines/join.py), so a subject delivered by four sources has one record, not four:
    one record per data subject per operation. `sources` maps each table of the bucket to
    (source name, subject column); `bases` gives each source's purpose, legal basis,
    assumption and conditions (privacy/purpose_check.py `ingest_bases`). The attributes
    are `{"sources":{"<source>":{<basis>},...}}` for the sources holding a row of the
    subject; they are made once per combination of sources and picked per record.
    """

    def __init__(
        self, context: AuditContext, bases: dict[str, dict], sources: dict[str, tuple[str, str]]
    ):
        self.context, self.bases, self.sources = context, bases, sources

    def __call__(self, tables: dict[str, pa.Table]) -> pa.RecordBatch:
        columns = [
            _whole(tables[tag].column(col)).cast(pa.string())
            for tag, (_, col) in self.sources.items()
        ]
        # One hash pass over every row: each subject's code, then a bit per source held.
        coded = pa.chunked_array(columns, pa.string()).dictionary_encode().combine_chunks()
        codes = coded.indices.to_numpy(zero_copy_only=False)
        held = np.zeros(len(coded.dictionary), np.int64)
        at = 0
        for i, column in enumerate(columns):
            held[codes[at : at + len(column)]] |= 1 << i
            at += len(column)
        combos, picks = np.unique(held, return_inverse=True)
        names = [name for name, _ in self.sources.values()]
        attrs = [
            canonical_json(
                {
                    "sources": {
                        name: self.bases.get(name, {})
                        for i, name in enumerate(names)
                        if combo & (1 << i)
                    }
                }
            )
            for combo in combos.tolist()
        ]
        return audit_batch(
            self.context,
            "ingest",
            coded.dictionary,
            "accepted",
            pa.array(attrs, pa.string()),
            rows=pa.array(picks.astype(np.int64)),
        )


def exclusion_audit(context: AuditContext, sources: tuple[str, ...] = ()):
    """One `exclusion` record per person who objected to all processing. Every row of the
    person-keyed `sources` is read and checked against the objections, and the person's
    rows, wherever they had one, dropped before the join: the record names those sources,
    so a subject access answer says their data was read, not only that they were left out.
    (Which of them held a row of the person is not known without keeping more about them.)"""

    def make(pids: pa.Array):
        attrs = canonical_json(
            {"reason": "objection", "scope": "all", "sources_checked": sorted(sources)}
        )
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
    The object is joined in one pass from its keys and values: joining each member first
    and then the members copied every string three times (a third of the time per record).
    """
    pieces = []
    for i, name in enumerate(sorted(strings + literals)):
        col = pc.cast(table.column(name), pa.string())
        col = json_strings(col) if name in strings else pc.fill_null(col, "null")
        pieces += [("{" if i == 0 else ",") + f'"{name}":', col]
    return pc.binary_join_element_wise(*pieces, "}", "")


def json_strings(column) -> pa.Array:
    """A string column as JSON strings, null as null (values that need no escaping)."""
    return pc.fill_null(pc.binary_join_element_wise('"', column, '"', ""), "null")


def scheme_years(table: pa.Table) -> pa.Array:
    """`<scheme>/<benefit_year>` a row: an evaluation's scheme and year as one key."""
    year = pc.cast(table.column("benefit_year"), pa.string())
    return pc.binary_join_element_wise(table.column("scheme"), year, "/")


_EVALUATION_STRINGS = ("scheme", "rule_id", "rule_version", "parameter_version")
_EVALUATION_LITERALS = ("benefit_year", "entitled", "already_receiving")


def evaluation_records(
    context: AuditContext, evaluations: pa.Table, households: pa.Table
) -> pa.RecordBatch:
    """One `rule_evaluation` record per household member: every scheme evaluated for them.

    Rule evaluation is one operation on the subject; its attributes list each (scheme,
    year) with rule id and version, parameter version and outcome, in scheme order:
    `{"evaluations":[{...},...],"household_pid":"..."}`. Status: `entitled` when any
    scheme held, else `not_entitled`.
    """
    n = evaluations.num_rows
    # Every evaluated household is in `households` (same batch): its position there.
    home = pc.index_in(
        evaluations.column("household_pid"), value_set=households.column("household_pid")
    )
    if home.null_count:
        raise ValueError(f"{home.null_count} evaluation(s) of households not in the batch")
    home = home.to_numpy(zero_copy_only=False).astype(np.int64)
    # An evaluation's JSON holds no household field: a run has a few dozen distinct ones
    # (scheme x year x outcome), each built once and picked. Building it per row, and
    # sorting on the household pseudonyms, was two thirds of this (100 -> 50 ms a bucket
    # of 23,500 households).
    combination, example = combinations(evaluations, _EVALUATION_STRINGS + _EVALUATION_LITERALS)
    examples = evaluations.take(pa.array(example))
    each = _json_fields(examples, _EVALUATION_STRINGS, _EVALUATION_LITERALS).combine_chunks()
    # Ranked by (scheme, year) alone, equal pairs equal: the sort below is stable, so rows
    # that tie keep their input order, as they did when sorted on the columns.
    schemes, years = examples["scheme"].to_pylist(), examples["benefit_year"].to_pylist()
    keys = [(_last(s), _last(y)) for s, y in zip(schemes, years, strict=True)]
    dense = {key: r for r, key in enumerate(sorted(set(keys)))}
    rank = np.array([dense[key] for key in keys], np.int64)
    order = np.lexsort((rank[combination], home))  # by household, then scheme and year
    home, combination = home[order], combination[order]
    starts = np.flatnonzero(np.diff(home, prepend=-1)) if n else np.zeros(0, np.int64)
    offsets = pa.array(np.append(starts, n).astype(np.int32))
    listed = pc.binary_join(pa.ListArray.from_arrays(offsets, each.take(combination)), ",")
    at = pa.array(home[starts])
    attrs = pc.binary_join_element_wise(
        '{"evaluations":[',
        listed,
        '],"household_pid":"',
        households.column("household_pid").take(at),
        '"}',
        "",
    )
    entitled = examples.column("entitled").fill_null(False).to_numpy(zero_copy_only=False)
    held = np.logical_or.reduceat(entitled[combination], starts) if n else np.zeros(0, bool)
    status = pc.if_else(pa.array(held, pa.bool_()), "entitled", "not_entitled")
    members = households.column("member_pids").take(at).combine_chunks()
    per_member = pc.list_parent_indices(members)
    return audit_batch(
        context, "rule_evaluation", pc.list_flatten(members), status, attrs, rows=per_member
    )


def _last(value) -> tuple:
    """A sort key putting None after every value, as Arrow's sort does."""
    return (value is None, value if value is not None else 0)


def combinations(table: pa.Table, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's number among the distinct combinations of the `names` columns' values
    (nulls included), and the position of one row of each combination."""
    codes, span = np.zeros(table.num_rows, np.int64), 1
    for name in names:
        encoded = _whole(table.column(name)).dictionary_encode(null_encoding="encode")
        width = max(len(encoded.dictionary), 1)
        if span * width >= 2**62:  # renumber before the codes could overflow
            codes = np.unique(codes, return_inverse=True)[1]
            span = int(codes.max()) + 1
        codes = codes * width + encoded.indices.to_numpy(zero_copy_only=False)
        span *= width
    _, example, combination = np.unique(codes, return_index=True, return_inverse=True)
    return combination, example


def signal_records(context: AuditContext, signals: pa.Table) -> pa.RecordBatch:
    """One `signal` record per signal, for its applicant: the whole decision.

    `signals` are the assessed rows decided `signal` (pipelines/proportionality.py): the
    record holds scheme, rule id and version, parameter version and amount, the
    proportionality checks with their outcomes (`checks`), and every household column the
    rule read with its source fields and their legal basis (`fields_used`).
    """
    attrs = _json_fields(
        signals,
        ("signal_id", "household_pid", "scheme", "rule_id", "rule_version", "parameter_version"),
        (
            "benefit_year",
            "estimated_annual_amount",
            "confidence",
            "repayment_risk",
            "checks",
            "fields_used",
        ),
    )
    return audit_batch(
        context,
        "signal",
        signals.column("applicant_pid"),
        "signalled",
        attrs,
        discriminator=signals.column("signal_id"),
    )


def proportionality_records(context: AuditContext, assessed: pa.Table) -> pa.RecordBatch:
    """One `proportionality` record per candidate and scheme, for its applicant.

    Status is the decision (signal or suppressed); the attributes, canonical JSON made by
    pipelines/proportionality.py AssessedJson, hold every check with its outcome and
    threshold.
    """
    disc = scheme_years(assessed)
    return audit_batch(
        context,
        "proportionality",
        assessed.column("applicant_pid"),
        assessed.column("decision"),
        assessed.column("attributes"),
        discriminator=disc,
    )


def resolution_records(context: AuditContext, resolved: pa.Table) -> pa.RecordBatch:
    """One `resolution` record per signal episode the run closed, for its household.

    `resolved` are lifecycle rows (pipelines/lifecycle.py LIFECYCLE_SCHEMA): the run read
    the household's earlier signal from its history and closed the episode, for `reason`.
    A household that left the run (`not_in_run`) has no members in it, so the subject is
    the household pseudonym, for every resolution alike.
    """
    attrs = _json_fields(
        resolved,
        ("signal_id", "scheme", "reason", "last_run_id", "last_signalled_on"),
        ("benefit_year",),
    )
    return audit_batch(
        context,
        "resolution",
        resolved.column("household_pid"),
        "resolved",
        attrs,
        discriminator=resolved.column("signal_id"),
    )


def resolution_audit(context: AuditContext):
    def make(resolved: pa.Table) -> pa.RecordBatch:
        return resolution_records(context, resolved)

    return make


class WriteAuditPartsFn(beam.DoFn):
    """Writes each audit RecordBatch (or Table) to `<folder>/<label>-<content>.arrow`.

    In: PCollection of AUDIT_SCHEMA or CODED_SCHEMA batches.
    Out: nothing (the files are the output).
    """

    def __init__(self, folder: Path, label: str):
        self.folder, self.label = str(folder), label
        self.records = Metrics.counter("audit", f"{label}_records")

    def setup(self):
        os.makedirs(self.folder, exist_ok=True)

    def process(self, batch):
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows:
            write_part(table, Path(self.folder), self.label)
            self.records.inc(table.num_rows)
