"""Running the proportionality stage on hand-made candidates, as a real Beam pipeline.

Candidates and history rows are written here as the evaluation stage and the lifecycle
loader would produce them; the stage's outputs are written to Parquet and read back
(a DoFn cannot fill a Python list in the DirectRunner).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import WriteToParquetBatched

from pipelines import lifecycle
from pipelines.audit_records import AUDIT_SCHEMA, AuditContext
from pipelines.evaluate import CANDIDATE_SCHEMA, SIGNAL_SCHEMA
from pipelines.options import pipeline_options
from pipelines.proportionality import (
    AUDIT,
    NECESSITY_SCHEMA,
    RESOLVED,
    SIGNALS,
    SUPPRESSED,
    SUPPRESSED_SCHEMA,
    ApplyProportionality,
    load_policy,
)

REF = dt.date(2025, 6, 1)
RUN = "2025-06-01-testrun"

ZORGTOESLAG_FIELDS = ["applicant_age", "combined_income", "household_pid"]
NECESSITY = pa.Table.from_pylist(
    [
        {
            "scheme": "zorgtoeslag",
            "benefit_year": 2025,
            "necessary": True,
            "fields": ZORGTOESLAG_FIELDS,
            "not_allowed": [],
        },
        {
            "scheme": "kwijtschelding",
            "benefit_year": 2025,
            "necessary": True,
            "fields": ["household_income"],
            "not_allowed": [],
        },
        {
            "scheme": "huurtoeslag",
            "benefit_year": 2025,
            "necessary": False,
            "fields": ["monthly_rent"],
            "not_allowed": ["monthly_rent <- housing.monthly_rent: not allowed"],
        },
    ],
    schema=NECESSITY_SCHEMA,
)


def candidate(name: str, **changes) -> dict:
    """An entitled, proportionate zorgtoeslag candidate for household `name`, then changes."""
    row = {
        "signal_id": f"s.{name}",
        "run_id": RUN,
        "household_pid": f"h.{name}",
        "applicant_pid": f"a.{name}",
        "scheme": "zorgtoeslag",
        "benefit_year": 2025,
        "estimated_annual_amount": Decimal("1000.00"),
        "explanation": "entitled",
        "explanation_nl": "recht",
        "rule_id": "zorgtoeslag",
        "rule_version": "1.0.0+test",
        "parameter_version": "2025.1+test",
        "confidence": 1.0,
        "repayment_risk": False,
        "entitled": True,
        "already_receiving": False,
        "objected": False,
        "deregistered": False,
        "quarantined": [],
    }
    row.update(changes)
    return row


def history_row(name: str, last_signalled_on: dt.date | None = None, **changes) -> dict:
    """A state row: household `name` was signalled for zorgtoeslag, episode open."""
    row = {
        "household_pid": f"h.{name}",
        "scheme": "zorgtoeslag",
        "last_signal_id": f"s.{name}",
        "last_benefit_year": 2025,
        "last_signalled_on": last_signalled_on or dt.date(2024, 1, 1),
        "last_run_id": "2024-01-01-earlier",
        "episode_open": True,
        "case_outcome": None,
        "case_on": None,
    }
    row.update(changes)
    return row


OUTPUTS = {
    SIGNALS: SIGNAL_SCHEMA,
    SUPPRESSED: SUPPRESSED_SCHEMA,
    RESOLVED: lifecycle.LIFECYCLE_SCHEMA,
    AUDIT: AUDIT_SCHEMA,
}


def _as_table(element) -> pa.Table:
    return element if isinstance(element, pa.Table) else pa.Table.from_batches([element])


def run_stage(
    folder: Path,
    batches: list[list[dict]],
    history: list[dict] | None = None,
    policy=None,
    necessity: pa.Table = NECESSITY,
    history_file: bool = False,
) -> dict[str, list[dict]]:
    """Apply the stage to candidate batches; every output as a list of rows. With
    `history_file`, the history goes to the stage as a Parquet file, as a run gives it."""
    tables = [pa.Table.from_pylist(b, schema=CANDIDATE_SCHEMA) for b in batches]
    state = pa.Table.from_pylist(history, schema=lifecycle.STATE_SCHEMA) if history else None
    if state is not None and history_file:
        pq.write_table(state, Path(folder) / "history.parquet")
        state = Path(folder) / "history.parquet"
    audit = AuditContext(RUN, "proactive-entitlement-signalling", "test-register")
    with beam.Pipeline(options=pipeline_options()) as p:
        out = (
            p
            | beam.Create(tables)
            | ApplyProportionality(policy or load_policy(), necessity, RUN, REF, audit, state)
        )
        for name, schema in OUTPUTS.items():
            # `resolved` is two collections (households in the run, and gone from it).
            pieces = out[name] if isinstance(out[name], tuple) else (out[name],)
            for i, piece in enumerate(pieces):
                (
                    piece
                    | f"ToTable_{name}_{i}" >> beam.Map(_as_table)
                    | f"Write_{name}_{i}"
                    >> WriteToParquetBatched(
                        str(Path(folder) / name / f"part{i}"),
                        schema=schema,
                        file_name_suffix=".parquet",
                    )
                )
    result = {}
    for name in OUTPUTS:
        files = sorted((Path(folder) / name).glob("*.parquet"))
        result[name] = [r for f in files for r in pq.read_table(f).to_pylist()]
    return result
