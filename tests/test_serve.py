"""`signals serve`: picking up complete deliveries, retries only for transient failures,
and a cron-scheduled deployment whose run executes and publishes.

The deployment test is the real thing end to end: a Prefect server of the test's own
(Prefect's test harness), `signals serve --config signals.toml` as a subprocess, and
the server scheduling the deployment's runs from its cron schedule. The harness server
does not run Prefect's scheduler loop (it waits up to a minute between passes), so the
test asks the server to schedule the deployment from a start time a month back: the
same schedule code makes a run due now, which the serving process executes.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from population import REFERENCE_DATE, SIGNALLED
from service_support import (
    PASSPHRASE,
    SIGNALS,
    decrypted,
    end_session,
    has_ended,
    prefect_server,
    prepare_deliveries,
    published_runs,
    subprocess_env,
)

from flows import faults
from flows.cli import main
from flows.config import load_config
from flows.serve import (
    CENTRAL,
    RETENTION,
    NoCompleteDelivery,
    deployment_parameters,
    pick_up,
    scheduled_run,
)
from pipelines.contract import SOURCES
from pipelines.read_deliveries import DeliveryRefused

DAY, EARLIER, LATER = dt.date(2025, 2, 1), dt.date(2025, 1, 1), dt.date(2025, 3, 1)


def _delivery(root, source, day, manifest=True, rows=100, quarantined=0):
    folder = root / source / day.isoformat()
    folder.mkdir(parents=True)
    if manifest:
        m = {
            "source": source,
            "reference_date": day.isoformat(),
            "row_count": rows - quarantined,
            "original": {"row_count": rows},
            "quarantine": {"row_count": quarantined},
            "pseudonymised": {"key_id": "b1"},
        }
        (folder / "manifest.json").write_text(json.dumps(m))
    return folder


# -- picking up ---------------------------------------------------------------------------


def test_the_newest_date_complete_for_every_source_is_picked_up(tmp_path):
    for source in SOURCES:
        _delivery(tmp_path, source, EARLIER)
        _delivery(tmp_path, source, DAY)
    _delivery(tmp_path, "brp", LATER)  # complete, but alone
    _delivery(tmp_path, "tax", LATER, manifest=False)  # still arriving
    (tmp_path / "housing" / ".2025-03-01.partial-42").mkdir()
    picked = pick_up(tmp_path)
    assert picked.reference_date == DAY
    assert picked.folders == {s: tmp_path / s / DAY.isoformat() for s in SOURCES}
    # The newer date waits for every body but brp; tax's delivery is still arriving.
    assert picked.waiting == {
        "2025-03-01": "waiting for tax (arriving: no manifest yet), benefits, housing, "
        "arrears, health_insurance, objections"
    }


def test_a_source_without_a_complete_delivery_is_named(tmp_path):
    for source in SOURCES:
        _delivery(tmp_path, source, DAY, manifest=source != "objections")
    with pytest.raises(NoCompleteDelivery) as e:
        pick_up(tmp_path)
    assert "no reference date is complete" in str(e.value)
    assert "objections newest complete none" in str(e.value)
    assert "brp newest complete 2025-02-01" in str(e.value)


def test_a_missing_deliveries_folder_is_refused(tmp_path):
    with pytest.raises(NoCompleteDelivery, match="deliveries folder does not exist"):
        pick_up(tmp_path / "nowhere")


def test_a_delivery_quarantined_beyond_the_threshold_is_refused(tmp_path):
    for source in SOURCES:
        _delivery(tmp_path, source, DAY, rows=200, quarantined=50 if source == "tax" else 2)
    assert pick_up(tmp_path, max_quarantine_share=0.25).reference_date == DAY
    with pytest.raises(DeliveryRefused) as e:
        pick_up(tmp_path, max_quarantine_share=0.1)
    message = str(e.value)
    assert message.startswith(str(tmp_path / "tax" / "2025-02-01" / "manifest.json"))
    assert "50 of 200 rows (25.0%)" in message and "max_quarantine_share (10.0%)" in message


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, transient",
    [
        (OSError(errno.ESTALE, "Stale file handle"), True),
        (TimeoutError("read timed out"), True),
        (FileNotFoundError(errno.ENOENT, "No such file"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (DeliveryRefused("x/manifest.json: manifest is missing"), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_transient_os_errors_count_as_transient(error, transient):
    assert faults.is_transient(error) is transient


def test_a_refusal_explaining_an_os_error_is_not_transient():
    try:
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError:
            raise DeliveryRefused("tax/2025-01-01/data.parquet: cannot be read") from None
    except DeliveryRefused as e:
        assert not faults.is_transient(e)
    wrapped = RuntimeError("bundle failed")
    wrapped.__cause__ = OSError(errno.EIO, "Input/output error")
    assert faults.is_transient(wrapped)


def test_the_run_tasks_that_touch_files_retry_transient_errors_only():
    from flows import run

    for t in (run.open_inputs, run.run_pipeline, run.finalise_run, run.publish_run):
        assert t.retries >= 1, t.name
        assert t.retry_condition_fn is faults.retry_transient, t.name


# -- with a Prefect server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server of this module's own, and real pseudonymised deliveries."""
    prepared = prepare_deliveries(tmp_path_factory.mktemp("serve"))
    with prefect_server() as api_url:
        yield api_url, prepared


def _task_runs(flow_run_id) -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name.rsplit("-", 1)[0]: r.run_count for r in runs}


def test_a_transient_error_is_retried_and_a_refusal_is_not(server):
    from prefect import flow, task

    attempts = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=faults.retry_transient)
    def flaky(error):
        attempts.append(error)
        if len(attempts) == 1:
            raise error
        return len(attempts)

    @flow
    def once(error):
        return flaky(error)

    assert once(OSError(errno.ESTALE, "Stale file handle")) == 2
    attempts.clear()
    with pytest.raises(DeliveryRefused):
        once(DeliveryRefused("refused"))
    assert len(attempts) == 1


def test_a_scheduled_run_without_complete_deliveries_fails_at_once_saying_why(server, tmp_path):
    _, prepared = server
    state = scheduled_run(
        deliveries=str(tmp_path / "empty"),
        out=str(tmp_path / "runs"),
        key_file=str(prepared.central_keyring),
        return_state=True,
    )
    assert state.is_failed()
    assert "deliveries folder does not exist" in state.message
    assert _task_runs(state.state_details.flow_run_id) == {"pick_up_deliveries": 1}


def test_a_refused_delivery_fails_the_run_at_once_with_its_cause(server, tmp_path, monkeypatch):
    _, prepared = server
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    deliveries = tmp_path / "pseudo"
    shutil.copytree(prepared.deliveries, deliveries)
    (data,) = (deliveries / "tax").glob("*/data.parquet")
    data.write_bytes(data.read_bytes()[:-1] + b"\x00")
    state = scheduled_run(
        deliveries=str(deliveries),
        out=str(tmp_path / "runs"),
        key_file=str(prepared.central_keyring),
        return_state=True,
    )
    assert state.is_failed()
    assert "checksum mismatch" in state.message and "tax" in state.message
    (child,) = _child_runs(state.state_details.flow_run_id)
    assert _task_runs(child)["open_inputs"] == 1
    assert not (tmp_path / "runs").exists() or published_runs(tmp_path / "runs") == []


def test_the_schedule_runs_a_date_once_even_when_its_run_id_would_change(
    server, tmp_path, monkeypatch
):
    """A register change (as an upgrade, a rule change or a feedback import) gives the same
    deliveries another run id. The schedule must not run that date again: the second run
    would not see the first's signals and could signal the same households again."""
    from test_purpose_check import copy_register

    _, prepared = server
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    out = tmp_path / "runs"
    args = {"deliveries": str(prepared.deliveries), "out": str(out)}
    args["key_file"] = str(prepared.central_keyring)
    first = scheduled_run(**args)

    def changed(data):
        data["retention"]["basis"] += " Reviewed."

    register = copy_register(tmp_path / "register", changed)
    (tmp_path / "signals.toml").write_text(f'[paths]\nregister = "{register}"\n')
    shutil.rmtree(Path(first) / "report")  # as if its report had failed (run.py publishes it)
    again = scheduled_run(**args, config=str(tmp_path / "signals.toml"))
    assert again == first and len(published_runs(out)) == 1
    assert (Path(first) / "report" / "report.html").is_file()  # the next schedule wrote it
    # By hand, the operator can still run it again.
    argv = ["run", "--deliveries", args["deliveries"], "--reference-date", REFERENCE_DATE]
    argv += ["--out", str(out), "--key-file", args["key_file"], "--register", str(register)]
    assert main(argv) == 0 and len(published_runs(out)) == 2


def _child_runs(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )
    return [r.id for r in runs]


def _write_config(tmp_path, prepared, passphrase_file) -> tuple:
    out = tmp_path / "runs"
    config = tmp_path / "signals.toml"
    config.write_text(
        f"""
[paths]
deliveries = "{prepared.deliveries}"
out = "runs"

[keys]
central_keyring = "{prepared.central_keyring}"
passphrase_file = "{passphrase_file}"

[schedule]
cron = "0 6 1 * *"
timezone = "Europe/Amsterdam"
retention_cron = "0 5 * * *"

[run]
buckets = 4
"""
    )
    return config, out


def _wait(what, check, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and has_ended(proc):
            raise AssertionError(f"signals serve exited while waiting for {what}: {_output(proc)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_signals_serve_runs_its_deployment_on_the_cron_schedule(server, tmp_path):
    from prefect.client.orchestration import get_client

    api_url, prepared = server
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    config, out = _write_config(tmp_path, prepared, secret)
    env = subprocess_env(api_url, PREFECT_RUNNER_POLL_FREQUENCY="1")
    env.pop("SIGNALS_KEYRING_PASSPHRASE")  # the service reads keys.passphrase_file
    proc = subprocess.Popen(
        [*SIGNALS, "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with get_client(sync_client=True) as client:

            def both():
                names = (f"signals-scheduled-run/{CENTRAL}", f"signals-retention/{RETENTION}")
                found = [_deployment(client, name) for name in names]
                return found if all(found) else None

            central, retention = _wait("the deployments", both, 120, proc)
            assert [(s.schedule.cron, s.schedule.timezone) for s in central.schedules] == [
                ("0 6 1 * *", "Europe/Amsterdam")
            ]
            assert [s.schedule.cron for s in retention.schedules] == ["0 5 * * *"]
            assert central.parameters == deployment_parameters(load_config(config))
            assert set(central.parameters) == {"deliveries", "out", "key_file", "config"}

            # The server makes the runs the cron schedules had due in the past month.
            runs = [_schedule_last_due(client, api_url, d) for d in (central, retention)]
            local = runs[0].expected_start_time.astimezone(_amsterdam())
            assert (local.day, local.hour, local.minute) == (1, 6, 0)
            done = [
                _wait(
                    f"the scheduled run of {run.name} to finish",
                    lambda run=run: (r := client.read_flow_run(run.id)).state.is_final() and r,
                    240,
                )
                for run in runs
            ]
        for run in done:
            assert run.state.is_completed(), (run.state.message, _output(proc))
        (run_dir,) = published_runs(out)
        signals_table = decrypted(run_dir, "signals.parquet", prepared.central_keyring)
        schemes = signals_table.column("scheme").to_pylist()
        assert schemes.count("zorgtoeslag") == len(SIGNALLED)
        assert main(["runs", "list", "--config", str(config)]) == 0
    finally:
        if proc.returncode is None:  # not reaped, so the process id is still this one's
            os.kill(proc.pid, signal.SIGTERM)  # SIGINT is ignored by background processes
        end_session(proc, 30)


def _schedule_last_due(client, api_url, deployment):
    """Ask the server for the deployment's scheduled run of the past month (due now)."""
    now = dt.datetime.now(dt.UTC)
    body = {
        "start_time": (now - dt.timedelta(days=32)).isoformat(),
        "end_time": now.isoformat(),
        "min_runs": 1,
        "max_runs": 1,
        "min_time": 0,
    }
    url = f"{api_url}/deployments/{deployment.id}/schedule"
    for attempt in range(10):  # a busy SQLite server answers 503 now and then, as Prefect's
        response = httpx.post(url, json=body, timeout=60)  # own client knows and retries
        if response.status_code != 503:
            break
        time.sleep(1 + attempt)
    response.raise_for_status()
    (run,) = client.read_flow_runs(deployment_filter=_deployment_filter(deployment.id))
    assert run.auto_scheduled and run.expected_start_time <= now
    return run


def _deployment(client, name):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _deployment_filter(deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))


def _amsterdam():
    import zoneinfo

    return zoneinfo.ZoneInfo("Europe/Amsterdam")


def _output(proc) -> str:
    if not has_ended(proc):
        return "(still serving)"
    return (proc.stdout.read() or "")[-3000:]


@pytest.mark.parametrize(
    "api_url, message",
    [
        (None, "needs a Prefect server to schedule runs: start one with `prefect server start`"),
        ("http://127.0.0.1:9/api", "no Prefect server answers at PREFECT_API_URL=http://127.0.0"),
    ],
)
def test_serve_refuses_to_start_without_a_prefect_server(tmp_path, api_url, message):
    (tmp_path / "signals.toml").write_text(
        '[paths]\ndeliveries = "d"\nout = "runs"\n[keys]\ncentral_keyring = "k"\n'
    )
    env = subprocess_env(api_url)
    if api_url is None:
        env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [*SIGNALS, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr


def test_serve_names_the_missing_setting(monkeypatch, tmp_path):
    from flows.serve import deployments

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIGNALS_CONFIG", raising=False)
    for name in [k for k in os.environ if k.startswith("SIGNALS_PATHS_")]:
        monkeypatch.delenv(name)
    with pytest.raises(Exception, match=r"paths\.deliveries is not set.*SIGNALS_PATHS_DELIVERIES"):
        deployments(load_config())
