"""`signals feedback`: the operator's outcomes per signal, and what they say per scheme.

    signals feedback import FILE --runs DIR [--key-file F]
        validate FILE (CSV or Parquet: signal_id, outcome, outcome_date[, scheme]) against
        the runs published in DIR, store it under DIR/feedback/ and print take-up and
        precision per scheme; on any problem, list them by row and field, write nothing
        and exit 2
    signals feedback stats --runs DIR
        take-up and precision per scheme over all feedback stored in DIR

Definitions and the file format: flows/feedback.py. The central keyring (--key-file,
passphrase from $SIGNALS_KEYRING_PASSPHRASE) opens the runs' signals when they are
encrypted.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    """Adds `signals feedback import|stats` to the `signals` command line."""
    group = subparsers.add_parser(
        "feedback", help="import the operator's outcomes per signal; take-up and precision"
    ).add_subparsers(dest="feedback_command", required=True, metavar="ACTION")

    p = group.add_parser("import", help="validate and store a feedback file (CSV or Parquet)")
    p.add_argument("file", help="feedback file: signal_id, outcome, outcome_date[, scheme]")
    p.add_argument("--runs", required=True, help="the output folder holding the run folders")
    p.add_argument("--key-file", help="central keyring, for runs whose signals are encrypted")
    p.set_defaults(func=cmd_import)

    p = group.add_parser("stats", help="take-up and precision per scheme over all feedback")
    p.add_argument("--runs", required=True, help="the output folder holding the run folders")
    p.set_defaults(func=cmd_stats)


def _rate(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_statistics(statistics) -> None:
    header = ("scheme", "signals", "contacted", "applied", "granted", "not ent.", "take-up")
    print(f"{header[0]:<22}" + "".join(f"{h:>11}" for h in header[1:]) + f"{'precision':>11}")
    for r in statistics.to_pylist():
        counts = (
            r["signals_with_feedback"],
            r["contacted"],
            r["applied"],
            r["granted"],
            r["not_entitled"],
        )
        rates = (_rate(r["take_up"]), _rate(r["precision"]))
        print(
            f"{r['scheme']:<22}"
            + "".join(f"{v:>11,}" for v in counts)
            + "".join(f"{v:>11}" for v in rates)
        )
    print("take-up = granted / contacted; precision = granted / (granted + not entitled)")


def cmd_import(args) -> int:
    from flows.feedback import FeedbackError, import_feedback
    from pipelines.lifecycle import HistoryUnavailable

    try:
        result = import_feedback(Path(args.file), Path(args.runs), args.key_file)
    except (FeedbackError, HistoryUnavailable) as e:
        from flows.cli import redacted

        print(f"error: {redacted(str(e))}", file=sys.stderr)
        return 2
    what = "imported" if result["new"] else "already imported, nothing changed"
    print(f"{result['rows']:,} feedback row(s) {what}: {result['stored']}")
    print_statistics(result["statistics"])
    return 0


def cmd_stats(args) -> int:
    from flows.feedback import feedback_statistics

    print_statistics(feedback_statistics(Path(args.runs)))
    return 0
