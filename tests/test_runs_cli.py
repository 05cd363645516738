"""`signals runs list` and `signals runs show`: the history read from a real output folder.

One real run of the hand-made population is published; a second reference date is
left unfinished (its staging folder, as a killed run leaves it); retention is then
enforced on the first run with the real command, and the history shows each state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os

import pytest
from population import REFERENCE_DATE
from service_support import (
    PASSPHRASE,
    prefect_server,
    prepare_deliveries,
    published_runs,
    run_args,
)

from flows.cli import main
from flows.runs import run_lock, short_reason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    prepared = prepare_deliveries(root)
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    out = root / "runs"
    said = io.StringIO()
    with prefect_server(), contextlib.redirect_stdout(said):
        assert main(run_args(prepared, out)) == 0
    assert "already published" not in said.getvalue()  # a fresh run is not one found
    (run_dir,) = published_runs(out)
    (out / ".staging-2025-02-01-unfinishedrun").mkdir()
    yield out, run_dir, prepared.central_keyring, run_args(prepared, out)
    mp.undo()


def test_the_list_shows_published_and_unfinished_runs_newest_first(runs, capsys):
    out, run_dir, _, _ = runs
    assert main(["runs", "list", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "reference", "state", "households", "signals", "created"]
    unfinished, published = lines[1].split(), lines[2].split()
    assert unfinished[:3] == ["2025-02-01-unfinishedrun", "2025-02-01", "unfinished"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    households, signals = manifest["counts"]["households"], manifest["counts"]["signals"]
    assert published[:3] == [run_dir.name, REFERENCE_DATE, "published"]
    assert published[3:5] == [str(households), str(signals)]
    assert households == 11 and signals >= 3
    assert len(lines) == 3  # the key store (.keys) is not a run


def test_show_prints_inputs_counts_and_rule_versions(runs, capsys):
    out, run_dir, _, _ = runs
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert main(["runs", "show", run_dir.name[:14], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {run_dir.name}\n")
    assert f"reference date       {REFERENCE_DATE}" in text
    for source, given in manifest["inputs"].items():
        counts = manifest["counts"]["sources"][source]
        (line,) = [li for li in text.splitlines() if li.split()[:1] == [source]]
        assert line.split()[1:5] == [
            given["reference_date"],
            f"{counts['rows_in']:,}",
            f"{counts['accepted']:,}",
            f"{counts['quarantined']:,}",
        ]
        assert given["sha256"][:12] in line
    for rule in manifest["rules"]:
        assert f"{rule['rule_id']:<24}{rule['rule_version']:<16}" in text
    assert "signals total" in text and "audit records" in text
    # A skipped rule's reason (pages: which figures are missing, where from) is one line;
    # the whole text is in the manifest, which --json prints.
    lines = text.splitlines()
    assert manifest["rules_skipped"]  # huurtoeslag: its figures are not all verified
    for skipped in manifest["rules_skipped"]:
        (line,) = [li for li in lines if li.split()[:1] == [skipped["rule_id"]]]
        assert len(skipped["reason"]) > 1000 and len(line) <= 100
        assert "skipped: parameter " in line and "(and " in line and "MISSING" not in line
        at = lines.index(line)
        assert lines[at + 1].strip().startswith("full reasons: signals runs show ")
    assert f"signals runs show {run_dir.name} --json (rules_skipped)" in text


def test_a_short_reason_keeps_the_first_problem_without_its_details():
    reason = "parameter a is unknown (MISSING: see (x) and (y)); parameter b is missing"
    assert short_reason(reason) == "parameter a is unknown (and 1 more)"
    assert short_reason("no parameter file parameters/x/2025.yaml") == (
        "no parameter file parameters/x/2025.yaml"
    )
    assert len(short_reason("word " * 100)) <= 70


def test_an_interrupted_run_replaced_by_a_later_publication_can_be_removed(runs, capsys):
    out, run_dir, _, _ = runs
    day = json.loads((run_dir / "manifest.json").read_text())["reference_date"]
    interrupted = out / f".staging-{day}-interrupted"
    running = out / f".staging-{day}-runningnow"  # written after the publication
    interrupted.mkdir()
    running.mkdir()
    try:
        os.utime(interrupted, (0, 0))  # last written long before the publication
        assert main(["runs", "list", "--out", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
    finally:
        interrupted.rmdir()
        running.rmdir()
    (old,) = [li for li in lines if li.startswith(f"{day}-interrupted ")]
    (now,) = [li for li in lines if li.startswith(f"{day}-runningnow ")]
    assert old.split()[2:4] == ["unfinished", "(superseded)"]
    assert now.split()[2:4] == ["unfinished", "-"]
    assert (
        f"{day}-interrupted: interrupted; a later run of {day} is published ({run_dir.name}): "
        f"the folder {interrupted} can be removed"
    ) in lines
    assert not [li for li in lines if li.startswith(f"{day}-runningnow:")]


def test_show_json_prints_the_manifest_as_published(runs, capsys):
    out, run_dir, _, _ = runs
    assert main(["runs", "show", run_dir.name, "--out", str(out), "--json"]) == 0
    assert capsys.readouterr().out == (run_dir / "manifest.json").read_text()


@pytest.mark.parametrize(
    "run, message",
    [
        ("2024-12-01-nothere", "no published run '2024-12-01-nothere'"),
        ("2025-02-01-unfinishedrun", "no published run"),  # unfinished runs have no manifest
        ("2025", "matches 2 runs"),
    ],
)
def test_show_names_a_run_it_cannot_find(runs, capsys, run, message):
    out, run_dir, _, _ = runs
    extra = None
    if run == "2025":  # make the prefix ambiguous with a second published run
        extra = out / (run_dir.name[:11] + "zzzzzzzzzzzz")
        extra.mkdir()
        (extra / "manifest.json").write_text(json.dumps({"reference_date": "2025-01-01"}))
    try:
        assert main(["runs", "show", run, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    finally:
        if extra:
            (extra / "manifest.json").unlink()
            extra.rmdir()


def test_the_output_folder_comes_from_the_configuration(runs, capsys, tmp_path, monkeypatch):
    out, run_dir, _, _ = runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIGNALS_CONFIG", raising=False)
    monkeypatch.delenv("SIGNALS_PATHS_OUT", raising=False)
    assert main(["runs", "list"]) == 2
    assert "paths.out is not set" in capsys.readouterr().err
    (tmp_path / "signals.toml").write_text(f'[paths]\nout = "{out}"\n')
    assert main(["runs", "list"]) == 0
    assert run_dir.name in capsys.readouterr().out


def test_a_run_folder_needs_no_runs_folder_and_a_wrong_folder_is_named(
    runs, capsys, tmp_path, monkeypatch
):
    out, run_dir, _, _ = runs
    monkeypatch.chdir(tmp_path)  # no signals.toml here
    monkeypatch.delenv("SIGNALS_CONFIG", raising=False)
    monkeypatch.delenv("SIGNALS_PATHS_OUT", raising=False)
    assert main(["runs", "show", str(run_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"run {run_dir.name}\n")
    assert main(["runs", "show", run_dir.name[:14], "--runs", str(out)]) == 0  # as elsewhere
    assert capsys.readouterr().out.startswith(f"run {run_dir.name}\n")
    assert main(["runs", "list", "--runs", str(out / "audit-log")]) == 2
    assert "the audit log, not the runs folder" in capsys.readouterr().err
    assert main(["runs", "list", "--runs", str(run_dir)]) == 2
    assert "a run, not the runs folder" in capsys.readouterr().err
    assert main(["audit", "verify", "--log", str(run_dir / "audit")]) == 2
    assert f"a run, not the audit log: the log that holds it is {out / 'audit-log'}" in (
        capsys.readouterr().err
    )


def test_after_retention_the_run_is_listed_with_its_personal_data_destroyed(runs, capsys):
    out, run_dir, key, _ = runs
    later = (dt.date.today() + dt.timedelta(days=800)).isoformat()
    args = ["retention", "enforce", "--runs", str(out), "--period", "P1Y", "--as-of", later]
    args += ["--key-file", str(key)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--out", str(out)]) == 0
    (line,) = [li for li in capsys.readouterr().out.splitlines() if run_dir.name in li]
    assert "personal data destroyed" in line
    assert main(["runs", "show", run_dir.name, "--out", str(out)]) == 0
    assert "personal data        destroyed" in capsys.readouterr().out


def test_a_second_run_on_the_same_output_folder_is_refused_while_one_runs(runs, capsys):
    out, _, _, command = runs
    with run_lock(out):  # as a running scheduled run holds it
        assert "pid" in (out / ".run.lock").read_text()
        with prefect_server():
            code = main(command)
    err = capsys.readouterr().err
    assert code == 2
    assert f"{out}: another central run is writing to this output folder" in err
    assert (out / ".run.lock").read_text() == ""  # released, and says so
    with prefect_server():  # once it is free the same run goes ahead (here: already published)
        assert main(command) == 0


def test_a_manual_run_reads_what_its_flags_leave_out_from_signals_toml(runs, tmp_path, capsys):
    out, run_dir, key, command = runs
    deliveries = command[command.index("--deliveries") + 1]
    config = tmp_path / "signals.toml"
    config.write_text(
        f'[paths]\ndeliveries = "{deliveries}"\nout = "{out}"\n\n'
        f'[keys]\ncentral_keyring = "{key}"\n\n[run]\nbuckets = 4\n'
    )
    with prefect_server():  # the same inputs: the published run is found, nothing redone
        assert main(["run", "--config", str(config), "--reference-date", REFERENCE_DATE]) == 0
    assert published_runs(out) == [run_dir]
    said = capsys.readouterr().out
    assert run_dir.name in said and "already published for these inputs" in said
    bare = tmp_path / "bare.toml"
    bare.write_text("[run]\nbuckets = 4\n")
    code = main(["run", "--config", str(bare), "--reference-date", REFERENCE_DATE])
    assert code == 2
    assert "paths.deliveries is not set" in capsys.readouterr().err


def test_a_code_change_without_a_new_version_number_is_another_code_version(tmp_path):
    """The run id takes the code version: a fix must make a new run of the same inputs, not
    "already published", even when the package version number stays the same."""
    import shutil
    from pathlib import Path

    from flows.run import CODE_PACKAGES, code_version, source_digest

    root = Path(__file__).resolve().parent.parent
    assert code_version().endswith(f"+src.{source_digest(root)[:12]}")
    for package in CODE_PACKAGES:
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before  # the same sources, the same digest
    fixed = tmp_path / "pipelines" / "join.py"
    fixed.write_text(fixed.read_text() + "\n# a fix\n")
    assert source_digest(tmp_path) != before
