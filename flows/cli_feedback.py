"""`signals feedback`: the operator's outcomes per signal, and what they say per scheme.

    signals feedback import FILE [--runs DIR] [--key-file F] [--config F]
        validate FILE (CSV or Parquet: signal_id, outcome, outcome_date[, scheme]) against
        the runs published in DIR, store it under DIR/feedback/ and print coverage, take-up
        and precision per scheme; on any problem, list them by row and field, write nothing
        and exit 2
    signals feedback stats [--runs DIR] [--key-file F] [--config F]
        coverage, take-up and precision per scheme over all feedback stored in DIR

DIR defaults to `paths.out` and the keyring to `keys.central_keyring` of signals.toml
(flows/config.py), as for `signals run`. Definitions and the file format: flows/feedback.py.
The central keyring (passphrase from $SIGNALS_KEYRING_PASSPHRASE or keys.passphrase_file)
opens the runs' signals when they are encrypted: import needs it to check the signal ids;
stats only to count the signals for coverage.
"""

from __future__ import annotations

import sys
from pathlib import Path

KEYRING_HINT = "pass the central keyring (--key-file, or keys.central_keyring in signals.toml)"


def _common(p) -> None:
    p.add_argument("--runs", help="the folder holding the run folders (default: paths.out)")
    p.add_argument(
        "--key-file",
        help="central keyring, for runs whose signals are encrypted (keys.central_keyring)",
    )
    p.add_argument(
        "--config", help="configuration file (default: $SIGNALS_CONFIG, else ./signals.toml)"
    )


def register(subparsers) -> None:
    """Adds `signals feedback import|stats` to the `signals` command line."""
    group = subparsers.add_parser(
        "feedback", help="import the operator's outcomes per signal; take-up and precision"
    ).add_subparsers(dest="feedback_command", required=True, metavar="ACTION")

    p = group.add_parser("import", help="validate and store a feedback file (CSV or Parquet)")
    p.add_argument("file", help="feedback file: signal_id, outcome, outcome_date[, scheme]")
    _common(p)
    p.set_defaults(func=cmd_import)

    p = group.add_parser("stats", help="coverage, take-up and precision per scheme")
    _common(p)
    p.set_defaults(func=cmd_stats)


def _settings(args) -> tuple[Path, str | None]:
    """The runs folder and the central keyring: the flags, else signals.toml."""
    from flows.config import load_config, load_passphrase

    config = load_config(args.config)
    runs = Path(args.runs) if args.runs else Path(config.require("paths", "out"))
    if not runs.is_dir():  # else every signal id is "not of any published run"
        from flows.cli import UsageError

        raise UsageError(f"{runs}: output folder does not exist (--runs, or paths.out)")
    key_file = args.key_file or config.keys.central_keyring
    if key_file:
        load_passphrase(config)
    return runs, str(key_file) if key_file else None


def signals_per_scheme(runs: Path, key_file: str | None) -> dict[str, tuple[int, int]] | None:
    """Per scheme: distinct signals in the kept runs, and how many of those have feedback
    (feedback outlives a run whose data retention destroyed: it is not counted here). None
    when the runs are encrypted and no keyring was given (coverage then cannot be told)."""
    import pyarrow.parquet as pq

    from flows.feedback import _reader, known_signals
    from pipelines.lifecycle import FEEDBACK_SCHEMA, HistoryUnavailable, feedback_folder

    try:
        known = known_signals(runs, _reader(runs, key_file))
    except HistoryUnavailable:
        if key_file is None:
            return None
        raise
    files = sorted(feedback_folder(runs).glob("*.parquet"))
    with_feedback = (
        set(
            pq.read_table(files, schema=FEEDBACK_SCHEMA, columns=["signal_id"])[
                "signal_id"
            ].to_pylist()
        )
        if files
        else set()
    )
    counts: dict[str, tuple[int, int]] = {}
    for signal, scheme in zip(
        known.column("signal_id").to_pylist(), known.column("scheme").to_pylist(), strict=True
    ):
        n, done = counts.get(scheme, (0, 0))
        counts[scheme] = (n + 1, done + (signal in with_feedback))
    return counts


def _rate(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _row(cells, widths) -> str:
    return f"{cells[0]:<22}" + "".join(f"{c:>{w}}" for c, w in zip(cells[1:], widths, strict=True))


def coverage_lines(statistics, signals: dict[str, tuple[int, int]] | None) -> list[str]:
    """Per scheme: signals in the runs, how many have feedback, and the share of the runs'
    signals that has feedback."""
    with_feedback = {r["scheme"]: r["signals_with_feedback"] for r in statistics.to_pylist()}
    widths = (9, 15, 10)
    lines = [_row(("scheme", "signals", "with feedback", "coverage"), widths)]
    for scheme in sorted(set(with_feedback) | set(signals or {})):
        if signals is None:  # the runs cannot be read: all feedback, no coverage
            lines.append(_row((scheme, "-", f"{with_feedback[scheme]:,}", "-"), widths))
            continue
        n, covered = signals.get(scheme, (0, 0))
        cover = _rate(covered / n) if n else "-"
        lines.append(_row((scheme, f"{n:,}", f"{covered:,}", cover), widths))
    if signals is None:
        lines.append(f"signals and coverage: the runs' signals are encrypted; {KEYRING_HINT}")
    return lines


OUTCOMES = ("contacted", "applied", "granted", "not_entitled", "declined", "unreachable")


def outcome_lines(statistics) -> list[str]:
    """Per scheme: the signals with feedback by outcome, take-up and precision."""
    names = [o.replace("_", " ") for o in OUTCOMES] + ["take-up", "precision"]
    widths = [len(name) + 2 for name in names]
    lines = [_row(("scheme", *names), widths)]
    for r in statistics.to_pylist():
        counts = [f"{r[o]:,}" for o in OUTCOMES]
        lines.append(
            _row((r["scheme"], *counts, _rate(r["take_up"]), _rate(r["precision"])), widths)
        )
    return lines


def print_statistics(statistics, signals: dict[str, tuple[int, int]] | None) -> None:
    print("\n".join(coverage_lines(statistics, signals)))
    print("\noutcomes of the signals with feedback:")
    print("\n".join(outcome_lines(statistics)))
    print("coverage = the kept runs' signals with feedback / the kept runs' signals")
    print("take-up = granted / contacted; precision = granted / (granted + not entitled)")


def _history_error(e, runs: Path, key_file: str | None) -> int:
    from flows.cli import redacted

    if key_file is None:  # the runs' signals are encrypted: the one thing to do is say so
        message = (
            f"{runs}: the runs' signals are encrypted; to check the signal ids, {KEYRING_HINT}"
        )
    else:
        message = str(e)
    print(f"error: {redacted(message)}", file=sys.stderr)
    return 2


def cmd_import(args) -> int:
    from flows.feedback import FeedbackError, import_feedback
    from pipelines.lifecycle import HistoryUnavailable

    runs, key_file = _settings(args)
    try:
        result = import_feedback(Path(args.file), runs, key_file)
    except HistoryUnavailable as e:
        return _history_error(e, runs, key_file)
    except FeedbackError as e:
        from flows.cli import redacted

        print(f"error: {redacted(str(e))}", file=sys.stderr)
        return 2
    what = "imported" if result["new"] else "already imported, nothing changed"
    print(f"{result['rows']:,} feedback row(s) {what}: {result['stored']}")
    print_statistics(result["statistics"], signals_per_scheme(runs, key_file))
    return 0


def cmd_stats(args) -> int:
    from flows.feedback import feedback_statistics

    runs, key_file = _settings(args)
    print_statistics(feedback_statistics(runs), signals_per_scheme(runs, key_file))
    return 0
