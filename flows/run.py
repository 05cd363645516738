"""The central run as a Prefect flow: it puts the steps in order and nothing more.

Flow parameters, task results and logs carry paths, dates, ids and counts only:
never a row of personal data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import apache_beam as beam
from prefect import flow, get_run_logger, task

from entitlement_rules import compile_rule, load_rules
from pipelines import central
from pipelines.audit_records import AuditContext
from pipelines.contract import SOURCES
from pipelines.join import DEFAULT_BUCKETS
from pipelines.options import pipeline_options
from pipelines.publish import finalise, publish, write_manifest
from pipelines.read_deliveries import Delivery, find_delivery, open_pseudonymised
from privacy.keys import load_keyring, passphrase_from_env

PROCESSING_ACTIVITY = "proactive-entitlement-signalling"


def code_version() -> str:
    try:
        return version("entitlement-signals")
    except PackageNotFoundError:
        return "0+unknown"


def _letters(hexdigest: str) -> str:
    return hexdigest.translate(str.maketrans("0123456789", "qrstuvwxyz"))


def make_run_id(reference_date: dt.date, deliveries: dict[str, Delivery], compiled: list) -> str:
    """A run id determined by its inputs: the same inputs give the same id (idempotent reruns)."""
    h = hashlib.sha256()
    h.update(f"{reference_date.isoformat()}|{code_version()}".encode())
    for name in sorted(deliveries):
        m = deliveries[name].manifest
        h.update(f"|{name}:{m['sha256']}:{m['quarantine']['sha256']}".encode())
    for c in compiled:
        h.update(f"|{c.rule_id}:{c.rule_version}:{c.parameter_version}:{c.year}".encode())
    return f"{reference_date.isoformat()}-{_letters(h.hexdigest())[:12]}"


@task
def open_inputs(deliveries_root: str, reference_date: dt.date) -> dict[str, Delivery]:
    """Find and check the newest pseudonymised delivery of every source."""
    return {
        name: open_pseudonymised(find_delivery(Path(deliveries_root), name, reference_date), name)
        for name in SOURCES
    }


@task
def compile_rules(reference_date: dt.date) -> list:
    """Compile every scheme's rule for the benefit year of the reference date."""
    year = reference_date.year
    return [compile_rule(rule, year) for rule in load_rules(years=[year])]


@task
def run_pipeline(spec: central.RunSpec, runner: str, runner_args: list[str]) -> None:
    """Run the Beam pipeline into the staging folder."""
    with beam.Pipeline(options=pipeline_options(runner, runner_args)) as p:
        central.build(p, spec)


@task
def finalise_run(staging: Path, deliveries: dict[str, Delivery]) -> dict:
    """Consolidate the pipeline's parts into the output contract."""
    return finalise(staging, deliveries)


@task
def publish_run(staging: Path, target: Path) -> str:
    """Publish the finalised run folder atomically."""
    return str(publish(staging, target))


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
        }
        per_source[name] = {
            "rows_in": rows_in,
            "accepted": accepted,
            "quarantined": q["body"] + q["central"],
            "quarantined_at_body": q["body"],
            "quarantined_centrally": q["central"],
        }
    return {
        "run_id": spec.run_id,
        "reference_date": spec.reference_date.isoformat(),
        "code_version": code_version(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runner": runner,
        "processing_activity_id": spec.audit.processing_activity_id,
        "register_version": spec.audit.register_version,
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
    }


def summarise_outputs(staging: Path) -> dict:
    """Signals per scheme, total amount and audit records per operation, from the files."""
    import duckdb

    con = duckdb.connect()
    signals = str(staging / "signals.parquet").replace("'", "''")
    audit = str(staging / "audit" / "segment-00000.parquet").replace("'", "''")
    per_scheme = dict(
        con.execute(
            f"SELECT scheme, COUNT(*) FROM read_parquet('{signals}') GROUP BY scheme ORDER BY 1"
        ).fetchall()
    )
    total = con.execute(
        f"SELECT coalesce(SUM(estimated_annual_amount), 0) FROM read_parquet('{signals}')"
    ).fetchone()[0]
    per_op = dict(
        con.execute(
            f"SELECT name, COUNT(*) FROM read_parquet('{audit}') GROUP BY name ORDER BY 1"
        ).fetchall()
    )
    con.close()
    return {
        "signals_per_scheme": per_scheme,
        "amount_total": f"{total:.2f}",
        "audit_per_operation": per_op,
    }


@flow(name="signals-run", validate_parameters=True)
def run_flow(
    deliveries: str,
    reference_date: dt.date,
    out: str,
    runner: str = "DirectRunner",
    runner_args: list[str] | None = None,
    buckets: int = DEFAULT_BUCKETS,
    key_file: str | None = None,
) -> str:
    """One central run: check inputs, run the pipeline, finalise, publish (returns the folder)."""
    logger = get_run_logger()
    # The central keyring (domain keys, audit signing key); its passphrase comes from the
    # environment, never from a flow parameter.
    keyring = load_keyring(Path(key_file), passphrase_from_env()) if key_file else None
    found = open_inputs(deliveries, reference_date)
    compiled = compile_rules(reference_date)
    run_id = make_run_id(reference_date, found, compiled)
    out_dir = Path(out)
    target = out_dir / run_id
    if (target / "manifest.json").is_file():
        logger.info("run %s is already published at %s: nothing to do", run_id, target)
        return str(target)
    staging = out_dir / f".staging-{run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    spec = central.RunSpec(
        run_id=run_id,
        reference_date=reference_date,
        deliveries=found,
        staging=staging,
        compiled_rules=compiled,
        audit=AuditContext(run_id, PROCESSING_ACTIVITY, "unversioned"),
        buckets=buckets,
    )
    run_pipeline(spec, runner, runner_args or [])
    counts = finalise_run(staging, found)
    counts.update(summarise_outputs(staging))
    write_manifest(staging, build_manifest(spec, compiled, counts, runner))
    del keyring  # not used by the spine yet: domain pseudonyms and audit signing build on it
    published = publish_run(staging, target)
    logger.info("run %s published: %s signals", run_id, counts["signals"])
    return published
