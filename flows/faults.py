"""Failures of a run: which are transient (retried), and kill points for the restart tests.

Retries. The flow's I/O tasks retry a failure only when it is transient: an operating
system error such as a stale network-file handle, a timeout or an interrupted call.
A refused delivery, a rule that does not compile, a keyring that does not open or a
missing file is not transient: retrying cannot fix it, so the task fails at once and
the message reaches the operator unchanged (`retry_transient` is the tasks'
`retry_condition_fn`).

Kill points. `SIGNALS_FAULT_AT=<point>` makes the process SIGKILL itself when the run
reaches that point, as a crash or an out-of-memory kill would, with no clean-up and
no exception handler. The restart tests use it to prove that a run killed anywhere
and started again publishes exactly what an uninterrupted run publishes. Unset (in
production), `point` is one dictionary lookup and nothing is added to the pipeline.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "SIGNALS_FAULT_AT"

# Where a run can be killed, in the order a run passes them (flows/run.py, pipelines/central.py).
POINTS = (
    "after_ingest",  # inputs opened and checked, staging folder created, nothing written yet
    "mid_join",  # inside the Beam pipeline, when the join has emitted its first household batch
    "mid_audit",  # outputs finalised, not yet reported, encrypted or appended to the audit log
    "after_audit",  # in the audit log, reported and encrypted (data key stored), not published
    "during_publish",  # the folder is published (renamed) with its report; no artifacts yet
)
# Not a run's: `audit verify`, in a worker hashing a row group (as an out-of-memory kill).
TOOL_POINTS = ("verify_worker",)

# OS errors that retrying cannot fix: the path is wrong or forbidden, not flaky.
PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def armed(name: str) -> bool:
    """True when the environment asks for a kill at `name`."""
    return os.environ.get(FAULT_ENV) == name


def point(name: str) -> None:
    """Kill this process with SIGKILL if the environment asks for a kill at `name`."""
    if name not in POINTS + TOOL_POINTS:
        known = ", ".join(POINTS + TOOL_POINTS)
        raise ValueError(f"unknown fault point {name!r} (known: {known})")
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)


class KillOnFirstFn:
    """A Beam pass-through that kills the process at the first element (pipeline kill points).

    Only ever added to a pipeline when `armed(name)`; see `tap`.
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, element):
        point(self.name)
        return element


def tap(pcoll, name: str):
    """`pcoll` unchanged, or followed by a kill at its first element when armed."""
    if not armed(name):
        return pcoll
    import apache_beam as beam

    return pcoll | f"Fault_{name}" >> beam.Map(KillOnFirstFn(name))


def is_transient(exc: BaseException | None) -> bool:
    """True if `exc`, or an exception it was explicitly raised from, is a transient OS error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return not isinstance(exc, PERMANENT_OS_ERRORS)
        # Only `raise ... from e` counts: an error raised while handling another (a refusal
        # that explains an OSError, say) is its own, permanent, failure.
        exc = exc.__cause__
    return False


def retry_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task run only for a transient error."""
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        return is_transient(exc)
    return False


# The retry policy of every task that reads or writes files: twice, after 10 and 60 seconds,
# for transient errors only; `@task(**IO_RETRIES)`.
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [10, 60], "retry_condition_fn": retry_transient}
