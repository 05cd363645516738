"""Helpers for the service tests: real deliveries and keyrings, `signals` in a subprocess,
and a Prefect server of the test's own.

The hand-made population (tests/population.py) is pseudonymised with the real CLI.
Runs that are to be killed run as `python -m flows.cli` in their own session, so the
test can SIGKILL them and then kill any child they leave (nothing else is touched:
`end_session`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from population import REFERENCE_DATE, write_population

from flows.cli import main
from pipelines.contract import SOURCES

PASSPHRASE = "a service-test passphrase"
# The installed command, as operators run it (`python -m flows.cli` would load flows.cli twice).
_SCRIPT = Path(sys.executable).parent / "signals"
SIGNALS = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Prepared:
    """Pseudonymised deliveries and the central keyring that runs them."""

    root: Path
    deliveries: Path
    central_keyring: Path


def prepare_deliveries(
    root: Path, write_raw=write_population, passphrase: str = PASSPHRASE
) -> Prepared:
    """Raw population -> body keyring -> pseudonymised deliveries; plus a central keyring.

    `write_raw(folder)` writes the raw deliveries (default: the hand-made population); the
    keyrings are locked with `passphrase`.
    """
    root = Path(root)
    write_raw(root / "raw")
    body, central = root / "keys" / "body.keyring", root / "keys" / "central.keyring"
    with _passphrase_env(passphrase):
        assert main(["keys", "init", "--key-file", str(body)]) == 0
        assert main(["keys", "init", "--role", "central", "--key-file", str(central)]) == 0
        for source in SOURCES:
            delivery = root / "raw" / source / REFERENCE_DATE
            args = ["pseudonymise", "--delivery", str(delivery), "--key-file", str(body)]
            assert main(args + ["--out", str(root / "pseudo")]) == 0
    return Prepared(root, root / "pseudo", central)


def deliver_again(prepared: Prepared, reference_date: str, passphrase: str = PASSPHRASE) -> None:
    """The same raw population delivered by every body for another reference date, and
    pseudonymised with the same body keyring (a next month in which nothing changed)."""
    import json
    import shutil

    body = prepared.root / "keys" / "body.keyring"
    with _passphrase_env(passphrase):
        for source in SOURCES:
            raw = prepared.root / "raw" / source
            shutil.copytree(raw / REFERENCE_DATE, raw / reference_date)
            manifest = raw / reference_date / "manifest.json"
            data = json.loads(manifest.read_text()) | {"reference_date": reference_date}
            manifest.write_text(json.dumps(data))
            args = ["pseudonymise", "--delivery", str(raw / reference_date), "--key-file"]
            assert main(args + [str(body), "--out", str(prepared.deliveries)]) == 0


@contextlib.contextmanager
def prefect_server():
    """A Prefect server of the caller's own (Prefect's test harness); yields its API URL.

    The start-up timeout is generous: a fresh database is migrated first, which takes
    minutes, not seconds, when the machine is busy.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield PREFECT_API_URL.value()


@contextlib.contextmanager
def _passphrase_env(passphrase: str = PASSPHRASE):
    before = os.environ.get("SIGNALS_KEYRING_PASSPHRASE")
    os.environ["SIGNALS_KEYRING_PASSPHRASE"] = passphrase
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SIGNALS_KEYRING_PASSPHRASE", None)
        else:
            os.environ["SIGNALS_KEYRING_PASSPHRASE"] = before


def run_args(prepared: Prepared, out: Path) -> list[str]:
    return [
        "run",
        "--deliveries",
        str(prepared.deliveries),
        "--reference-date",
        REFERENCE_DATE,
        "--out",
        str(out),
        "--buckets",
        "4",
        "--key-file",
        str(prepared.central_keyring),
    ]


def subprocess_env(api_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SIGNALS_FAULT_AT"}
    env["SIGNALS_KEYRING_PASSPHRASE"] = PASSPHRASE
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def signals(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `signals ARGS` in its own session; afterwards no process of its group is left."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files, not pipes: the run is waited for without reading its output meanwhile.
        proc = subprocess.Popen(
            [*SIGNALS, *args], cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
        if not end_session(proc, timeout):
            raise subprocess.TimeoutExpired(proc.args, timeout)
        said = [_text(f) for f in (out, err)]
    return subprocess.CompletedProcess(proc.args, proc.returncode, *said)


def _text(file) -> str:
    file.seek(0)
    # As text=True would read it: universal newlines.
    return file.read().decode().replace("\r\n", "\n").replace("\r", "\n")


def end_session(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` s for `proc`, a session leader, to end; kill what is left of its
    process group; then reap it. True if it ended by itself within the time.

    The group is killed before the leader is reaped: until then the leader's zombie holds
    the group's number. Once reaped, the number is free for the kernel to give to another
    process, and a group killed by number later may be someone else's (pid_max is 32768
    on these machines and the suite uses ~43,000 process and thread ids: they wrap).
    """
    if proc.returncode is not None:
        return True  # reaped already: its group's number is no longer its own
    deadline = time.monotonic() + timeout
    while not (ended := has_ended(proc)) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)  # SIGKILLed if it had not ended: this is a backstop only
    return ended


def has_ended(proc: subprocess.Popen) -> bool:
    """True once `proc` has ended; unlike `proc.poll()`, it leaves the process unreaped."""
    if proc.returncode is not None:
        return True
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None


def published_runs(out: Path) -> list[Path]:
    """Run folders with a manifest (not the key store, the audit log, or staging)."""
    return sorted(p.parent for p in Path(out).glob("*/manifest.json") if p.parent.name[:1] != ".")


def decrypted(run_dir: Path, name: str, central_keyring: Path) -> pa.Table:
    """A personal-data output of a run, decrypted in memory with the central keyring."""
    from privacy.keys import load_keyring
    from privacy.retention import read_run_table

    ring = load_keyring(central_keyring, PASSPHRASE)
    return read_run_table(run_dir, name, ring)


def decrypted_bytes(run_dir: Path, relative: str, central_keyring: Path) -> bytes:
    """The plain bytes of one encrypted run file (`signals.parquet`, `households/part-...`)."""
    from privacy.keys import load_keyring
    from privacy.retention import ENCRYPTED_SUFFIX, decrypt_bytes, run_data_key

    run_dir = Path(run_dir)
    key = run_data_key(run_dir, load_keyring(central_keyring, PASSPHRASE))
    return decrypt_bytes(run_dir / (relative + ENCRYPTED_SUFFIX), key, run_dir.name, relative)
