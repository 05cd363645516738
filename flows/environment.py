"""Process environment for Prefect: set before Prefect is imported, never overriding the user.

Prefect runs without a server (ephemeral) unless PREFECT_API_URL is set; telemetry
is off; task results are not persisted, so nothing a task returns lands on disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_TASKS_DEFAULT_PERSIST_RESULT": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_UI_ENABLED": "false",
    # The first start creates the local database: ~16 s on 2 busy cores, near the default 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def _not_gcp_noise(record: logging.LogRecord) -> bool:
    # Beam warns on import that Google Cloud client libraries are absent; we use none of them.
    return "apitools not found" not in record.getMessage()


def configure(home: Path | None = None) -> None:
    """Set Prefect's defaults for this process (idempotent; explicit settings win)."""
    if _not_gcp_noise not in logging.getLogger().filters:
        logging.getLogger().addFilter(_not_gcp_noise)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    base = Path(home or os.environ.get("SIGNALS_HOME", ".signals")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(base / "prefect"))
    # Prefect creates its home without parents and its server dies if that fails.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
