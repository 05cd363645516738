"""A signal's explanation is the rule's own text for its household, though the pipeline
writes texts only for the evaluations that may become signals (pipelines/evaluate.py)."""

from __future__ import annotations

import duckdb
import pyarrow.parquet as pq
from pipeline_outputs import population, run_central

from entitlement_rules import evaluate
from pipelines.options import pipeline_options


def test_every_signal_carries_the_text_a_full_evaluation_gives(tmp_path):
    from flows.bench import run_spec

    spec = run_spec(str(population(tmp_path, persons=2_000)), str(tmp_path / "staging"), 8)
    staging = run_central(spec, pipeline_options())
    signals = pq.read_table(staging / "signals.parquet").to_pylist()
    assert len(signals) > 20

    con = duckdb.connect()
    con.register("households", pq.read_table(staging / "households"))
    full = evaluate(con, "households", spec.compiled_rules, explain="entitled")
    columns = "household_pid, scheme, benefit_year, explanation, explanation_nl"
    texts = {tuple(r[:3]): tuple(r[3:]) for r in full.select(columns).fetchall()}
    for s in signals:
        key = (s["household_pid"], s["scheme"], s["benefit_year"])
        assert (s["explanation"], s["explanation_nl"]) == texts[key]
        assert ": entitled, estimated EUR " in s["explanation"] and s["explanation_nl"]
