"""`signals worklist`, `signals retention`, `signals decrypt` and `signals subject-access`:
the controller's commands.

The worklist is the one place a BSN is written (privacy/reidentify.py); retention
destroys the data keys of old runs (privacy/retention.py); decrypt writes plain
copies of a run's personal data for analysis in DuckDB; subject-access finds the
pseudonyms of a person who asks what was done with their data
(privacy/subject_access.py).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path


def _keyring(args):
    from flows.cli import _passphrase
    from privacy.keys import load_keyring

    return load_keyring(Path(args.key_file), _passphrase(args))


def _run(args) -> Path:
    from flows.runs import run_folder

    return run_folder(args.run, args.runs)


def _key_store(args) -> Path | None:
    return Path(args.key_store) if args.key_store else None


def cmd_worklist(args) -> int:
    from privacy.keys import check_custody
    from privacy.reidentify import write_worklist

    ring = _keyring(args)
    check_custody(ring, "controller", args.key_file)
    result = write_worklist(
        _run(args), Path(args.brp), ring, Path(args.out), key_store=_key_store(args)
    )
    logged = f"checkpoint {result.audit.sequence}" if result.audit else "nothing to log"
    print(
        f"worklist: {result.rows:,} households ({result.signals:,} signals) re-identified -> "
        f"{result.csv} (and {result.parquet.name}); {result.records:,} reidentification "
        f"records in the audit log ({logged})"
    )
    return 0


def _runs(args, config) -> Path:
    """The runs folder: --runs, else paths.out of signals.toml."""
    return Path(args.runs or config.require("paths", "out"))


def _period(args, config) -> str:
    """The retention period: the flag, else the processing register's for the programme."""
    from flows.cli import UsageError
    from privacy import register
    from privacy.keys import DEFAULT_DOMAIN
    from privacy.retention import add_period

    activity = None
    root = args.register or config.paths.register or register.DEFAULT_ROOT
    if Path(root).is_dir() and any(Path(root).glob("*.yaml")):
        activity = register.load_register(root).activity(DEFAULT_DOMAIN)
    elif args.register:
        raise UsageError(f"{root}: no processing register there (no *.yaml files)")
    if activity is None:
        if args.period:
            return args.period
        raise UsageError("no retention period: pass --period (ISO 8601, e.g. P1Y)")
    recorded = activity.retention["period"]
    if args.period:
        try:
            today = dt.date.today()
            longer = add_period(today, args.period) > add_period(today, recorded)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if longer:
            raise UsageError(
                f"--period {args.period} is longer than the processing register's retention "
                f"period {recorded} for {DEFAULT_DOMAIN}: the register records what may be "
                "kept; to keep data longer, change it there first"
            )
        return args.period
    return recorded


def cmd_retention_enforce(args) -> int:
    from flows.config import load_config
    from flows.feedback import refresh_statistics
    from privacy.retention import enforce_retention

    config = load_config(args.config)
    period = _period(args, config)
    deliveries = args.deliveries or config.paths.deliveries
    runs = _runs(args, config)
    done = enforce_retention(
        runs,
        period,
        args.as_of,
        _keyring(args),
        _key_store(args),
        Path(deliveries) if deliveries else None,
    )
    if done.feedback_rows:  # take-up and precision over the feedback left
        refresh_statistics(runs)
    for run_id in done.runs:
        print(f"{run_id}: data key destroyed (retention {period}); its personal data is unreadable")
    for name in done.link_tables:
        print(f"links/{name}: removed, no run or feedback kept was made with its old body key")
    for day in done.deliveries:
        print(f"deliveries of {day}: removed from {deliveries} (retention {period})")
    if not deliveries:
        print(
            "the pseudonymised deliveries were not checked: give --deliveries "
            "(or paths.deliveries)",
            file=sys.stderr,
        )
    print(
        f"{len(done.runs)} run(s) past retention {period} as of {args.as_of.isoformat()}; "
        f"{done.feedback_rows:,} operator feedback row(s) past it removed"
    )
    return 0


def cmd_retention_status(args) -> int:
    from flows.config import load_config
    from privacy.body_links import unneeded_tables
    from privacy.retention import RETENTION_FILE, retention_status

    config = load_config(args.config)
    period = _period(args, config)
    runs = _runs(args, config)
    for run in retention_status(runs, period, _key_store(args)):
        print(f"{run['run_id']}  created {run['created']}  kept until {run['keep_until']}")
    for run in sorted(runs.glob(f"*/{RETENTION_FILE}")):
        gone = json.loads(run.read_text())
        print(
            f"{run.parent.name}  personal data destroyed {gone['key_destroyed_at'][:10]} "
            f"(retention {gone['period']})"
        )
    print(_feedback_status(runs, period))
    for table in unneeded_tables(runs):
        print(f"links/{table.name}  no longer needed: the next enforce removes it")
    return 0


def _feedback_status(runs: Path, period: str) -> str:
    """How many feedback rows there are, and when the oldest goes."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines.lifecycle import FEEDBACK_SCHEMA, feedback_folder
    from privacy.retention import add_period

    files = sorted(feedback_folder(runs).glob("*.parquet"))
    if not files:
        return "operator feedback: none"
    dates = pq.read_table(files, schema=FEEDBACK_SCHEMA, columns=["outcome_date"])
    if not dates.num_rows:
        return "operator feedback: none"
    oldest = pc.min(dates["outcome_date"]).as_py()
    return (
        f"operator feedback: {dates.num_rows:,} row(s), the oldest ({oldest}) kept until "
        f"{add_period(oldest, period)}"
    )


def cmd_decrypt(args) -> int:
    from privacy.retention import decrypt_run

    done = decrypt_run(_run(args), _keyring(args), Path(args.out), _key_store(args))
    print(
        f"{len(done.files)} file(s) decrypted into {args.out}; they hold personal data: delete "
        f"them ({done.records:,} decryption records in the audit log)"
    )
    return 0


def _bsn_lines() -> list[str]:
    """BSNs from standard input: at a terminal typed without echo, one per prompt until an
    empty line (or Ctrl-D); otherwise one per line."""
    import getpass
    import sys

    if not sys.stdin.isatty():
        return sys.stdin.read().splitlines()
    lines = []
    while True:
        try:
            line = getpass.getpass("BSN (not shown; an empty line ends): ")
        except EOFError:
            break
        if not line.strip():
            break
        lines.append(line)
    return lines


def cmd_subject_access(args) -> int:
    import shlex

    from flows.cli_audit import _log_root
    from privacy.keys import check_custody
    from privacy.subject_access import extract, look_up, read_bsns

    ring = _keyring(args)
    check_custody(ring, "controller", args.key_file)
    root = _log_root(args.log)
    if args.extract and Path(args.extract).exists() and any(Path(args.extract).iterdir()):
        from flows.cli import UsageError

        # Two people's extracts in one folder would be one answer too many.
        raise UsageError(f"{args.extract}: not empty; give a new folder for an extract")
    done = look_up(read_bsns(_bsn_lines()), ring, root)
    print(
        f"{len(done.subjects)} person(s) looked up in {root}; {done.logged} subject_lookup "
        f"record(s) logged first (event {done.event}, checkpoint {done.checkpoint.sequence})"
    )
    found = []
    for subject in done.subjects:
        named = [("", subject.records), ("household ", subject.households)]
        for what, records in named:
            for pid, n in records.items():
                print(f"line {subject.line}: {what}{pid}  {n:,} audit record(s) before this lookup")
                if n and pid not in found:
                    found.append(pid)
    if found:
        from flows.cli import program

        print("everything done to them:")
        for pid in found:
            print(f"  {program()} audit trail {pid} --log {shlex.quote(args.log)}")
    if args.extract:
        _print_extract(extract(done, ring, root, Path(args.extract), _key_store(args)))
    return 0


def _print_extract(done) -> None:
    rows = sum(n for tables in done.rows.values() for n in tables.values())
    if done.rows:
        print(
            f"extract: {rows:,} row(s) -> {done.folder} (owner-only), one folder per input "
            f"line and run; {done.logged:,} decryption record(s) logged first"
        )
    else:
        print("extract: no kept run holds data on them; nothing written")
    for where, tables in done.rows.items():
        print(f"  {where}: " + ", ".join(f"{name} {n:,}" for name, n in tables.items()))
    for run_id in done.destroyed:
        print(f"  {run_id}: its personal data is destroyed (retention), or its folder is gone")
    if done.rows:
        print(
            "  household rows hold the other members' data too (a partner's income): review "
            "the extract before giving anything out"
        )


def _date(value: str) -> dt.date:
    from flows.cli import _date as parse

    return parse(value)


def _keys_args(p) -> None:
    p.add_argument("--key-file", required=True, help="controller keyring")
    p.add_argument("--passphrase-file", help="default: $SIGNALS_KEYRING_PASSPHRASE")
    p.add_argument("--key-store", help="run data keys (default: <runs>/.keys)")


def register(subparsers) -> None:
    from flows.runs import add_run_arguments

    p = subparsers.add_parser(
        "worklist", help="controller: re-identify a run's signalled households into a worklist"
    )
    add_run_arguments(p)
    p.add_argument("--brp", required=True, help="the raw BRP delivery the run used")
    p.add_argument("--out", required=True, help="worklist .csv (a .parquet is written beside it)")
    _keys_args(p)
    p.set_defaults(func=cmd_worklist)

    retention = subparsers.add_parser(
        "retention", help="destroy the data keys of runs past their retention period"
    ).add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("enforce", cmd_retention_enforce, "destroy data keys of runs past retention"),
        ("status", cmd_retention_status, "list runs with their retention dates"),
    ):
        r = retention.add_parser(name, help=text)
        r.add_argument("--runs", help="folder holding the run folders (default: paths.out)")
        r.add_argument(
            "--period",
            help="ISO 8601 period (default: the processing register's; shorter, never longer)",
        )
        r.add_argument("--key-store", help="run data keys (default: <runs>/.keys)")
        r.add_argument(
            "--register", help="processing register folder (default: paths.register, else shipped)"
        )
        r.add_argument("--config", help="signals.toml (default: found as for every command)")
        if name == "enforce":
            r.add_argument(
                "--deliveries",
                help="the pseudonymised deliveries the runs read (default: paths.deliveries)",
            )
            r.add_argument(
                "--key-file", required=True, help="keyring with the audit-signing key (logs it)"
            )
            r.add_argument("--passphrase-file", help="default: $SIGNALS_KEYRING_PASSPHRASE")
            r.add_argument(
                "--as-of", type=_date, default=dt.date.today(), help="date to enforce at"
            )
        r.set_defaults(func=func)

    p = subparsers.add_parser(
        "decrypt", help="controller: write plain copies of a run's personal data (for DuckDB)"
    )
    add_run_arguments(p)
    p.add_argument("--out", required=True, help="folder for the plain copies")
    _keys_args(p)
    p.set_defaults(func=cmd_decrypt)

    p = subparsers.add_parser(
        "subject-access",
        help="controller: the pseudonyms of a person who asks (BSN on standard input), logged",
        description="Reads BSNs from standard input (one per line; typed without echo at a "
        "terminal), never from the command line. Prints each person's pseudonyms under every "
        "body and domain key and the households they were joined into, with how many audit "
        "records name each; the lookup is logged first (a subject_lookup record for each "
        "that has records, and for the active keys' pseudonym). No BSN is printed.",
    )
    p.add_argument("--log", required=True, help="the run output folder, or its audit-log/")
    p.add_argument(
        "--extract",
        metavar="DIR",
        help="also write the persons' rows of every kept run here (logged as decryption)",
    )
    _keys_args(p)
    p.set_defaults(func=cmd_subject_access)
