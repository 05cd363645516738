"""Optional differential privacy for the report's counts and sums: PipelineDP on Beam.

apply_dp(units, tables, settings) replaces every leaf count and signalled amount of this
period's tables by a differentially private estimate, and returns the budget ledger.

* Unit of privacy: the household. A household has one row per scheme, so it touches at
  most one cell per scheme in each table (max_partitions_contributed = number of schemes,
  max_contributions_per_partition = 1); amounts are clamped to [0, max_amount] per row.
* Partitions are public (every combination of the tables' categories, which are public
  lists: CBS districts, fixed bands), so no partition selection is needed and Laplace noise
  gives pure epsilon-DP (delta 0); with delta > 0 Gaussian noise is used instead.
* Budget: one total (epsilon, delta) for the whole report, split by PipelineDP's
  NaiveBudgetAccountant evenly over every COUNT and SUM of every table (sequential
  composition). The ledger records each mechanism's share and the total.
* Everything after the noise is post-processing and costs no budget: rounding, clamping at
  zero, totals computed as sums of noisy leaves, suppression of noisy cells under the
  threshold. The same cell in two tables gets two different noisy values, so the report
  does not link tables; a trend's past runs are shown as their own reports published them.
* DP is added on top of the disclosure control, never instead of it: flows/report.py also
  hides every cell the exact report would hide (primary, secondary, carried), so a large
  epsilon (little noise) leaves the report as protected as one without DP, not less.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from privacy.disclosure import CountTable, DisclosureError

LEDGER_FORMAT = "signals-dp-ledger/1"


class DPSettingsError(DisclosureError, ValueError):
    """A DP budget that is no budget: epsilon not positive, delta outside [0, 1)."""


@dataclass(frozen=True)
class DPSettings:
    epsilon: float
    delta: float = 0.0
    max_amount: float = 5000.0  # EUR per household and scheme: larger estimates are clamped

    def __post_init__(self):
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise DPSettingsError(f"DP epsilon must be a positive number, not {self.epsilon}")
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise DPSettingsError(f"DP delta must be at least 0 and below 1, not {self.delta}")


def apply_dp(
    units: pa.Table, tables: list[CountTable], universe: str, settings: DPSettings
) -> tuple[list[CountTable], dict]:
    """Noisy copies of this period's tables (others unchanged) and the budget ledger."""
    import apache_beam as beam
    import pipeline_dp

    from pipelines.options import pipeline_options

    mine = [t for t in tables if t.universe == universe]
    rows = units.to_pylist()
    n_schemes = len({r["scheme"] for r in rows}) or 1
    noise = pipeline_dp.NoiseKind.GAUSSIAN if settings.delta else pipeline_dp.NoiseKind.LAPLACE
    accountant = pipeline_dp.NaiveBudgetAccountant(settings.epsilon, settings.delta)
    # The noisy counts pass through files (Beam's sink) that live only for this call.
    with tempfile.TemporaryDirectory(prefix="signals-dp-") as scratch:
        out_dir = Path(scratch)
        with beam.Pipeline(options=pipeline_options("DirectRunner")) as p:
            data = p | "Units" >> beam.Create(rows)
            engine = pipeline_dp.DPEngine(accountant, pipeline_dp.BeamBackend())
            for i, t in enumerate(mine):
                _aggregate(
                    beam, pipeline_dp, engine, data, t, i, n_schemes, noise, settings, out_dir
                )
            accountant.compute_budgets()
        noisy = {t.name: _read(out_dir / f"table-{i}") for i, t in enumerate(mine)}
    replaced = [_noisy_table(t, noisy[t.name]) if t in mine else t for t in tables]
    return replaced, _ledger(accountant, mine, noise.name.lower(), settings, n_schemes)


def _aggregate(beam, pipeline_dp, engine, data, table, i, n_schemes, noise, settings, out):
    names = [d.name for d in table.dims]
    fixed = dict(table.fixed)
    params = pipeline_dp.AggregateParams(
        noise_kind=noise,
        metrics=[pipeline_dp.Metrics.COUNT, pipeline_dp.Metrics.SUM],
        max_partitions_contributed=n_schemes,
        max_contributions_per_partition=1,
        min_value=0.0,
        max_value=float(settings.max_amount),
    )
    extractors = pipeline_dp.DataExtractors(
        privacy_id_extractor=lambda r: r["household_pid"],
        partition_extractor=lambda r, names=names: "\x1f".join(str(r[n]) for n in names),
        value_extractor=lambda r: float(r["amount"] or 0),
    )
    keys = ["\x1f".join(k) for k in _leaf_keys(table)]
    selected = data | f"Select{i}" >> beam.Filter(
        lambda r, fixed=fixed: all(r[k] == v for k, v in fixed.items())
    )
    result = engine.aggregate(selected, params, extractors, public_partitions=keys)
    _ = (
        result
        | f"Json{i}" >> beam.Map(lambda kv: json.dumps([kv[0], kv[1].count, kv[1].sum]))
        | f"Write{i}" >> beam.io.WriteToText(str(out / f"table-{i}"), file_name_suffix=".jsonl")
    )


def _leaf_keys(table: CountTable) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*(d.categories for d in table.dims)))


def _read(prefix: Path) -> dict[tuple[str, ...], tuple[float, float]]:
    out = {}
    for path in sorted(prefix.parent.glob(prefix.name + "*.jsonl")):
        for line in path.read_text().splitlines():
            key, count, total = json.loads(line)
            out[tuple(key.split("\x1f"))] = (count, total)
    return out


def _noisy_table(table: CountTable, noisy: dict) -> CountTable:
    """Post-processing: whole non-negative counts; amounts for signalled leaves, >= 0."""
    counts = {k: max(0, round(c)) for k, (c, _) in noisy.items()}
    amounts = {}
    if table.amounts:
        amounts = {
            k: Decimal(str(round(max(0.0, s), 2)))
            for k, (_, s) in noisy.items()
            if k in table.amounts
        }
    return CountTable(
        table.name,
        table.title,
        table.dims,
        counts,
        amounts,
        table.extra_amounts,
        table.fixed,
        table.universe,
    )


def _laplace_scale(spec, mechanism: str, settings: DPSettings, n_schemes: int) -> float | None:
    """b = L1 sensitivity / epsilon; a household moves a count by at most n_schemes rows x 1,
    a sum by n_schemes x the amount clamp."""
    if mechanism != "laplace":
        return None
    is_count = "count" in (spec.name or spec.mechanism_type.name).lower()
    per_row = 1.0 if is_count else float(settings.max_amount)
    return n_schemes * per_row / float(spec.eps)


def _ledger(accountant, tables, mechanism, settings, n_schemes) -> dict:
    specs = accountant.mechanism_specs
    entries = []
    per_table = len(specs) // max(len(tables), 1)
    for i, spec in enumerate(specs):
        table = tables[min(i // max(per_table, 1), len(tables) - 1)]
        entries.append(
            {
                "table": table.name,
                "metric": spec.name or spec.mechanism_type.name.lower(),
                "epsilon": float(spec.eps),
                "delta": float(spec.delta or 0.0),
                "mechanism": mechanism,
                "laplace_scale": _laplace_scale(spec, mechanism, settings, n_schemes),
            }
        )
    return {
        "format": LEDGER_FORMAT,
        "library": "PipelineDP 0.3.1 on Apache Beam (DirectRunner), NaiveBudgetAccountant",
        "total_epsilon": settings.epsilon,
        "total_delta": settings.delta,
        "spent_epsilon": round(sum(e["epsilon"] for e in entries), 12),
        "spent_delta": sum(e["delta"] for e in entries),
        "privacy_unit": "household",
        "max_partitions_contributed": n_schemes,
        "max_contributions_per_partition": 1,
        "amount_clamp_eur": [0, settings.max_amount],
        "entries": entries,
        "explanation": (
            f"Counts and amounts of this run are differentially private for every household: "
            f"with total epsilon {settings.epsilon} and delta {settings.delta}, split evenly "
            f"over {len(entries)} noisy aggregates (sequential composition), the report changes "
            "in distribution by at most a factor e^epsilon (plus delta) whether or not any one "
            f"household is in the data. Noise is {mechanism}; each household counts in at most "
            f"{n_schemes} cell(s) per table and its amount is clamped to EUR 0-"
            f"{settings.max_amount:,.0f}. Totals are sums of noisy cells; cells under the "
            "threshold are still suppressed. Figures are therefore not exact, and the same "
            "figure may differ slightly between tables."
        ),
    }
