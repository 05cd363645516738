"""The controller's worklist: re-identification of signalled households only, logged per signal,
impossible for anyone else; and domain-key rotation keeps the links."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bsn_scan import scan_tree
from population import HOUSEHOLDS, REFERENCE_DATE, SIGNALLED, write_population

from entitlement_rules.guard import PSEUDONYM_IN_TEXT
from flows.cli import main
from pipelines.contract import SOURCES
from privacy.audit.log import LOG_DIRNAME, AuditLog
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import TwoLayerPseudonymiser, translate
from privacy.reidentify import WORKLIST_SCHEMA
from privacy.retention import read_run_table

PASSPHRASE = "a worklist test passphrase"
HEADS = {hh: members[0][0] for hh, members in HOUSEHOLDS.items()}


def _run(root: Path, out: Path) -> Path:
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(root / "keys" / "central.keyring"), "--buckets", "4"]
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    assert main(args + ["--out", str(out)]) == 0
    (new,) = [p for p in out.iterdir() if p.name not in before and (p / "manifest.json").is_file()]
    return new


def _controller(root: Path) -> Path:
    keys = root / "keys"
    args = ["keys", "init", "--role", "controller", "--force"]
    args += ["--key-file", str(keys / "controller.keyring")]
    assert main(args + ["--import", str(keys / "body.keyring")] +
                ["--import", str(keys / "central.keyring")]) == 0  # fmt: skip
    return keys / "controller.keyring"


@contextlib.contextmanager
def published_run(root: Path):
    """Bodies pseudonymise, the central party runs: (root, run folder), with the keyrings'
    passphrase in the environment while it is used."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    try:
        write_population(root / "raw")
        keys = root / "keys"
        assert main(["keys", "init", "--key-file", str(keys / "body.keyring")]) == 0
        args = ["keys", "init", "--role", "central", "--key-file", str(keys / "central.keyring")]
        assert main(args) == 0
        for source in SOURCES:
            args = ["pseudonymise", "--delivery", str(root / "raw" / source / REFERENCE_DATE)]
            args += ["--key-file", str(keys / "body.keyring"), "--out", str(root / "pseudo")]
            assert main(args) == 0
        _controller(root)
        yield root, _run(root, root / "runs")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    with published_run(tmp_path_factory.mktemp("worklist")) as done:
        yield done


def _worklist(root: Path, run: Path, out: Path, key_file: Path | None = None) -> int:
    args = ["worklist", "--run", str(run), "--brp", str(root / "raw" / "brp" / REFERENCE_DATE)]
    key_file = key_file or root / "keys" / "controller.keyring"
    return main(args + ["--key-file", str(key_file), "--out", str(out)])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _signals(root: Path, run: Path) -> pa.Table:
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    return read_run_table(run, "signals.parquet", ring)


def test_the_worklist_names_exactly_the_signalled_households_by_bsn(published, tmp_path):
    root, run = published
    assert _worklist(root, run, tmp_path / "worklist.csv") == 0
    rows = _rows(tmp_path / "worklist.csv")
    assert list(rows[0]) == WORKLIST_SCHEMA.names and WORKLIST_SCHEMA.names[0] == "bsn"
    signals = _signals(root, run)
    # One row per signalled household (pipelines/priority.py groups its signals).
    assert len(rows) == len(set(signals.column("household_pid").to_pylist()))
    zorgtoeslag = {r["bsn"] for r in rows if "zorgtoeslag" in r["schemes"].split("; ")}
    assert zorgtoeslag == {HEADS[hh] for hh in SIGNALLED}
    # Only heads of households are applicants: nobody else in the BRP comes out.
    assert {r["bsn"] for r in rows} <= set(HEADS.values())
    table = pq.read_table(tmp_path / "worklist.parquet")
    assert table.schema == WORKLIST_SCHEMA and table.num_rows == len(rows)
    for name in ("worklist.csv", "worklist.parquet"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
        # BSNs and no pseudonyms: the list is no key from one to the other.
        assert not PSEUDONYM_IN_TEXT.search((tmp_path / name).read_bytes().decode("latin-1"))


def test_every_bsn_matches_the_brp_delivery_for_every_signal(published, tmp_path):
    root, run = published
    assert _worklist(root, run, tmp_path / "worklist.csv") == 0
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    both = TwoLayerPseudonymiser(ring.active("body"), ring.active("domain", DEFAULT_DOMAIN))
    applicant = {s["signal_id"]: s["applicant_pid"] for s in _signals(root, run).to_pylist()}
    with open(root / "raw" / "brp" / REFERENCE_DATE / "data.csv", newline="") as f:
        brp = {row[0] for row in csv.reader(f)}
    listed = []
    for row in _rows(tmp_path / "worklist.csv"):
        assert row["bsn"] in brp
        for signal_id in row["signal_ids"].split("; "):
            assert both.one("bsn", row["bsn"]) == applicant[signal_id]
            listed.append(signal_id)
    assert sorted(listed) == sorted(applicant)  # every signal once


def test_every_reidentification_is_logged_per_signal_before_the_worklist(
    published, tmp_path, capsys
):
    root, run = published
    log = AuditLog(run.parent / LOG_DIRNAME)
    before = len(log.checkpoints())
    assert _worklist(root, run, tmp_path / "a.csv") == 0
    assert _worklist(root, run, tmp_path / "b.csv") == 0
    batches = [c for c in log.checkpoints()[before:] if "/reidentification/" in c.batch_id]
    assert len(batches) == 2  # each worklist is its own event
    signals = _signals(root, run)
    # What the command says it did: households listed, their signals, records logged.
    households = len(_rows(tmp_path / "b.csv"))
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith(
        f"worklist: {households:,} households ({signals.num_rows:,} signals) re-identified"
    )
    assert f"; {batches[-1].leaf_count:,} reidentification records in the audit log" in said
    assert batches[-1].leaf_count == signals.num_rows
    for checkpoint in batches:
        records = log.batch_records(checkpoint.batch_id)
        assert set(records.column("name").to_pylist()) == {"reidentification"}
        assert sorted(records.column("data_subject_pid").to_pylist()) == sorted(
            signals.column("applicant_pid").to_pylist()
        )
        ids = {json.loads(a)["signal_id"] for a in records.column("attributes").to_pylist()}
        assert ids == set(signals.column("signal_id").to_pylist())
    # The log itself holds pseudonyms only.
    assert scan_tree(run.parent / LOG_DIRNAME, set(HEADS.values())) == {}  # value by value


@pytest.mark.parametrize("ring", ["central", "body"])
def test_nobody_but_the_controller_can_make_a_worklist(published, tmp_path, capsys, ring):
    root, run = published
    key_file = root / "keys" / f"{ring}.keyring"
    assert _worklist(root, run, tmp_path / "w.csv", key_file) == 2
    assert f"{key_file}: not a controller keyring" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_cannot_take_the_worklist_is_refused_before_anyone_is_logged(
    published, tmp_path, capsys
):
    """Logged first, written after: a folder that cannot take the list must stop the
    worklist before the log records re-identifications that gave nobody a list."""
    root, run = published
    log = AuditLog(run.parent / LOG_DIRNAME)
    before = len(log.checkpoints())
    (tmp_path / "a-file").write_text("")
    assert _worklist(root, run, tmp_path / "a-file" / "w.csv") == 2
    assert "cannot hold the worklist" in capsys.readouterr().err
    (tmp_path / "w.csv").mkdir()
    assert _worklist(root, run, tmp_path / "w.csv") == 2
    assert f"{tmp_path / 'w.csv'}: not a file; nobody re-identified" in capsys.readouterr().err
    assert len(log.checkpoints()) == before


def test_a_brp_delivery_other_than_the_runs_is_refused_and_nothing_written(published, tmp_path):
    root, run = published
    other = tmp_path / "raw"
    shutil.copytree(root / "raw" / "brp", other / "brp")
    data = other / "brp" / REFERENCE_DATE / "data.csv"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:-1]))  # a row fewer: another delivery
    manifest_path = other / "brp" / REFERENCE_DATE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(row_count=manifest["row_count"] - 1)
    manifest["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    args = ["worklist", "--run", str(run), "--brp", str(other / "brp" / REFERENCE_DATE)]
    args += ["--key-file", str(root / "keys" / "controller.keyring")]
    assert main(args + ["--out", str(tmp_path / "out" / "w.csv")]) == 2
    assert not (tmp_path / "out").exists()


def test_domain_key_rotation_keeps_links_and_old_runs_stay_reidentifiable(published, tmp_path):
    root, old_run = published
    keys = tmp_path / "keys"
    shutil.copytree(root / "keys", keys)
    # Work on copies: the other tests share the module's keyrings and runs.
    work = tmp_path / "root"
    work.mkdir()
    (work / "keys").symlink_to(keys)
    (work / "pseudo").symlink_to(root / "pseudo")
    (work / "raw").symlink_to(root / "raw")
    runs = tmp_path / "runs"
    shutil.copytree(old_run.parent, runs, symlinks=True)
    old_run = runs / old_run.name
    argv = ["keys", "rotate", "--role", "domain", "--key-file", str(keys / "central.keyring")]
    assert main(argv) == 0
    new_run = _run(work, runs)
    assert new_run.name != old_run.name  # the same inputs under a new key are a new run
    _controller(work)

    ring = load_keyring(keys / "controller.keyring", PASSPHRASE)
    old = read_run_table(old_run, "households", ring).sort_by("applicant_pid")
    new = read_run_table(new_run, "households", ring)
    assert set(old.column("household_pid").to_pylist()).isdisjoint(
        new.column("household_pid").to_pylist()
    )
    # Every old pseudonym translates to exactly the new run's pseudonym of the same household.
    for column in ("household_pid", "applicant_pid"):
        moved = translate(old.column(column).combine_chunks(), ring, DEFAULT_DOMAIN)
        assert sorted(moved.to_pylist()) == sorted(new.column(column).to_pylist())
    members = translate(
        pa.chunked_array(old.column("member_pids")).combine_chunks().flatten(), ring, DEFAULT_DOMAIN
    )
    assert set(members.to_pylist()) == set(
        new.column("member_pids").combine_chunks().flatten().to_pylist()
    )
    # Both runs still re-identify to the same people, each with the key it was made with.
    assert _worklist(work, old_run, tmp_path / "old.csv") == 0
    assert _worklist(work, new_run, tmp_path / "new.csv") == 0
    old_bsns = sorted(r["bsn"] for r in _rows(tmp_path / "old.csv"))
    assert old_bsns == sorted(r["bsn"] for r in _rows(tmp_path / "new.csv"))
    assert set(old_bsns) >= {HEADS[hh] for hh in SIGNALLED}


def test_only_the_controllers_steps_combine_body_and_domain_keys():
    """By construction: no other code path can link a BSN and a domain pseudonym (each
    step checks that the keyring is the controller's: tests/test_subject_access.py,
    tests/test_body_links.py)."""
    root = Path(__file__).resolve().parent.parent
    code = [p for d in ("pipelines", "privacy", "flows") for p in (root / d).rglob("*.py")]
    both = sorted(
        str(p.relative_to(root)) for p in code if "TwoLayerPseudonymiser" in p.read_text()
    )
    assert both == [
        "privacy/body_links.py",
        "privacy/pseudonyms.py",
        "privacy/reidentify.py",
        "privacy/subject_access.py",
    ]
    # The central side never asks a keyring for a body key.
    central = [p for p in code if p.parts[-2] == "pipelines" or p.name in ("run.py", "central.py")]
    assert not [p for p in central if re.search(r"active\(\s*['\"]body", p.read_text())]


def test_a_run_is_named_by_its_id_or_a_prefix_of_it_as_in_runs_list(
    published, tmp_path, capsys, monkeypatch
):
    root, run = published
    assert _worklist(root, run, tmp_path / "by-folder.csv") == 0
    args = ["worklist", "--run", run.name[:14], "--runs", str(run.parent)]
    args += ["--brp", str(root / "raw" / "brp" / REFERENCE_DATE)]
    args += ["--key-file", str(root / "keys" / "controller.keyring")]
    assert main(args + ["--out", str(tmp_path / "by-id.csv")]) == 0
    assert _rows(tmp_path / "by-id.csv") == _rows(tmp_path / "by-folder.csv")
    capsys.readouterr()

    assert (
        main(args[:2] + ["2099-no-such-run"] + args[3:] + ["--out", str(tmp_path / "x.csv")]) == 2
    )
    assert (
        "no published run '2099-no-such-run' (see `signals runs list`)" in capsys.readouterr().err
    )
    # Without --runs, the folder of runs comes from the configuration; there is none here.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIGNALS_CONFIG", raising=False)
    assert main(args[:2] + [run.name] + args[5:] + ["--out", str(tmp_path / "y.csv")]) == 2
    assert "give the folder holding the runs with --runs" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


def test_a_controller_keyring_without_the_runs_body_key_says_to_rebuild_it(
    published, tmp_path, capsys
):
    """After a body-key rotation a controller keyring must be rebuilt from the custodian's
    keyring, which keeps the retired key: old runs are re-identified with it."""
    from privacy.keys import Keyring, save_keyring

    root, run = published
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    other = Keyring()
    other.add("body")
    other.rotate("body", None)  # b1 retired, b2 active
    stale = Keyring(
        [k for k in other.keys if k.id == "b2"] + [k for k in ring.keys if k.role != "body"]
    )
    save_keyring(stale, tmp_path / "stale.keyring", PASSPHRASE)
    assert _worklist(root, run, tmp_path / "w.csv", tmp_path / "stale.keyring") == 2
    err = capsys.readouterr().err
    assert "was made with body key b1, which the controller keyring does not hold" in err
    assert not (tmp_path / "w.csv").exists()
    # Another key under the same id (a keyring made again): told apart by its fingerprint.
    imposter = Keyring(
        [k for k in other.keys if k.id == "b1"] + [k for k in ring.keys if k.role != "body"]
    )
    save_keyring(imposter, tmp_path / "imposter.keyring", PASSPHRASE)
    assert _worklist(root, run, tmp_path / "w.csv", tmp_path / "imposter.keyring") == 2
    err = capsys.readouterr().err
    assert "body key b1 (fingerprint" in err and "is not the one run" in err
    assert not (tmp_path / "w.csv").exists()
