"""`signals run` stopped by a signal: promptly, in one line, and its Prefect server with it.

Each run is the real command in a subprocess of its own session, on the hand-made
population, with no PREFECT_API_URL: it starts Prefect's temporary server as operators'
runs do (flows/ephemeral_server.py). The tests wait until the pipeline runs (its staging
folder exists), then signal it as a terminal (Ctrl-C: SIGINT to the whole process
group), `kill` (SIGTERM) or a crash (SIGKILL, flows/faults.py) would, and look for the
server by its process id afterwards. The bound on stopping is loose for busy CI machines:
before the fix, Ctrl-C took ~70 s and SIGTERM or SIGKILL left the server running for ever.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from service_support import (
    SIGNALS,
    end_session,
    has_ended,
    prepare_deliveries,
    published_runs,
    run_args,
    signals,
    subprocess_env,
)

from flows.faults import FAULT_ENV

pytestmark = pytest.mark.slow

STOP_SECONDS = 30  # to stop after the signal; measured: 2-4 s
START_SECONDS = 300  # to reach the pipeline: a fresh Prefect database is migrated first
GONE_SECONDS = 10  # for the server to end after its parent; measured: under 1 s
NOTHING_PUBLISHED = "nothing published (run it again to start over)"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_deliveries(tmp_path_factory.mktemp("signals"))


def _processes():
    """(pid, [state, ppid, pgrp, session, ...]) of every process, from /proc/<pid>/stat."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ended(pidfd: int) -> bool:
    """True once the process of `pidfd` has ended (a zombie waiting for its parent too).

    A process handle, not a process id: ids wrap here (pid_max 32768), and the id of a
    server that ended may by now be a thread of another test's server."""
    return bool(select.select([pidfd], [], [], 0)[0])


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Run:
    """`signals run` in a session of its own, its output captured to files (a server that
    outlived the run would hold pipes open)."""

    def __init__(self, prepared, out: Path, env: dict[str, str], args: tuple[str, ...] = ()):
        self.out = out
        self.log = out.parent / f"{out.name}.stderr"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [*SIGNALS, *run_args(prepared, out), *args],
                cwd=prepared.root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.server: int | None = None  # the server's process id, for messages
        self.server_fd: int | None = None  # and a handle on that very process

    def wait_for_server(self) -> None:
        """Until the run has started its Prefect server; notes the server's process id."""
        found = _wait(lambda: self._servers() or has_ended(self.proc), START_SECONDS)
        assert found and not has_ended(self.proc), self.stderr()[-3000:]
        (self.server,) = self._servers()
        self.server_fd = os.pidfd_open(self.server)
        # The handle is on the server, not on a process that took its id after it ended.
        alive = not _ended(self.server_fd) and "prefect.server" in _cmdline(self.server)
        assert alive, f"Prefect server {self.server} ended as soon as it was found"

    def wait_for_pipeline(self) -> None:
        """Until the run's staging folder exists (its pipeline is about to run or runs)."""
        self.wait_for_server()
        staged = _wait(
            lambda: any(self.out.glob(".staging-*")) or has_ended(self.proc),
            START_SECONDS,
        )
        assert staged and not has_ended(self.proc), self.stderr()[-3000:]

    def _servers(self) -> list[int]:
        return [p for p in _children(self.proc.pid) if "prefect.server" in _cmdline(p)]

    def stopped_within(self, seconds: float) -> float:
        """Seconds the run took to end; what it left of its process group is killed."""
        start = time.monotonic()
        assert end_session(self.proc, seconds), f"still running after {seconds} s"
        return time.monotonic() - start

    def stderr(self) -> str:
        return self.log.read_text()

    def clean_up(self) -> None:
        """Kill what the test started and left (only this run's process group and server)."""
        end_session(self.proc, 0)
        if self.server_fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.server_fd, signal.SIGKILL)
            os.close(self.server_fd)


@pytest.fixture
def start(prepared):
    runs = []

    def start_run(out: Path, *args: str, **extra_env: str) -> Run:
        env = subprocess_env(**extra_env)
        env.pop("PREFECT_API_URL", None)  # Prefect's temporary server, as operators run
        runs.append(Run(prepared, out, env, args))
        return runs[-1]

    yield start_run
    for run in runs:
        run.clean_up()


def _stop(start, out: Path, send) -> tuple[Run, float]:
    run = start(out)
    run.wait_for_pipeline()
    send(run.proc.pid)
    return run, run.stopped_within(STOP_SECONDS)


def _server_gone(run: Run) -> bool:
    return _wait(lambda: _ended(run.server_fd), GONE_SECONDS)


def test_ctrl_c_stops_the_run_at_once_in_one_line_and_the_next_run_publishes(
    start, prepared, tmp_path
):
    out = tmp_path / "runs"
    # A terminal sends Ctrl-C to every process of its foreground group.
    run, seconds = _stop(start, out, lambda pid: os.killpg(pid, signal.SIGINT))

    assert run.proc.returncode == 130, run.stderr()[-3000:]
    assert run.stderr().strip() == f"interrupted: {NOTHING_PUBLISHED}"
    assert seconds < STOP_SECONDS
    assert _server_gone(run), f"Prefect server {run.server} outlived the interrupted run"
    assert published_runs(out) == []

    again = signals(run_args(prepared, out), subprocess_env(), prepared.root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(published_runs(out)) == 1


def _dask_workers(sid: int) -> dict[int, bool]:
    """The Dask worker processes of session `sid` (the run's, started in its own): whether
    each ignores SIGINT yet (it does once it has started, pipelines/dask_worker_setup.py)."""
    found = {}
    for pid, fields in _processes():
        if int(fields[3]) != sid or fields[0] == "Z":  # state ppid pgrp session
            continue
        command = _cmdline(pid)
        if "multiprocessing" in command and "resource_tracker" not in command:
            with contextlib.suppress(OSError, IndexError):  # it ended meanwhile
                status = Path(f"/proc/{pid}/status").read_text()
                ignored = int(status.split("SigIgn:")[1].split()[0], 16)
                found[pid] = bool(ignored & (1 << (signal.SIGINT - 1)))
    return found


def test_ctrl_c_stops_a_dask_run_in_one_line_and_its_cluster_with_it(start, tmp_path):
    """The local cluster's worker processes are in the terminal's process group too: each
    printed a KeyboardInterrupt traceback beside the run's line (~100 lines)."""
    run = start(tmp_path / "runs", "--runner", "DaskRunner")
    run.wait_for_pipeline()

    def started() -> bool:  # both workers past their start-up, and running the joins
        workers = _dask_workers(run.proc.pid)
        shuffled = any(run.out.glob(".staging-*/shuffle/*/*/*.arrow"))
        return len(workers) >= 2 and all(workers.values()) and shuffled

    assert _wait(lambda: started() or has_ended(run.proc), START_SECONDS)
    assert not has_ended(run.proc), run.stderr()[-3000:]
    os.killpg(run.proc.pid, signal.SIGINT)
    run.proc.wait(STOP_SECONDS)

    assert run.proc.returncode == 130, run.stderr()[-3000:]
    lines = run.stderr().strip().splitlines()
    assert lines[-1] == f"interrupted: {NOTHING_PUBLISHED}"
    # No worker's traceback, nor the warning Beam's import printed in each (the cluster's
    # own warnings may show: a busy machine makes Dask warn of a slow event loop).
    noise = ("Traceback", "KeyboardInterrupt", "apitools")
    assert not [li for li in lines if any(n in li for n in noise)], lines
    assert _wait(lambda: not _dask_workers(run.proc.pid), GONE_SECONDS)


def test_sigterm_stops_the_run_as_ctrl_c_does_and_its_server_with_it(start, tmp_path):
    out = tmp_path / "runs"
    run, seconds = _stop(start, out, lambda pid: os.kill(pid, signal.SIGTERM))

    assert run.proc.returncode == 128 + signal.SIGTERM, run.stderr()[-3000:]
    assert run.stderr().strip() == f"interrupted by SIGTERM: {NOTHING_PUBLISHED}"
    assert seconds < STOP_SECONDS
    assert _server_gone(run), f"Prefect server {run.server} outlived the terminated run"
    assert published_runs(out) == []


def test_the_server_of_a_run_killed_with_sigkill_ends_with_it(start, tmp_path):
    """No handler runs on SIGKILL: the server itself notices its parent is gone."""
    out = tmp_path / "runs"
    run = start(out, **{FAULT_ENV: "mid_join"})  # the run SIGKILLs itself inside the join
    run.wait_for_server()
    run.stopped_within(START_SECONDS)

    assert run.proc.returncode == -signal.SIGKILL, run.stderr()[-3000:]
    assert _server_gone(run), f"Prefect server {run.server} outlived the killed run"
    assert published_runs(out) == []
