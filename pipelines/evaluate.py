"""Evaluating the entitlement rules on household batches, and handing on the candidates.

Rules are compiled to DuckDB SQL once, when the pipeline is built; each household
batch is then evaluated set-based in an in-process DuckDB. Every evaluation goes on as a
candidate row with the household facts the proportionality checks need (objected to the
scheme, applicant deregistered, a row about it quarantined at the body);
pipelines/proportionality.py decides which entitled candidates become signals (not
already receiving, not objected, not deregistered, complete, and proportionate).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from entitlement_rules import evaluate as evaluate_rules
from entitlement_rules.evaluate import evaluation_sql
from pipelines import lifecycle
from pipelines.audit_records import AuditContext, evaluation_records
from pipelines.machine import step_connection
from pipelines.read_deliveries import NamedByQuarantine

EVALUATIONS = "evaluations"
CANDIDATES = "candidates"
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
        ("status", pa.string()),  # lifecycle (pipelines/lifecycle.py): new or repeated
    ]
)

# Every evaluation (household x scheme x year), written for aggregate reports: estimated
# entitlement includes households already receiving. The explanation texts go with the
# signals; this keeps only the decision.
EVALUATION_SCHEMA = pa.schema(
    [
        ("household_pid", pa.string()),
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("rule_id", pa.string()),
        ("rule_version", pa.string()),
        ("parameter_version", pa.string()),
        ("entitled", pa.bool_()),
        ("estimated_annual_amount", pa.decimal128(12, 2)),
        ("already_receiving", pa.bool_()),
        ("failed_conditions", pa.list_(pa.string())),
        ("confidence", pa.float64()),
        ("repayment_risk", pa.bool_()),
    ]
)

# The sources whose rows quarantined at the body are about the household
# (pipelines/read_deliveries.py NAMED_BY_QUARANTINE): a register row of a member leaves its
# composition unknown; a benefits or insurance row of the applicant or partner (whose rows
# make receiving_schemes and the insured flags) what it is paid and whether they are
# insured; a tax row of any member what it earns (an older assessment, or none, would
# stand in). Tables `quarantined_<source>`, one column `pid`: household pseudonyms for brp,
# person pseudonyms for the others. Each subquery is uncorrelated: worked out once a batch,
# then looked up.
QUARANTINED_ABOUT = ("brp", "benefits", "health_insurance", "tax")
_OF_APPLICANT_OR_PARTNER = """CASE WHEN h.applicant_pid IN (SELECT pid FROM quarantined_{0})
            OR h.partner_pid IN (SELECT pid FROM quarantined_{0}) THEN '{0}' END"""
QUARANTINED_SQL = f"""list_filter([
        CASE WHEN h.household_pid IN (SELECT pid FROM quarantined_brp) THEN 'brp' END,
        {_OF_APPLICANT_OR_PARTNER.format("benefits")},
        {_OF_APPLICANT_OR_PARTNER.format("health_insurance")},
        CASE WHEN h.household_pid IN (
            SELECT household_pid FROM (
                SELECT household_pid, unnest(list_concat(
                    coalesce(member_pids, []::VARCHAR[]), [applicant_pid, partner_pid]
                )) AS pid
                FROM households
            ) WHERE pid IN (SELECT pid FROM quarantined_tax)
        ) THEN 'tax' END
    ], lambda s: s IS NOT NULL)"""

# A signal id depends only on household, scheme and year, so it is the same in every
# run (lifecycle, fatigue and idempotent reruns rely on that). Digits are mapped to
# letters so that no id can contain something that looks like a BSN.
# Objected to the scheme: in the candidates, and in which evaluations get texts.
OBJECTED_SQL = "coalesce(list_contains(h.objected_schemes, e.scheme), FALSE)"
SELECT_CANDIDATES_SQL = f"""
SELECT
    -- Only an entitled candidate can become a signal: the others need no id (and hashing
    -- every household x scheme row cost a quarter of this stage).
    CASE WHEN e.entitled THEN 's.' || translate(left(sha256(e.household_pid || '|' || e.scheme
        || '|' || CAST(e.benefit_year AS VARCHAR)), 32), '0123456789', 'qrstuvwxyz')
    END AS signal_id,
    '{{run_id}}' AS run_id,
    e.household_pid,
    e.applicant_pid,
    e.scheme,
    CAST(e.benefit_year AS INTEGER) AS benefit_year,
    CAST(e.estimated_annual_amount AS DECIMAL(12, 2)) AS estimated_annual_amount,
    t.explanation,
    t.explanation_nl,
    e.rule_id,
    e.rule_version,
    e.parameter_version,
    CAST(e.confidence AS DOUBLE) AS confidence,
    e.repayment_risk,
    e.entitled,
    e.already_receiving,
    {OBJECTED_SQL} AS objected,
    h.applicant_deregistered AS deregistered,
    h.quarantined
FROM evaluations AS e
-- Quarantine is about a household: looked up once for it, not for each of its rows here
-- (4 a household; 150 -> 132 ms a bucket of 47,000 households at 1M persons).
JOIN (SELECT *, {QUARANTINED_SQL} AS quarantined FROM households AS h) AS h
    USING (household_pid)
LEFT JOIN texts AS t
    ON t.household_pid = e.household_pid AND t.scheme = e.scheme
    AND t.benefit_year = e.benefit_year
"""

# The rows proportionality reads (pipelines/proportionality.py): an entitled evaluation
# may become a signal, and the evaluations of a household whose episode is open in the
# history decide how that episode is resolved. No other row is read: the refusals of
# households never signalled (86% of a 1M-person bucket's rows) went through to be
# dropped there (the pipeline 0.3-1.8 s faster at 1M persons, 200-380 MB less at peak).
CANDIDATE_ROWS_SQL = "WHERE e.entitled"
OPEN_EPISODE_ROWS_SQL = " OR e.household_pid IN (SELECT household_pid FROM open_episodes)"

CANDIDATE_SCHEMA = pa.schema(
    [f for f in SIGNAL_SCHEMA if f.name != "status"]
    + [
        pa.field("entitled", pa.bool_()),
        pa.field("already_receiving", pa.bool_()),
        pa.field("objected", pa.bool_()),
        pa.field("deregistered", pa.bool_()),
        pa.field("quarantined", pa.list_(pa.string())),  # QUARANTINED_SQL
    ]
)

# The households with an evaluation that may become a signal: entitled, and known not to be
# receiving, objected to or deregistered (pipelines/proportionality.py suppresses all
# others, an unknown among them). Only these households' entitled evaluations get
# explanation texts (`texts` above).
MAY_SIGNAL_SQL = f"""
SELECT * FROM households
WHERE household_pid IN (
    SELECT e.household_pid FROM evaluations AS e JOIN households AS h USING (household_pid)
    WHERE e.entitled AND NOT coalesce(e.already_receiving
        OR {OBJECTED_SQL}
        OR h.applicant_deregistered, TRUE)
)
"""


# DuckDB warns that Arrow from a statement's result is a copy (`_texts` says why it is run so).
warnings.filterwarnings(
    "ignore", "Arrow output on a DB-API result", UserWarning, r"pipelines\.evaluate"
)


class EvaluateRulesFn(beam.DoFn):
    """Evaluates every compiled rule on one household batch; emits evaluations and candidates."""

    def __init__(
        self,
        compiled: list,
        run_id: str,
        audit: AuditContext,
        quarantined: NamedByQuarantine,
    ):
        # Every source named, if only as empty: a source left out would hold nobody back.
        if set(quarantined.deliveries) != set(QUARANTINED_ABOUT):
            raise ValueError(
                f"quarantined names {sorted(quarantined.deliveries)}, "
                f"expected {sorted(QUARANTINED_ABOUT)}"
            )
        self.compiled, self.run_id, self.audit = compiled, run_id, audit
        self.quarantined = quarantined
        self.candidates_sql = SELECT_CANDIDATES_SQL.format(run_id=run_id) + CANDIDATE_ROWS_SQL

    def setup(self):
        self.con = step_connection()
        for source, pids in self.quarantined.read().items():
            self.con.register(f"quarantined_{source}", pa.table({"pid": pids}))

    def process(self, batch: pa.RecordBatch, open_episodes: pa.Table | None = None):
        households = pa.Table.from_batches([batch])
        self.con.register("households", households)
        sql = self.candidates_sql
        if open_episodes is not None:  # a run with a history: its side input
            self.con.register("open_episodes", open_episodes)
            sql += OPEN_EPISODE_ROWS_SQL
        try:
            # Decisions for every household; refusals keep failed_conditions.
            evaluations = _as_table(
                evaluate_rules(self.con, "households", self.compiled, explain="none")
            )
            self.con.register("evaluations", evaluations)
            self.con.register("texts", self._texts())
            candidates = self.con.sql(sql).to_arrow_table()
        finally:
            for name in ("households", "evaluations", "explained", "texts", "open_episodes"):
                self.con.unregister(name)
        Metrics.counter("evaluate", "evaluations").inc(evaluations.num_rows)
        Metrics.counter("evaluate", "candidates").inc(candidates.num_rows)
        yield beam.pvalue.TaggedOutput(EVALUATIONS, evaluations)
        yield beam.pvalue.TaggedOutput(
            AUDIT, evaluation_records(self.audit, evaluations, households)
        )
        if candidates.num_rows:
            yield beam.pvalue.TaggedOutput(CANDIDATES, candidates)

    def _texts(self) -> pa.Table:
        """Explanation texts of the evaluations that may become signals.

        Only signals carry the texts, and formatting one costs ~15x the decision. Most
        entitled rows cannot become signals (already receiving, objected, deregistered: in
        a batch of 25,000 households, 2,585 of 14,151 entitled rows could), so the rules run
        again, with texts, on just those rows' households: the same SQL on the same rows
        gives the same texts (tests/test_signal_texts.py). That batch: 495 -> 405 ms.
        """
        self.con.register("explained", self.con.sql(MAY_SIGNAL_SQL).to_arrow_table())
        # Run as a statement, not a relation: a relation binds the rules' SQL (~80k characters
        # with texts) once to describe itself and again to run, and binding was half of this
        # call (233 -> 143 ms a bucket of 47,000 households). The price, a copy of the
        # result, is small here: a few texts a household. `explained` has the columns of
        # `households`, which the decisions above already checked.
        texts = evaluation_sql("explained", self.compiled, explain="entitled")
        return self.con.execute(
            "SELECT household_pid, scheme, benefit_year, explanation, explanation_nl "
            f"FROM ({texts})"
        ).to_arrow_table()

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
    entitled, amount, failed conditions; no texts), `audit` (RecordBatches of CODED_SCHEMA:
    a rule_evaluation record per member, listing every scheme) and `candidates` (pa.Table:
    CANDIDATE_SCHEMA, for every entitled evaluation and every evaluation of a household
    with an open episode in `history` (CANDIDATE_ROWS_SQL); the explanation texts only for
    the entitled evaluations of households where a signal may come), e.g.
    (signal_id='s.ab..', scheme='zorgtoeslag', benefit_year=2025,
    estimated_annual_amount=Decimal('1355.04'), entitled=True, ..., quarantined=[]).
    `quarantined`: for each source of QUARANTINED_ABOUT, its delivery (or None), to read
    whom its rows quarantined at the body are about (pipelines/read_deliveries.py
    NamedByQuarantine; nothing named, or no delivery: nobody).
    `history`: the Parquet file of the state of earlier runs (lifecycle.STATE_SCHEMA, as
    the run writes it), or None: no earlier run, no episode open.
    """

    def __init__(
        self,
        compiled: list,
        run_id: str,
        audit: AuditContext,
        quarantined: NamedByQuarantine,
        history: str | Path | None = None,
    ):
        super().__init__()
        self.history = None if history is None else str(history)
        self.evaluate = EvaluateRulesFn(compiled, run_id, audit, quarantined)

    def expand(self, households):
        side = []
        if self.history is not None:
            episodes = (
                households.pipeline
                | "History" >> beam.Create([self.history])
                | "OpenEpisodes" >> beam.Map(lifecycle.open_episodes).with_output_types(pa.Table)
            )
            side.append(beam.pvalue.AsSingleton(episodes))
        return households | "Evaluate" >> beam.ParDo(self.evaluate, *side).with_output_types(
            pa.Table, **{EVALUATIONS: pa.Table, CANDIDATES: pa.Table, AUDIT: pa.RecordBatch}
        ).with_outputs(EVALUATIONS, CANDIDATES, AUDIT)
