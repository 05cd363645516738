"""`signals serve`, `signals runs` and `signals config`: running the pipeline as a service.

    signals serve [--config F]              the scheduled deployments (needs a Prefect server)
    signals runs list [--runs DIR]          every run in the output folder, newest first
    signals runs show RUN [--runs DIR]      one run (its folder, id or id prefix)
    signals config check [--config F]       validate signals.toml (and overrides), print it

The output folder defaults to `paths.out` of the configuration (flows/config.py). Their
errors (ConfigError, RunNotFound) are the user's to fix: one line, exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


def _config(args):
    from flows.config import load_config

    return load_config(getattr(args, "config", None))


def _out(args) -> Path:
    if args.out:
        return Path(args.out)
    return Path(_config(args).require("paths", "out"))


def cmd_serve(args) -> int:
    from flows.serve import serve

    serve(_config(args))
    return 0


def cmd_runs_list(args) -> int:
    from flows.runs import history_lines, list_runs

    entries = list_runs(_out(args))
    if not entries:
        from flows.cli import UsageError
        from privacy.audit.log import LOG_DIRNAME

        out = _out(args)
        if (out / "checkpoints").is_dir() or out.name == LOG_DIRNAME:
            raise UsageError(f"{out}: the audit log, not the runs folder: the runs are beside it")
        if (out / "manifest.json").is_file():
            raise UsageError(f"{out}: a run, not the runs folder: `signals runs show {out}`")
        print(f"no runs in {out}")
        return 0
    print("\n".join(history_lines(entries)))
    return 0


def cmd_runs_show(args) -> int:
    from flows.runs import find_run, show_lines

    # A run's folder is enough; an id or prefix is looked up in the runs folder.
    folder = Path(args.run) if Path(args.run).is_dir() else find_run(_out(args), args.run)
    if args.json:
        print((folder / "manifest.json").read_text(encoding="utf-8"), end="")
    else:
        print("\n".join(show_lines(folder)))
    return 0


def _plain(value):
    return value if isinstance(value, int | float | str) else str(value)


def cmd_config_check(args) -> int:
    config = _config(args)
    print(f"configuration: {config.source or 'no file (defaults and environment only)'}")
    for section in ("paths", "keys", "schedule", "run", "thresholds"):
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            shown = "(not set)" if value is None else json.dumps(_plain(value))
            print(f"  {section}.{key} = {shown}")
    missing = _missing_paths(config)
    for line in missing + _open_secret(config):
        print(line)
    if missing:
        print("not ok: the paths above do not exist")
        return 2
    print("ok")
    return 0


def _missing_paths(config) -> list[str]:
    """What the settings name that is not there: a run would fail on it later (paths.out
    is made by the first run)."""
    wanted = (
        ("paths.deliveries", config.paths.deliveries, Path.is_dir),
        ("paths.register", config.paths.register, Path.is_dir),
        ("keys.central_keyring", config.keys.central_keyring, Path.is_file),
        ("keys.passphrase_file", config.keys.passphrase_file, Path.is_file),
    )
    return [
        f"  missing: {name} {value}"
        for name, value, exists in wanted
        if value is not None and not exists(Path(value))
    ]


def _open_secret(config) -> list[str]:
    """The passphrase file open to others than its owner (the docs ask for mode 0600)."""
    path = config.keys.passphrase_file
    if path is None or not Path(path).is_file():
        return []
    mode = Path(path).stat().st_mode & 0o777
    if not mode & 0o077:
        return []
    return [
        f"  warning: keys.passphrase_file {path} is open to others (mode {mode:04o}; chmod 600)"
    ]


def _config_arg(p) -> None:
    p.add_argument(
        "--config", help="configuration file (default: $SIGNALS_CONFIG, else ./signals.toml)"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the scheduled central run and retention (needs a Prefect server)"
    )
    _config_arg(p)
    p.set_defaults(func=cmd_serve)

    runs = subparsers.add_parser("runs", help="the history of runs in an output folder")
    actions = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every run, newest first, unfinished ones included")
    p.add_argument(
        "--out",
        "--runs",
        dest="out",
        help="the folder holding the runs (default: paths.out of the configuration)",
    )
    _config_arg(p)
    p.set_defaults(func=cmd_runs_list)
    p = actions.add_parser("show", help="one run: inputs, counts, rule versions")
    p.add_argument("run", metavar="RUN", help="run id, a unique prefix of one, or its folder")
    p.add_argument(
        "--out",
        "--runs",
        dest="out",
        help="the folder holding the runs (default: paths.out of the configuration)",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as it is")
    _config_arg(p)
    p.set_defaults(func=cmd_runs_show)

    config = subparsers.add_parser("config", help="the configuration file signals.toml")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = actions.add_parser("check", help="validate the configuration and print what it sets")
    _config_arg(p)
    p.set_defaults(func=cmd_config_check)
