"""`signals report`: the aggregate report of one run for policy makers.

    signals report --run DIR --out DIR|FILE.html [--feedback PATH] [--key-file FILE]
                   [--threshold 10] [--min-interval N] [--rounding 1000]
                   [--max-ratio 1.25] [--significance 0.05] [--parity-basis unclaimed]
                   [--dp-epsilon E [--dp-delta D]]

--out DIR writes DIR/report.html and DIR/report-tables/ (as a run's own report/ folder);
--out NAME.html writes that page and NAME-tables/ next to it. The page is self-contained
(opens offline); the tables folder holds every aggregate table as Parquet and CSV,
tables.json and suppression.json. A run whose personal data is encrypted needs a keyring
holding its run-data key (--key-file, else keys.central_keyring of signals.toml; passphrase
from $SIGNALS_KEYRING_PASSPHRASE or keys.passphrase_file), and
its audit log beside it: the reading is logged there first, one `decryption` record per
person the run holds data on (privacy/retention.py log_reading).

The disclosure settings' defaults are the policy floor (privacy.disclosure.POLICY): an
option may make the protection stricter (a higher threshold, a wider interval, coarser
rounding, differential privacy on top), never weaker; weaker or negative values are
refused with exit 2. Registered in flows/cli.py COMMAND_MODULES.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    from flows.runs import add_run_arguments
    from privacy.disclosure import POLICY

    p = subparsers.add_parser(
        "report", help="aggregate report of a run for policy makers (HTML, Parquet, CSV)"
    )
    add_run_arguments(p)
    p.add_argument(
        "--out",
        required=True,
        help="folder for report.html and report-tables/, or a path ending in .html",
    )
    p.add_argument(
        "--feedback", help="operator feedback Parquet file or folder (default <run>/feedback/)"
    )
    p.add_argument(
        "--key-file",
        help="central keyring, for an encrypted run (default: keys.central_keyring)",
    )
    p.add_argument(
        "--threshold",
        type=int,
        default=POLICY.threshold,
        help=f"smallest publishable cell (at least {POLICY.threshold}, the policy floor)",
    )
    p.add_argument(
        "--min-interval",
        type=int,
        help="width an attacker's interval must keep (at least the threshold, the default)",
    )
    p.add_argument(
        "--rounding",
        type=int,
        default=POLICY.amount_rounding,
        help=f"round amounts to this EUR (at least {POLICY.amount_rounding}, the policy floor)",
    )
    p.add_argument("--max-ratio", type=float, default=1.25, help="coverage parity band (1.25)")
    p.add_argument("--significance", type=float, default=0.05, help="binomial test level")
    p.add_argument("--parity-basis", choices=("unclaimed", "entitled"), default="unclaimed")
    p.add_argument(
        "--dp-epsilon",
        type=float,
        help="add differential privacy with this budget, on top of the suppression",
    )
    p.add_argument("--dp-delta", type=float, default=0.0, help="DP delta (0: Laplace noise)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from flows.report import ReportError, build_report
    from flows.runs import run_folder
    from privacy.disclosure import DisclosureError

    try:
        options = _options(args)
        keyring = _keyring(args.key_file or _configured_keyring())
        report = build_report(run_folder(args.run, args.runs), Path(args.out), options, keyring)
    except (ReportError, DisclosureError, OSError) as e:
        from flows.cli import redacted

        print(f"error: {redacted(_one_line(e))}", file=sys.stderr)
        return 2
    d = report.summary["disclosure"]
    print(f"report written to {report.html}")
    print(f"tables (Parquet, CSV) in {report.tables_dir}")
    print(
        f"{d['cells']:,} cells, {d['suppressed']:,} suppressed; "
        f"{report.summary['flags']} coverage disparities flagged"
    )
    return 0


def _options(args):
    """The report options, refused (ReportError, PolicyError, DPSettingsError) when a value
    is out of range or protects less than the policy floor."""
    from flows.report import ReportError, ReportOptions
    from privacy.disclosure import Rules, check_policy

    if not args.max_ratio > 1:
        raise ReportError(f"--max-ratio must be above 1, not {args.max_ratio}")
    if not 0 < args.significance < 1:
        raise ReportError(f"--significance must be between 0 and 1, not {args.significance}")
    rules = Rules(args.threshold, args.min_interval, args.rounding)
    check_policy(rules)
    dp = None
    if args.dp_epsilon is not None:
        from privacy.dp import DPSettings

        dp = DPSettings(epsilon=args.dp_epsilon, delta=args.dp_delta)
    return ReportOptions(
        rules=rules,
        max_disparity_ratio=args.max_ratio,
        significance=args.significance,
        parity_basis=args.parity_basis,
        feedback=Path(args.feedback) if args.feedback else None,
        dp=dp,
    )


def _one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _configured_keyring() -> str | None:
    """keys.central_keyring of signals.toml (its passphrase file too), as feedback uses it."""
    from flows.config import load_config, load_passphrase

    config = load_config(None)
    if config.keys.central_keyring:
        load_passphrase(config)
    return config.keys.central_keyring


def _keyring(key_file: str | None):
    if not key_file:
        return None
    from privacy.keys import load_keyring, passphrase_from_env

    return load_keyring(Path(key_file), passphrase_from_env())
