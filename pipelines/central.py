"""The central Beam pipeline of one run: read -> exclude objectors -> join -> evaluate -> write.

Everything it writes goes to a staging folder as Parquet parts; the flow finalises
and publishes them. The pipeline holds no global state and every DoFn pickles, so
the same graph runs on the DirectRunner here and on any distributed runner.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import WriteToParquetBatched

from pipelines import household
from pipelines.audit_records import (
    AUDIT_SCHEMA,
    AuditContext,
    IngestAuditFn,
    exclusion_audit,
    join_audit,
)
from pipelines.evaluate import AUDIT, SIGNAL_SCHEMA, SIGNALS, EvaluateRules
from pipelines.exclude import PERSON_SOURCES, ExcludeObjectors
from pipelines.join import DEFAULT_BUCKETS, JOIN_SOURCES, JoinHouseholds
from pipelines.read_deliveries import Delivery, ReadDelivery
from pipelines.validate import QUARANTINE_SCHEMA, typed_schema


@dataclass(frozen=True)
class RunSpec:
    """Everything the pipeline needs, as plain picklable values (paths, ids, SQL)."""

    run_id: str
    reference_date: dt.date
    deliveries: dict[str, Delivery]
    staging: Path
    compiled_rules: list
    audit: AuditContext
    legal_bases: dict[str, dict] = field(default_factory=dict)
    buckets: int = DEFAULT_BUCKETS


def _write(pcoll, folder: Path, schema: pa.Schema, label: str):
    return (
        pcoll
        | f"ToTable_{label}" >> beam.Map(_as_table)
        | f"Write_{label}"
        >> WriteToParquetBatched(
            file_path_prefix=str(folder / "part"),
            schema=schema,
            file_name_suffix=".parquet",
            codec="snappy",
        )
    )


def _as_table(element) -> pa.Table:
    return element if isinstance(element, pa.Table) else pa.Table.from_batches([element])


def build(p: beam.Pipeline, spec: RunSpec) -> None:
    """Adds the whole run to pipeline `p`."""
    staging = Path(spec.staging)
    rows, audits = {}, []
    for name, delivery in spec.deliveries.items():
        read = p | f"Read_{name}" >> ReadDelivery(delivery)
        rows[name] = read.rows
        _write(
            read[ReadDelivery.QUARANTINE],
            staging / "quarantine_parts" / name,
            QUARANTINE_SCHEMA,
            f"quarantine_{name}",
        )
    kept = rows | "ExcludeObjectors" >> ExcludeObjectors(PERSON_SOURCES)
    audits.append(kept["objector_pids"] | "AuditExclusion" >> beam.Map(exclusion_audit(spec.audit)))
    for name in JOIN_SOURCES:
        subject = spec.deliveries[name].source.subject
        audits.append(
            kept[name]
            | f"AuditIngest_{name}"
            >> beam.ParDo(IngestAuditFn(spec.audit, name, subject, spec.legal_bases.get(name, {})))
        )

    schemas = {n: typed_schema(spec.deliveries[n].source) for n in JOIN_SOURCES}
    schemas["brp"] = schemas["brp"].append(pa.field("partner_withheld", pa.bool_()))
    households = {n: kept[n] for n in JOIN_SOURCES} | "JoinHouseholds" >> JoinHouseholds(
        schemas, spec.reference_date, spec.buckets
    )
    _write(households, staging / "households", household.SCHEMA, "households")
    audits.append(households | "AuditJoin" >> beam.Map(join_audit(spec.audit)))

    evaluated = households | "EvaluateRules" >> EvaluateRules(
        spec.compiled_rules, spec.run_id, spec.audit
    )
    _write(evaluated[SIGNALS], staging / "signal_parts", SIGNAL_SCHEMA, "signals")
    audits.append(evaluated[AUDIT])
    _write(
        audits | "FlattenAudit" >> beam.Flatten(), staging / "audit_parts", AUDIT_SCHEMA, "audit"
    )
