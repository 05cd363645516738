"""Process environment for Prefect: set before Prefect is imported, never overriding the user.

Prefect runs without a server (ephemeral) unless PREFECT_API_URL is set; telemetry
is off; task results are not persisted, so nothing a task returns lands on disk.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flows import interrupt

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


def not_gcp_noise(record: logging.LogRecord) -> bool:
    # Beam warns on import that Google Cloud client libraries are absent; we use none of them.
    return "apitools not found" not in record.getMessage()


def configure(home: Path | None = None) -> None:
    """Set Prefect's defaults for this process (idempotent; explicit settings win)."""
    if not_gcp_noise not in logging.getLogger().filters:
        logging.getLogger().addFilter(not_gcp_noise)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    base = Path(home or os.environ.get("SIGNALS_HOME", ".signals")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(base / "prefect"))
    # Prefect creates its home without parents and its server dies if that fails.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


class _KnownFailures(logging.Filter):
    """Drops Prefect's console records of a failure the command reports itself, and every
    console record once the command was asked to stop (it reports that itself)."""

    def __init__(self, known: tuple[type[Exception], ...]):
        super().__init__()
        self.known = known
        # Prefect's task state names the class only: take the subclasses' names too.
        names, todo = set(), list(known)
        while todo:
            cls = todo.pop()
            names.add(cls.__name__)
            todo += cls.__subclasses__()
        self.phrases = tuple(f"exception {name}:" for name in sorted(names))

    def filter(self, record: logging.LogRecord) -> bool:
        if interrupt.received() is not None:
            # Asked to stop (Ctrl-C, SIGTERM): what fails from then on is the stop, which the
            # command reports in one line with what it left behind (flows/interrupt.py).
            return False
        if not record.name.startswith("prefect"):
            return True
        if record.exc_info and isinstance(record.exc_info[1], self.known):
            return False  # the flow's failure, with its traceback
        return not any(p in record.getMessage() for p in self.phrases)  # the task's state


def quiet_known_failures(known: tuple[type[Exception], ...]) -> None:
    """Keep Prefect's console from repeating a known failure with its traceback.

    A command that runs a flow reports a known failure (a refused delivery, a missing
    keyring) in one line and exits 2; Prefect would first print it as ERROR lines and a
    ~70-line traceback. Other failures keep their traceback, and Prefect's own run records
    (its database, a server) keep everything: only the console handlers are filtered.
    """
    # Their imports set up the console: Beam's puts a stream handler on the root logger,
    # which Prefect's flow and task loggers reach.
    import apache_beam  # noqa: F401
    import prefect  # noqa: F401

    for handler in logging.getLogger().handlers:
        console = getattr(handler, "stream", None) in (sys.stderr, sys.stdout)
        if console and not any(isinstance(f, _KnownFailures) for f in handler.filters):
            handler.addFilter(_KnownFailures(known))
