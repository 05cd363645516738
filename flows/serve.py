"""`signals serve`: the central run and retention as scheduled Prefect deployments.

Two deployments, served by one long-running process that executes their runs:

    signals-scheduled-run/central   cron schedule.cron (monthly by default): pick up the
                                    newest complete deliveries, then run_flow on them
    signals-retention/retention     cron schedule.retention_cron (daily by default):
                                    destroy the data keys of runs past retention

Their parameters are paths only (deliveries, out, keyring, configuration file); what
a run does is decided by the files it finds. Schedules need a Prefect server (the
ephemeral in-process one does not schedule): `prefect server start`, then
PREFECT_API_URL=http://127.0.0.1:4200/api (docs/operations.md).

Picking up: a delivery is complete when its folder `<source>/<YYYY-MM-DD>/` has a
manifest.json (bodies publish their pseudonymised delivery with one rename, manifest
included). The run takes the newest reference date for which every source is
complete; a source that has delivered a newer date only in part is named in the log.
A run whose inputs are already published is a no-op (its run id comes from its
inputs), so a schedule that fires before new deliveries arrive changes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.config import Config, ConfigError, load_config, load_passphrase
from flows.faults import IO_RETRIES
from pipelines.contract import SOURCES
from pipelines.read_deliveries import DeliveryRefused

CENTRAL = "central"
RETENTION = "retention"


class NoCompleteDelivery(DeliveryRefused):
    """No reference date has a complete delivery from every source."""


class ServeError(ConfigError):
    """`signals serve` cannot start: no Prefect server is configured to schedule against."""


@dataclass(frozen=True)
class PickedUp:
    """The reference date to run, and what is still incomplete after it."""

    reference_date: dt.date
    folders: dict[str, Path]
    waiting: dict[str, str]  # a newer, incomplete date -> the sources it waits for


def _dated_folders(source_dir: Path) -> dict[dt.date, Path]:
    found = {}
    for d in source_dir.iterdir() if source_dir.is_dir() else ():
        try:
            day = dt.date.fromisoformat(d.name)
        except ValueError:
            continue  # `.2025-01-01.partial-123` and other work in progress
        if d.is_dir():
            found[day] = d
    return found


def pick_up(root: Path, max_quarantine_share: float = 1.0) -> PickedUp:
    """The newest reference date with a complete delivery from every source."""
    from flows.run import check_quarantine_share

    root = Path(root)
    if not root.is_dir():
        raise NoCompleteDelivery(f"{root}: deliveries folder does not exist")
    dated = {name: _dated_folders(root / name) for name in SOURCES}
    complete = {
        name: {day for day, d in days.items() if (d / "manifest.json").is_file()}
        for name, days in dated.items()
    }
    common = set.intersection(*complete.values())
    if not common:
        raise NoCompleteDelivery(f"{root}: no reference date is complete: {_missing(complete)}")
    day = max(common)
    folders = {name: dated[name][day] for name in SOURCES}
    for name, folder in folders.items():
        check_quarantine_share(folder, name, max_quarantine_share)
    # A newer date some sources delivered is incomplete (else it would be the one run):
    # name the bodies it waits for, not the ones that delivered.
    waiting = {}
    for newer in sorted({d for days in dated.values() for d in days if d > day}):
        missing = [n for n in SOURCES if newer not in complete[n]]
        waiting[newer.isoformat()] = "waiting for " + ", ".join(
            f"{n} (arriving: no manifest yet)" if newer in dated[n] else n for n in missing
        )
    return PickedUp(day, folders, waiting)


def _missing(complete: dict[str, set[dt.date]]) -> str:
    parts = []
    for name, days in complete.items():
        newest = max(days).isoformat() if days else "none"
        parts.append(f"{name} newest complete {newest}")
    return "; ".join(parts)


@task(**IO_RETRIES)
def pick_up_deliveries(deliveries: str, max_quarantine_share: float) -> PickedUp:
    """Find the newest reference date with every source's delivery complete."""
    return pick_up(Path(deliveries), max_quarantine_share)


@flow(name="signals-scheduled-run", validate_parameters=True)
def scheduled_run(
    deliveries: str, out: str, key_file: str | None = None, config: str | None = None
) -> str:
    """Pick up the newest complete deliveries and run them (a no-op if already published)."""
    from flows.run import run_flow

    logger = get_run_logger()
    settings = load_config(config)  # as every `signals` command: the file, else the defaults
    picked = pick_up_deliveries(deliveries, settings.thresholds.max_quarantine_share)
    logger.info("picked up deliveries of %s", picked.reference_date.isoformat())
    for day, what in picked.waiting.items():
        logger.warning("%s is not complete, so not run yet: %s", day, what)
    # A schedule that fires before the next deliveries are complete runs nothing: a date is
    # run once by the schedule. Another run of it (new code, rules, register or feedback
    # give another run id) would not see the first's signals and could signal the same
    # households again: that is an operator's decision, by hand (`signals run`).
    done = published_for(Path(out), picked.reference_date)
    if done is not None:
        if not (done / "report" / "report.html").is_file():  # published, its report failed
            from flows.run import report_run
            from privacy.keys import load_keyring, passphrase_from_env

            report_run(str(done), load_keyring(Path(key_file), passphrase_from_env()))
        logger.info(
            "deliveries of %s were run already (%s): nothing to do until newer ones are "
            "complete; to run that date again, run it by hand",
            picked.reference_date.isoformat(),
            done.name,
        )
        return str(done)
    return run_flow(
        deliveries=deliveries,
        reference_date=picked.reference_date,
        out=out,
        runner=settings.run.runner,
        buckets=settings.run.buckets,
        key_file=key_file,
        register_dir=str(settings.paths.register) if settings.paths.register else None,
        max_delivery_age_days=settings.thresholds.max_delivery_age_days,
        max_quarantine_share=settings.thresholds.max_quarantine_share,
    )


def published_for(out: Path, reference_date: dt.date) -> Path | None:
    """The last published run of `reference_date` in out, or None."""
    from privacy.body_links import published_manifests

    day = reference_date.isoformat()
    found = [
        (m.get("created_at", ""), f)
        for f, m in published_manifests(out)
        if m.get("reference_date") == day
    ]
    return max(found)[1] if found else None


def retention_period(register_dir: Path | None = None) -> str:
    """The retention period of the programme, from the processing register."""
    from privacy import register
    from privacy.keys import DEFAULT_DOMAIN

    activity = register.load_register(register_dir).activity(DEFAULT_DOMAIN)
    if activity is None:
        raise ConfigError(f"the processing register has no activity {DEFAULT_DOMAIN!r}")
    return activity.retention["period"]


@task(**IO_RETRIES)
def enforce(
    out: str, period: str, as_of: dt.date, key_file: str, deliveries: str | None = None
) -> dict:
    """Destroy what is past retention as of `as_of` (privacy/retention.py): run data keys,
    operator feedback rows, unneeded link tables. Returns counts and ids, no personal data."""
    from flows.feedback import refresh_statistics
    from privacy.keys import load_keyring, passphrase_from_env
    from privacy.retention import enforce_retention

    # The central keyring signs the deletion records retention appends to the audit log.
    keyring = load_keyring(Path(key_file), passphrase_from_env())
    done = enforce_retention(
        Path(out), period, as_of, keyring, deliveries_root=Path(deliveries) if deliveries else None
    )
    if done.feedback_rows:
        refresh_statistics(Path(out))
    return asdict(done)


@flow(name="signals-retention", validate_parameters=True)
def retention_run(out: str, key_file: str, config: str | None = None) -> dict:
    """Enforce retention on the published runs under `out` (the register sets the period)."""
    logger = get_run_logger()
    settings = load_config(config)
    period = retention_period(settings.paths.register)
    deliveries = str(settings.paths.deliveries) if settings.paths.deliveries else None
    done = enforce(out, period, dt.date.today(), key_file, deliveries)
    logger.info(
        "retention %s: %d run(s) had their data key destroyed, %d feedback row(s), %d "
        "link table(s) and the deliveries of %d reference date(s) removed",
        period,
        len(done["runs"]),
        done["feedback_rows"],
        len(done["link_tables"]),
        len(done["deliveries"]),
    )
    return done


def deployment_parameters(config: Config) -> dict[str, str | None]:
    """The central deployment's parameters: paths from the configuration."""
    return {
        "deliveries": str(config.require("paths", "deliveries")),
        "out": str(config.require("paths", "out")),
        # Every run needs the central keyring (domain pseudonyms, run-data and audit keys).
        "key_file": str(config.require("keys", "central_keyring")),
        "config": str(config.source) if config.source else None,
    }


def deployments(config: Config) -> list:
    """The runner deployments `signals serve` serves, scheduled as configured."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    params = deployment_parameters(config)
    schedule = config.schedule
    # Module entrypoints: the flow runs load `flows.serve`, installed, from any folder.
    central = scheduled_run.to_deployment(
        name=CENTRAL,
        schedule=Cron(schedule.cron, timezone=schedule.timezone, slug=f"{CENTRAL}-cron"),
        parameters=params,
        description="Pick up the newest complete deliveries and run them",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    retention = retention_run.to_deployment(
        name=RETENTION,
        schedule=Cron(
            schedule.retention_cron, timezone=schedule.timezone, slug=f"{RETENTION}-cron"
        ),
        parameters={k: params[k] for k in ("out", "key_file", "config")},
        description="Destroy the data keys of runs past their retention period",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [central, retention]


def require_server() -> str:
    """The Prefect API URL; schedules only fire on a real server, never the ephemeral one."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    if not url:
        raise ServeError(
            "signals serve needs a Prefect server to schedule runs: start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
            "(see docs/operations.md)"
        )
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=30).raise_for_status()
    except httpx.HTTPError as e:
        raise ServeError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({type(e).__name__}); "
            "is `prefect server start` running?"
        ) from None
    return url


def serve(config: Config) -> None:
    """Register the deployments and execute their runs until stopped (Ctrl-C, SIGTERM)."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

    from flows import environment

    url = require_server()
    load_passphrase(config)
    level = os.environ.get("PREFECT_LOGGING_LEVEL")
    if level == environment.DEFAULTS["PREFECT_LOGGING_LEVEL"]:
        level = "INFO"  # a service's runs log to the server, for the UI, unless told otherwise
    built = deployments(config)
    print(f"serving on {url}: ", end="")
    print(", ".join(f"{d.flow_name}/{d.name}" for d in built))
    print(f"  {CENTRAL}: cron {config.schedule.cron!r} ({config.schedule.timezone})")
    print(f"  {RETENTION}: cron {config.schedule.retention_cron!r} ({config.schedule.timezone})")
    # One run at a time: two runs must never share an output folder's staging area. The flow
    # runs are subprocesses that take their Prefect settings from this process's.
    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: level or "INFO"}):
        prefect_serve(*built, limit=1, print_starting_message=False)
