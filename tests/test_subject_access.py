"""A subject access request: the controller finds a person's pseudonyms from their BSN, logged
before anything is shown, and no BSN is printed, logged or quoted back."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import stat
from pathlib import Path

import pyarrow as pa
import pytest
from bsn_scan import scan_tree
from population import HOUSEHOLDS, SIGNALLED
from test_worklist import PASSPHRASE, _worklist, published_run

from flows.cli import main
from privacy.audit.log import LOG_DIRNAME, AuditLog
from privacy.audit.query import Filters, select
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.retention import read_run_table
from privacy.subject_access import look_up, pseudonyms

BSNS = sorted({bsn for members in HOUSEHOLDS.values() for bsn, *_ in members})


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A published run of the worklist tests' population, with its keyrings."""
    with published_run(tmp_path_factory.mktemp("subject-access")) as done:
        yield done


def _ask(root: Path, runs: Path, monkeypatch, text: str, ring: str = "controller") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    key_file = root / "keys" / f"{ring}.keyring"
    return main(["subject-access", "--log", str(runs), "--key-file", str(key_file)])


def _worklist_applicants(root: Path, run: Path, tmp_path: Path) -> dict[str, str]:
    """BSN -> applicant pseudonym, as the worklist (re-identification from the BRP) gives them:
    its signal ids, whose applicant the run's signals name."""
    assert _worklist(root, run, tmp_path / "w.csv") == 0
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    signals = read_run_table(run, "signals.parquet", ring).to_pylist()
    applicant = {s["signal_id"]: s["applicant_pid"] for s in signals}
    with open(tmp_path / "w.csv", newline="") as f:
        rows = csv.DictReader(f)
        return {row["bsn"]: applicant[row["signal_ids"].split("; ")[0]] for row in rows}


def test_a_persons_pseudonym_and_records_are_found_and_the_lookup_logged(
    published, tmp_path, monkeypatch, capsys
):
    root, run = published
    runs = run.parent
    applicants = _worklist_applicants(root, run, tmp_path)
    head = HOUSEHOLDS[sorted(SIGNALLED)[0]][0][0]
    expected = applicants[head]  # found the other way round: BRP -> pseudonym -> signal
    before, _ = select(runs / LOG_DIRNAME, Filters(subject=expected))
    capsys.readouterr()

    assert _ask(root, runs, monkeypatch, f"\n{head}\n") == 0
    out = capsys.readouterr().out
    assert f"line 2: {expected}  {before.num_rows:,} audit record(s) before this lookup" in out
    assert f"signals audit trail {expected} --log {shlex.quote(str(runs))}" in out
    assert before.num_rows > 0 and not re.search(r"\d{9}", out)

    # Logged: one subject_lookup record for the person, naming who and the event, no BSN.
    log = AuditLog(runs / LOG_DIRNAME)
    latest = log.latest()
    assert latest.batch_id.startswith("subject-access/") and latest.leaf_count == 1
    (record,) = log.batch_records(latest.batch_id).to_pylist()
    assert (record["name"], record["data_subject_pid"]) == ("subject_lookup", expected)
    attributes = json.loads(record["attributes"])
    assert attributes["event"] in out and attributes["actor"]
    after, _ = select(runs / LOG_DIRNAME, Filters(subject=expected))
    assert after.num_rows == before.num_rows + 1
    assert scan_tree(runs / LOG_DIRNAME, set(BSNS)) == {}  # Parquet read value by value


def test_several_people_at_once_each_by_their_input_line(published, monkeypatch, capsys):
    root, run = published
    heads = [HOUSEHOLDS[hh][0][0] for hh in list(HOUSEHOLDS)[:3]]
    assert _ask(root, run.parent, monkeypatch, "\n".join(heads) + "\n") == 0
    out = capsys.readouterr().out
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    for line, bsn in enumerate(heads, start=1):
        (pid,) = pseudonyms(bsn, ring)
        assert re.search(rf"^line {line}: {re.escape(pid)}  ", out, re.M)
    assert AuditLog(run.parent / LOG_DIRNAME).latest().leaf_count == 3


@pytest.mark.parametrize(
    "text, line",
    [("123456789\n", 1), (f"{BSNS[0]}\n1234567890\n", 2), ("\n\n", None)],
    ids=["fails the 11-proef", "ten digits", "nothing given"],
)
def test_a_line_that_is_no_bsn_is_refused_by_number_and_nothing_logged(
    published, monkeypatch, capsys, text, line
):
    root, run = published
    log = AuditLog(run.parent / LOG_DIRNAME)
    before = len(log.checkpoints())
    assert _ask(root, run.parent, monkeypatch, text) == 2
    err = capsys.readouterr().err
    assert (f"line {line} of the input is not a BSN" if line else "no BSN on standard input") in err
    assert not re.search(r"\d{9}", err)  # neither the bad value nor the good one is quoted
    assert len(log.checkpoints()) == before


@pytest.mark.parametrize("ring", ["central", "body"])
def test_nobody_but_the_controller_can_look_a_person_up(published, monkeypatch, capsys, ring):
    root, run = published
    log = AuditLog(run.parent / LOG_DIRNAME)
    before = len(log.checkpoints())
    assert _ask(root, run.parent, monkeypatch, f"{BSNS[0]}\n", ring) == 2
    assert "not a controller keyring" in capsys.readouterr().err
    assert len(log.checkpoints()) == before


def test_no_answer_from_a_log_that_is_not_as_signed_and_nothing_appended_to_it(
    published, tmp_path, monkeypatch, capsys
):
    """A record deleted from a segment leaves every other record provable: an answer read
    from that log would be short by it, without a word. Refused before anything is read."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root, run = published
    runs = tmp_path / "runs"
    shutil.copytree(run.parent, runs)
    log = AuditLog(runs / LOG_DIRNAME)
    segment = log.segment_path(log.checkpoints()[0])
    table = pq.read_table(segment)
    pq.write_table(table.filter(pc.not_equal(table["name"], "join")), segment)
    before = len(log.checkpoints())

    assert _ask(root, runs, monkeypatch, f"{BSNS[0]}\n") == 2
    err = capsys.readouterr().err
    assert f"{segment.name}: not the file checkpoint 0 signed" in err
    assert "no answer from it, which could leave records out" in err
    assert len(log.checkpoints()) == before


def test_after_a_domain_key_rotation_both_pseudonyms_are_looked_up(published):
    """Records made before the rotation carry the old key's pseudonym: both are counted."""
    root, run = published
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    head = HOUSEHOLDS[sorted(SIGNALLED)[0]][0][0]
    (old,) = pseudonyms(head, ring)
    ring.rotate("domain", DEFAULT_DOMAIN)
    both = pseudonyms(head, ring)
    # The active keys' pseudonym first, then the retired key's.
    assert len(both) == 2 and both[0].startswith("d2.") and both[1] == old
    done = look_up([(1, head)], ring, run.parent / LOG_DIRNAME)
    (subject,) = done.subjects
    assert subject.records == {both[0]: 0, old: subject.records[old]} and subject.records[old]
    # Logged: the active keys' pseudonym (no records yet) and every one that has records.
    assert done.logged == 2 + sum(1 for n in subject.households.values() if n)


def test_records_that_name_the_persons_household_are_found_too(published, capsys, monkeypatch):
    """A resolution, or the deletion of data on a household, names the household: the
    lookup follows the person's join records to it."""
    from pipelines.audit_records import AuditContext
    from privacy.audit.events import append_events, deletion_records
    from privacy.audit.signing import Signer

    root, run = published
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    head = HOUSEHOLDS[sorted(SIGNALLED)[0]][0][0]
    (pid,) = pseudonyms(head, ring)
    (joined,) = select(run.parent / LOG_DIRNAME, Filters(subject=pid, operation="join"))[
        0
    ].to_pylist()
    household = json.loads(joined["attributes"])["household_pid"]
    context = AuditContext(run.name, DEFAULT_DOMAIN, "test")
    records = deletion_records(context, pa.array([household]), "households", "a test")
    append_events(run.parent / LOG_DIRNAME, records, f"{run.name}/deletion/test", Signer(ring))

    assert _ask(root, run.parent, monkeypatch, f"{head}\n") == 0
    out = capsys.readouterr().out
    assert f"line 1: household {household}  1 audit record(s) before this lookup" in out
    assert f"signals audit trail {household} --log" in out
    latest = AuditLog(run.parent / LOG_DIRNAME).latest()
    logged = AuditLog(run.parent / LOG_DIRNAME).batch_records(latest.batch_id)
    assert set(logged.column("data_subject_pid").to_pylist()) == {pid, household}


def test_a_command_line_error_never_quotes_a_number_like_a_bsn(capsys):
    for written in (BSNS[0], f"{BSNS[0][:4]}.{BSNS[0][4:6]}.{BSNS[0][6:]}"):
        with pytest.raises(SystemExit) as exit_:
            main(["audit", "trail", "d1." + "a" * 32, written, "--log", "x"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments" in err and written not in err and BSNS[0] not in err


def test_an_extract_holds_the_persons_rows_only_and_is_logged_first(
    published, tmp_path, monkeypatch, capsys
):
    from privacy.retention import PERSONAL_DATA

    root, run = published
    head = HOUSEHOLDS[sorted(SIGNALLED)[0]][0][0]
    ring = load_keyring(root / "keys" / "controller.keyring", PASSPHRASE)
    (pid,) = pseudonyms(head, ring)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{head}\n"))
    args = ["subject-access", "--log", str(run.parent), "--extract", str(tmp_path / "x")]
    assert main(args + ["--key-file", str(root / "keys" / "controller.keyring")]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'x'} (owner-only), one folder per input line and run; " in out
    assert "review the extract before giving anything out" in out

    folder = tmp_path / "x" / "line-1" / run.name
    tables = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    (home,) = tables["households"]
    assert home["applicant_pid"] == pid or pid in home["member_pids"]
    # Every table's rows of that household, counted from the run itself, and nothing else.
    expected = {}
    for name in PERSONAL_DATA:
        table = read_run_table(run, name, ring).to_pylist()
        mine = [r for r in table if r["household_pid"] == home["household_pid"]]
        if mine:
            expected[name.removesuffix(".parquet")] = len(mine)
    assert {name: len(rows) for name, rows in tables.items()} == expected
    assert {"households", "evaluations", "signals"} <= set(expected)
    for name in tables:
        assert stat.S_IMODE((folder / f"{name}.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert scan_tree(tmp_path / "x", set(BSNS)) == {}

    # Logged first: a decryption record for every data subject the extract holds data on,
    # the person and the other members of the household row (and the household).
    log = AuditLog(run.parent / LOG_DIRNAME)
    records = log.batch_records(log.latest().batch_id).to_pylist()
    subjects = {r["data_subject_pid"] for r in records}
    assert subjects == {pid, home["household_pid"], *home["member_pids"]}
    assert f"{len(records)} decryption record(s) logged first" in out
    for record in records:
        attributes = json.loads(record["attributes"])
        assert record["name"] == "decryption" and record["run_id"] == run.name
        assert attributes["purpose"] == "subject access request (AVG art. 15)"
        assert attributes["files"] == sorted(f"line-1/{run.name}/{n}.json" for n in tables)


def test_an_extract_for_someone_no_run_names_writes_nothing(
    published, tmp_path, monkeypatch, capsys
):
    root, run = published
    # A valid BSN of nobody in the population.
    stranger = next(b for b in ("100000010", "111111110", "123456782") if b not in BSNS)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{stranger}\n"))
    args = ["subject-access", "--log", str(run.parent), "--extract", str(tmp_path / "x")]
    assert main(args + ["--key-file", str(root / "keys" / "controller.keyring")]) == 0
    assert "no kept run holds data on them; nothing written" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()


def test_a_household_is_the_persons_only_in_the_runs_that_joined_them_into_it(tmp_path):
    """Someone who moved: run r1 joined them into household A, run r2 into B, while A
    still exists in r2 with other people. r2's rows of A are not theirs."""
    from pipelines.audit_records import AuditContext, join_audit
    from privacy.audit.signing import Signer
    from privacy.keys import Keyring
    from privacy.subject_access import _joined, _rows

    ring = Keyring()
    ring.add("audit-signing")
    log = AuditLog(tmp_path / LOG_DIRNAME)
    for run, home in (("r1", "h.A"), ("r2", "h.B")):
        households = pa.table({"household_pid": [home], "member_pids": [["p.me"]]})
        batch = join_audit(AuditContext(run, DEFAULT_DOMAIN, "test"))(households.to_batches()[0])
        log.append(pa.Table.from_batches([batch]), run, Signer(ring))
    joined = _joined(tmp_path / LOG_DIRNAME, ["p.me"], by="run_id")
    assert joined == {"r1": {"h.A"}, "r2": {"h.B"}}
    r2 = pa.table(
        {
            "household_pid": ["h.A", "h.B", "h.C", None],
            "applicant_pid": ["p.other", "p.me", "p.third", "p.me"],
        }
    )
    kept = _rows(r2, ["p.me"], joined["r2"])
    assert kept.column("household_pid").to_pylist() == ["h.B", None]


def test_a_household_is_followed_across_a_body_key_rotation_by_the_link_table(tmp_path):
    """After a body-key rotation a household that stayed is named d(b2(id)) by later runs;
    a member who left was only joined into d(b1(id)). The controller's link table connects
    them, under whichever domain key each was written."""
    import pyarrow.parquet as pq

    from privacy.body_links import LINK_SCHEMA, link_path
    from privacy.keys import Keyring
    from privacy.pseudonyms import TwoLayerPseudonymiser
    from privacy.subject_access import _under_every_key

    ring = Keyring()
    ring.add("body")
    ring.add("domain", DEFAULT_DOMAIN)
    ring.rotate("body", None)
    d1 = ring.active("domain", DEFAULT_DOMAIN)
    old, new = (TwoLayerPseudonymiser(ring.by_id(b), d1) for b in ("b1", "b2"))
    ids = ["H1", "H2"]
    table = pa.table(
        [old.array("household_id", pa.array(ids)), new.array("household_id", pa.array(ids))],
        schema=LINK_SCHEMA,
    )
    path = link_path(tmp_path, "b1", "b2")
    path.parent.mkdir()
    pq.write_table(table, path)
    ring.rotate("domain", DEFAULT_DOMAIN)  # and the domain key since: d1 -> d2
    d2 = ring.active("domain", DEFAULT_DOMAIN)
    joined = old.one("household_id", "H1")
    variants = _under_every_key([joined], ring, DEFAULT_DOMAIN, tmp_path / "links")
    expected = {
        TwoLayerPseudonymiser(ring.by_id(b), d).one("household_id", "H1")
        for b in ("b1", "b2")
        for d in (d1, d2)
    }
    assert variants[joined][0] == joined and set(variants[joined]) == expected
    # Without a table, the other body key's pseudonym cannot be found.
    alone = _under_every_key([joined], ring, DEFAULT_DOMAIN, tmp_path / "none")
    assert len(alone[joined]) == 2
    # A second rotation (b2 -> b3) after the b1 runs were gone: b1 still reaches b3.
    ring.rotate("body", None)
    b2, b3 = (TwoLayerPseudonymiser(ring.by_id(b), d2) for b in ("b2", "b3"))
    table = pa.table(
        [b2.array("household_id", pa.array(ids)), b3.array("household_id", pa.array(ids))],
        schema=LINK_SCHEMA,
    )
    pq.write_table(table, link_path(tmp_path, "b2", "b3"))
    variants = _under_every_key([joined], ring, DEFAULT_DOMAIN, tmp_path / "links")
    assert b3.one("household_id", "H1") in variants[joined] and len(variants[joined]) == 6


def test_a_households_episode_closed_before_the_person_joined_it_is_not_theirs(tmp_path):
    """Run r1 resolves household A's episode; r2 joins the person into A; r3 resolves A's
    episode again; r0, a rerun of a date before them all, is logged last. The person's
    extract holds r2's and r3's lifecycle rows of A, not r1's or r0's."""
    import pyarrow.parquet as pq

    from pipelines.audit_records import AuditContext, audit_batch, join_audit
    from privacy.audit.signing import Signer
    from privacy.keys import Keyring
    from privacy.subject_access import Subject, _person_parts

    ring = Keyring()
    ring.add("audit-signing")
    log = AuditLog(tmp_path / LOG_DIRNAME)
    r0, r1, r2, r3 = (f"{day}-r{i}" for i, day in enumerate(("2024-12-01", *DAYS)))
    runs = {}
    for run in (r1, r2, r3, r0):
        context = AuditContext(run, DEFAULT_DOMAIN, "test")
        if run == r2:
            households = pa.table({"household_pid": ["h.A"], "member_pids": [["p.me"]]})
            batch = join_audit(context)(households.to_batches()[0])
        else:
            batch = audit_batch(context, "resolution", pa.array(["h.A"]), "resolved", "{}")
        log.append(pa.Table.from_batches([batch]), run, Signer(ring))
        runs[run] = tmp_path / run
        runs[run].mkdir()
        (runs[run] / "manifest.json").write_text(json.dumps({"reference_date": run[:10]}))
        rows = {"household_pid": ["h.A", "h.B"], "run_id": [run, run]}
        pq.write_table(pa.table(rows), runs[run] / "lifecycle.parquet")

    def read(run_dir, name, where):
        path = run_dir / name
        empty = pa.table({"household_pid": pa.array([], pa.string())})
        return where(pq.read_table(path) if path.is_file() else empty)

    subject = Subject(1, {"p.me": 1}, {"h.A": 2})
    expected = {
        r2: {"household_pid": ["h.A"], "run_id": [r2]},
        r3: {"household_pid": ["h.A"], "run_id": [r3]},
    }
    parts = _person_parts(subject, tmp_path / LOG_DIRNAME, runs, read)
    assert {p.run_id: p.tables["lifecycle"].to_pydict() for p in parts} == expected
    # The joining run's manifest gone: its date comes from its id, as runs are named.
    (runs[r2] / "manifest.json").unlink()
    parts = _person_parts(subject, tmp_path / LOG_DIRNAME, runs, read)
    assert {p.run_id: p.tables["lifecycle"].to_pydict() for p in parts} == expected


DAYS = ("2025-01-01", "2025-02-01", "2025-03-01")


def test_an_extract_goes_to_a_new_folder_only(published, tmp_path, monkeypatch, capsys):
    root, run = published
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "someone-else.json").write_text("[]")
    log = AuditLog(run.parent / LOG_DIRNAME)
    before = len(log.checkpoints())
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{BSNS[0]}\n"))
    args = ["subject-access", "--log", str(run.parent), "--extract", str(tmp_path / "x")]
    assert main(args + ["--key-file", str(root / "keys" / "controller.keyring")]) == 2
    assert "not empty; give a new folder for an extract" in capsys.readouterr().err
    assert len(log.checkpoints()) == before  # nothing looked up, nothing logged


def test_each_person_of_one_request_gets_a_folder_of_their_own(
    published, tmp_path, monkeypatch, capsys
):
    root, run = published
    heads = [HOUSEHOLDS[hh][0][0] for hh in sorted(SIGNALLED)[:2]]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(heads) + "\n"))
    args = ["subject-access", "--log", str(run.parent), "--extract", str(tmp_path / "x")]
    assert main(args + ["--key-file", str(root / "keys" / "controller.keyring")]) == 0
    homes = []
    for line in (1, 2):
        rows = json.loads(
            (tmp_path / "x" / f"line-{line}" / run.name / "households.json").read_text()
        )
        homes.append({r["household_pid"] for r in rows})
    assert len(homes[0]) == len(homes[1]) == 1 and homes[0] != homes[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no partial folder left


def test_after_a_domain_key_rotation_a_later_runs_resolution_of_their_household_is_found(
    tmp_path, monkeypatch
):
    """H11 leaves the BRP before run 3, which comes after a domain-key rotation (d1 -> d2).
    Run 3 resolves H11's episode under its d2 pseudonym, though its members were only ever
    joined under d1: the lookup and the extract follow the household across the rotation."""
    from test_lifecycle import CHANGES, _runs

    from privacy.keys import Keyring
    from privacy.subject_access import extract

    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", "lifecycle passphrase")
    runs = _runs(tmp_path, list(CHANGES), rotate_before="2025-04-01")
    rings = [
        load_keyring(tmp_path / f"{n}.keyring", "lifecycle passphrase") for n in ("body", "central")
    ]
    controller = Keyring(rings[0].keys + rings[1].keys)
    third = runs["2025-04-01"]
    (closed,) = [r for r in third["all_resolved"] if r["reason"] == "not_in_run"]
    assert closed["household_pid"].startswith("d2.")

    member = HOUSEHOLDS["H11"][0][0]
    log_root = third["folder"].parent / LOG_DIRNAME
    done = look_up([(1, member)], controller, log_root)
    (subject,) = done.subjects
    # Joined under d1 in runs 1 and 2 (records naming the member); its episode resolved under
    # d2 in run 3 (a record naming the household).
    assert sorted(subject.households.items()) == [
        (next(h for h in subject.households if h.startswith("d1.")), 0),
        (closed["household_pid"], 1),
    ]
    out = tmp_path / "x"
    extract(done, controller, log_root, out, key_store=log_root.parent / ".keys")
    lifecycle = out / "line-1" / third["folder"].name / "lifecycle.json"
    assert [r["household_pid"] for r in json.loads(lifecycle.read_text())] == [
        closed["household_pid"]
    ]
