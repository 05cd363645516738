"""`signals.toml`: an installation's one configuration file, validated before anything runs.

Sections (every key optional; the defaults are below and in `signals.example.toml`):

    [paths]       deliveries, out, register   where deliveries arrive, where runs are published,
                                              the processing register (default: the shipped one)
    [keys]        central_keyring, passphrase_file
    [schedule]    cron, timezone, retention_cron   when `signals serve` starts runs
    [run]         runner, buckets             Beam runner and join buckets
    [thresholds]  max_quarantine_share,       refuse a delivery that quarantined too much,
                  max_delivery_age_days       or that is older than the run's reference date

An environment variable SIGNALS_<SECTION>_<KEY> overrides a key of the file, for
example SIGNALS_SCHEDULE_CRON or SIGNALS_PATHS_OUT, so one file can serve test and
production. Relative paths in the file are relative to the file's folder; in the
environment, relative to the working directory. Every error names the file (or the
variable), the key and the cause: "signals.toml: schedule.cron must be a cron
expression, not 'x'". Secrets never live here: the keyring passphrase comes from
$SIGNALS_KEYRING_PASSPHRASE or from the file `keys.passphrase_file` names.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "SIGNALS_CONFIG"
DEFAULT_FILE = "signals.toml"
ENV_PREFIX = "SIGNALS_"
MONTHLY = "0 6 1 * *"  # 06:00 on the first of every month


class ConfigError(Exception):
    """The configuration is invalid; the message names the file or variable, key and cause."""


class _Invalid(Exception):
    """A section's key has a bad value; the loader adds where the value came from."""

    def __init__(self, key: str, must: str, value: Any):
        super().__init__(key, must, value)
        self.key, self.must, self.value = key, must, value


# -- checks used by the sections ----------------------------------------------------------


def _cron(key: str, value: Any) -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    if not isinstance(value, str):
        raise _Invalid(key, "a cron expression", value)
    try:
        CronSchedule(cron=value)
    except ValidationError:
        raise _Invalid(key, "a cron expression", value) from None


def _timezone(key: str, value: Any) -> None:
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Invalid(key, "an IANA time zone such as 'Europe/Amsterdam'", value) from None


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid(key, "a positive whole number", value)


def _share(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _Invalid(key, "a share between 0 and 1", value)


def _optional_path(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, Path):
        raise _Invalid(key, "a path (a string)", value)


# -- sections -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where pseudonymised deliveries arrive, where runs are published, and the processing
    register the runs and retention follow (None: the one shipped in privacy/register/)."""

    deliveries: Path | None = None
    out: Path | None = None
    register: Path | None = None

    def __post_init__(self):
        for name in ("deliveries", "out", "register"):
            _optional_path(name, getattr(self, name))


@dataclass(frozen=True)
class Keys:
    """The central keyring (domain and run-data keys) and, optionally, its passphrase file."""

    central_keyring: Path | None = None
    passphrase_file: Path | None = None

    def __post_init__(self):
        for name in ("central_keyring", "passphrase_file"):
            _optional_path(name, getattr(self, name))


@dataclass(frozen=True)
class Schedule:
    """When `signals serve` runs: cron expressions read in `timezone`."""

    cron: str = MONTHLY
    timezone: str = "Europe/Amsterdam"
    # Daily, before the monthly run: a run's data key is destroyed within a day of its end.
    retention_cron: str = "0 5 * * *"

    def __post_init__(self):
        _cron("cron", self.cron)
        _cron("retention_cron", self.retention_cron)
        _timezone("timezone", self.timezone)


@dataclass(frozen=True)
class Run:
    """How the central pipeline runs."""

    runner: str = "DirectRunner"
    buckets: int = 256  # pipelines.join.DEFAULT_BUCKETS (not imported: it loads Beam)

    def __post_init__(self):
        dotted = isinstance(self.runner, str) and self.runner.split(".")
        if not dotted or not all(part.isidentifier() for part in dotted):
            raise _Invalid("runner", "a Beam runner name such as 'DirectRunner'", self.runner)
        _positive_int("buckets", self.buckets)


@dataclass(frozen=True)
class Thresholds:
    """Limits that refuse a delivery before it is run."""

    # The share of a delivery's rows quarantined at the body above which the scheduled run
    # refuses it: a body whose extract is mostly bad has a problem to fix first. 1 = never.
    max_quarantine_share: float = 1.0
    # How many days before the run's reference date a source's newest delivery may be dated
    # (a body that delivers less often than the runs). Objections never: a late objection
    # must not be missed, so they must always be of the reference date itself.
    max_delivery_age_days: int = 0

    def __post_init__(self):
        _share("max_quarantine_share", self.max_quarantine_share)
        if type(self.max_delivery_age_days) is not int or self.max_delivery_age_days < 0:
            raise _Invalid(
                "max_delivery_age_days",
                "a whole number of days, 0 or more",
                self.max_delivery_age_days,
            )


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` says where it was read from (None: defaults only)."""

    paths: Paths = field(default_factory=Paths)
    keys: Keys = field(default_factory=Keys)
    schedule: Schedule = field(default_factory=Schedule)
    run: Run = field(default_factory=Run)
    thresholds: Thresholds = field(default_factory=Thresholds)
    source: Path | None = None

    def require(self, section: str, key: str) -> Any:
        """A value that the caller cannot do without; ConfigError naming it if unset."""
        value = getattr(getattr(self, section), key)
        if value is None:
            where = self.source or "signals.toml (none found)"
            raise ConfigError(
                f"{where}: {section}.{key} is not set; set it in the file, with "
                f"{env_name(section, key)}, or with the matching command-line flag"
            )
        return value


SECTIONS: dict[str, type] = {
    "paths": Paths,
    "keys": Keys,
    "schedule": Schedule,
    "run": Run,
    "thresholds": Thresholds,
}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _is_path(section: str, key: str) -> bool:
    return "Path" in str(_fields(section)[key].type)


# -- reading ------------------------------------------------------------------------------


def _from_env(section: str, key: str, text: str) -> Any:
    """An environment value in the type of the key (the file gives types; the environment text)."""
    kind = str(_fields(section)[key].type)
    if "Path" in kind:
        return Path(text).expanduser().resolve() if text else None
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        return text  # the section's own check names the expected kind
    return text


def _env_overrides(environ: dict[str, str]) -> dict[tuple[str, str], tuple[Any, str]]:
    """(section, key) -> (value, variable name) for every SIGNALS_<SECTION>_<KEY> set."""
    found = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue  # SIGNALS_HOME, SIGNALS_KEYRING_PASSPHRASE, ...: not configuration keys
        key = rest[len(section) + 1 :]
        if key not in _fields(section):
            known = ", ".join(env_name(section, k) for k in _fields(section))
            raise ConfigError(f"{name}: {section} has no key {key!r} (known: {known})")
        found[(section, key)] = (_from_env(section, key, text), name)
    return found


def _file_values(path: Path) -> dict[tuple[str, str], tuple[Any, str]]:
    """(section, key) -> (value, file name) for every key in the file, checked for names."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    found = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table [{section}], not {table!r}")
        for key, value in table.items():
            if key not in _fields(section):
                known = ", ".join(_fields(section))
                raise ConfigError(f"{path}: {section}.{key} is not a known key (known: {known})")
            if _is_path(section, key) and isinstance(value, str):
                value = (path.parent / Path(value).expanduser()).resolve()
            found[(section, key)] = (value, str(path))
    return found


def _build(values: dict[tuple[str, str], tuple[Any, str]], source: Path | None) -> Config:
    sections = {}
    for section, cls in SECTIONS.items():
        given = {k: v for (s, k), (v, _) in values.items() if s == section}
        try:
            sections[section] = cls(**given)
        except _Invalid as e:
            origin = values.get((section, e.key), (None, str(source or "defaults")))[1]
            raise ConfigError(
                f"{origin}: {section}.{e.key} must be {e.must}, not {e.value!r}"
            ) from None
    return Config(**sections, source=source)


def find_config(explicit: str | Path | None = None) -> Path | None:
    """The file to read: the one given, else $SIGNALS_CONFIG, else ./signals.toml if present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file does not exist")
        return path.resolve()
    if os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError(f"{path} ({CONFIG_ENV}): configuration file does not exist")
        return path.resolve()
    default = Path(DEFAULT_FILE)
    return default.resolve() if default.is_file() else None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read and validate the configuration: file values, then environment overrides."""
    source = find_config(path)
    values = _file_values(source) if source else {}
    values.update(_env_overrides(dict(os.environ if environ is None else environ)))
    return _build(values, source)


def load_passphrase(config: Config) -> None:
    """Put the keyring passphrase from `keys.passphrase_file` into the environment, if unset.

    The flow reads the passphrase from $SIGNALS_KEYRING_PASSPHRASE only; a service reads it
    from a file (mode 0600, e.g. a systemd credential) instead of the unit's environment.
    """
    from privacy.keys import PASSPHRASE_ENV

    path = config.keys.passphrase_file
    if path is None or os.environ.get(PASSPHRASE_ENV):
        return
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"keys.passphrase_file {path}: cannot be read ({e.strerror})") from None
    if not value:
        raise ConfigError(f"keys.passphrase_file {path}: the file is empty")
    os.environ[PASSPHRASE_ENV] = value
