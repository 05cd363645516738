"""Run the central pipeline on a runner and compare what two runs published.

For the tests that check a runner gives the same outputs as the local default
(tests/test_dask_runner.py, tests/test_runner_options.py).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq

AUDIT_COLUMNS = ["span_id", "name", "status", "data_subject_pid", "attributes"]


def population(root, persons: int = 1_000):
    """A synthetic population, pseudonymised, under root/pseudo (flows/bench.py phases)."""
    from flows.bench import generate_phase, pseudonymise_phase

    generate_phase(raw=str(root / "raw"), persons=persons, seed=7)
    pseudonymise_phase(raw=str(root / "raw"), pseudo=str(root / "pseudo"))
    return root / "pseudo"


def run_central(spec, options):
    """The central pipeline of `spec` with `options`, finalised; returns the staging folder."""
    from pipelines import central
    from pipelines.publish import finalise

    spec.staging.mkdir(parents=True)
    with beam.Pipeline(options=options) as p:
        central.build(p, spec)
    finalise(spec.staging, spec.deliveries)
    return spec.staging


def _table(path, sort_by: str, columns=None) -> list[dict]:
    return pq.read_table(path, columns=columns).sort_by(sort_by).to_pylist()


def _audit(staging) -> tuple[list[str], list[dict]]:
    from privacy.audit.parts import AuditParts

    parts = AuditParts(staging / "audit_parts")
    records = [r for t in parts.tables(1 << 20) for r in t.select(AUDIT_COLUMNS).to_pylist()]
    assert len(records) == parts.records > 0
    return [p.name for p in parts.paths], records


def assert_same_outputs(expected, actual) -> None:
    """Two finalised runs published the same signals, suppressed candidates, resolved
    signals, households, evaluations and audit records."""
    signals = _table(expected / "signals.parquet", "signal_id")
    assert signals, "the population should give signals"
    assert _table(actual / "signals.parquet", "signal_id") == signals
    for name in ("suppressed.parquet", "lifecycle.parquet"):
        assert _table(actual / name, "signal_id") == _table(expected / name, "signal_id"), name
    for name in ("households", "evaluations"):
        if (expected / name).is_dir():
            first = pq.read_schema(next((expected / name).glob("*.parquet"))).names[0]
            assert _table(actual / name, first) == _table(expected / name, first), name
    # The audit records in log order (the order the log append writes them): the same parts,
    # the same records, in the same order.
    assert _audit(actual) == _audit(expected)
