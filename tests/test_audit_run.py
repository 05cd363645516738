"""A real central run on the hand-made population writes its audit trail into the signed log.

Count rule, exactly: a run logs one record per data subject per operation *item*, and
one run-level `purpose_check` record without a data subject. The item of an operation:

    ingest            none: each subject delivered by a source, once (its attributes name
                      every source that delivered a row of them, with its legal basis)
    exclusion         none: each person who objected to all processing, once
    join              none: each household member, once
    rule_evaluation   none: each member of an evaluated household, once (its attributes
                      list every scheme and benefit year evaluated)
    proportionality   the (scheme, benefit year) of the candidate signal, for its applicant
    signal            the signal, for its applicant
    resolution        the episode's last signal, for its household (none in a first run:
                      tests/test_lifecycle.py)

So records(run) = 1 + sum over operations of |{(data subject, item)}|. Each term is
computed here from the run's inputs and outputs, not from the audit: the pseudonymised
deliveries (ingest, exclusion), the household table (join), the evaluations (rule
evaluation), the signals and suppressed candidates (proportionality, signal).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from population import REFERENCE_DATE
from service_support import prepare_deliveries

from flows.cli import main
from pipelines.contract import SOURCES
from pipelines.exclude import PERSON_SOURCES
from pipelines.join import JOIN_SOURCES
from privacy.audit.events import OPERATIONS
from privacy.audit.log import LOG_ENTRY, RUN_COPY, AuditLog
from privacy.audit.verify import verify_log
from privacy.keys import load_keyring
from privacy.retention import read_run_table

PASSPHRASE = "an audit-run passphrase"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The population pseudonymised and run through the CLI; (root, run folder, log folder)."""
    root = tmp_path_factory.mktemp("audit-run")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    central = prepare_deliveries(root, passphrase=PASSPHRASE).central_keyring
    args = ["run", "--deliveries", str(root / "pseudo"), "--reference-date", REFERENCE_DATE]
    args += ["--key-file", str(central), "--out", str(root / "runs"), "--buckets", "4"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    (run_dir,) = [p for p in (root / "runs").iterdir() if (p / "manifest.json").is_file()]
    yield root, run_dir, root / "runs" / "audit-log"
    mp.undo()


def _delivery(root, source):
    return pq.read_table(root / "pseudo" / source / REFERENCE_DATE / "data.parquet")


def expected_counts(root, run_dir) -> dict[str, int]:
    """Records per operation as the count rule says, from the run's inputs and outputs."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for source, c in manifest["counts"]["sources"].items():  # every row reached the run
        assert c["quarantined"] == 0, source
    objections = _delivery(root, "objections")
    all_scope = pc.equal(objections.column("scope"), "all")
    objectors = pc.unique(objections.column("bsn").filter(all_scope))
    counts = {"purpose_check": 1, "exclusion": len(objectors)}
    ingested = set()
    for source in JOIN_SOURCES:
        table = _delivery(root, source)
        subjects = table.column(SOURCES[source].subject)
        if source in PERSON_SOURCES or source == "objections":
            table = table.filter(pc.invert(pc.is_in(subjects, value_set=objectors)))
        if source == "objections":
            table = table.filter(pc.not_equal(table.column("scope"), "all"))
        ingested |= set(table.column(SOURCES[source].subject).to_pylist())
    counts["ingest"] = len(ingested)
    ring = load_keyring(root / "keys" / "central.keyring", PASSPHRASE)
    households = read_run_table(run_dir, "households", ring)
    members = dict(
        zip(
            households.column("household_pid").to_pylist(),
            pc.list_value_length(households.column("member_pids")).to_pylist(),
            strict=True,
        )
    )
    counts["join"] = sum(members.values())
    evaluations = read_run_table(run_dir, "evaluations", ring)
    evaluated = set(evaluations["household_pid"].to_pylist())
    counts["rule_evaluation"] = sum(members[h] for h in evaluated)
    signals = read_run_table(run_dir, "signals.parquet", ring).num_rows
    counts["signal"] = signals
    suppressed = read_run_table(run_dir, "suppressed.parquet", ring).num_rows
    counts["proportionality"] = signals + suppressed
    return counts


def test_the_run_logs_one_record_per_data_subject_per_operation_item(run):
    root, run_dir, log_root = run
    expected = expected_counts(root, run_dir)
    (checkpoint,) = AuditLog(log_root).checkpoints()
    assert checkpoint.batch_id == run_dir.name
    assert checkpoint.body["records_per_operation"] == expected
    assert set(expected) <= set(OPERATIONS)  # the list auditors are given is complete
    assert checkpoint.leaf_count == sum(expected.values())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["audit_records"] == checkpoint.leaf_count


def test_no_record_is_logged_twice_for_the_same_subject_and_item(run):
    _, _, log_root = run
    items = {
        "ingest": "''",
        "rule_evaluation": "''",
        "signal": "json_extract_string(attributes, '$.signal_id')",
        "join": "''",
        "exclusion": "''",
    }
    con = duckdb.connect()
    for name, item in items.items():
        total, distinct = con.execute(
            f"SELECT COUNT(*), COUNT(DISTINCT (data_subject_pid, {item})) "
            f"FROM '{log_root}/segments/*.parquet' WHERE name = '{name}'"
        ).fetchone()
        assert total == distinct > 0, name


def test_every_record_names_the_run_trace_purpose_and_register_version(run):
    _, run_dir, log_root = run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    table = pq.read_table(log_root / "segments" / "segment-00000000.parquet")
    assert set(table.column("run_id").to_pylist()) == {run_dir.name}
    assert len(set(table.column("trace_id").to_pylist())) == 1
    assert set(table.column("processing_activity_id").to_pylist()) == {
        manifest["processing_activity_id"]
    }
    assert set(table.column("register_version").to_pylist()) == {manifest["register_version"]}
    assert table.column("span_id").null_count == 0
    assert len(set(table.column("span_id").to_pylist())) == table.num_rows


def test_span_ids_are_the_documented_sha_256_of_run_operation_and_subject(run):
    """pipelines/audit_records.py: the first 8 bytes of SHA-256(run|operation|key); the key
    is the subject, or the subject and the item (a signal: its id) joined by a NUL."""
    import hashlib

    _, run_dir, log_root = run
    table = pq.read_table(log_root / "segments" / "segment-00000000.parquet").to_pylist()
    checked = set()
    for record in table:
        key = record["data_subject_pid"]
        if record["name"] == "signal":
            key += "\x00" + json.loads(record["attributes"])["signal_id"]
        elif record["name"] not in ("ingest", "join", "exclusion", "rule_evaluation"):
            continue
        text = f"{run_dir.name}|{record['name']}|{key}"
        assert record["span_id"] == hashlib.sha256(text.encode()).digest()[:8], record["name"]
        checked.add(record["name"])
    assert checked == {"ingest", "join", "exclusion", "rule_evaluation", "signal"}


def test_the_run_folder_copy_is_exactly_what_the_log_holds_and_the_log_verifies(run):
    _, run_dir, log_root = run
    copy = pq.read_table(run_dir / RUN_COPY)
    logged = pq.read_table(log_root / "segments" / "segment-00000000.parquet")
    assert copy.equals(logged.select(copy.column_names))
    entry = json.loads((run_dir / LOG_ENTRY).read_text())
    assert entry["leaf_count"] == copy.num_rows and entry["audit_log"] == "audit-log"
    report = verify_log(log_root)
    assert report.ok, report.problems
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["audit", "verify", "--log", str(log_root.parent)]) == 0
    assert ": OK" in out.getvalue()
    # What the check could not rule out is said with the OK, until the auditor anchors it.
    assert "not pinned    the keys came with the log" in out.getvalue()
    kept = log_root / "checkpoints" / "00000000.json"
    assert "not anchored  no kept checkpoint: " in out.getvalue() and str(kept) in out.getvalue()
    out = io.StringIO()
    pinned = ["--public-key", str(log_root / "public_key.pem"), "--trusted-checkpoint", str(kept)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["audit", "verify", "--log", str(log_root), *pinned]) == 0
    assert ": OK" in out.getvalue() and "not pinned" not in out.getvalue()
    assert "not anchored" not in out.getvalue()


def test_a_signalled_subject_has_a_trail_from_ingest_to_signal_with_its_legal_bases(run):
    _, _, log_root = run
    con = duckdb.connect()
    (subject,) = con.execute(
        f"SELECT data_subject_pid FROM '{log_root}/segments/*.parquet' "
        "WHERE name = 'signal' ORDER BY leaf_index LIMIT 1"
    ).fetchone()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "trail", subject, "--log", str(log_root), "--format", "json"]) == 0
    trail = [json.loads(line) for line in out.getvalue().splitlines()]
    names = {r["name"] for r in trail}
    assert {"ingest", "join", "rule_evaluation", "proportionality", "signal"} <= names
    (ingest,) = [json.loads(r["attributes"]) for r in trail if r["name"] == "ingest"]
    assert "brp" in ingest["sources"]  # every source read for them, each with its basis
    assert all(basis["legal_basis"] for basis in ingest["sources"].values())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args = ["audit", "query", "--log", str(log_root), "--legal-basis", "wet brp"]
        assert main(args + ["--count-by", "name", "--format", "json"]) == 0
    # The brp ingest records, the run's purpose check and the signals (whose rules read BRP
    # fields such as age) cite the Wet BRP; nothing else does.
    names = [json.loads(line)["name"] for line in out.getvalue().splitlines()]
    assert names == ["ingest", "purpose_check", "signal"]


def test_each_signal_record_holds_its_checks_and_fields_with_source_and_legal_basis(run):
    _, _, log_root = run
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT attributes FROM '{log_root}/segments/*.parquet' WHERE name = 'signal'"
    ).fetchall()
    assert rows
    for (text,) in rows:
        attrs = json.loads(text)
        assert attrs["rule_id"] and attrs["rule_version"] and attrs["parameter_version"]
        # Every proportionality check, each passed (a signal is only made when all pass).
        assert set(attrs["checks"]) >= {"necessity", "minimum_amount", "confidence", "fatigue"}
        assert {c["outcome"] for c in attrs["checks"].values()} == {"pass"}, attrs["checks"]
        # Every column the rule read, with its source fields and their legal basis.
        assert attrs["fields_used"], attrs
        # Those of its own rule: the columns its necessity check was judged on.
        assert sorted(attrs["fields_used"]) == attrs["checks"]["necessity"]["fields"], attrs
        for column, sources in attrs["fields_used"].items():
            assert sources, column
            for source in sources:
                assert "." in source["field"] and source["legal_basis"], (column, source)
    zorgtoeslag = [json.loads(t) for (t,) in rows if '"scheme":"zorgtoeslag"' in t]
    income = zorgtoeslag[0]["fields_used"]["combined_income"]
    assert {s["field"] for s in income} == {"tax.assessed_income"}


def _members(households, wanted: set[str]) -> list[str]:
    """The member pseudonyms of the households in `wanted`."""
    pairs = zip(
        households["household_pid"].to_pylist(), households["member_pids"].to_pylist(), strict=True
    )
    return [m for h, ms in pairs if h in wanted for m in ms]


def _query_json(log_root, *args) -> list[dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "query", "--log", str(log_root), *args, "--format", "json"]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_query_by_scheme_finds_the_rule_evaluations_that_list_it(run):
    _, run_dir, log_root = run
    ring = load_keyring(run_dir.parent.parent / "keys" / "central.keyring", PASSPHRASE)
    evaluations = read_run_table(run_dir, "evaluations", ring)
    households = read_run_table(run_dir, "households", ring)
    kgb = evaluations.filter(pc.equal(evaluations["scheme"], "kindgebonden_budget"))
    members = set(_members(households, set(kgb["household_pid"].to_pylist())))
    asked = ["--scheme", "kindgebonden_budget", "--operation", "rule_evaluation"]
    found = {r["data_subject_pid"] for r in _query_json(log_root, *asked, "--limit", "100000")}
    assert found == members and members
    # Counted for one scheme, a rule evaluation counts under that scheme's outcome (its
    # record's own status says whether any scheme held).
    entitled = kgb.filter(pc.fill_null(kgb["entitled"], False))
    expected = len(_members(households, set(entitled["household_pid"].to_pylist())))
    counts = {
        r["status"]: r["records"] for r in _query_json(log_root, *asked, "--count-by", "status")
    }
    assert counts == {"entitled": expected, "not_entitled": len(members) - expected}
    assert 0 < expected < len(members)
    # And filtered by status, the same outcome selects.
    rows = _query_json(log_root, *asked, "--status", "entitled", "--limit", "100000")
    assert len(rows) == expected
    # Counted by scheme under a scheme filter, every record counts under that scheme.
    by_scheme = _query_json(log_root, *asked, "--count-by", "scheme")
    assert by_scheme == [{"scheme": "kindgebonden_budget", "records": len(members)}]


def _tampered_copy(run, tmp_path) -> Path:
    _, _, log_root = run
    copy = tmp_path / "runs"
    shutil.copytree(log_root.parent, copy)
    return copy


def _verify(runs: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["audit", "verify", "--log", str(runs)])
    return code, err.getvalue()


def test_an_emptied_log_fails_and_the_published_run_names_its_checkpoint(run, tmp_path):
    """Removing every checkpoint and segment leaves nothing to check signatures on; the run
    published beside the log still says where its records were."""
    runs = _tampered_copy(run, tmp_path)
    for path in [*(runs / "audit-log" / "checkpoints").iterdir()]:
        path.unlink()
    for path in [*(runs / "audit-log" / "segments").iterdir()]:
        path.unlink()
    code, err = _verify(runs)
    assert code == 1
    assert "the log holds no checkpoint, so nothing in it is signed" in err
    run_id = run[1].name
    assert f"run {run_id}: its records were logged in checkpoint 0" in err


def test_a_run_whose_checkpoint_was_rewritten_or_a_replaced_public_key_fails(run, tmp_path):
    from privacy.audit.signing import Signer, public_pem
    from privacy.keys import Keyring

    runs = _tampered_copy(run, tmp_path)
    entry_path = runs / run[1].name / LOG_ENTRY
    entry = json.loads(entry_path.read_text())
    entry["root_hash"] = "A" * 43 + "="
    entry_path.write_text(json.dumps(entry))
    ring = Keyring()
    ring.add("audit-signing")
    (runs / "audit-log" / "public_key.pem").write_bytes(public_pem(Signer(ring).public))
    code, err = _verify(runs)
    assert code == 1
    assert "is not the one the run was published with" in err
    assert "public_key.pem: holds key" in err and "the published key was replaced" in err
    (published,) = (runs / "audit-log" / "public_keys").iterdir()
    published.write_bytes(public_pem(Signer(ring).public))
    code, err = _verify(runs)
    assert f"public_keys/{published.name}: holds key" in err and "not the key its name" in err


def test_verify_says_which_runs_it_checked_and_names_one_without_its_log_entry(run, tmp_path):
    """A run's log entry is the anchor that shows checkpoints removed after it. Removing the
    entry is no proof of tampering (a run copied from elsewhere has none either), but the
    auditor is told which published runs verify could not use."""
    runs = _tampered_copy(run, tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "verify", "--log", str(runs)]) == 0
    assert "  runs          1 published run(s) beside the log name the checkpoint" in out.getvalue()
    assert "no entry" not in out.getvalue()
    (runs / run[1].name / LOG_ENTRY).unlink()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["audit", "verify", "--log", str(runs)]) == 0
    assert f"  no entry      published run(s) {run[1].name} have no audit/_log_entry.json" in (
        out.getvalue()
    )
    assert "  runs  " not in out.getvalue()


def test_a_run_copied_in_from_another_log_is_no_alarm(run, tmp_path):
    """A run folder names the log its records are in (log_id); one of another programme's
    log, copied beside this one, is not taken for a checkpoint this log lost."""
    runs = _tampered_copy(run, tmp_path)
    other = runs / "2024-12-01-fromelsewhere"
    shutil.copytree(run[1], other)
    entry = json.loads((other / LOG_ENTRY).read_text())
    assert entry["log_id"] == AuditLog(runs / "audit-log").latest().body["log_id"]
    entry.update(log_id="another log", checkpoint="00000007.json")
    (other / LOG_ENTRY).write_text(json.dumps(entry))
    assert _verify(runs) == (0, "")
    del entry["log_id"]  # an entry that cannot say: taken as this log's
    (other / LOG_ENTRY).write_text(json.dumps(entry))
    code, err = _verify(runs)
    assert code == 1 and "run 2024-12-01-fromelsewhere: its records were logged in" in err


def test_a_report_takes_the_central_keyring_from_the_configuration(run, tmp_path, monkeypatch):
    """As feedback does: an operator with keys.central_keyring set need not repeat it."""
    root, run_dir, _ = run
    runs = _tampered_copy(run, tmp_path)  # the report logs its reading: not in the shared log
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    for name in ("SIGNALS_CONFIG", "SIGNALS_KEYS_CENTRAL_KEYRING"):
        monkeypatch.delenv(name, raising=False)
    argv = ["report", "--run", str(runs / run_dir.name), "--out", str(tmp_path / "report")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 2
    assert "is encrypted; give the central keyring" in err.getvalue()
    keyring = root / "keys" / "central.keyring"
    (tmp_path / "signals.toml").write_text(f'[keys]\ncentral_keyring = "{keyring}"\n')
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    assert (tmp_path / "report" / "report.html").is_file()
