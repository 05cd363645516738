"""Evaluating the entitlement rules on household batches, and selecting signals.

Rules are compiled to DuckDB SQL once, when the pipeline is built; each household
batch is then evaluated set-based in an in-process DuckDB. A household becomes a
signal for a scheme when it is entitled, not already receiving it, did not object to
that scheme, and its applicant is not deregistered.
"""

from __future__ import annotations

import apache_beam as beam
import duckdb
import pyarrow as pa
from apache_beam.metrics import Metrics

from entitlement_rules import evaluate as evaluate_rules
from pipelines.audit_records import AuditContext, evaluation_records, signal_records

EVALUATIONS = "evaluations"
SIGNALS = "signals"
AUDIT = "audit"

SIGNAL_SCHEMA = pa.schema(
    [
        ("signal_id", pa.string()),
        ("run_id", pa.string()),
        ("household_pid", pa.string()),
        ("applicant_pid", pa.string()),
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("estimated_annual_amount", pa.decimal128(12, 2)),
        ("explanation", pa.string()),
        ("explanation_nl", pa.string()),
        ("rule_id", pa.string()),
        ("rule_version", pa.string()),
        ("parameter_version", pa.string()),
        ("confidence", pa.float64()),
        ("repayment_risk", pa.bool_()),
    ]
)

# A signal id depends only on household, scheme and year, so it is the same in every
# run (lifecycle, fatigue and idempotent reruns rely on that). Digits are mapped to
# letters so that no id can contain something that looks like a BSN.
SELECT_SIGNALS_SQL = """
SELECT
    's.' || translate(left(sha256(e.household_pid || '|' || e.scheme || '|'
        || CAST(e.benefit_year AS VARCHAR)), 32), '0123456789', 'qrstuvwxyz') AS signal_id,
    '{run_id}' AS run_id,
    e.household_pid,
    e.applicant_pid,
    e.scheme,
    CAST(e.benefit_year AS INTEGER) AS benefit_year,
    CAST(e.estimated_annual_amount AS DECIMAL(12, 2)) AS estimated_annual_amount,
    e.explanation,
    e.explanation_nl,
    e.rule_id,
    e.rule_version,
    e.parameter_version,
    CAST(e.confidence AS DOUBLE) AS confidence,
    e.repayment_risk
FROM evaluations AS e
JOIN households AS h USING (household_pid)
WHERE e.entitled
  AND NOT e.already_receiving
  AND NOT list_contains(h.objected_schemes, e.scheme)
  AND NOT h.applicant_deregistered
ORDER BY e.household_pid, e.scheme
"""


class EvaluateRulesFn(beam.DoFn):
    """Evaluates every compiled rule on one household batch; emits evaluations and signals."""

    def __init__(self, compiled: list, run_id: str, audit: AuditContext):
        self.compiled, self.run_id, self.audit = compiled, run_id, audit

    def setup(self):
        self.con = duckdb.connect(config={"threads": 1})

    def process(self, batch: pa.RecordBatch):
        households = pa.Table.from_batches([batch])
        self.con.register("households", households)
        try:
            evaluations = _as_table(evaluate_rules(self.con, "households", self.compiled))
            self.con.register("evaluations", evaluations)
            signals = self.con.sql(SELECT_SIGNALS_SQL.format(run_id=self.run_id))
            signals = signals.to_arrow_table().cast(SIGNAL_SCHEMA)
        finally:
            self.con.unregister("households")
            self.con.unregister("evaluations")
        Metrics.counter("evaluate", "evaluations").inc(evaluations.num_rows)
        Metrics.counter("evaluate", "signals").inc(signals.num_rows)
        yield beam.pvalue.TaggedOutput(EVALUATIONS, evaluations)
        yield beam.pvalue.TaggedOutput(
            AUDIT, evaluation_records(self.audit, evaluations, households)
        )
        if signals.num_rows:
            yield beam.pvalue.TaggedOutput(SIGNALS, signals)
            yield beam.pvalue.TaggedOutput(AUDIT, signal_records(self.audit, signals))

    def teardown(self):
        self.con.close()


def _as_table(result) -> pa.Table:
    if isinstance(result, pa.Table):
        return result
    return result.to_arrow_table()


class EvaluateRules(beam.PTransform):
    """Evaluates compiled rules over the household table.

    In: PCollection[RecordBatch] of pipelines.household.SCHEMA.
    Out: tagged `evaluations` (pa.Table, one row per household x scheme x year, with
    entitled, amount, explanation), `audit` (RecordBatches of AUDIT_SCHEMA: a
    rule_evaluation record per member and scheme, a signal record per signal) and
    `signals` (pa.Table of SIGNAL_SCHEMA), e.g.
    (signal_id='s.ab..', scheme='zorgtoeslag', benefit_year=2025,
    estimated_annual_amount=Decimal('1355.04'), ...).
    """

    def __init__(self, compiled: list, run_id: str, audit: AuditContext):
        super().__init__()
        self.compiled, self.run_id, self.audit = compiled, run_id, audit

    def expand(self, households):
        return households | "Evaluate" >> beam.ParDo(
            EvaluateRulesFn(self.compiled, self.run_id, self.audit)
        ).with_outputs(EVALUATIONS, SIGNALS, AUDIT)
