"""Stopping a command on request: Ctrl-C (SIGINT) and `kill` (SIGTERM) end it the same way.

Within `stoppable()` either signal raises `Stopped`, a KeyboardInterrupt, in the main
thread. It unwinds the run: Prefect records the flow run as crashed, the run lock is
released, exit handlers stop the temporary Prefect server. (SIGTERM by default ends the
process on the spot, skipping all of that and leaving the server running.) The command
then prints one line (`Interrupted`) and exits 128 + the signal's number, as a shell
reports a command killed by it.

Whether a signal stopped the command is not read from the exception that reaches it:
libraries turn it into others. DuckDB swallows it and raises RuntimeError('Query
interrupted'); Beam re-raises what a transform raised as a RuntimeError when it cannot
rebuild it; while a flow runs, Prefect's own SIGTERM handler raises its TerminationSignal
instead. So the signals are counted where no library can touch them: the interpreter
writes the number of every signal it catches to a wakeup file descriptor
(signal.set_wakeup_fd) before any handler runs, and `received()` reads them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_wakeup: int | None = None  # read end of the wakeup pipe while `stoppable()` is active
_received: list[int] = []


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (its name is the message: Beam rebuilds an exception
    raised in a transform only when its first argument is a message)."""


class Interrupted(KeyboardInterrupt):
    """A command was stopped by a signal; its message is the one line for the user."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


def received() -> int | None:
    """The first SIGINT or SIGTERM caught within `stoppable()`, or None."""
    fd = _wakeup  # once: the main thread may close it while a logging thread asks
    if fd is not None:
        with contextlib.suppress(OSError):  # BlockingIOError, or closed meanwhile
            _received.extend(os.read(fd, 512))
    return next((s for s in _received if s in SIGNALS), None)


def said(signum: int, what: str) -> Interrupted:
    """`Interrupted` by `signum`, saying `what` (what the stop left behind)."""
    how = "interrupted"
    if signum != signal.SIGINT:
        how += f" by {signal.Signals(signum).name}"
    return Interrupted(f"{how}: {what}", signum)


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def stoppable():
    """Within: SIGINT and SIGTERM raise `Stopped` in the main thread and are counted for
    `received()`. The previous handlers and wakeup descriptor come back afterwards.
    Off the main thread (where Python allows no signal handler) it changes nothing."""
    global _wakeup
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    previous = {s: signal.signal(s, _raise_stopped) for s in SIGNALS}
    _wakeup = read
    _received.clear()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        received()  # keep what arrived, for the console filter until the process ends
        _wakeup = None
        os.close(read)
        os.close(write)
