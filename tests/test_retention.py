"""Crypto-shredding: run outputs with personal data are encrypted per run; retention destroys
the key, after which the data cannot be read while the aggregate outputs still open."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.summary import run_summary_lines
from pipelines.audit_records import AuditContext, audit_batch
from privacy.audit.log import LOG_DIRNAME, AuditLog, AuditLogError
from privacy.audit.signing import Signer
from privacy.keys import DEFAULT_DOMAIN, Keyring, KeyringError, save_keyring
from privacy.retention import (
    KEY_STORE,
    RunDataDestroyed,
    RunDataUnavailable,
    add_period,
    decrypt_bytes,
    decrypt_run,
    encrypt_file,
    protect_run,
    read_run_table,
)

PIDS = [f"d1.{'abcdefghijklmnop'[i] * 32}" for i in range(4)]


def _central() -> Keyring:
    ring = Keyring()
    ring.add("domain", DEFAULT_DOMAIN)
    ring.add("run-data")
    ring.add("audit-signing")
    return ring


def _finalised_run(runs: Path, run_id: str) -> Path:
    """A finalised staging folder shaped like a real run's (personal data + aggregates)."""
    staging = runs / f".staging-{run_id}"
    (staging / "households").mkdir(parents=True)
    (staging / "audit").mkdir()
    signals = pa.table(
        {
            "signal_id": ["s.aa", "s.bb"],
            "household_pid": PIDS[:2],
            "applicant_pid": PIDS[:2],
            "scheme": ["zorgtoeslag"] * 2,
            "benefit_year": pa.array([2025, 2025], pa.int32()),
            "estimated_annual_amount": pa.array([Decimal("1573.42"), Decimal("99.00")]),
        }
    )
    pq.write_table(signals, staging / "signals.parquet")
    pq.write_table(pa.table({"household_pid": PIDS}), staging / "households" / "part-0.parquet")
    (staging / "quarantine").mkdir()
    quarantined = {"source": ["brp"], "row_number": [3], "field": ["bsn"], "cause": ["bsn: x"]}
    pq.write_table(pa.table(quarantined), staging / "quarantine" / "brp.parquet")
    context = AuditContext(run_id, DEFAULT_DOMAIN, "v1")
    join = audit_batch(context, "join", pa.array(PIDS), "joined", "{}")
    pq.write_table(pa.Table.from_batches([join]), staging / "audit" / "segment-00000.parquet")
    manifest = {
        "run_id": run_id,
        "reference_date": "2025-01-01",
        "processing_activity_id": DEFAULT_DOMAIN,
        "register_version": "v1",
        "created_at": "2025-01-02T00:00:00+00:00",
        "counts": {
            "sources": {},
            "households": 4,
            "signals": 2,
            "signals_per_scheme": {"zorgtoeslag": 2},
            "estimated_annual_amount_total": "1672.42",
            "audit_records": 4,
        },
    }
    (staging / "manifest.json").write_text(json.dumps(manifest))
    return staging


def _published(runs: Path, run_id: str, ring: Keyring) -> Path:
    staging = _finalised_run(runs, run_id)
    protect_run(staging, run_id, ring, runs / KEY_STORE)
    target = runs / run_id
    os.replace(staging, target)
    # As the flow does: the run's records are in the audit log beside it.
    records = pq.read_table(target / "audit" / "segment-00000.parquet")
    AuditLog(runs / LOG_DIRNAME).append(records, run_id, Signer(ring))
    return target


def test_personal_data_is_published_only_encrypted_and_reads_back_in_memory(tmp_path):
    ring = _central()
    run = _published(tmp_path, "2025-01-01-aaaa", ring)
    assert not (run / "signals.parquet").exists()
    assert sorted(p.name for p in (run / "households").iterdir()) == ["part-0.parquet.enc"]
    assert b"d1.aaaa" not in (run / "signals.parquet.enc").read_bytes()
    signals = read_run_table(run, "signals.parquet", ring)
    assert signals.column("household_pid").to_pylist() == PIDS[:2]
    assert read_run_table(run, "households", ring).num_rows == 4
    # Another central keyring (another run-data key) cannot open the run.
    with pytest.raises(RunDataUnavailable, match="wrapped under r1, which this keyring"):
        read_run_table(run, "signals.parquet", Keyring())
    other = _central()
    with pytest.raises(RunDataUnavailable, match="does not open with key r1"):
        read_run_table(run, "signals.parquet", other)


def test_decrypt_writes_plain_copies_for_duckdb(tmp_path, passphrase, capsys):
    ring = _central()
    run = _published(tmp_path / "runs", "2025-01-01-aaaa", ring)
    save_keyring(ring, tmp_path / "central.keyring", passphrase)
    argv = ["decrypt", "--run", str(run), "--key-file", str(tmp_path / "central.keyring")]
    assert main(argv + ["--out", str(tmp_path / "plain")]) == 0
    plain = pq.read_table(tmp_path / "plain" / "signals.parquet")
    assert plain.equals(read_run_table(run, "signals.parquet", ring))
    assert (tmp_path / "plain" / "households" / "part-0.parquet").is_file()
    assert "(4 decryption records in the audit log)" in capsys.readouterr().out
    # Each decryption is logged first, one record per person the run holds data on.
    assert main(argv + ["--out", str(tmp_path / "again")]) == 0
    log = AuditLog(run.parent / LOG_DIRNAME)
    events = [c for c in log.checkpoints() if c.batch_id.startswith(f"{run.name}/decryption/")]
    assert len(events) == 2
    spans = set()
    for checkpoint in events:
        records = log.batch_records(checkpoint.batch_id).to_pylist()
        assert sorted(r["data_subject_pid"] for r in records) == sorted(PIDS)
        assert {r["name"] for r in records} == {"decryption"}
        files = json.loads(records[0]["attributes"])["files"]
        assert files == ["households/part-0.parquet", "signals.parquet"]
        spans |= {r["span_id"] for r in records}
    assert len(spans) == 2 * len(PIDS)  # each decryption its own records


def test_a_decryption_that_cannot_be_logged_writes_nothing(tmp_path):
    ring = _central()
    run = _published(tmp_path / "runs", "2025-01-01-aaaa", ring)
    unsigned = Keyring()
    unsigned.keys = [k for k in ring.keys if k.role != "audit-signing"]
    with pytest.raises(KeyringError, match="no active audit-signing key"):
        decrypt_run(run, unsigned, tmp_path / "plain")
    # A copy of the run, away from its log: no stray log is started, nothing decrypted.
    copy = tmp_path / "elsewhere" / run.name
    shutil.copytree(run, copy)
    with pytest.raises(AuditLogError, match="not the audit log of run"):
        decrypt_run(copy, ring, tmp_path / "plain", key_store=run.parent / KEY_STORE)
    assert not (copy.parent / LOG_DIRNAME).exists()
    # Without the run's audit copy the persons cannot be named: nothing decrypted.
    (run / "audit" / "segment-00000.parquet").unlink()
    with pytest.raises(RunDataUnavailable, match="cannot be logged"):
        decrypt_run(run, ring, tmp_path / "plain")
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize("size", [0, 1000, (1 << 20), (1 << 20) * 2 + 17])
def test_files_of_any_size_round_trip_through_segments(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "f.parquet").write_bytes(data)
    key = os.urandom(32)
    enc = encrypt_file(tmp_path / "f.parquet", key, "run", "f.parquet")
    assert not (tmp_path / "f.parquet").exists()
    assert decrypt_bytes(enc, key, "run", "f.parquet") == data


@pytest.mark.parametrize(
    "change", ["flip a byte", "cut the last segment", "other run", "other path"]
)
def test_a_changed_encrypted_file_does_not_decrypt(tmp_path, change):
    (tmp_path / "f.parquet").write_bytes(os.urandom((1 << 20) + 500))
    key = os.urandom(32)
    enc = encrypt_file(tmp_path / "f.parquet", key, "run", "f.parquet")
    run, path = "run", "f.parquet"
    data = bytearray(enc.read_bytes())
    if change == "flip a byte":
        data[-100] ^= 1
    elif change == "cut the last segment":
        data = data[: len(data) - 500 - 16]
    elif change == "other run":
        run = "another-run"
    else:
        path = "g.parquet"
    enc.write_bytes(bytes(data))
    with pytest.raises(RunDataUnavailable):
        decrypt_bytes(enc, key, run, path)


@pytest.mark.parametrize(
    "start, period, end",
    [
        ("2025-01-31", "P1M", "2025-02-28"),
        ("2024-02-29", "P1Y", "2025-02-28"),
        ("2025-01-01", "P13M", "2026-02-01"),
        ("2025-01-01", "P6W", "2025-02-12"),
        ("2025-01-01", "P1Y6M10D", "2026-07-11"),
    ],
)
def test_retention_periods_are_added_as_calendar_periods(start, period, end):
    assert add_period(dt.date.fromisoformat(start), period).isoformat() == end


def test_after_retention_the_old_runs_personal_data_cannot_be_decrypted_but_its_report_opens(
    tmp_path, passphrase, capsys
):
    ring = _central()
    runs = tmp_path / "runs"
    old = _published(runs, "2025-01-01-aaaa", ring)
    new = _published(runs, "2025-02-01-bbbb", ring)
    # Make the old run's key a year older than the new one's.
    key_file = runs / KEY_STORE / f"{old.name}.key"
    record = json.loads(key_file.read_text())
    record["created"] = "2024-01-02T10:00:00+00:00"
    key_file.write_text(json.dumps(record))
    wrapped_copy = key_file.read_bytes()
    save_keyring(ring, tmp_path / "central.keyring", passphrase)
    argv = ["retention", "enforce", "--runs", str(runs), "--period", "P1Y", "--as-of"]
    argv += ["2025-03-01", "--key-file", str(tmp_path / "central.keyring")]
    assert main(argv) == 0
    assert "1 run(s) past retention P1Y" in capsys.readouterr().out

    assert not key_file.exists()
    with pytest.raises(RunDataDestroyed, match="destroyed on .*retention period P1Y ended"):
        read_run_table(old, "signals.parquet", ring)
    with pytest.raises(RunDataUnavailable):
        decrypt_run(old, ring, tmp_path / "plain")
    assert not (tmp_path / "plain").exists()
    # The ciphertext is still there (as in any backup) but no key in the store opens it.
    assert (old / "signals.parquet.enc").is_file()
    assert wrapped_copy not in b"".join(p.read_bytes() for p in (runs / KEY_STORE).iterdir())
    # Aggregates stay readable: the manifest's counts and the run summary.
    lines = "\n".join(run_summary_lines(old))
    assert "zorgtoeslag" in lines and "households evaluated   4" in lines
    assert json.loads((old / "retention.json").read_text())["period"] == "P1Y"
    # The quarantine (rows the body can trace to persons) goes with the key; the new run's stays.
    assert not (old / "quarantine" / "brp.parquet").exists()
    assert (new / "quarantine" / "brp.parquet").is_file()
    # The run within its retention period is untouched.
    assert read_run_table(new, "signals.parquet", ring).num_rows == 2
    # Every person whose data went is logged, once, in the audit log.
    deleted = AuditLog(runs / LOG_DIRNAME).batch_records(f"{old.name}/deletion/run-personal-data")
    assert sorted(deleted.column("data_subject_pid").to_pylist()) == PIDS
    assert set(deleted.column("name").to_pylist()) == {"deletion"}
    # Enforcing again changes nothing and logs nothing twice (beside the two runs' own).
    assert main(argv) == 0
    assert [c.batch_id for c in AuditLog(runs / LOG_DIRNAME).checkpoints()] == [
        old.name,
        new.name,
        f"{old.name}/deletion/run-personal-data",
    ]


def test_retention_needs_a_keyring_that_can_sign_the_deletion_log(tmp_path, passphrase, capsys):
    ring = _central()
    runs = tmp_path / "runs"
    _published(runs, "2025-01-01-aaaa", ring)
    body = Keyring()
    body.add("body")
    save_keyring(body, tmp_path / "body.keyring", passphrase)
    argv = ["retention", "enforce", "--runs", str(runs), "--period", "P1D", "--as-of"]
    argv += ["2030-01-01", "--key-file", str(tmp_path / "body.keyring")]
    assert main(argv) == 2
    assert "no active audit-signing key" in capsys.readouterr().err
    # Nothing destroyed: the deletion could not be logged.
    assert (runs / KEY_STORE / "2025-01-01-aaaa.key").is_file()
    shutil.rmtree(runs / LOG_DIRNAME, ignore_errors=True)


def test_operator_feedback_is_kept_for_the_period_from_its_outcome_date(
    tmp_path, passphrase, capsys
):
    """Feedback rows (a household and its outcome) are personal data beside the runs:
    retention removes each once its period, counted from the outcome date, has ended,
    logged first under the run its signal came from. The file keeps its name, so the same
    file imported again is still known; the take-up statistics are of the rows left."""
    from pipelines.lifecycle import FEEDBACK_SCHEMA, feedback_folder

    ring = _central()
    runs = tmp_path / "runs"
    run = _published(runs, "2025-01-01-aaaa", ring)
    key_file = tmp_path / "central.keyring"
    save_keyring(ring, key_file, passphrase)
    feedback = tmp_path / "outcomes.csv"
    feedback.write_text(
        "signal_id,outcome,outcome_date\ns.aa,contacted,2025-01-10\ns.bb,granted,2025-02-20\n"
    )
    imported = ["feedback", "import", str(feedback), "--runs", str(runs), "--key-file"]
    assert main(imported + [str(key_file)]) == 0
    (stored,) = feedback_folder(runs).glob("*.parquet")
    argv = ["retention", "enforce", "--runs", str(runs), "--period", "P1Y", "--key-file"]
    argv += [str(key_file), "--as-of"]
    capsys.readouterr()

    assert main(argv + ["2026-01-10"]) == 0  # the first row's last day: nothing goes yet
    assert "0 operator feedback row(s) past it removed" in capsys.readouterr().out
    assert main(argv + ["2026-02-01"]) == 0
    assert "0 run(s) past retention P1Y as of 2026-02-01; 1 operator feedback row(s)" in (
        capsys.readouterr().out
    )
    left = pq.read_table(stored, schema=FEEDBACK_SCHEMA)
    assert left.column("signal_id").to_pylist() == ["s.bb"]
    assert [p.name for p in feedback_folder(runs).iterdir() if p.name.startswith(".")] == []
    log = AuditLog(runs / LOG_DIRNAME)
    (deleted,) = [c for c in log.checkpoints() if c.batch_id.startswith("retention/")]
    records = log.batch_records(deleted.batch_id).to_pylist()
    assert [(r["name"], r["data_subject_pid"], r["run_id"]) for r in records] == [
        ("deletion", PIDS[0], run.name)
    ]
    assert json.loads(records[0]["attributes"])["dataset"] == "operator-feedback"
    statistics = json.loads((feedback_folder(runs) / "statistics.json").read_text())
    assert [s["signals_with_feedback"] for s in statistics["per_scheme"]] == [1]

    status = ["retention", "status", "--runs", str(runs)]
    assert main(status) == 0
    assert "operator feedback: 1 row(s), the oldest (2025-02-20) kept until 2026-02-20" in (
        capsys.readouterr().out
    )
    # A period longer than the register's (P1Y) would keep what it says must go.
    assert main(argv[:5] + ["P50Y"] + argv[6:] + ["2026-02-01"]) == 2
    assert "--period P50Y is longer than the processing register's" in capsys.readouterr().err

    # The same file again is known: the removed row does not come back.
    assert main(imported + [str(key_file)]) == 0
    assert "already imported, nothing changed" in capsys.readouterr().out
    assert pq.read_table(stored).num_rows == 1
    # A second pass removes nothing more and logs nothing twice.
    assert main(argv + ["2026-02-01"]) == 0
    assert len(AuditLog(runs / LOG_DIRNAME).checkpoints()) == len(log.checkpoints())


def test_the_scheduled_retention_flow_enforces_the_registers_period(tmp_path, passphrase):
    """`signals serve`'s retention flow, run as Prefect runs it: its result names runs and
    counts, never a household."""
    from flows.serve import retention_run

    ring = _central()
    runs = tmp_path / "runs"
    old = _published(runs, "2025-01-01-aaaa", ring)
    key_file = runs / KEY_STORE / f"{old.name}.key"
    key_file.write_text(json.dumps(json.loads(key_file.read_text()) | {"created": "2020-01-01"}))
    save_keyring(ring, tmp_path / "central.keyring", passphrase)
    done = retention_run(str(runs), str(tmp_path / "central.keyring"))
    assert done == {"runs": [old.name], "feedback_rows": 0, "link_tables": [], "deliveries": []}
    assert not key_file.exists()


def test_the_pseudonymised_deliveries_the_runs_read_expire_too(tmp_path, passphrase, capsys):
    """Kept past the runs, the deliveries (income, assets, objections, in plain Parquet)
    would keep what the runs' destroyed keys no longer open. Removed per reference date,
    after one deletion record per person they hold; a later date stays, and so does a
    source's newest delivery whatever its age (the next run reads it)."""
    import pyarrow.compute as pc
    from population import REFERENCE_DATE
    from service_support import prepare_deliveries

    from pipelines.contract import SOURCES

    ring = _central()
    runs = tmp_path / "runs"
    _published(runs, "2025-01-01-aaaa", ring)
    save_keyring(ring, tmp_path / "central.keyring", passphrase)
    deliveries = prepare_deliveries(tmp_path / "bodies").deliveries
    for source in SOURCES:
        if source != "tax":  # a later month, within its period; tax delivers less often
            shutil.copytree(
                deliveries / source / REFERENCE_DATE, deliveries / source / "2026-01-01"
            )
    gone = [s for s in SOURCES if s != "tax" and SOURCES[s].subject == "bsn"]
    persons = pc.unique(
        pa.chunked_array(
            pq.read_table(deliveries / s / REFERENCE_DATE / "data.parquet", columns=["bsn"])["bsn"]
            for s in gone
        )
    )
    argv = ["retention", "enforce", "--runs", str(runs), "--period", "P1Y", "--as-of"]
    argv += ["2026-03-01", "--key-file", str(tmp_path / "central.keyring")]
    assert main(argv + ["--deliveries", str(deliveries)]) == 0
    assert f"deliveries of {REFERENCE_DATE}: removed from {deliveries}" in capsys.readouterr().out
    kept = sorted(str(p.relative_to(deliveries)) for p in deliveries.glob("*/*"))
    assert kept == sorted(
        f"{s}/2026-01-01" if s != "tax" else f"tax/{REFERENCE_DATE}" for s in SOURCES
    )
    log = AuditLog(runs / LOG_DIRNAME)
    (batch,) = [c.batch_id for c in log.checkpoints() if "deliveries" in c.batch_id]
    assert batch.startswith(f"retention/deliveries/{REFERENCE_DATE}/")
    deleted = log.batch_records(batch)
    assert deleted.num_rows == len(persons)
    assert set(deleted["name"].to_pylist()) == {"deletion"}
    assert all(p.startswith("d1.") for p in deleted["data_subject_pid"].to_pylist())
    # Without the deliveries folder the pass says it did not look.
    assert main(argv) == 0
    assert "the pseudonymised deliveries were not checked" in capsys.readouterr().err


def test_retention_takes_the_runs_folder_from_the_configuration(tmp_path, capsys, monkeypatch):
    ring = _central()
    runs = tmp_path / "runs"
    run = _published(runs, "2025-01-01-aaaa", ring)
    (tmp_path / "signals.toml").write_text(f'[paths]\nout = "{runs}"\n')
    assert main(["retention", "status", "--config", str(tmp_path / "signals.toml")]) == 0
    assert f"{run.name}  created" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "runs")  # no signals.toml here, and no --runs
    monkeypatch.delenv("SIGNALS_CONFIG", raising=False)
    assert main(["retention", "status"]) == 2
    assert "paths.out is not set" in capsys.readouterr().err


def test_a_pass_killed_before_it_replaced_a_file_leaves_it_whole_for_the_next(tmp_path):
    """A killed pass leaves the old file's second name beside the live one, both one file:
    the next pass must not overwrite it (the live file with it), only drop that name."""
    import os

    from privacy.retention import _EXPIRED, _destroy_leftovers

    live = tmp_path / "households-b1-to-b2.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), live)
    os.link(live, tmp_path / f".{live.name}{_EXPIRED}")  # killed right after this
    _destroy_leftovers(tmp_path)
    assert pq.read_table(live)["x"].to_pylist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == [live.name]
    # A leftover alone (the live name was replaced) is overwritten before it goes.
    alone = tmp_path / f".old{_EXPIRED}"
    alone.write_bytes(b"old personal data")
    _destroy_leftovers(tmp_path)
    assert not alone.exists()
