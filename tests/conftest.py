"""Shared fixtures: hand-made deliveries written to real files, keyrings, and a Prefect harness."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from flows import environment, ephemeral_server

OIN = "00000001001234567000"
# Two xdist workers each start Prefect's server while the other runs Beam: allow it time.
# Set at import, before any test module configures the process environment.
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"


def write_delivery(
    root: Path,
    source: str,
    header: list[str],
    rows: list[list[str]],
    reference_date: str = "2025-01-01",
    *,
    sep: str = ",",
    newline: str = "\n",
    encoding: str = "utf-8",
    bom: bool = False,
    row_count: int | None = None,
    manifest: bool = True,
) -> Path:
    """Write a raw CSV delivery with a correct manifest (unless told otherwise)."""
    folder = Path(root) / source / reference_date
    folder.mkdir(parents=True, exist_ok=True)
    text = newline.join(sep.join(r) for r in [header] + rows) + newline
    data = ("\ufeff" if bom else "").encode(encoding) + text.encode(encoding)
    (folder / "data.csv").write_bytes(data)
    if manifest:
        write_manifest(
            folder, source, reference_date, data, len(rows) if row_count is None else row_count
        )
    return folder


def write_manifest(
    folder: Path, source: str, reference_date: str, data: bytes, row_count: int
) -> None:
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "source": source,
                "supplier_oin": OIN,
                "reference_date": reference_date,
                "extracted_at": f"{reference_date}T06:00:00+00:00",
                "schema_version": "1",
                "row_count": row_count,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    )


@pytest.fixture(autouse=True, scope="session")
def _prefect_home(tmp_path_factory):
    """Keep Prefect's files inside the test session's temporary folder."""
    home = tmp_path_factory.mktemp("signals-home")
    os.environ["SIGNALS_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    environment.configure(home)
    # The temporary server of the flows run in this process, started as `signals run`
    # starts it: on a port bound before the server starts (flows/ephemeral_server.py).
    # Left to Prefect, two workers starting theirs at once could end up sharing one.
    # Only in a session whose tests import Prefect: others need not wait for a server.
    if "prefect" in sys.modules:
        ephemeral_server.guard()
    yield home
    # That server stops itself at exit and logs it to a stream pytest has closed by then
    # ("--- Logging error ---" after the summary): stopped here, while the streams are open.
    server_module = sys.modules.get("prefect.server.api.server")
    server_class = getattr(server_module, "SubprocessASGIServer", None)
    for server in list(getattr(server_class, "_instances", {}).values()):
        server.stop()


@pytest.fixture
def passphrase(monkeypatch):
    value = "correct horse battery staple"
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", value)
    return value


@pytest.fixture
def keyring(tmp_path, passphrase):
    from privacy.keys import Keyring, load_keyring, save_keyring

    ring = Keyring()
    ring.add("body")
    path = tmp_path / "keys" / "body.keyring"
    save_keyring(ring, path, passphrase)
    return load_keyring(path, passphrase)
