"""A run's temporary Prefect server listens on a port the run bound for it.

Prefect picks a free port and lets its server bind it seconds later; two runs starting
at once could both pick it, and the loser would use the winner's server until that run
ended, then fail with "connection refused" (flows/ephemeral_server.py). These tests check
that the port is held from the moment it is chosen and that the server a run talks to
is its own child, serving on that very socket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.ephemeral_server import reserve_port

pytestmark = pytest.mark.slow

# A run's start of the server, as `signals run` does it; then it waits to be told to end.
GUARDED = """
import sys
from flows import environment
environment.configure()
from flows import ephemeral_server
ephemeral_server.guard()
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer._instances[None]
print(server.port, server.server_process.pid, flush=True)
sys.stdin.read()
"""


def test_a_reserved_port_cannot_be_taken_and_refuses_clients_until_served():
    with reserve_port() as held:
        host, port = held.getsockname()
        other = socket.socket()
        # uvicorn binds with SO_REUSEADDR; even so, the port is held.
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with other, pytest.raises(OSError):
            other.bind((host, port))
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect((host, port))
    with socket.socket() as after:
        after.bind((host, port))  # free again once closed


def _listening_inodes(pid: int) -> dict[int, str]:
    """Local port -> socket inode of each TCP socket listening in `pid`'s network namespace."""
    found = {}
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A":  # LISTEN
            found[int(local.rsplit(":", 1)[1], 16)] = inode
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed since it was listed: the server is still starting
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_a_run_talks_to_is_its_own_child_on_the_port_it_bound(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"SIGNALS_HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    run = subprocess.Popen(
        [sys.executable, "-c", GUARDED],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port, server = map(int, run.stdout.readline().split())
        listening = _listening_inodes(server)
        assert port in listening, f"nothing listens on the run's port {port}"
        assert listening[port] in _socket_inodes(server), "another process serves the port"
        assert run.pid == int(Path(f"/proc/{server}/stat").read_text().rsplit(")")[1].split()[1])
    finally:
        run.communicate(input="", timeout=60)
    assert run.returncode == 0
