"""Times the proportionality checks and the worklist on synthetic candidates, without Beam.

    .venv/bin/python benchmarks/proportionality_bench.py [--candidates N] [--history H]
        [--batch B]

Candidates (pipelines/evaluate.py CANDIDATE_SCHEMA) and a history state of H rows are
generated set-based in DuckDB: amounts, confidences and last-signal dates spread over every
threshold. The stage's DoFn is called directly on
batches of B candidates (as the pipeline calls it per household batch), then the worklist
is built from its signals. Prints seconds and rows per second for each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.audit_records import AuditContext
from pipelines.evaluate import SIGNAL_SCHEMA
from pipelines.household import SCHEMA as HOUSEHOLD_SCHEMA
from pipelines.lifecycle import STATE_SCHEMA
from pipelines.priority import worklist_table
from pipelines.proportionality import NECESSITY_SCHEMA, AssessFn, load_policy

REF = dt.date(2025, 6, 1)

CANDIDATES_SQL = """
SELECT 's.' || i AS signal_id, 'bench' AS run_id, 'h.' || (i // 2) AS household_pid,
    'a.' || (i // 2) AS applicant_pid,
    CASE i % 2 WHEN 0 THEN 'zorgtoeslag' ELSE 'kindgebonden_budget' END AS scheme,
    2025 AS benefit_year,
    CAST((i * 7919) % 300000 / 100 AS DECIMAL(12, 2)) AS estimated_annual_amount,
    'entitled' AS explanation, 'recht' AS explanation_nl, 'r' AS rule_id,
    '1' AS rule_version, '1' AS parameter_version,
    ((i * 31) % 100) / 100.0 AS confidence, i % 3 = 0 AS repayment_risk,
    i % 5 <> 0 AS entitled, i % 11 = 0 AS already_receiving, i % 97 = 0 AS objected,
    i % 499 = 0 AS deregistered,
    CASE WHEN i % 997 = 0 THEN ['benefits'] ELSE []::VARCHAR[] END AS quarantined
FROM range({n}) AS t(i)
"""

HISTORY_SQL = """
SELECT 'h.' || (i * 3 // 2) AS household_pid,
    CASE i % 2 WHEN 0 THEN 'zorgtoeslag' ELSE 'kindgebonden_budget' END AS scheme,
    's.x' || i AS last_signal_id, 2025 AS last_benefit_year,
    DATE '2024-01-01' + CAST(i % 500 AS INTEGER) AS last_signalled_on, 'r0' AS last_run_id,
    i % 4 <> 0 AS episode_open,
    CASE i % 7 WHEN 0 THEN 'applied' WHEN 1 THEN 'declined' END AS case_outcome,
    DATE '2025-01-01' + CAST(i % 150 AS INTEGER) AS case_on
FROM range({n}) AS t(i)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()

    con = duckdb.connect()
    candidates = con.sql(CANDIDATES_SQL.format(n=args.candidates)).to_arrow_table()
    history = con.sql(HISTORY_SQL.format(n=args.history)).to_arrow_table().cast(STATE_SCHEMA)
    necessity = pa.Table.from_pylist(
        [
            {
                "scheme": s,
                "benefit_year": 2025,
                "necessary": True,
                "fields": ["x"],
                "not_allowed": [],
            }
            for s in ("zorgtoeslag", "kindgebonden_budget")
        ],
        schema=NECESSITY_SCHEMA,
    )
    fn = AssessFn(load_policy(), necessity, "bench", REF, AuditContext("bench", "p", "v"))
    fn.setup()
    start = time.perf_counter()
    signals = []
    counts: dict[str, int] = {}
    for offset in range(0, candidates.num_rows, args.batch):
        for out in fn.process(candidates.slice(offset, args.batch), history):
            counts[out.tag] = counts.get(out.tag, 0) + out.value.num_rows
            if out.tag == "signals":
                signals.append(out.value)
    assess = time.perf_counter() - start
    fn.teardown()
    print(f"candidates {args.candidates:,}, history {args.history:,}, batch {args.batch:,}")
    print(f"assess     {assess:7.2f} s  {args.candidates / assess:12,.0f} candidates/s  {counts}")

    signals_table = pa.concat_tables(signals).cast(SIGNAL_SCHEMA)
    pids = pc.unique(signals_table.column("household_pid"))
    households = pa.table(
        {
            "household_pid": pids,
            "arrears_sectors": pa.array([["energy"]] * len(pids), pa.list_(pa.string())),
            "arrears_total": pa.array(
                [None] * len(pids), HOUSEHOLD_SCHEMA.field("arrears_total").type
            ),
            "arrears_max_months": pa.array([3] * len(pids), pa.int32()),
        }
    )
    start = time.perf_counter()
    worklist = worklist_table(signals_table, households)
    took = time.perf_counter() - start
    print(
        f"worklist   {took:7.2f} s  {signals_table.num_rows / took:12,.0f} signals/s  "
        f"({worklist.num_rows:,} households)"
    )


if __name__ == "__main__":
    main()
