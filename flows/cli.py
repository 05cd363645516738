"""The `signals` command line: one sub-command per thing a user does.

Every command runs without prompts when given its flags; secrets come from
environment variables or files, never from arguments that end up in shell history.
Known failures print one line saying what is wrong and what to do, and exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from pathlib import Path

from flows import environment


def _user_errors() -> tuple[type[Exception], ...]:
    """Known failures: their message is for the user. Anything else is a bug: full traceback."""
    from entitlement_rules.errors import RuleError
    from flows.config import ConfigError
    from flows.report import ReportError
    from flows.runs import RunLocked, RunNotFound
    from pipelines.lifecycle import HistoryUnavailable
    from pipelines.publish import PublicationError
    from pipelines.read_deliveries import DeliveryRefused
    from privacy.audit.log import AuditLogError
    from privacy.body_links import LinkError
    from privacy.keys import KeyringError
    from privacy.minimise import MinimisationError
    from privacy.purpose_check import PurposeNotAllowed
    from privacy.register import RegisterError
    from privacy.reidentify import ReidentificationError
    from privacy.retention import RunDataUnavailable
    from privacy.subject_access import SubjectAccessError

    return (
        AuditLogError,
        DeliveryRefused,
        HistoryUnavailable,
        KeyringError,
        LinkError,
        RuleError,
        PublicationError,
        ReportError,
        UsageError,
        MinimisationError,
        ReidentificationError,
        RunDataUnavailable,
        PurposeNotAllowed,
        RegisterError,
        ConfigError,
        RunNotFound,
        RunLocked,
        SubjectAccessError,
    )


# Nine digits standing alone, maybe written with dots, spaces or dashes: what a BSN looks
# like (not part of a checksum, a date and time, or a longer number). A colon may follow:
# "runs/111222333: no audit log here" quotes a path a user typed.
_BSN_LIKE = re.compile(r"(?<![\w.:\-])\d(?:[ .\-]?\d){8}(?![\w\-]|[.:]\d)")


def _hidden(match: re.Match) -> str:
    from pipelines.contract import bsn_is_valid

    digits = re.sub(r"\D", "", match.group())
    return "<a number like a BSN, not shown>" if bsn_is_valid(digits) else match.group()


def redacted(message: str) -> str:
    """The message without any number that may be a BSN (nine digits passing the 11-proef):
    a user may type one anywhere."""
    return _BSN_LIKE.sub(_hidden, message)


class Parser(argparse.ArgumentParser):
    """argparse, except that its errors never quote back a number that may be a BSN
    (`signals audit trail 123456782` would print "unrecognized arguments: 123456782")."""

    def error(self, message: str):
        super().error(redacted(message))


def shell_path(path) -> str:
    """A path for a printed command: relative where that is shorter, quoted for the shell."""
    import shlex

    path, relative = str(path), os.path.relpath(path)
    chosen = relative if len(relative) < len(path) else path
    if "/" not in chosen or chosen.startswith("-"):  # a bare name is looked up on PATH; a
        chosen = "./" + chosen  # leading dash reads as an option
    return shlex.quote(chosen)


def program() -> str:
    """How to call this command again in a printed suggestion: `signals`, or the path it was
    called by when `signals` is on no PATH (`make` runs .venv/bin/signals)."""
    import shutil

    if os.path.basename(sys.argv[0]) != "signals" or shutil.which("signals"):
        return "signals"
    return shell_path(sys.argv[0])


class UsageError(Exception):
    """A command was given arguments that cannot work together."""


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {value}")
    return n


def _passphrase(args) -> str:
    from privacy.keys import passphrase_from_env

    if getattr(args, "passphrase_file", None):
        return Path(args.passphrase_file).read_text(encoding="utf-8").strip()
    return passphrase_from_env()


# -- commands ----------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from pipelines.synthetic import generate

    result = generate(
        Path(args.out), persons=args.persons, seed=args.seed, reference_date=args.reference_date
    )
    for source, info in result.items():
        print(f"{source:<18} {info['row_count']:>10,} rows  {info['path']}")
    return 0


def cmd_pseudonymise(args) -> int:
    from privacy.keys import load_keyring
    from privacy.pseudonymise import pseudonymise_delivery

    ring = load_keyring(Path(args.key_file), _passphrase(args))
    result = pseudonymise_delivery(Path(args.delivery), ring, Path(args.out))
    print(
        f"{result.source}: {result.rows:,} rows -> {result.accepted:,} pseudonymised, "
        f"{result.quarantined:,} quarantined; written to {result.directory}"
    )
    if result.not_read:
        extra = redacted(", ".join(result.not_read))
        print(
            f"warning: {result.source}: column(s) {extra} are not in the delivery contract: "
            "not read and not passed on (recorded in the manifest as minimised.not_read); "
            "leave them out of the extract",
            file=sys.stderr,
        )
    return 0


def _register_dir(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def _check_folder_path(folder: Path, option: str) -> None:
    """A folder a command will make or write into: refused now, in one line, when it or a
    folder above it is a file (the run would fail at its lock, inside the flow)."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == folder else f"is under {path}, a file"
                raise UsageError(f"{option} {folder}: {what}, not a folder")
            return


def cmd_run(args) -> int:
    from flows import ephemeral_server, interrupt
    from flows.config import load_config, load_passphrase
    from flows.run import run_flow

    environment.quiet_known_failures(_user_errors())

    # A flag wins; what it leaves out comes from signals.toml (and its SIGNALS_* overrides),
    # as for the scheduled run, so a manual run and the schedule share one configuration.
    config = load_config(args.config)
    deliveries = args.deliveries or config.require("paths", "deliveries")
    out = args.out or config.require("paths", "out")
    key_file = args.key_file or config.keys.central_keyring
    load_passphrase(config)
    out_dir = Path(out)
    _check_folder_path(out_dir, "--out")
    # What is published already: a run found there was not made now.
    published = _published(out_dir)
    started = dt.datetime.now(dt.UTC)
    # Ctrl-C and SIGTERM stop the run cleanly, its temporary Prefect server with it.
    with interrupt.stoppable():
        try:
            ephemeral_server.guard()
            folder = run_flow(
                deliveries=str(Path(deliveries).resolve()),
                reference_date=args.reference_date,
                out=str(Path(out).resolve()),
                runner=args.runner or config.run.runner,
                runner_args=args.runner_arg,
                buckets=args.buckets or config.run.buckets,
                # Absolute, not resolved: a symlink (a mounted secret) is the path workers share.
                key_file=os.path.abspath(key_file) if key_file else None,
                purpose=args.purpose,
                register_dir=_register_dir(args.register or config.paths.register),
                max_delivery_age_days=config.thresholds.max_delivery_age_days,
                max_quarantine_share=config.thresholds.max_quarantine_share,
            )
        except BaseException:
            # Whatever the stop became on its way up (DuckDB, Beam and Prefect rewrap it):
            # after a SIGINT or SIGTERM, the run ended because it was asked to.
            if (signum := interrupt.received()) is None:
                raise
            raise interrupt.said(signum, _left_behind(out_dir, published)) from None
    from flows.runs import made_before, same_date_runs
    from flows.summary import print_run_summary

    if made_before(Path(folder), published, started):
        print(f"{folder}: already published for these inputs, code and rules; nothing changed\n")
    else:
        for other in same_date_runs(Path(folder), published):
            print(
                f"note: {other} was published for the same reference date; this run does not "
                "see it and may signal the same households again (docs/operations.md)\n"
            )
    print_run_summary(Path(folder))
    return 0


def _published(out_dir: Path) -> set[str]:
    """Names of the run folders published in `out_dir`. Not `.staging-<run_id>/`: it has
    its manifest before it is published (pathlib's `*` matches hidden names)."""
    runs = {p.parent.name for p in out_dir.glob("*/manifest.json")}
    return {name for name in runs if not name.startswith(".")}


def _left_behind(out_dir: Path, published: set[str]) -> str:
    """What an interrupted run left: publication is atomic, so all of a run or none."""
    new = sorted(_published(out_dir) - published)
    if not new:
        return "nothing published (run it again to start over)"
    run = out_dir / new[0]
    if (run / "report" / "report.html").is_file():
        return f"{run} was published in full"
    # Its report failed (docs/operations.md): a rerun writes it.
    return f"{run} is published, its report not written (run it again to write it)"


def cmd_demo(args) -> int:
    from flows import ephemeral_server
    from flows.demo import run_demo

    environment.quiet_known_failures(_user_errors())
    ephemeral_server.guard()  # Prefect's server: out of Ctrl-C's reach, gone with the demo
    return run_demo(args)


# Feature modules that add their own sub-commands: each has `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "flows.cli_keys",
    "flows.cli_privacy",
    "flows.cli_rules",
    "flows.cli_register",
    "flows.cli_service",
    "flows.cli_bench",
    "flows.cli_audit",
    "flows.cli_report",
    "flows.cli_feedback",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="signals",
        description="Proactive-entitlement signalling: pseudonymise deliveries, run the "
        "central pipeline, and inspect its outputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write a synthetic population as raw deliveries")
    p.add_argument("--persons", type=_positive, default=20_000)
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the population's random seed: the same seed gives the same persons and "
        "households at every reference date (for a series of runs)",
    )
    p.add_argument(
        "--reference-date",
        type=_date,
        default=dt.date(2025, 1, 1),
        help="the deliveries' reference date (YYYY-MM-DD; default 2025-01-01)",
    )
    p.add_argument("--out", required=True, help="folder for the raw deliveries")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "pseudonymise", help="at the supplying body: validate and pseudonymise one raw delivery"
    )
    p.add_argument("--delivery", required=True, help="raw delivery folder <source>/<date>")
    p.add_argument("--key-file", required=True)
    p.add_argument("--passphrase-file")
    p.add_argument("--out", required=True, help="root of the pseudonymised deliveries")
    p.set_defaults(func=cmd_pseudonymise)

    p = sub.add_parser(
        "run",
        help="the central run over pseudonymised deliveries",
        description="Flags not given are read from signals.toml (--config, $SIGNALS_CONFIG, "
        "./signals.toml): paths.deliveries, paths.out, keys.central_keyring, "
        "keys.passphrase_file, run.runner, run.buckets.",
    )
    p.add_argument("--deliveries", help="root of the pseudonymised deliveries (paths.deliveries)")
    p.add_argument("--reference-date", type=_date, required=True)
    p.add_argument("--out", help="folder that receives <run_id>/ (paths.out)")
    p.add_argument(
        "--config", help="configuration file (default: $SIGNALS_CONFIG, else ./signals.toml)"
    )
    p.add_argument("--runner", help="Beam runner (run.runner; default DirectRunner)")
    p.add_argument(
        "--runner-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a Beam flag for the runner, repeatable (docs/scaling.md), "
        "e.g. --runner-arg=--dask_client_address=tcp://scheduler:8786",
    )
    p.add_argument(
        "--buckets",
        type=_positive,
        help="the most join buckets, one per 100,000 persons (run.buckets; default 256)",
    )
    p.add_argument(
        "--key-file",
        help="central keyring (keys.central_keyring; passphrase: $SIGNALS_KEYRING_PASSPHRASE "
        "or keys.passphrase_file)",
    )
    p.add_argument(
        "--purpose",
        default="proactive-entitlement-signalling",
        help="processing activity of the register (default proactive-entitlement-signalling)",
    )
    p.add_argument(
        "--register",
        help="processing register folder (default: paths.register, else privacy/register/)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="generate, pseudonymise and run end to end, then summarise")
    p.add_argument("--persons", type=_positive, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reference-date", type=_date, default=dt.date(2025, 1, 1))
    p.add_argument("--from", dest="from_raw", help="use these raw deliveries instead of generating")
    p.add_argument("--out", default="demo-output")
    p.set_defaults(func=cmd_demo)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    environment.configure()
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that left (`| head`) shows here, not at exit
        return code
    except _user_errors() as e:
        print(f"error: {redacted(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from flows.interrupt import Interrupted

        print(e if isinstance(e, Interrupted) else "interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except BrokenPipeError:
        if not _reader_gone():
            raise  # another pipe (a subprocess, a socket): a failure to show
        # The reader of our output stopped early (`signals register show | head`): end as a
        # command killed by SIGPIPE would (141), with nowhere left to write.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it."""
    import select

    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


if __name__ == "__main__":
    # `python -m flows.cli`: run the module as imported, so that its exception classes are
    # the ones the other modules raise (this file as __main__ would be a second copy).
    from flows.cli import main as imported_main

    sys.exit(imported_main())
