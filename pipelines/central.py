"""The central Beam pipeline of one run: read -> exclude objectors -> join -> evaluate ->
proportionality -> write.

Everything it writes goes to a staging folder as Parquet parts; the flow finalises
and publishes them. The pipeline holds no global state and every DoFn pickles, so
the same graph runs on the DirectRunner here and on any distributed runner.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from flows import faults
from pipelines import household
from pipelines import proportionality as prop
from pipelines.audit_records import (
    AuditContext,
    IngestRecords,
    WriteAuditPartsFn,
    exclusion_audit,
    join_audit,
    resolution_audit,
)
from pipelines.evaluate import (
    AUDIT,
    CANDIDATES,
    EVALUATION_SCHEMA,
    EVALUATIONS,
    QUARANTINED_ABOUT,
    SIGNAL_SCHEMA,
    EvaluateRules,
)
from pipelines.exclude import OBJECTIONS, PERSON_SOURCES, ExcludeObjectors
from pipelines.join import DEFAULT_BUCKETS, JOIN_SOURCES, JoinHouseholds, buckets_for
from pipelines.lifecycle import LIFECYCLE_SCHEMA
from pipelines.machine import cores
from pipelines.options import local_threads, pipeline_options
from pipelines.read_deliveries import Delivery, NamedByQuarantine, ReadDeliveries, named_pids
from pipelines.shuffle import SHUFFLE_DIR
from pipelines.validate import QUARANTINE_SCHEMA
from pipelines.withhold import WithholdFields
from pipelines.write_parts import WriteParts
from privacy.audit.parts import PARTS_DIR
from privacy.files import written_whole
from privacy.minimise import pseudonymised_schema
from privacy.pseudonyms import DomainPseudonymiser


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
    # Layer 2 of the pseudonyms: every identifier moves to this purpose domain on reading.
    domain: DomainPseudonymiser | None = None
    # Proportionality thresholds (default: privacy/proportionality.yaml), the necessity of
    # each rule's fields (default: household lineage only) and the state of earlier runs
    # (pipelines/lifecycle.py; default: none).
    proportionality: prop.Policy | None = None
    necessity: pa.Table | None = None
    history: pa.Table | None = None
    # Delivered fields the run has no purpose for, per source: blanked on reading
    # (privacy/minimise.py withheld_fields, pipelines/withhold.py).
    withheld: dict[str, tuple[str, ...]] = field(default_factory=dict)


# The columns that identify a row of each output in a run (pipelines/write_parts.py).
SIGNAL_KEY = ("signal_id",)
KEYS = {
    "quarantine": ("source", "row_number"),
    "households": ("household_pid",),
    "signals": SIGNAL_KEY,
    "suppressed": SIGNAL_KEY,
    "lifecycle": SIGNAL_KEY,
    "evaluations": ("household_pid", "scheme", "benefit_year"),
}


# The pseudonym columns of the parts published as they are (publish.py), each value of
# them rarely repeated: written without a dictionary (write_parts.write_part).
DISTINCT = {
    "households": ("household_pid", "applicant_pid", "partner_pid", "member_pids"),
    "evaluations": ("household_pid",),
}


def _write(pcoll, folder: Path, schema: pa.Schema, label: str, step: str = ""):
    """Parts with `schema`'s columns (others, like the explanation texts, are left out)."""
    writer = WriteParts(folder, schema, label, KEYS[label], DISTINCT.get(label, ()))
    return pcoll | f"Write_{label}{step}" >> writer


# The state of earlier runs, written where every worker reads it (not into the graph).
HISTORY_FILE = Path(SHUFFLE_DIR) / "history.parquet"


def _history_file(spec: RunSpec) -> Path | None:
    """The run's history written for its steps to read (None: no earlier run), in the
    run's scratch: finalise removes it with the shuffle files."""
    if spec.history is None or not spec.history.num_rows:
        return None
    path = Path(spec.staging) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:
        pq.write_table(spec.history, tmp)
    return path


def _proportionality(spec: RunSpec, history: Path | None) -> prop.ApplyProportionality:
    necessity = spec.necessity
    if necessity is None:
        necessity = prop.assess_necessity(spec.compiled_rules)
    policy = spec.proportionality or prop.load_policy()
    return prop.ApplyProportionality(
        policy, necessity, spec.run_id, spec.reference_date, spec.audit, history
    )


def join_buckets(spec: RunSpec) -> int:
    """The join's buckets: spec.buckets is the most, a small population gets fewer."""
    return buckets_for(spec.deliveries["brp"].row_count, spec.buckets, cores())


def run_options(spec: RunSpec, runner: str, runner_args: list[str]) -> PipelineOptions:
    """The options to run `spec` with: the local runner gets a thread per core, two buckets each."""
    return pipeline_options(runner, runner_args, local_threads(join_buckets(spec)))


def build(p: beam.Pipeline, spec: RunSpec) -> None:
    """Adds the whole run to pipeline `p`."""
    staging = Path(spec.staging)
    audits, rows, quarantined = [], {}, []
    # Whom the body's quarantined rows are about: objectors all the same, and the persons
    # and households of whom something is not known (read_deliveries.NAMED_BY_QUARANTINE).
    objectors = named_pids(spec.deliveries.get(OBJECTIONS), spec.domain)
    incomplete = NamedByQuarantine(
        {s: spec.deliveries.get(s) for s in QUARANTINED_ABOUT}, spec.domain
    )
    incomplete.read()  # here too: a delivery it refuses stops the run before it starts
    # The objections are read in a step of their own: every other source's exclusion takes
    # them as a side input, so it can run in the same bundles as that source's reading only
    # when the objections come from another step (read in one step, the exclusions ran
    # afterwards, one source at a time).
    objections = {n: d for n, d in spec.deliveries.items() if n == OBJECTIONS}
    others = {n: d for n, d in spec.deliveries.items() if n != OBJECTIONS}
    for label, deliveries in (("ReadObjections", objections), ("Read", others)):
        read = p | label >> ReadDeliveries(deliveries, spec.domain)
        rows.update({name: read[name] for name in deliveries})
        quarantined.append(read[ReadDeliveries.QUARANTINE])
    # Each reading step writes its own quarantine parts (rows name their source), as the
    # audit parts are: no Flatten, which Beam's local runner materialises whole. (One tried
    # for the ingest records at 1M persons misframed its elements; the cause was found
    # later, Beam's timed flush: pipelines/options.py.)
    for label, pcoll in zip(("_objections", ""), quarantined, strict=True):
        _write(pcoll, staging / "quarantine_parts", QUARANTINE_SCHEMA, "quarantine", label)
    for name, fields in sorted(spec.withheld.items()):
        rows[name] = rows[name] | f"Withhold_{name}" >> WithholdFields(fields)
    kept = rows | "ExcludeObjectors" >> ExcludeObjectors(PERSON_SOURCES, also=objectors)
    read = tuple(n for n in PERSON_SOURCES if n in spec.deliveries)
    audit_exclusion = exclusion_audit(spec.audit, read)
    exclusions = beam.Map(audit_exclusion).with_output_types(pa.RecordBatch)
    audits.append(kept["objector_pids"] | "AuditExclusion" >> exclusions)
    if len(objectors):  # a record each, as any objector's (a copy of one is kept once)
        audits.append(
            p
            | "ObjectorsOfQuarantinedRows" >> beam.Create([objectors]).with_output_types(pa.Array)
            | "AuditTheirExclusion" >> beam.Map(audit_exclusion).with_output_types(pa.RecordBatch)
        )
    schemas = {n: pseudonymised_schema(spec.deliveries[n].source) for n in JOIN_SOURCES}
    schemas["brp"] = schemas["brp"].append(pa.field("partner_withheld", pa.bool_()))
    # Each data subject's one ingest record is made where their rows meet: in the join.
    ingest = functools.partial(IngestRecords, spec.audit, spec.legal_bases)
    joined = {n: kept[n] for n in JOIN_SOURCES} | "JoinHouseholds" >> JoinHouseholds(
        schemas, spec.reference_date, str(staging / SHUFFLE_DIR), join_buckets(spec), ingest
    )
    audits += joined["ingest"]
    households = joined["households"]
    households = faults.tap(households, "mid_join")  # restart tests only: flows/faults.py
    _write(households, staging / "households", household.SCHEMA, "households")
    audits.append(
        households
        | "AuditJoin" >> beam.Map(join_audit(spec.audit)).with_output_types(pa.RecordBatch)
    )

    history = _history_file(spec)
    evaluated = households | "EvaluateRules" >> EvaluateRules(
        spec.compiled_rules, spec.run_id, spec.audit, incomplete, history
    )
    assessed = evaluated[CANDIDATES] | "ApplyProportionality" >> _proportionality(spec, history)
    _write(assessed[prop.SIGNALS], staging / "signal_parts", SIGNAL_SCHEMA, "signals")
    suppressed = assessed[prop.SUPPRESSED]
    _write(suppressed, staging / "suppressed_parts", prop.SUPPRESSED_SCHEMA, "suppressed")
    audits.append(assessed[prop.AUDIT])
    # Written as published, a part per household batch (as the households are): merging
    # them into one sorted file cost finalise 1.35 s (2.4 CPU s) at 1M persons.
    _write(evaluated[EVALUATIONS], staging / "evaluations", EVALUATION_SCHEMA, "evaluations")
    audits.append(evaluated[AUDIT])
    # The second, of households gone from the run, only with a history.
    for step, resolved in zip(("", "_absent"), assessed[prop.RESOLVED], strict=False):
        _write(resolved, staging / "lifecycle_parts", LIFECYCLE_SCHEMA, "lifecycle", step)
        audits.append(
            resolved
            | f"AuditResolution{step}"
            >> beam.Map(resolution_audit(spec.audit)).with_output_types(pa.RecordBatch)
        )
    # Each audit collection is written in the stage that made it: one Flatten into one sink
    # held every record in the runner's buffers (tens of GB at 1M persons; privacy/audit/parts.py).
    for i, audit in enumerate(audits):
        audit | f"AuditWrite_{i}" >> beam.ParDo(WriteAuditPartsFn(staging / PARTS_DIR, f"a{i}"))
