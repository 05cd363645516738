"""A run killed with SIGKILL at any stage and started again publishes exactly what an
uninterrupted run publishes: the same run id, byte-identical signals, the same audit
records, and nothing half-published in between.

`signals run` runs as a subprocess; SIGNALS_FAULT_AT makes it SIGKILL itself at a
stage (flows/faults.py): after ingestion, inside the Beam join, before the audit log
append and the report (plus the debris of an append torn by the crash), after them, and
after the rename that publishes. Each restart runs on the leftovers of the kills before it
(staging folder, data key, audit log) in the same output folder. All runs report to
one Prefect server started by this module.
"""

from __future__ import annotations

import signal

import duckdb
import pyarrow.parquet as pq
import pytest
from population import SIGNALLED
from service_support import (
    decrypted,
    decrypted_bytes,
    prefect_server,
    prepare_deliveries,
    published_runs,
    run_args,
    signals,
    subprocess_env,
)

from flows.faults import FAULT_ENV, POINTS
from flows.runs import list_runs

pytestmark = pytest.mark.slow

# Audit record fields that identify what was recorded; start and end times are wall clock.
AUDIT_IDENTITY = (
    "trace_id, span_id, parent_span_id, name, status, run_id, processing_activity_id, "
    "register_version, data_subject_pid, attributes"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Deliveries, a Prefect server, and the run an uninterrupted `signals run` publishes."""
    root = tmp_path_factory.mktemp("kill")
    prepared = prepare_deliveries(root)
    with prefect_server() as api_url:
        env = subprocess_env(api_url)
        done = signals(run_args(prepared, root / "uninterrupted"), env, root)
        assert done.returncode == 0, done.stderr[-3000:]
        (expected,) = published_runs(root / "uninterrupted")
        yield prepared, env, expected


def _manifest(run_dir) -> dict:
    import json

    m = json.loads((run_dir / "manifest.json").read_text())
    m.pop("created_at")  # wall clock, like the purpose check's time
    m["purpose_check"].pop("checked_at")
    return m


def _audit(run_dir) -> list[tuple]:
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT {AUDIT_IDENTITY} FROM read_parquet('{run_dir}/audit/*.parquet') ORDER BY span_id"
    ).fetchall()
    con.close()
    return rows


def _households(run_dir, key) -> list[dict]:
    table = decrypted(run_dir, "households", key)
    return sorted(table.to_pylist(), key=lambda r: r["household_pid"])


def _log(out):
    from privacy.audit.log import LOG_DIRNAME, AuditLog

    return AuditLog(out / LOG_DIRNAME)


def _logged(out, run_id) -> list[tuple]:
    """The identity of the records the audit log holds for a run, in log order."""
    table = _log(out).batch_records(run_id)
    names = [n.strip() for n in AUDIT_IDENTITY.split(",")]
    return list(zip(*(table.column(n).to_pylist() for n in names), strict=True))


def _kill(world, point, out):
    """Run with a kill at `point`; check that only what may be published is published."""
    prepared, env, _ = world
    killed = signals(run_args(prepared, out), {**env, FAULT_ENV: point}, prepared.root)
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
    if point == "during_publish":  # killed after the rename: published whole, with its report
        (run_dir,) = published_runs(out)
        assert (run_dir / "report" / "report.html").is_file()
    else:
        assert published_runs(out) == [], f"a run killed at {point} published something"
        assert [e.state for e in list_runs(out)] == ["unfinished"]


def _tear_the_audit_append(out):
    """What a crash inside the audit log append leaves: a half-written temporary segment and
    a segment no checkpoint covers. Neither may be counted; the next append replaces them."""
    segments = out / "audit-log" / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    (segments / ".segment-00000000.parquet.tmp").write_bytes(b"PAR1 half")
    (segments / "segment-00000000.parquet").write_bytes(b"PAR1 never committed PAR1")


def test_a_run_killed_at_every_stage_in_turn_publishes_what_an_uninterrupted_run_does(
    world, tmp_path
):
    """Each restart is killed one stage further on, running on the leftovers of all the
    kills before it; the run that is finally let through must equal the uninterrupted one."""
    from privacy.audit.verify import verify_log

    prepared, env, expected = world
    out = tmp_path / "runs"
    for point in POINTS:
        _kill(world, point, out)
        if point == "mid_audit":
            _tear_the_audit_append(out)
    again = signals(run_args(prepared, out), env, prepared.root)
    assert again.returncode == 0, again.stderr[-3000:]

    (run_dir,) = published_runs(out)
    assert run_dir.name == expected.name
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    key = prepared.central_keyring
    assert decrypted_bytes(run_dir, "signals.parquet", key) == decrypted_bytes(
        expected, "signals.parquet", key
    )
    assert _households(run_dir, key) == _households(expected, key)
    assert _manifest(run_dir) == _manifest(expected)
    for q in sorted((expected / "quarantine").iterdir()):
        assert (run_dir / "quarantine" / q.name).read_bytes() == q.read_bytes()
    assert (run_dir / "report" / "report.html").is_file()

    # The audit: logged once, the same records as the uninterrupted run, the copy agrees.
    assert [c.batch_id for c in _log(out).checkpoints()] == [run_dir.name]
    assert _logged(out, run_dir.name) == _logged(expected.parent, expected.name)
    assert _audit(run_dir) == _audit(expected)
    assert sorted(_logged(out, run_dir.name), key=lambda r: r[1]) == _audit(run_dir)
    report = verify_log(out / "audit-log")
    assert report.ok, report.problems[:3]


def test_the_uninterrupted_run_signals_and_audits_something(world):
    """Guards the comparison above: equal outputs must not be equally empty."""
    prepared, _, expected = world
    signals_table = decrypted(expected, "signals.parquet", prepared.central_keyring)
    assert signals_table.column("scheme").to_pylist().count("zorgtoeslag") == len(SIGNALLED)
    audit = pq.read_table(expected / "audit" / "segment-00000.parquet").num_rows
    assert audit > 0 and len(_audit(expected)) == audit


def test_kill_points_do_nothing_unless_the_variable_names_them(monkeypatch):
    import apache_beam as beam

    from flows import faults
    from pipelines.options import pipeline_options

    monkeypatch.delenv(FAULT_ENV, raising=False)
    pcoll = beam.Pipeline(options=pipeline_options()) | beam.Create([1])  # built, not run
    assert faults.tap(pcoll, "mid_join") is pcoll  # the pipeline graph is unchanged
    for point in POINTS:
        faults.point(point)  # still alive
    monkeypatch.setenv(FAULT_ENV, "mid_join")
    faults.point("after_ingest")  # another point: still alive
    with pytest.raises(ValueError, match="unknown fault point 'mid_joins'"):
        faults.point("mid_joins")
