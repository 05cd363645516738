"""`signals audit`: the auditor's tools for the tamper-evident purpose audit log.

    verify                 every signature, root, record and proof; exit 1 naming the first problem
    trail PSEUDONYM        everything that happened to one data subject (subject access request)
    query                  records or counts by purpose, legal basis, scheme, run, operation, date
    prove PSEUDONYM        an inclusion-proof bundle for one data subject an outsider can check
    check-proof FILE       check such a bundle (what an outsider does; needs no log)
    export --to DIR        a verified copy of the log, or of the records a query selects

`--log` is the audit-log folder (`<out>/audit-log`) or the run output folder holding it.
Verification exits 0 when the log holds, 1 when it found a problem, 2 on a usage error,
3 when it could not finish (a hashing process died): then nothing was judged.
Ids are printed in base64, never hex.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import time
from pathlib import Path

MAX_PROBLEMS_SHOWN = 20
PROGRESS_EVERY = 5.0  # seconds between progress lines of a long verification


def _progress(what: str):
    """A `verify_log` progress callback: a line on stderr every PROGRESS_EVERY seconds
    (on 2 cores a run of 1M persons takes ~10 s to verify, one of 10M ~1.5 minutes)."""
    started = last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY:
            last = now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            print(
                f"{what}: {done:,} of {total:,} records checked{share}, {now - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    return report


def _log_root(value: str) -> Path:
    from flows.cli import UsageError
    from privacy.audit.log import LOG_DIRNAME

    path = Path(value)
    if (path / "records.parquet").is_file() and not (path / "segments").is_dir():
        raise UsageError(
            f"{path}: an export of selected records, not a log: read its records.parquet "
            "with DuckDB; to check records, verify or prove them in the log it came from"
        )
    if (path / "checkpoints").is_dir():
        return path
    if (path / LOG_DIRNAME / "checkpoints").is_dir():
        return path / LOG_DIRNAME
    for run in (path, path.parent):  # a run folder, or its audit/ copy
        if (run / "manifest.json").is_file() and (run.parent / LOG_DIRNAME).is_dir():
            raise UsageError(
                f"{path}: a run, not the audit log: the log that holds it is "
                f"{run.parent / LOG_DIRNAME} (give that, or {run.parent})"
            )
    raise UsageError(f"{path}: no audit log here (expected checkpoints/ or {LOG_DIRNAME}/)")


def _pseudonym(value: str) -> str:
    from privacy.pseudonyms import BODY_PSEUDONYM_PATTERN, DOMAIN_PSEUDONYM_PATTERN

    if re.sub(r"[\s.\-]", "", value).isdigit():  # not quoted back: it may be a BSN
        raise argparse.ArgumentTypeError(
            "the audit log names data subjects by pseudonym (d1.…), never by a number like a BSN"
        )
    if re.match(BODY_PSEUDONYM_PATTERN, value.strip()):
        raise argparse.ArgumentTypeError(
            f"{value!r} is a body pseudonym (b<n>.…), which never reaches the log: it names data "
            "subjects by their domain pseudonym (d<n>.…); the controller finds a person's with "
            "`signals subject-access`"
        )
    if not re.match(DOMAIN_PSEUDONYM_PATTERN, value):
        # A typo would otherwise find nothing and look like "nothing was done to them".
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a pseudonym as the log holds them: d<key number>, a dot, and 32 "
            "letters a-p (copy it whole, without spaces)"
        )
    return value


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0 or more)")
    return int(value)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        shown = "that" if len(re.sub(r"\D", "", value)) == 9 else repr(value)  # a BSN has 9
        raise argparse.ArgumentTypeError(f"{shown} is not an ISO date (YYYY-MM-DD)") from None


def _as_usage_errors(func):
    """Known audit-log failures become one-line usage errors (exit 2), not tracebacks."""

    def run(args) -> int:
        from flows.cli import UsageError
        from privacy.audit.log import AuditLogError
        from privacy.audit.signing import SignerError

        try:
            return func(args)
        except BrokenPipeError:
            raise  # the reader left (`| head`): not a usage error; main() ends quietly
        except (AuditLogError, SignerError, OSError, json.JSONDecodeError) as e:
            raise UsageError(str(e)) from None

    return run


# -- verify --------------------------------------------------------------------------------


NOT_JUDGED = 3  # exit code: verification could not finish


def cmd_verify(args) -> int:
    from privacy.audit.log import checkpoint_name
    from privacy.audit.signing import load_public_pem
    from privacy.audit.verify import VerificationIncomplete, verify_log

    root = _log_root(args.log)
    for path in args.public_key or ():  # a key that cannot be read is a usage error, exit 2
        load_public_pem(Path(path).read_bytes(), str(path))
    try:
        report = verify_log(
            root,
            args.public_key or None,
            args.trusted_checkpoint or None,
            progress=_progress("verifying"),
        )
    except VerificationIncomplete as e:
        print(f"audit log {root}: NOT VERIFIED", file=sys.stderr)
        print(f"  {e}", file=sys.stderr)
        return NOT_JUDGED
    if not report.ok:
        from flows.cli import redacted  # an edited record may hold anything, a BSN too

        print(f"audit log {root}: FAILED", file=sys.stderr)
        print(f"  first problem: {redacted(report.problems[0])}", file=sys.stderr)
        for problem in report.problems[1:MAX_PROBLEMS_SHOWN]:
            print(f"  also: {redacted(problem)}", file=sys.stderr)
        if len(report.problems) > MAX_PROBLEMS_SHOWN:
            print(f"  ... {len(report.problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
        return 1
    latest = report.latest
    keys = ", ".join(sorted(report.key_fingerprints)) or "none"
    pinned = "pinned" if args.public_key else "published with the log"
    print(f"audit log {root}: OK")
    print(
        f"  checkpoints   {report.checkpoints}, every Ed25519 signature valid "
        f"(keys {keys}, {pinned})"
    )
    print(
        f"  records       {report.records:,}; leaf index 0..{max(report.records - 1, 0)} in order"
    )
    print("  leaves        every record's leaf hash recomputed from its canonical bytes")
    print("  roots         every segment gives the root its checkpoint signed")
    print(
        f"  consistency   {report.consistency_proofs} proof(s) verified: each checkpoint extends "
        "the one before"
    )
    print(f"  inclusion     {report.inclusion_proofs} sampled inclusion proofs verified")
    if report.trusted_checked:
        print(f"  history       {report.trusted_checked} kept checkpoint(s) found unchanged")
    if report.runs_checked:
        print(
            f"  runs          {report.runs_checked} published run(s) beside the log name the "
            "checkpoint of their records: each is in the log, unchanged"
        )
    if latest is not None:
        print(
            f"  latest        checkpoint {latest.sequence}: tree size {latest.tree_size:,}, "
            f"root {latest.body['root_hash']}"
        )
    # What this check could not rule out, said every time: an OK is only as good as its anchors.
    if not args.public_key:
        print(
            "  not pinned    the keys came with the log: a log rewritten and re-signed under a "
            "new key passes too; pin the key you keep with --public-key"
        )
    if report.runs_without_entry:
        names = ", ".join(report.runs_without_entry[:5])
        more = len(report.runs_without_entry) - 5
        print(
            f"  no entry      published run(s) {names}{f' and {more} more' if more > 0 else ''} "
            "have no audit/_log_entry.json: copied from elsewhere, or the entry removed; "
            "checkpoints removed after theirs would not show by them"
        )
    if not args.trusted_checkpoint and latest is not None:
        kept = root / "checkpoints" / checkpoint_name(latest.sequence)
        print(
            "  not anchored  no kept checkpoint: removing the newest entries shows only where a "
            f"run beside the log names them; keep a copy of {kept} and pass it with "
            "--trusted-checkpoint next time"
        )
    return 0


# -- trail and query ---------------------------------------------------------------------------


def _b64(value) -> str:
    from privacy.audit.signing import b64

    return b64(value) if value is not None else ""


def _row_json(row: dict) -> dict:
    out = {}
    for name, value in row.items():
        if isinstance(value, bytes):
            out[name] = _b64(value)
        elif isinstance(value, dt.datetime):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out


def _print_rows(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            print(json.dumps(_row_json(row), ensure_ascii=False, sort_keys=True))
        return
    for r in rows:
        when = r["start_time"].isoformat(timespec="seconds") if r["start_time"] else "-"
        print(
            f"{r['leaf_index']:>10}  {when}  {r['run_id'] or '-':<24} {r['name']:<17} "
            f"{r['status'] or '-':<14} {r['data_subject_pid'] or '-'}"
        )
        print(f"{'':>12}{r['attributes']}")


def _filters(args, subject: str | None = None):
    from flows.cli import UsageError
    from privacy.audit.events import OPERATIONS
    from privacy.audit.query import Filters

    # A filter that cannot match anything would print "no record matches" as if checked.
    operation = getattr(args, "operation", None)
    if operation is not None and operation not in OPERATIONS:
        raise UsageError(
            f"--operation {operation!r} is no operation the log records: {', '.join(OPERATIONS)}"
        )
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since and until and since > until:
        raise UsageError(f"--since {since} is after --until {until}: no day is in between")
    return Filters(
        purpose=getattr(args, "purpose", None),
        legal_basis=getattr(args, "legal_basis", None),
        scheme=getattr(args, "scheme", None),
        run=getattr(args, "run", None),
        operation=getattr(args, "operation", None),
        status=getattr(args, "status", None),
        subject=subject or getattr(args, "subject", None),
        since=getattr(args, "since", None),
        until=getattr(args, "until", None),
    )


def _warn_if_altered(root: Path) -> None:
    """trail and query read records as they are; say so when the files are not as signed."""
    from privacy.audit.verify import quick_check

    problems = quick_check(root)
    if problems:
        print(
            f"WARNING: {root} is not as signed ({problems[0]}"
            + (f"; {len(problems) - 1} more" if len(problems) > 1 else "")
            + "): what follows may be altered; `signals audit verify` names what changed",
            file=sys.stderr,
        )


def cmd_trail(args) -> int:
    from privacy.audit.query import count_by, select

    root = _log_root(args.log)
    filters = _filters(args, subject=args.pseudonym)
    _warn_if_altered(root)
    rows, total = select(root, filters)
    if args.format == "json":
        _print_rows(rows.to_pylist(), "json")
        return 0
    print(f"data subject {args.pseudonym}: {total:,} audit record(s) in {root}")
    if total == 0:
        print("  (the log names each data subject by its pseudonym as the run made it, d1.…)")
        return 0
    for r in count_by(root, filters, ["run_id", "name", "status"]).to_pylist():
        print(f"  {r['run_id']:<26} {r['name']:<17} {r['status']:<14} {r['records']:>6}")
    print()
    _print_rows(rows.to_pylist(), "table")
    return 0


NO_MATCH = (
    "no record matches (the values the log holds: --count-by run_id, name, status, scheme or "
    "processing_activity_id)"
)


def cmd_query(args) -> int:
    from privacy.audit.query import count_by, select

    root = _log_root(args.log)
    filters = _filters(args)
    _warn_if_altered(root)
    if args.count_by:
        table = count_by(root, filters, [g.strip() for g in args.count_by.split(",")])
        if args.format == "json":
            _print_rows(table.to_pylist(), "json")
        elif table.num_rows == 0:
            print(NO_MATCH)
        else:
            print("  ".join(table.column_names))
            for r in table.to_pylist():
                print("  ".join(f"{v if v is not None else '-'}" for v in r.values()))
        return 0
    rows, total = select(root, filters, limit=args.limit)
    _print_rows(rows.to_pylist(), args.format)
    if args.format != "json":
        print(f"{total:,} record(s) match; {rows.num_rows:,} shown" if total else NO_MATCH)
    return 0


# -- prove, check-proof, export ------------------------------------------------------------


def cmd_prove(args) -> int:
    from privacy.audit.proofs import make_bundle

    bundle = make_bundle(_log_root(args.log), args.pseudonym)
    text = json.dumps(bundle, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(
            f"{len(bundle['records'])} record(s) of {args.pseudonym} proven in checkpoint "
            f"{bundle['checkpoints'][-1]['sequence']} -> {args.out}"
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_check_proof(args) -> int:
    from privacy.audit.proofs import check_bundle

    try:
        bundle = json.loads(Path(args.bundle).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _not_a_bundle(args.bundle, f"not JSON: {e}") from None
    if not isinstance(bundle, dict) or not all(
        bundle.get(k) for k in ("checkpoints", "records", "subject")
    ):
        raise _not_a_bundle(args.bundle, "it lacks checkpoints, records or subject")
    try:
        problems = check_bundle(bundle, args.public_key or None)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise _not_a_bundle(args.bundle, f"malformed: {type(e).__name__} {e}") from None
    if problems:
        print(f"{args.bundle}: FAILED", file=sys.stderr)
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    latest = bundle["checkpoints"][-1]
    source = "pinned key" if args.public_key else "keys in the bundle"
    print(
        f"{args.bundle}: OK: {len(bundle['records'])} record(s) of {bundle['subject']} are in "
        f"the log at checkpoint {latest['sequence']} (tree size {latest['tree_size']:,}, root "
        f"{latest['root_hash']}), signatures checked with the {source}"
    )
    if not args.public_key:
        print(
            "  not pinned: whoever made the bundle chose those keys, so this shows only that "
            "the bundle is consistent; check it with --public-key and the log's published key"
        )
    print(
        "  inclusion only: these records are in the log; the bundle cannot show that no other "
        "record of the subject is (audit trail on the log itself lists them all)"
    )
    return 0


def _not_a_bundle(path: str, why: str) -> Exception:
    from flows.cli import UsageError

    return UsageError(f"{path}: not a proof bundle made by `signals audit prove` ({why})")


def cmd_export(args) -> int:
    from privacy.audit.log import AuditLog
    from privacy.audit.query import export_records
    from privacy.audit.verify import VerificationIncomplete, verify_log

    root, dest = _log_root(args.log), Path(args.to)
    if dest.exists() and any(dest.iterdir()):
        from flows.cli import UsageError

        raise UsageError(f"{dest}: not empty; export into a new folder")
    log = AuditLog(root)
    with log.locked():  # no append while the copy is made
        try:
            report = verify_log(root, progress=_progress("verifying before export"))
        except VerificationIncomplete as e:
            print(f"not exported: the log could not be verified: {e}", file=sys.stderr)
            return NOT_JUDGED
        if not report.ok:
            print(
                f"not exported: the log fails verification: {report.problems[0]}", file=sys.stderr
            )
            return 1
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(log.checkpoints_dir, dest / "checkpoints")
        shutil.copytree(log.keys_dir, dest / "public_keys")
        shutil.copy2(root / "public_key.pem", dest / "public_key.pem")
        (dest / "latest-checkpoint.json").write_text(report.latest.to_json() + "\n")
        filters = _filters(args)
        if filters == type(filters)():
            (dest / "segments").mkdir()
            for path in log.committed_segments():
                shutil.copy2(path, dest / "segments" / path.name)
            what = (
                f"the whole log ({report.records:,} records); check the copy with "
                f"`signals audit verify --log {dest}`"
            )
        else:
            total = export_records(root, filters, dest / "records.parquet")
            what = (
                f"{total:,} selected record(s) in records.parquet (read it with DuckDB), with "
                "the checkpoints of the log they were verified in"
            )
    print(f"exported {what}")
    print(
        f"keep {dest / 'latest-checkpoint.json'}: pass it to a later `signals audit verify "
        "--trusted-checkpoint` to detect a rewritten history"
    )
    return 0


# -- registration ------------------------------------------------------------------------


def _add_filters(p) -> None:
    p.add_argument("--purpose", help="processing activity id (the register entry)")
    p.add_argument("--legal-basis", help="text within the recorded legal basis (any case)")
    p.add_argument("--scheme", help="scheme, e.g. zorgtoeslag")
    p.add_argument("--run", help="run id")
    p.add_argument("--operation", help="ingest, exclusion, join, rule_evaluation, signal, ...")
    p.add_argument("--status", help="outcome, e.g. entitled, signalled, excluded")
    p.add_argument("--since", type=_date, help="records started on or after this date")
    p.add_argument("--until", type=_date, help="records started on or before this date")


def register(subparsers) -> None:
    audit = subparsers.add_parser(
        "audit", help="verify, query and prove the tamper-evident purpose audit log"
    )
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    def command(name, func, text):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--log", required=True, help="<out>/audit-log, or the <out> folder")
        p.set_defaults(func=_as_usage_errors(func))
        return p

    p = command("verify", cmd_verify, "check every signature, root, record, proof and the sequence")
    p.add_argument(
        "--public-key",
        action="append",
        help="trusted public key PEM (repeatable; default: the keys published with the log)",
    )
    p.add_argument(
        "--trusted-checkpoint",
        action="append",
        help="a checkpoint JSON kept from an earlier verification (repeatable): detects a "
        "rewritten history",
    )
    p = command("trail", cmd_trail, "everything that happened to one data subject")
    p.add_argument("pseudonym", type=_pseudonym, help="the data subject's pseudonym")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = command("query", cmd_query, "records or counts by purpose, legal basis, scheme, run, date")
    _add_filters(p)
    p.add_argument("--subject", type=_pseudonym, help="data subject pseudonym")
    p.add_argument(
        "--count-by",
        help="comma-separated: name, status, run_id, processing_activity_id, register_version, "
        "scheme (with --scheme, a rule_evaluation counts under its outcome for that scheme)",
    )
    p.add_argument("--limit", type=_count, default=50, help="rows to show (default 50)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p = command("prove", cmd_prove, "an inclusion proof bundle for one data subject")
    p.add_argument("pseudonym", type=_pseudonym, help="the data subject's pseudonym (d<n>.…)")
    p.add_argument("--out", help="write the bundle here (default: standard output)")
    p = command("export", cmd_export, "a verified copy of the log or of selected records")
    p.add_argument("--to", required=True, help="a new folder")
    _add_filters(p)
    p.add_argument("--subject", type=_pseudonym, help="data subject pseudonym")

    p = sub.add_parser("check-proof", help="check a proof bundle (needs no log)")
    p.add_argument("bundle", help="the JSON bundle from `signals audit prove`")
    p.add_argument("--public-key", action="append", help="trusted public key PEM (repeatable)")
    p.set_defaults(func=_as_usage_errors(cmd_check_proof))
