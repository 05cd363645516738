"""The auditor's commands on a real log: trail, query, prove + check-proof, export.

The log is built from the pipeline's own audit_batch records over three runs, and the
commands are run through the `signals` entry point as an auditor would.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_audit_log import SUBJECTS, pids, run_records

from flows.cli import main
from privacy.audit.log import AuditLog
from privacy.audit.signing import Signer
from privacy.keys import Keyring

RUNS = ("2025-01-01-run", "2025-02-01-run", "2025-03-01-run")


@pytest.fixture(scope="module")
def log_root(tmp_path_factory):
    ring = Keyring()
    ring.add("audit-signing")
    root = tmp_path_factory.mktemp("audit") / "audit-log"
    for run in RUNS:
        AuditLog(root).append(run_records(run), run, Signer(ring))
    return root


def signals(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse refusing an argument
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_the_trail_of_a_subject_lists_every_operation_of_every_run(log_root):
    subject = pids(SUBJECTS)[5].as_py()
    code, out, _ = signals("audit", "trail", subject, "--log", str(log_root))
    assert code == 0
    assert out.splitlines()[0].startswith(f"data subject {subject}: 12 audit record(s)")
    code, out, _ = signals("audit", "trail", subject, "--log", str(log_root), "--format", "json")
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 12
    assert {r["data_subject_pid"] for r in records} == {subject}
    assert {(r["run_id"], r["name"]) for r in records} == {
        (run, op) for run in RUNS for op in ("ingest", "join", "rule_evaluation")
    }
    assert all(len(base64.b64decode(r["span_id"], validate=True)) == 8 for r in records)


def test_the_log_folder_or_its_parent_both_work(log_root):
    subject = pids(1)[0].as_py()
    assert signals("audit", "trail", subject, "--log", str(log_root.parent))[0] == 0
    code, _, err = signals("audit", "trail", subject, "--log", str(log_root / "segments"))
    assert code == 2 and "no audit log here" in err


def test_query_filters_by_run_scheme_operation_and_date_and_counts(log_root):
    args = ["audit", "query", "--log", str(log_root), "--format", "json", "--limit", "1000"]
    code, out, _ = signals(*args, "--run", RUNS[1], "--operation", "rule_evaluation")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == SUBJECTS
    assert {r["run_id"] for r in rows} == {RUNS[1]}
    code, out, _ = signals(*args, "--scheme", "zorgtoeslag", "--status", "entitled")
    assert len(out.splitlines()) == 3 * len(range(0, SUBJECTS, 3))
    code, out, _ = signals(*args, "--purpose", "no-such-activity")
    assert out == ""
    code, out, _ = signals(*args, "--since", "1999-01-01", "--until", "2999-12-31")
    assert len(out.splitlines()) == 3 * 4 * SUBJECTS
    code, out, _ = signals(*args, "--until", "1999-12-31")
    assert out == ""
    code, out, _ = signals(
        "audit", "query", "--log", str(log_root), "--count-by", "run_id,name", "--format", "json"
    )
    counts = [json.loads(line) for line in out.splitlines()]
    assert {(c["run_id"], c["name"], c["records"]) for c in counts} == {
        (run, op, n)
        for run in RUNS
        for op, n in (("ingest", 2 * SUBJECTS), ("join", SUBJECTS), ("rule_evaluation", SUBJECTS))
    }


def test_query_counting_by_a_field_twice_is_a_usage_error(log_root):
    code, _, err = signals("audit", "query", "--log", str(log_root), "--count-by", "name,name")
    assert code == 2 and "count by each field once" in err


def test_query_by_an_unknown_grouping_is_a_usage_error(log_root):
    code, _, err = signals("audit", "query", "--log", str(log_root), "--count-by", "attributes")
    assert code == 2 and "cannot count by attributes" in err


def test_a_proof_bundle_checks_out_for_an_outsider_and_fails_when_tampered(log_root, tmp_path):
    subject = pids(SUBJECTS)[7].as_py()
    bundle = tmp_path / "proof.json"
    code, out, _ = signals("audit", "prove", subject, "--log", str(log_root), "--out", str(bundle))
    assert code == 0 and "12 record(s)" in out
    key = log_root / "public_key.pem"
    code, out, _ = signals("audit", "check-proof", str(bundle), "--public-key", str(key))
    assert code == 0 and "OK: 12 record(s)" in out

    doc = json.loads(bundle.read_text())
    doc["records"][4]["record"]["status"] = "entitled"  # claim another outcome
    doc["records"][4]["record"]["status"] += "!"
    bundle.write_text(json.dumps(doc))
    code, _, err = signals("audit", "check-proof", str(bundle), "--public-key", str(key))
    assert code == 1 and "inclusion proof does not lead to the signed root" in err

    doc = json.loads(bundle.read_text())
    doc["records"][4]["record"]["status"] = doc["records"][4]["record"]["status"][:-1]
    doc["checkpoints"][-1]["root_hash"] = doc["checkpoints"][0]["root_hash"]
    bundle.write_text(json.dumps(doc))
    code, _, err = signals("audit", "check-proof", str(bundle), "--public-key", str(key))
    assert code == 1 and "signature does not verify" in err


def test_a_log_that_no_longer_holds_up_gives_no_proof(log_root, tmp_path):
    """A record altered after it was signed: `prove` refuses rather than hand out a bundle
    that fails in its reader's hands; `check-proof` without a pinned key says what it lacks."""
    import shutil

    copy = tmp_path / "audit-log"
    shutil.copytree(log_root, copy)
    subject = pids(SUBJECTS)[3].as_py()
    path = copy / "segments" / "segment-00000001.parquet"
    table = pq.read_table(path)
    subjects = table.column("data_subject_pid").to_pylist()
    row = subjects.index(subject)
    statuses = table.column("status").to_pylist()
    statuses[row] = "altered"
    i = table.schema.get_field_index("status")
    pq.write_table(table.set_column(i, "status", pa.array(statuses)), path)
    code, _, err = signals("audit", "prove", subject, "--log", str(copy))
    assert code == 2 and "the audit log is not as signed (segment-00000001.parquet: not" in err
    # Reading it still works, with a warning that what is shown may be altered.
    code, out, err = signals("audit", "trail", subject, "--log", str(copy))
    assert code == 0 and "altered" in out
    assert err.startswith(f"WARNING: {copy} is not as signed (segment-00000001.parquet: not")
    code, out, err = signals("audit", "trail", subject, "--log", str(log_root))
    assert code == 0 and err == ""
    # A batch removed from the middle (its checkpoint and segment): its records are not read.
    shutil.rmtree(copy)
    shutil.copytree(log_root, copy)
    (copy / "checkpoints" / "00000001.json").unlink()
    (copy / "segments" / "segment-00000001.parquet").unlink()
    code, out, err = signals("audit", "trail", subject, "--log", str(copy))
    assert "WARNING" in err and "checkpoint 00000001.json is missing" in err
    bundle = tmp_path / "proof.json"
    assert signals("audit", "prove", subject, "--log", str(log_root), "--out", str(bundle))[0] == 0
    code, out, _ = signals("audit", "check-proof", str(bundle))
    assert code == 0 and "not pinned: whoever made the bundle chose those keys" in out
    assert "inclusion only" in out


def test_a_subjects_records_deleted_from_one_segment_give_no_shorter_proof(log_root, tmp_path):
    """Their records in the other segments still prove: `prove` must not hand out a bundle
    that checks out and lacks the deleted ones. A segment gone or cut short is one line to
    every reader, not a traceback."""
    import shutil

    copy = tmp_path / "audit-log"
    shutil.copytree(log_root, copy)
    subject = pids(SUBJECTS)[3].as_py()
    path = copy / "segments" / "segment-00000002.parquet"
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table["data_subject_pid"], subject)), path)
    code, _, err = signals("audit", "prove", subject, "--log", str(copy))
    assert code == 2 and "segment-00000002.parquet: not the file checkpoint 2 signed" in err
    assert "no proof from it, which could leave records out" in err

    path.write_bytes(path.read_bytes()[:100])  # cut short
    for args in (["query", "--count-by", "name"], ["trail", subject]):
        code, _, err = signals("audit", *args, "--log", str(copy))
        assert code == 2 and "a segment of the audit log cannot be read" in err, args
    path.unlink()
    code, _, err = signals("audit", "query", "--log", str(copy), "--count-by", "name")
    assert "segment-00000002.parquet: missing (checkpoint 2 signed it)" in err
    assert code == 2 and "a segment of the audit log cannot be read" in err
    code, _, err = signals("audit", "prove", subject, "--log", str(copy))
    assert code == 2 and "missing (checkpoint 2 signed it)" in err


def test_a_bundle_signed_by_another_key_fails_against_the_pinned_one(log_root, tmp_path):
    subject = pids(1)[0].as_py()
    code, out, _ = signals("audit", "prove", subject, "--log", str(log_root))
    other = Keyring()
    other.add("audit-signing")
    from privacy.audit.signing import public_pem

    pem = tmp_path / "other.pem"
    pem.write_bytes(public_pem(Signer(other).public))
    bundle = tmp_path / "b.json"
    bundle.write_text(out)
    code, _, err = signals("audit", "check-proof", str(bundle), "--public-key", str(pem))
    assert code == 1 and "not a trusted key" in err


def test_proving_a_subject_the_log_does_not_know_is_a_usage_error(log_root):
    nobody = "d1." + "p" * 32
    code, _, err = signals("audit", "prove", nobody, "--log", str(log_root))
    assert code == 2 and f"no audit record about {nobody}" in err


def test_export_copies_a_verifiable_log_or_the_selected_records(log_root, tmp_path):
    full = tmp_path / "full"
    code, out, _ = signals("audit", "export", "--log", str(log_root), "--to", str(full))
    assert code == 0 and "the whole log" in out
    assert signals("audit", "verify", "--log", str(full))[0] == 0
    kept = full / "latest-checkpoint.json"
    assert (
        signals("audit", "verify", "--log", str(log_root), "--trusted-checkpoint", str(kept))[0]
        == 0
    )

    part = tmp_path / "part"
    code, out, _ = signals(
        "audit", "export", "--log", str(log_root), "--to", str(part), "--run", RUNS[2]
    )
    records = pq.read_table(part / "records.parquet")
    assert code == 0 and records.num_rows == 4 * SUBJECTS
    assert f"{4 * SUBJECTS:,} selected record(s)" in out
    assert set(records.column("run_id").to_pylist()) == {RUNS[2]}
    leaves = records.column("leaf_index").to_pylist()
    assert leaves == sorted(leaves)  # in log order, as `audit query` lists them
    from privacy.audit.query import Filters, select

    selected, _ = select(log_root, Filters(run=RUNS[2]))
    assert records.column("attributes").equals(selected.column("attributes"))
    assert records.schema.field("span_id").type in (pa.binary(8), pa.binary())
    code, _, err = signals("audit", "export", "--log", str(log_root), "--to", str(part))
    assert code == 2 and "not empty" in err
    # An export of selected records is not a log: the commands say so instead of failing
    # on segments it never had.
    for command in ("verify", "trail", "query"):
        args = ["audit", command, "--log", str(part)]
        code, _, err = signals(*args, *([pids(1)[0].as_py()] if command == "trail" else []))
        assert code == 2 and "an export of selected records, not a log" in err, command


def test_an_auditor_is_told_what_went_wrong_in_one_line(log_root, tmp_path):
    log = str(log_root)
    # A number is never a subject (it may be a BSN) and is not quoted back.
    for number in ("123456782", "1234.56.782", "123 456 782"):
        code, _, err = signals("audit", "trail", number, "--log", log)
        assert code == 2 and "by pseudonym" in err and number not in err, number
    code, _, err = signals("audit", "query", "--log", log, "--since", "123456782")
    assert code == 2 and "not an ISO date" in err and "123456782" not in err
    code, out, _ = signals("audit", "trail", "d1." + "p" * 32, "--log", log)
    assert code == 0 and "0 audit record(s)" in out and "pseudonym as the run made it" in out
    # A pseudonym mistyped or cut short, or a body one, would find nothing: refused, saying why.
    subject = pids(1)[0].as_py()
    for wrong, why in (
        (subject[:-1], "not a pseudonym as the log holds them"),
        (subject.upper(), "not a pseudonym as the log holds them"),
        (" " + subject, "not a pseudonym as the log holds them"),
        ("b1." + subject[3:], "is a body pseudonym (b<n>.…), which never reaches the log"),
    ):
        code, _, err = signals("audit", "trail", wrong, "--log", log)
        assert code == 2 and why in err, wrong
    assert signals("audit", "query", "--log", log, "--limit", "-1")[0] == 2
    code, out, _ = signals(
        "audit", "query", "--log", log, "--run", "no-such-run", "--count-by", "name"
    )
    assert code == 0 and out.startswith("no record matches (the values the log holds")
    for bad in (["--operation", "Signal"], ["--since", "2025-03-02", "--until", "2025-03-01"]):
        code, _, err = signals("audit", "query", "--log", log, *bad)
        assert code == 2 and ("no operation the log records" in err or "no day is in" in err)
    code, out, _ = signals("audit", "query", "--log", log, "--count-by", "run_id,name")
    assert code == 0 and out.splitlines()[0] == "run_id  name  records"
    # Files that are not what the option wants are usage errors naming the file (exit 2).
    text = tmp_path / "notes.md"
    text.write_text("# not a key, not a bundle\n")
    code, _, err = signals("audit", "verify", "--log", log, "--public-key", str(text))
    assert code == 2 and f"{text}: not a PEM public key" in err
    code, _, err = signals("audit", "check-proof", str(text))
    assert code == 2 and f"{text}: not a proof bundle" in err and "not JSON" in err
    for doc in ({}, {"checkpoints": [], "records": [], "subject": "d1.x"}):
        text.write_text(json.dumps(doc))
        code, _, err = signals("audit", "check-proof", str(text))
        assert code == 2 and "lacks checkpoints, records or subject" in err
    # A bundle with a part cut out is not one either (not a traceback).
    bundle = tmp_path / "proof.json"
    subject = pids(1)[0].as_py()
    assert signals("audit", "prove", subject, "--log", log, "--out", str(bundle))[0] == 0
    cut = json.loads(bundle.read_text())
    del cut["public_keys"]
    text.write_text(json.dumps(cut))
    code, _, err = signals("audit", "check-proof", str(text))
    assert code == 2 and f"{text}: not a proof bundle" in err


def test_run_as_a_module_a_known_error_is_one_line_too(tmp_path):
    """`python -m flows.cli` ran this file as a second module, whose error classes the
    others did not raise: a missing log was a traceback with exit 1, the code of tampering."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "audit", "verify", "--log", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no audit log here" in done.stderr and "Traceback" not in done.stderr
