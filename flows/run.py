"""The central run as a Prefect flow: it puts the steps in order and nothing more.

Flow parameters, task results and logs carry paths, dates, ids and counts only:
never a row of personal data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from entitlement_rules import compile_rule, load_rules
from flows import faults
from flows.faults import IO_RETRIES
from flows.runs import run_lock
from pipelines import central, lifecycle, proportionality
from pipelines.audit_records import AuditContext
from pipelines.contract import SOURCES
from pipelines.exclude import OBJECTIONS
from pipelines.join import DEFAULT_BUCKETS
from pipelines.publish import finalise, publish, write_manifest
from pipelines.read_deliveries import (
    NAMED_BY_QUARANTINE,
    Delivery,
    DeliveryRefused,
    find_delivery,
    open_pseudonymised,
)
from pipelines.shuffle import SHUFFLE_DIR
from pipelines.write_parts import PART_GLOB, TMP_GLOB
from privacy import body_links
from privacy.audit.log import LOG_DIRNAME, AuditLog, AuditLogError, append_run
from privacy.audit.parts import PARTS_DIR
from privacy.audit.signing import Signer
from privacy.keys import KeyringError, central_keyring, load_keyring, passphrase_from_env
from privacy.minimise import withheld_fields
from privacy.pseudonymise import check_one_body_key
from privacy.pseudonyms import DomainPseudonymiser, translate
from privacy.purpose_check import (
    Outcome,
    PurposeNotAllowed,
    check_purpose,
    check_rule_fields,
    enforce,
    write_purpose_check_record,
)
from privacy.register import Register, load_register
from privacy.retention import KEY_STORE, protect_run

PROCESSING_ACTIVITY = "proactive-entitlement-signalling"
# No task is cached (NO_CACHE): caching would hash task inputs, some of which carry key
# material, into Prefect's database, and a run must never be skipped because one looked alike.


# The packages whose code decides what a run writes.
CODE_PACKAGES = ("pipelines", "privacy", "entitlement_rules", "flows")


@functools.cache
def code_version() -> str:
    """The package version and a digest of its Python sources: a fix that leaves the version
    number alone still makes a new run of the same inputs, not "already published"."""
    try:
        number = version("entitlement-signals")
    except PackageNotFoundError:
        number = "0+unknown"
    return f"{number}+src.{source_digest(Path(__file__).resolve().parent.parent)[:12]}"


def source_digest(root: Path) -> str:
    """SHA-256 over the names and contents of the CODE_PACKAGES' Python files under root."""
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes())
    return h.hexdigest()


def _letters(hexdigest: str) -> str:
    return hexdigest.translate(str.maketrans("0123456789", "qrstuvwxyz"))


def make_run_id(
    reference_date: dt.date,
    deliveries: dict[str, Delivery],
    compiled: list,
    domain_key_id: str = "",
    purpose: str = "",
    register_version: str = "",
    history: str = "",
) -> str:
    """A run id determined by its inputs: the same inputs give the same id (idempotent reruns)."""
    h = hashlib.sha256()
    h.update(f"{reference_date.isoformat()}|{code_version()}".encode())
    if domain_key_id:  # after a key rotation the same inputs give other pseudonyms: a new run
        h.update(f"|domain-key:{domain_key_id}".encode())
    if purpose or register_version:  # another purpose or register version is another run
        h.update(f"|purpose:{purpose}|register:{register_version}".encode())
    if history:  # proportionality thresholds and earlier runs decide the signals too
        h.update(f"|history:{history}".encode())
    for name in sorted(deliveries):
        m = deliveries[name].manifest
        h.update(f"|{name}:{m['sha256']}:{m['quarantine']['sha256']}".encode())
    for c in compiled:
        h.update(f"|{c.rule_id}:{c.rule_version}:{c.parameter_version}:{c.year}".encode())
    return f"{reference_date.isoformat()}-{_letters(h.hexdigest())[:12]}"


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def open_inputs(
    deliveries_root: str,
    reference_date: dt.date,
    max_age_days: int = 0,
    max_quarantine_share: float = 1.0,
) -> dict[str, Delivery]:
    """Find and check the newest pseudonymised delivery of every source: not older than
    `max_age_days` before the reference date (objections: never older), and not more than
    `max_quarantine_share` of its rows quarantined at the body (configuration thresholds)."""
    found = {}
    for name in SOURCES:
        folder = find_delivery(Path(deliveries_root), name, reference_date)
        check_delivery_age(folder, name, reference_date, max_age_days)
        check_quarantine_share(folder, name, max_quarantine_share)
        found[name] = open_pseudonymised(folder, name)
    return found


def check_delivery_age(folder: Path, source: str, reference_date: dt.date, max_days: int):
    """Refuse a delivery dated more than `max_days` before the run (objections: any day)."""
    age = (reference_date - dt.date.fromisoformat(folder.name)).days
    limit = 0 if source == OBJECTIONS else max_days
    if age <= limit:
        return
    why = (
        "objections must be of the reference date itself: an objection made since must "
        "never be missed"
        if source == OBJECTIONS
        else f"more than thresholds.max_delivery_age_days ({max_days})"
    )
    raise DeliveryRefused(
        f"{folder}: the newest {source} delivery is dated {folder.name}, {age} day(s) before "
        f"the reference date {reference_date.isoformat()}; {why}. Wait for {source}'s "
        f"delivery of {reference_date.isoformat()}, or run for an earlier reference date"
    )


def check_quarantine_share(folder: Path, source: str, limit: float) -> None:
    """Refuse a delivery whose body quarantined more than `limit` of its rows."""
    if limit >= 1:
        return
    path = folder / "manifest.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        original = int(m["original"]["row_count"])
        quarantined = int(m["quarantine"]["row_count"])
    except (ValueError, KeyError, TypeError, OSError):
        return  # not a pseudonymised manifest: open_pseudonymised refuses it with the cause
    if original and quarantined / original > limit:
        raise DeliveryRefused(
            f"{path}: {quarantined:,} of {original:,} rows ({quarantined / original:.1%}) were "
            f"quarantined at the body, more than thresholds.max_quarantine_share "
            f"({limit:.1%}); ask {source} for a corrected delivery"
        )


@task(cache_policy=NO_CACHE)
def load_purpose_register(register_dir: str | None) -> Register:
    """Read and validate the processing register (privacy/register/ unless given)."""
    return load_register(register_dir)


@task(cache_policy=NO_CACHE)
def purpose_check(register: Register, purpose: str, on: dt.date | None = None) -> Outcome:
    """Before any data file is opened: may a run for this purpose, on this reference date,
    read every source and field?"""
    return enforce(check_purpose(register, purpose, SOURCES, on))


def record_refusal(
    out: str, register: Register, purpose: str, key_file: str | None, on: dt.date | None = None
) -> str | None:
    """Put a refused run's purpose_check record (status refused, the refusals) in the audit log
    of the output folder, so the DPO sees the attempt, not only its stderr. Only where that
    log exists (a refused first run leaves nothing behind) and the keyring can sign it.
    Returns the batch id, or None."""
    from privacy.audit.events import append_events, new_event_id
    from privacy.purpose_check import purpose_check_record

    root = Path(out) / LOG_DIRNAME
    if key_file is None or not (root / "checkpoints").is_dir():
        return None
    try:  # an unregistered purpose has no domain key: any of the keyring's will do here
        signer = Signer(load_keyring(Path(key_file), passphrase_from_env()))
    except (KeyringError, OSError):
        return None  # the refusal stands on its own; the keyring's problem is another
    batch = f"refused/{new_event_id()}"
    outcome = check_purpose(register, purpose, SOURCES, on)
    record = purpose_check_record(AuditContext(batch, purpose, register.version), outcome)
    try:
        append_events(root, pa.Table.from_batches([record]), batch, signer)
    except AuditLogError:
        return None  # the log's own problem (another signing key) must not hide the refusal
    return batch


@task(cache_policy=NO_CACHE)
def record_purpose_check(
    staging: Path, audit: AuditContext, outcome: Outcome, withheld: dict[str, str]
) -> None:
    """The run-level purpose_check audit record, next to the pipeline's audit parts."""
    write_purpose_check_record(staging / PARTS_DIR, audit, outcome, withheld)


@task(cache_policy=NO_CACHE)
def compile_rules(
    reference_date: dt.date, register: Register | None = None, purpose: str = PROCESSING_ACTIVITY
) -> list:
    """Compile every scheme ready for the benefit year of the reference date.

    A scheme whose parameters for that year are missing or unconfirmed is skipped, not fatal:
    the manifest records it with the reason (rules_skipped). A rule the fairness guard refuses
    still fails the run.
    """
    year = reference_date.year
    compiled = [
        compile_rule(rule, year)
        for rule in load_rules(years=[year])
        if not rule.missing_parameters(year)
    ]
    if register is not None:  # purpose binding: a rule may read only what its purpose allows
        for c in compiled:
            check_rule_fields(register, purpose, c)
    return compiled


def rules_skipped(year: int) -> list[dict]:
    """The schemes compile_rules left out for `year`, each with why (for the manifest)."""
    return [
        {"rule_id": rule.id, "benefit_year": year, "reason": "; ".join(problems)}
        for rule in load_rules(years=[year])
        if (problems := rule.missing_parameters(year))
    ]


def load_history(
    out: str,
    reference_date: dt.date,
    keyring,
    purpose: str,
    body_key: str,
    body_fingerprint: str | None = None,
) -> lifecycle.History:
    """Earlier runs' signals and resolutions and operator feedback in the output folder, their
    household pseudonyms as this run makes them: under the purpose's active domain key (a
    domain-key rotation keeps links), and through the controller's link table where they
    were made with another body key than this run's deliveries (`body_key`).

    Not a task: it holds the keyring, which stays out of Prefect's task inputs.
    """
    read = lifecycle.run_reader(keyring, Path(out) / KEY_STORE)
    try:
        body_links.check_same_key(Path(out), body_key, body_fingerprint, reference_date.isoformat())
    except body_links.LinkMissing as exc:
        raise lifecycle.HistoryUnavailable(str(exc)) from None
    made_with = body_links.run_body_keys(Path(out))
    linked: set[str] = set()
    unlinked: set[str] = set()

    def rekey(pids, run_ids):
        try:
            pids = translate(pids, keyring, purpose)
        except KeyringError as exc:
            raise lifecycle.HistoryUnavailable(
                f"households are named with a key the central keyring cannot re-key from "
                f"({exc}); fatigue and lifecycle need them: the central keyring must hold every "
                f"key of {purpose!r} the kept runs and feedback in {out} were made with "
                "(a retired key stays until they are gone, docs/privacy.md)"
            ) from None
        # A run no longer in `out` (feedback on a run whose folder was removed) is taken
        # to be of this body key: nothing says otherwise.
        bodies = pa.array([made_with.get(r, body_key) for r in run_ids.to_pylist()], pa.string())
        try:
            pids, used, missed = body_links.relink(
                pids, bodies, body_key, Path(out), keyring, purpose, body_fingerprint
            )
        except body_links.LinkMissing as exc:
            raise lifecycle.HistoryUnavailable(str(exc)) from None
        linked.update(used)
        unlinked.update(missed)
        return pids

    history = lifecycle.load_history(Path(out), reference_date, read, rekey)
    return dataclasses.replace(
        history, body_links=tuple(sorted(linked)), unlinked_households=len(unlinked)
    )


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def run_pipeline(spec: central.RunSpec, runner: str, runner_args: list[str]) -> None:
    """Run the Beam pipeline into the staging folder."""
    # A retry starts without the parts of the failed attempt, nor its unfinished writes.
    # Every pipeline output is <folder>/part-*.parquet (pipelines/write_parts.py).
    # The failed attempt's shuffle files are never read again: only their disk goes.
    for pattern in (PART_GLOB, TMP_GLOB):
        for part in Path(spec.staging).rglob(pattern):
            part.unlink()
    shutil.rmtree(Path(spec.staging) / SHUFFLE_DIR, ignore_errors=True)
    with beam.Pipeline(options=central.run_options(spec, runner, runner_args)) as p:
        central.build(p, spec)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def finalise_run(staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """Consolidate the pipeline's parts into the output contract."""
    return finalise(staging, deliveries)


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def publish_run(staging: Path, target: Path) -> str:
    """Publish the finalised run folder atomically."""
    return str(publish(staging, target))


@task(cache_policy=NO_CACHE, **IO_RETRIES)
def build_run_report(run_dir: Path, keyring):
    """The aggregate report into <run>/report/ (flows/report.py Report: aggregates only)."""
    from flows.report import build_report

    return build_report(Path(run_dir), Path(run_dir) / "report" / "report.html", keyring=keyring)


def report_run(run_dir: str, keyring) -> str:
    """The aggregate report of a published run, key tables attached as Prefect artifacts."""
    from flows.report import attach_artifacts

    report = build_run_report(Path(run_dir), keyring)
    attach_artifacts(report)
    return str(report.html)


def _report_staged(staging: Path, keyring):
    """The report of a finalised run, built in its staging folder: (report, None), or
    (None, the error) for the caller to raise once the run is published, as a report
    written after publication would have failed."""
    try:
        return build_run_report(staging, keyring), None
    except Exception as exc:  # noqa: BLE001 (raised by the caller after publication)
        return None, exc


def _as_published(report, staging: Path, published: Path):
    """The report's paths as published (the staging folder renamed)."""
    moved = {
        name: Path(published) / Path(getattr(report, name)).relative_to(Path(staging).resolve())
        for name in ("html", "tables_dir")
    }
    return dataclasses.replace(report, **moved)


def _by_source(fields: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """{"source.field": why} -> {source: (field, ...)}."""
    grouped: dict[str, tuple[str, ...]] = {}
    for where in fields:
        source, name = where.split(".", 1)
        grouped[source] = (*grouped.get(source, ()), name)
    return grouped


def build_manifest(spec: central.RunSpec, compiled: list, counts: dict, runner: str) -> dict:
    inputs, per_source = {}, {}
    for name, d in spec.deliveries.items():
        m = d.manifest
        q = counts["quarantine"][name]
        rows_in = int(m["original"]["row_count"])
        accepted = int(m["row_count"]) - q["central"]
        inputs[name] = {
            "path": str(d.directory),
            "reference_date": m["reference_date"],
            "supplier_oin": m["supplier_oin"],
            "sha256": m["sha256"],
            "original_sha256": m["original"]["sha256"],
            "quarantine_sha256": m["quarantine"]["sha256"],
            "pseudonym_key_id": m["pseudonymised"]["key_id"],
            "pseudonym_key_fingerprint": m["pseudonymised"].get("key_fingerprint"),
        }
        per_source[name] = {
            "rows_in": rows_in,
            "accepted": accepted,
            "quarantined": q["body"] + q["central"],
            "quarantined_at_body": q["body"],
            "quarantined_centrally": q["central"],
        }
        named = NAMED_BY_QUARANTINE.get(name)  # what quarantined rows name: still counted
        if named is not None and named.key in m:
            inputs[name][f"{named.key}_sha256"] = m[named.key]["sha256"]
            per_source[name][named.counted_as] = int(m[named.key]["row_count"])
    return {
        "run_id": spec.run_id,
        "reference_date": spec.reference_date.isoformat(),
        "code_version": code_version(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runner": runner,
        "processing_activity_id": spec.audit.processing_activity_id,
        "register_version": spec.audit.register_version,
        "domain_key_id": spec.domain.key_id if spec.domain else None,  # its pseudonyms' key
        "inputs": inputs,
        "counts": {
            "sources": per_source,
            "households": counts["households"],
            "signals": counts["signals"],
            "signals_per_scheme": counts.get("signals_per_scheme", {}),
            "estimated_annual_amount_total": counts.get("amount_total", "0.00"),
            "audit_records": counts["audit_records"],
            "audit_records_per_operation": counts.get("audit_per_operation", {}),
        },
        "rules": [
            {
                "rule_id": c.rule_id,
                "rule_version": c.rule_version,
                "parameter_version": c.parameter_version,
                "benefit_year": c.year,
            }
            for c in compiled
        ],
        "rules_skipped": rules_skipped(spec.reference_date.year),
    }


def summarise_outputs(staging: Path) -> dict:
    """Signals per scheme and their total amount, from the signals file."""
    import duckdb

    con = duckdb.connect()
    signals = str(staging / "signals.parquet").replace("'", "''")
    per_scheme = dict(
        con.execute(
            f"SELECT scheme, COUNT(*) FROM read_parquet('{signals}') GROUP BY scheme ORDER BY 1"
        ).fetchall()
    )
    total = con.execute(
        f"SELECT coalesce(SUM(estimated_annual_amount), 0) FROM read_parquet('{signals}')"
    ).fetchone()[0]
    con.close()
    return {"signals_per_scheme": per_scheme, "amount_total": f"{total:.2f}"}


class Progress:
    """One line per stage of a run, for an operator watching a long run: to Prefect's log,
    and on stderr when it is a terminal (or SIGNALS_PROGRESS=1; 0 silences it). Stages,
    counts and seconds only: never a pseudonym or a value."""

    def __init__(self, logger):
        self.logger, self.start = logger, time.monotonic()
        wanted = os.environ.get("SIGNALS_PROGRESS", "auto")
        self.shown = wanted == "1" or (wanted == "auto" and sys.stderr.isatty())

    def __call__(self, message: str) -> None:
        self.logger.info(message)
        if self.shown:
            seconds = time.monotonic() - self.start
            print(f"[{seconds:7.1f} s] {message}", file=sys.stderr, flush=True)


@flow(name="signals-run", validate_parameters=True)
def run_flow(
    deliveries: str,
    reference_date: dt.date,
    out: str,
    runner: str = "DirectRunner",
    runner_args: list[str] | None = None,
    buckets: int = DEFAULT_BUCKETS,
    key_file: str | None = None,
    purpose: str = PROCESSING_ACTIVITY,
    register_dir: str | None = None,
    proportionality_config: str | None = None,
    max_delivery_age_days: int = 0,
    max_quarantine_share: float = 1.0,
) -> str:
    """One central run: check inputs, run the pipeline, finalise, publish (returns the folder).

    One run at a time per output folder (flows/runs.py run_lock): a second is refused.
    """
    logger = get_run_logger()
    progress = Progress(logger)
    # Purpose binding comes first: a run the processing register does not cover opens nothing.
    processing_register = load_purpose_register(register_dir)
    try:
        outcome = purpose_check(processing_register, purpose, reference_date)
    except PurposeNotAllowed:
        if batch := record_refusal(out, processing_register, purpose, key_file, reference_date):
            logger.warning("refused; recorded in the audit log as %s", batch)
        raise
    # The central keyring (domain keys, audit signing key); its passphrase comes from the
    # environment, never from a flow parameter.
    keyring = central_keyring(key_file, purpose)
    # The pipeline's steps carry the keyring's path, not the key (privacy/pseudonyms.py).
    domain = DomainPseudonymiser.from_keyring_file(key_file, keyring, purpose)
    signer = Signer(keyring)  # the audit log is signed: no run without the audit-signing key
    AuditLog(Path(out) / LOG_DIRNAME).check_signer(signer)  # before hours of work, not after
    compiled = compile_rules(reference_date, processing_register, purpose)
    # Fields the register allows only for schemes this run does not evaluate: blanked on reading.
    withheld = withheld_fields(
        processing_register.activity(purpose), {rule.scheme for rule in compiled}
    )
    # One run at a time per output folder (flows/runs.py), taken once the run is allowed:
    # a run refused by the register leaves nothing behind.
    with run_lock(Path(out)):
        found = open_inputs(deliveries, reference_date, max_delivery_age_days, max_quarantine_share)
        rows = sum(d.row_count for d in found.values())
        progress(f"inputs: {len(found)} deliveries checked, {rows:,} rows accepted by the bodies")
        body_key, body_fingerprint = check_one_body_key(found)
        policy = proportionality.load_policy(proportionality_config)
        history = load_history(out, reference_date, keyring, purpose, body_key, body_fingerprint)
        progress(
            f"history: {len(history.runs)} earlier run(s), "
            f"{len(history.feedback_files)} feedback file(s)"
        )
        run_id = make_run_id(
            reference_date,
            found,
            compiled,
            domain.key_id,
            purpose,
            processing_register.version,
            f"{policy.version}:{history.fingerprint}",
        )
        out_dir = Path(out)
        target = out_dir / run_id
        if (target / "manifest.json").is_file():
            logger.info("run %s is already published at %s: nothing to do", run_id, target)
            if not (target / "report" / "report.html").is_file():  # a report that failed before
                report_run(str(target), keyring)
            return str(target)
        staging = out_dir / f".staging-{run_id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        faults.point("after_ingest")
        spec = central.RunSpec(
            run_id=run_id,
            reference_date=reference_date,
            deliveries=found,
            staging=staging,
            compiled_rules=compiled,
            audit=AuditContext(run_id, purpose, processing_register.version),
            legal_bases=outcome.ingest_bases(),
            buckets=buckets,
            domain=domain,
            proportionality=policy,
            necessity=proportionality.assess_necessity(compiled, processing_register, purpose),
            history=history.state,
            withheld=_by_source(withheld),
        )
        if withheld:
            progress(f"withheld on reading, no scheme of this run uses them: {', '.join(withheld)}")
        progress(
            f"pipeline: running {run_id} on {runner} ({central.join_buckets(spec)} join "
            "buckets); this is the long part"
        )
        run_pipeline(spec, runner, runner_args or [])
        record_purpose_check(staging, spec.audit, outcome, withheld)
        progress("pipeline: done; finalising the outputs")
        counts = finalise_run(staging, found)
        counts.update(summarise_outputs(staging))
        progress(
            f"finalised: {counts['households']:,} households, {counts['signals']:,} signals, "
            f"{counts['audit_records']:,} audit records"
        )
        manifest = build_manifest(spec, compiled, counts, runner)
        manifest["purpose_check"] = outcome.to_manifest()
        manifest["fields_withheld"] = withheld
        manifest["proportionality"] = {
            "policy": {"path": policy.path, "version": policy.version},
            "history": {
                "runs": list(history.runs),
                "fingerprint": history.fingerprint,
                # Keys its households were named with; others than the run's were re-keyed.
                "domain_keys": list(history.keys),
                # Body-key link tables its households went through (privacy/body_links.py).
                "body_links": list(history.body_links),
                # History households the link tables did not hold (not in their BRP).
                "unlinked_households": history.unlinked_households,
            },
            "feedback_files": list(history.feedback_files),
            "suppressed": counts["suppressed"],
            "resolved": counts["resolved"],
        } | proportionality.summarise_run(staging)
        write_manifest(staging, manifest)
        # Logged before publication: a rerun after a failed publication finds the run in the log
        # and reconciles its copy instead of logging it twice (privacy/audit/log.py).
        faults.point("mid_audit")
        progress("audit log: appending and signing the run's records; the report beside it")
        # The append reads the audit parts, the report the outputs: side by side they take
        # the time of the longer (~4 s each at 1M persons, docs/scaling.md), and a run is
        # published with its report. The report reads the outputs before they are encrypted.
        with ThreadPoolExecutor(1, thread_name_prefix="audit-log-append") as pool:
            appended = pool.submit(append_run, staging, run_id, out_dir / LOG_DIRNAME, signer)
            report, report_failed = _report_staged(staging, keyring)
            # Crypto-shredding: personal data is published only encrypted under this run's own key.
            protect_run(staging, run_id, keyring, out_dir / KEY_STORE)
            appended.result()
        faults.point("after_audit")
        published = publish_run(staging, target)
        faults.point("during_publish")
        if report_failed is not None:  # published without its report: a rerun writes it
            raise report_failed
        from flows.report import attach_artifacts

        attach_artifacts(_as_published(report, staging, Path(published)))
        progress(f"published {run_id}: {counts['signals']:,} signals, with its report")
        return published
