"""A known failure of a command that runs a flow: one line on stderr and exit 2.

Prefect logs a failed flow run with its traceback; the command reports the same failure
in one line, so on the console Prefect's records of a known failure are dropped
(flows/environment.py quiet_known_failures). Any other failure keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.environment import _KnownFailures
from pipelines.read_deliveries import DeliveryRefused

MAIN = Path(__file__).resolve().parent.parent


def _record(name: str, message: str, error: Exception | None = None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, exc_info)


class _MissingMonth(DeliveryRefused):
    """A known failure's subclass: Prefect's state line names it, not DeliveryRefused."""


def test_only_prefects_records_of_a_known_failure_are_dropped():
    known = _KnownFailures((DeliveryRefused,))
    state = "Finished in state Failed('Task run encountered an exception _MissingMonth: /x')"
    assert not known.filter(_record("prefect.task_runs", state))
    refused = DeliveryRefused("/x/brp: no delivery of source 'brp' (folder missing)")
    assert not known.filter(_record("prefect.flow_runs", "Encountered exception", refused))
    state = "Finished in state Failed('Task run encountered an exception DeliveryRefused: /x')"
    assert not known.filter(_record("prefect.task_runs", state))
    # A bug keeps its record and traceback; so does anything not from Prefect.
    assert known.filter(_record("prefect.flow_runs", "Encountered exception", KeyError("k")))
    assert known.filter(_record("pipelines", "Encountered exception", refused))


@pytest.mark.slow
def test_a_run_that_fails_for_a_known_cause_prints_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SIGNALS_KEYRING_PASSPHRASE"}
    env.update(SIGNALS_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "home" / "p"))
    (tmp_path / "deliveries").mkdir()
    argv = [sys.executable, "-m", "flows.cli", "run", "--deliveries", str(tmp_path / "deliveries")]
    argv += ["--reference-date", "2025-01-01", "--out", str(tmp_path / "runs")]
    argv += ["--key-file", str(tmp_path / "central.keyring")]
    proc = subprocess.run(argv, cwd=MAIN, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no passphrase to unlock the keyring: set SIGNALS_KEYRING_PASSPHRASE, or name a "
        "file that holds it (keys.passphrase_file in signals.toml; --passphrase-file where a "
        "command takes it)"
    ]
    # An --out that is a file, or under one, is refused in one line before the flow starts.
    (tmp_path / "a-file").write_text("")
    for out, says in (("a-file", "is a file"), ("a-file/runs", "is under")):
        argv[argv.index("--out") + 1] = str(tmp_path / out)
        proc = subprocess.run(argv, cwd=MAIN, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"error: --out {tmp_path / out}: {says}" in proc.stderr


@pytest.mark.parametrize("command", ["register show", "audit query --count-by name"])
def test_a_reader_that_stops_early_gets_no_traceback(command, tmp_path):
    # `signals register show | head -1`: the reader is gone before the command writes.
    from test_audit_log import run_records

    from privacy.audit.log import AuditLog
    from privacy.audit.signing import Signer
    from privacy.keys import Keyring

    ring = Keyring()
    ring.add("audit-signing")
    AuditLog(tmp_path / "audit-log").append(run_records("r"), "r", Signer(ring))
    args = command.split() + (["--log", str(tmp_path)] if command.startswith("audit") else [])
    argv = [sys.executable, "-m", "flows.cli", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    proc = subprocess.Popen(
        argv, cwd=MAIN, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141  # as a command killed by SIGPIPE
    assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipe" not in err, err


def test_only_a_number_that_may_be_a_bsn_is_hidden_from_a_message():
    from flows.cli import redacted

    hidden = "<a number like a BSN, not shown>"
    assert redacted("row 3: 111222333 is not a signal") == f"row 3: {hidden} is not a signal"
    assert redacted("signal 1112.22.333 and 111 222 333") == f"signal {hidden} and {hidden}"
    # Followed by a colon, as a path or a value in an error is ("runs/<typed>: no log here").
    assert redacted("runs/111222333: no audit log") == f"runs/{hidden}: no audit log"
    assert redacted("cannot count by 111222333: choose") == f"cannot count by {hidden}: choose"
    kept = [
        "checksum fbbb4501726517e86c0ffee and 111222333aa",  # inside hex or a longer token
        "at 2026-11-29 14:13:28, run 2025-01-01-rbbdeseuftuw",  # a date and a time
        "took 111222333:12 in all",  # part of a longer figure
        "needs 2147483648 bytes; 1,000,000 persons; OIN 00000001234567890000",
        "111222334 fails the 11-proef, so it is no BSN",
    ]
    for message in kept:
        assert redacted(message) == message


def test_a_printed_command_path_runs_as_printed(tmp_path, monkeypatch):
    """A suggestion names `signals` by the path it was called with when it is on no PATH:
    called as ./signals from its own folder that must stay ./signals (a bare `signals`
    would be looked up on PATH and not found)."""
    from flows.cli import program, shell_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    for called in ("./signals", str(tmp_path / "signals")):
        monkeypatch.setattr(sys, "argv", [called, "demo"])
        assert program() == "./signals", called
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "signals")])
    assert program() == "bin/signals"
    assert shell_path("-odd name") == "'./-odd name'"
    assert shell_path(tmp_path / "runs") == "./runs"
    assert shell_path("/") == "/"


def test_an_interrupted_run_says_nothing_was_published_while_its_staging_holds_a_manifest(
    tmp_path,
):
    """A run stopped between writing its manifest and publishing (the report and the audit
    log append run there) has a manifest in `.staging-<run_id>/` only: not published."""
    from flows.cli import _left_behind

    (tmp_path / "2024-12-01-old").mkdir()
    (tmp_path / "2024-12-01-old" / "manifest.json").write_text("{}")
    (tmp_path / ".staging-2025-01-01-new").mkdir()
    (tmp_path / ".staging-2025-01-01-new" / "manifest.json").write_text("{}")
    said = _left_behind(tmp_path, {"2024-12-01-old"})
    assert said == "nothing published (run it again to start over)"

    published = tmp_path / "2025-01-01-new"
    (tmp_path / ".staging-2025-01-01-new").rename(published)
    (published / "report").mkdir()
    (published / "report" / "report.html").write_text("<html></html>")
    assert _left_behind(tmp_path, {"2024-12-01-old"}) == f"{published} was published in full"


def test_a_run_another_command_published_meanwhile_is_reported_as_already_published(tmp_path):
    """Two commands of the same inputs: the second lists the published runs, Prefect starts
    (~10 s), and the first publishes in between. The second's flow finds it published and
    does nothing; it must not say it made the run."""
    import datetime as dt
    import json

    from flows.runs import made_before

    run = tmp_path / "2025-01-01-abcdefghijkl"
    run.mkdir()
    started = dt.datetime(2026, 11, 30, 21, 0, 5, 500_000, tzinfo=dt.UTC)
    for created, before in (("2026-11-30T21:00:04+00:00", True), ("21:00:05", False)):
        stamp = created if "T" in created else f"2026-11-30T{created}+00:00"
        (run / "manifest.json").write_text(json.dumps({"created_at": stamp}))
        assert made_before(run, set(), started) is before, created
    assert made_before(run, {run.name}, started)  # listed when the command started
    (run / "manifest.json").write_text("{}")
    assert not made_before(run, set(), started)  # cannot tell: made now


def test_a_second_run_of_a_date_is_told_of_the_first(tmp_path):
    import json

    from flows.runs import same_date_runs

    for name, date in (("2025-01-01-aaaa", "2025-01-01"), ("2025-02-01-bbbb", "2025-02-01")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"reference_date": date}))
    new = tmp_path / "2025-01-01-cccc"
    new.mkdir()
    (new / "manifest.json").write_text(json.dumps({"reference_date": "2025-01-01"}))
    published = {"2025-01-01-aaaa", "2025-02-01-bbbb"}
    assert same_date_runs(new, published) == ["2025-01-01-aaaa"]
    assert same_date_runs(new, {"2025-02-01-bbbb"}) == []
