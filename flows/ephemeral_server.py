"""The temporary Prefect server of a command without PREFECT_API_URL, tied to that command.

Without a configured server, Prefect starts a temporary one (`uvicorn ... prefect.server.
api.server`) as a child process and stops it at exit. Left to itself, that child
- shares the terminal's process group, so Ctrl-C kills it first; the run then spends a
  minute retrying to report the interrupt to a dead server and ends in a traceback;
- outlives a run killed by SIGTERM or SIGKILL (no exit handler runs): re-parented to
  PID 1, ~190 MB, for ever.

`guard()` starts that server here instead, in the same way (Prefect's own class and
arguments), with three differences:
- it runs in a process group of its own: a terminal's Ctrl-C reaches the run only, which
  reports the interrupt to a live server and stops it on the way out;
- it ends when its parent does: on Linux the kernel sends it SIGTERM the moment the run
  dies (prctl PR_SET_PDEATHSIG); elsewhere, and as a second line, a watchdog thread in the
  server checks every second that its parent is still the run;
- its port is bound by the run and handed to the server (uvicorn `--fd`). Prefect picks
  a free port and lets the server bind it seconds later: two runs starting at once could
  pick the same one, and the run whose server lost the race would talk to the other's
  server and fail with "connection refused" the moment the other run ended.

`python -m flows.ephemeral_server PARENT_PID UVICORN_ARGS...` is that server's entry point.
A server of a configured PREFECT_API_URL (a shared `prefect server start`) is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

WATCH_SECONDS = 1.0


def guard() -> None:
    """Start the temporary server now, from this (the main) thread, as described above.

    Does nothing when a server is configured (PREFECT_API_URL) or one is already up, nor
    on another thread than the main one: the kernel's parent-death signal follows the
    thread that started the child, and only the main thread lives as long as the process.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if SubprocessASGIServer._instances.get(None) is not None:
        return  # started already (a second run in this process, or a test harness)

    class TiedServer(SubprocessASGIServer):
        _socket: socket.socket | None = None

        def find_available_port(self) -> int:
            self._socket = reserve_port()
            return self._socket.getsockname()[1]

        def _run_uvicorn_command(self) -> subprocess.Popen:
            if self._socket is None:  # a port set beforehand: this one is bound instead
                self.port = self.find_available_port()
            with self._socket as bound:  # the server has its own copy once started
                self._socket = None
                return _start(bound)

    # Prefect finds its temporary server under the key None (as prefect_test_harness does):
    # its client, log and event workers then use this one and start no other.
    server = TiedServer()
    SubprocessASGIServer._instances[None] = server
    server.start()


def reserve_port() -> socket.socket:
    """A socket bound to a free local port, not listening: no other process can take the
    port while it is open, and until a server listens on it a client is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _start(bound: socket.socket) -> subprocess.Popen:
    """The uvicorn child, with the arguments and environment Prefect 3.9 gives it, serving
    on the `bound` socket. It must not listen yet: Prefect's start-up check retries a
    refused connection, but a connection left waiting for the server times out."""
    import prefect
    from prefect.settings import get_current_settings

    uvicorn_args = [
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--fd",
        str(bound.fileno()),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return subprocess.Popen(
        # -P: not the working folder first on sys.path, where another `flows` may be.
        [sys.executable, "-P", "-m", __name__, str(os.getpid()), *uvicorn_args],
        env=env,
        pass_fds=(bound.fileno(),),
        process_group=0,  # out of the terminal's group: Ctrl-C is for the run to handle
    )


def _die_with(parent: int) -> None:
    """Get SIGTERM when `parent` dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Checked after asking: a parent that died before prctl would never send the signal.
    if os.getppid() != parent:
        sys.exit(0)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()


def _watch(parent: int) -> None:
    """SIGTERM this process once its parent is gone (re-parented: another parent pid)."""
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown closes the database


def main(argv: list[str]) -> None:
    import runpy

    parent, uvicorn_args = int(argv[0]), argv[1:]
    _die_with(parent)
    sys.argv = ["uvicorn", *uvicorn_args]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
