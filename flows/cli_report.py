"""`signals report`: the aggregate report of one run for policy makers.

    signals report --run DIR --out report.html [--feedback PATH] [--key-file FILE]
                   [--threshold 10] [--min-interval N] [--rounding 1000]
                   [--max-ratio 1.25] [--significance 0.05] [--parity-basis unclaimed]
                   [--no-carry-forward] [--dp-epsilon E [--dp-delta D]]

Writes report.html (self-contained: opens offline) and report-tables/ next to it (every
aggregate table as Parquet and CSV, tables.json, suppression.json). A run whose personal
data is encrypted needs a keyring holding its run-data key (--key-file; passphrase from
$SIGNALS_KEYRING_PASSPHRASE). Registered in flows/cli.py COMMAND_MODULES.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    from flows.runs import add_run_arguments

    p = subparsers.add_parser(
        "report", help="aggregate report of a run for policy makers (HTML, Parquet, CSV)"
    )
    add_run_arguments(p)
    p.add_argument("--out", required=True, help="the HTML file to write; tables go next to it")
    p.add_argument(
        "--feedback", help="operator feedback Parquet file or folder (default <run>/feedback/)"
    )
    p.add_argument("--key-file", help="keyring with the run-data key, if the run is encrypted")
    p.add_argument("--threshold", type=int, default=10, help="smallest publishable cell (10)")
    p.add_argument(
        "--min-interval", type=int, help="width an attacker's interval must keep (threshold)"
    )
    p.add_argument("--rounding", type=int, default=1000, help="round amounts to this EUR (1000)")
    p.add_argument("--max-ratio", type=float, default=1.25, help="coverage parity band (1.25)")
    p.add_argument("--significance", type=float, default=0.05, help="binomial test level")
    p.add_argument("--parity-basis", choices=("unclaimed", "entitled"), default="unclaimed")
    p.add_argument(
        "--no-carry-forward",
        action="store_true",
        help="do not keep cells suppressed in the previous run's report suppressed",
    )
    p.add_argument("--dp-epsilon", type=float, help="add differential privacy with this budget")
    p.add_argument("--dp-delta", type=float, default=0.0, help="DP delta (0: Laplace noise)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from flows.report import ReportError, ReportOptions, build_report
    from flows.runs import run_folder
    from privacy.disclosure import DisclosureError, Rules

    if args.threshold < 2 or args.rounding < 1 or args.max_ratio <= 1:
        print("error: --threshold >= 2, --rounding >= 1 and --max-ratio > 1", file=sys.stderr)
        return 2
    rules = Rules(args.threshold, args.min_interval, args.rounding, not args.no_carry_forward)
    dp = None
    if args.dp_epsilon is not None:
        from privacy.dp import DPSettings

        dp = DPSettings(epsilon=args.dp_epsilon, delta=args.dp_delta)
    options = ReportOptions(
        rules=rules,
        max_disparity_ratio=args.max_ratio,
        significance=args.significance,
        parity_basis=args.parity_basis,
        feedback=Path(args.feedback) if args.feedback else None,
        dp=dp,
    )
    try:
        keyring = _keyring(args.key_file)
        report = build_report(run_folder(args.run, args.runs), Path(args.out), options, keyring)
    except (ReportError, DisclosureError) as e:
        from flows.cli import redacted

        print(f"error: {redacted(str(e))}", file=sys.stderr)
        return 2
    d = report.summary["disclosure"]
    print(f"report written to {report.html}")
    print(f"tables (Parquet, CSV) in {report.tables_dir}")
    print(
        f"{d['cells']:,} cells, {d['suppressed']:,} suppressed; "
        f"{report.summary['flags']} coverage disparities flagged"
    )
    return 0


def _keyring(key_file: str | None):
    if not key_file:
        return None
    from privacy.keys import load_keyring, passphrase_from_env

    return load_keyring(Path(key_file), passphrase_from_env())
