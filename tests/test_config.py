"""signals.toml: defaults, the documented example, environment overrides, and a table of
bad files each refused with an error that names the file, the key and the cause."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from flows.cli import main
from flows.config import Config, ConfigError, Run, load_config, load_passphrase

EXAMPLE = Path(__file__).resolve().parent.parent / "signals.example.toml"


@pytest.fixture(autouse=True)
def _no_outside_configuration(monkeypatch, tmp_path):
    """Tests see only the files and variables they set themselves."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SIGNALS_") and name not in ("SIGNALS_HOME",):
            monkeypatch.delenv(name)


def _file(tmp_path, text: str) -> Path:
    path = tmp_path / "signals.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_defaults_hold():
    config = load_config()
    assert config.source is None
    assert config.schedule.cron == "0 6 1 * *"
    assert config.schedule.timezone == "Europe/Amsterdam"
    assert config.run.buckets == 256 and config.run.runner == "DirectRunner"
    assert config.thresholds.max_quarantine_share == 1.0
    assert config.paths.out is None and config.keys.central_keyring is None


def test_the_default_buckets_are_the_joins_default():
    from pipelines.join import DEFAULT_BUCKETS

    assert Run().buckets == DEFAULT_BUCKETS


def test_the_documented_example_is_valid_and_states_the_defaults():
    config = load_config(EXAMPLE)
    defaults = Config()
    assert config.schedule == defaults.schedule
    assert config.run == defaults.run
    assert config.thresholds == defaults.thresholds
    assert config.paths.out == Path("/data/runs")
    # Every key the loader knows is documented in the example (set or commented out).
    text = EXAMPLE.read_text()
    for section in ("paths", "keys", "schedule", "run", "thresholds"):
        assert f"[{section}]" in text
        for key in getattr(defaults, section).__dataclass_fields__:
            assert f"{key} = " in text, f"{section}.{key} is not in signals.example.toml"
    tomllib.loads(text)


def test_the_file_in_the_working_folder_is_found_and_relative_paths_are_its_own(tmp_path):
    (tmp_path / "etc").mkdir()
    _file(tmp_path / "etc", '[paths]\nout = "runs"\ndeliveries = "../drop"\n')
    config = load_config(tmp_path / "etc" / "signals.toml")
    assert config.paths.out == tmp_path / "etc" / "runs"
    assert config.paths.deliveries == tmp_path / "drop"
    _file(tmp_path, "[run]\nbuckets = 8\n")
    assert load_config().run.buckets == 8
    assert load_config().source == tmp_path / "signals.toml"


def test_signals_config_names_the_file_to_read(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[run]\nbuckets = 3\n")
    monkeypatch.setenv("SIGNALS_CONFIG", str(path))
    assert load_config().run.buckets == 3
    monkeypatch.setenv("SIGNALS_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml \(SIGNALS_CONFIG\): .*does not exist"):
        load_config()


def test_an_explicit_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: configuration file does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "variable, value, section, key, expected",
    [
        ("SIGNALS_SCHEDULE_CRON", "0 7 2 * *", "schedule", "cron", "0 7 2 * *"),
        ("SIGNALS_SCHEDULE_TIMEZONE", "UTC", "schedule", "timezone", "UTC"),
        ("SIGNALS_RUN_BUCKETS", "8", "run", "buckets", 8),
        (
            "SIGNALS_THRESHOLDS_MAX_QUARANTINE_SHARE",
            "0.2",
            "thresholds",
            "max_quarantine_share",
            0.2,
        ),
    ],
)
def test_an_environment_variable_overrides_the_file(
    tmp_path, monkeypatch, variable, value, section, key, expected
):
    _file(tmp_path, '[schedule]\ncron = "0 6 1 * *"\n[run]\nbuckets = 16\n')
    monkeypatch.setenv(variable, value)
    assert getattr(getattr(load_config(), section), key) == expected


def test_an_environment_path_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    _file(tmp_path / "etc", '[paths]\nout = "runs"\n')
    monkeypatch.setenv("SIGNALS_PATHS_OUT", "test-runs")
    assert load_config(tmp_path / "etc" / "signals.toml").paths.out == tmp_path / "test-runs"


def test_other_signals_variables_are_not_configuration(monkeypatch):
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "x")
    monkeypatch.setenv("SIGNALS_FAULT_AT", "mid_join")
    assert load_config() == Config()


@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "SIGNALS_SCHEDULE_CRON",
            "x",
            "SIGNALS_SCHEDULE_CRON: schedule.cron must be a cron expression, not 'x'",
        ),
        (
            "SIGNALS_RUN_BUCKETS",
            "eight",
            "SIGNALS_RUN_BUCKETS: run.buckets must be a positive whole number, not 'eight'",
        ),
        (
            "SIGNALS_RUN_BUCKET",
            "8",
            "SIGNALS_RUN_BUCKET: run has no key 'bucket' (known: "
            "SIGNALS_RUN_RUNNER, SIGNALS_RUN_BUCKETS)",
        ),
    ],
)
def test_a_bad_environment_override_names_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as e:
        load_config()
    assert str(e.value) == message


# Bad files: (file text, the error after "<path>: ").
BAD_FILES = [
    ('[schedule]\ncron = "x"\n', "schedule.cron must be a cron expression, not 'x'"),
    (
        '[schedule]\ncron = "61 6 1 * *"\n',
        "schedule.cron must be a cron expression, not '61 6 1 * *'",
    ),
    ("[schedule]\ncron = 6\n", "schedule.cron must be a cron expression, not 6"),
    (
        '[schedule]\nretention_cron = "every day"\n',
        "schedule.retention_cron must be a cron expression, not 'every day'",
    ),
    (
        '[schedule]\ntimezone = "Mars/Olympus_Mons"\n',
        "schedule.timezone must be an IANA time zone such as 'Europe/Amsterdam', "
        "not 'Mars/Olympus_Mons'",
    ),
    ("[run]\nbuckets = 0\n", "run.buckets must be a positive whole number, not 0"),
    ('[run]\nbuckets = "8"\n', "run.buckets must be a positive whole number, not '8'"),
    ("[run]\nbuckets = true\n", "run.buckets must be a positive whole number, not True"),
    ("[run]\nbuckets = 2.5\n", "run.buckets must be a positive whole number, not 2.5"),
    (
        '[run]\nrunner = "Direct Runner"\n',
        "run.runner must be a Beam runner name such as 'DirectRunner', not 'Direct Runner'",
    ),
    (
        "[thresholds]\nmax_quarantine_share = 1.5\n",
        "thresholds.max_quarantine_share must be a share between 0 and 1, not 1.5",
    ),
    (
        '[thresholds]\nmax_quarantine_share = "5%"\n',
        "thresholds.max_quarantine_share must be a share between 0 and 1, not '5%'",
    ),
    ("[paths]\nout = 3\n", "paths.out must be a path (a string), not 3"),
    ("[keys]\ncentral_keyring = []\n", "keys.central_keyring must be a path (a string), not []"),
    (
        "[run]\nbucket = 8\n",
        "run.bucket is not a known key (known: runner, buckets)",
    ),
    (
        '[schedul]\ncron = "0 6 1 * *"\n',
        "unknown section [schedul] (known: paths, keys, schedule, run, thresholds)",
    ),
    ('paths = "/data"\n', "paths must be a table [paths], not '/data'"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_a_bad_file_is_refused_naming_the_key_and_the_cause(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


def test_a_file_that_is_not_toml_is_refused_with_the_parsers_position(tmp_path):
    path = _file(tmp_path, "[run\nbuckets = 8\n")
    with pytest.raises(ConfigError, match=r"signals\.toml: not valid TOML \(.*line 1"):
        load_config(path)


@pytest.mark.parametrize(
    "text",
    [
        '[schedule]\ncron = "*/15 * * * *"\n',
        '[schedule]\ncron = "0 6 1 1,4,7,10 *"\ntimezone = "UTC"\n',
        '[schedule]\nretention_cron = "0 5 * * mon-fri"\n',
        "[run]\nbuckets = 1\n",
        '[run]\nrunner = "apache_beam.runners.dask.dask_runner.DaskRunner"\n',
        "[thresholds]\nmax_quarantine_share = 0\n",
        "",
    ],
)
def test_good_files_load(tmp_path, text):
    load_config(_file(tmp_path, text))


def test_a_required_key_that_is_unset_is_named_with_its_variable(tmp_path):
    config = load_config(_file(tmp_path, "[run]\nbuckets = 8\n"))
    with pytest.raises(ConfigError) as e:
        config.require("paths", "out")
    assert "paths.out is not set" in str(e.value) and "SIGNALS_PATHS_OUT" in str(e.value)


def test_the_passphrase_file_fills_the_environment_only_when_unset(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("from the file\n")
    config = load_config(_file(tmp_path, f'[keys]\npassphrase_file = "{secret}"\n'))
    load_passphrase(config)
    assert os.environ["SIGNALS_KEYRING_PASSPHRASE"] == "from the file"
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "from the environment")
    load_passphrase(config)
    assert os.environ["SIGNALS_KEYRING_PASSPHRASE"] == "from the environment"
    monkeypatch.delenv("SIGNALS_KEYRING_PASSPHRASE")
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="passphrase_file .*: the file is empty"):
        load_passphrase(config)


def test_config_check_prints_the_settings_or_the_error(tmp_path, capsys):
    good = _file(tmp_path, '[schedule]\ncron = "0 6 2 * *"\n')
    assert main(["config", "check", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert 'schedule.cron = "0 6 2 * *"' in out and out.rstrip().endswith("ok")
    bad = _file(tmp_path, '[schedule]\ncron = "x"\n')
    assert main(["config", "check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: schedule.cron must be a cron expression, not 'x'\n"


def test_config_check_names_a_path_that_is_not_there_and_a_secret_others_can_read(tmp_path, capsys):
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    text = (
        f'[keys]\ncentral_keyring = "{tmp_path / "nope.keyring"}"\npassphrase_file = "{secret}"\n'
    )
    config = _file(tmp_path, text)
    assert main(["config", "check", "--config", str(config)]) == 2
    out = capsys.readouterr().out
    assert f"  missing: keys.central_keyring {tmp_path / 'nope.keyring'}" in out
    assert f"  warning: keys.passphrase_file {secret} is open to others (mode 0644" in out
    assert out.rstrip().endswith("not ok: the paths above do not exist")
    (tmp_path / "nope.keyring").write_text("")
    secret.chmod(0o600)
    assert main(["config", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and "warning" not in out and out.rstrip().endswith("ok")
