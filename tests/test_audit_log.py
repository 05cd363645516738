"""The audit log on real files: appends across runs, idempotent reruns, and tampering caught.

Records are made with the pipeline's own audit_batch; the log is written, read and
verified through the real Parquet files, checkpoints and Ed25519 keys, and tampered
with the way someone with write access to the folder would: with pyarrow or raw bytes.
Each tampering must make `signals audit verify` exit 1 and name the problem.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from pipelines.audit_records import AUDIT_SCHEMA, AuditContext, audit_batch
from privacy.audit import merkle
from privacy.audit.events import append_events, deletion_records
from privacy.audit.leaf import leaf_bytes, leaf_hashes
from privacy.audit.log import (
    LOG_ENTRY,
    RUN_COPY,
    AuditLog,
    AuditLogError,
    append_run,
    segment_name,
)
from privacy.audit.parts import write_part
from privacy.audit.signing import Signer
from privacy.audit.signing import public_pem as signing_public_pem
from privacy.audit.verify import verify_log
from privacy.keys import Keyring

SUBJECTS = 40


def pids(n: int) -> pa.Array:
    """n distinct pseudonyms of the form the pipeline uses (letters a-p only)."""
    letters = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
    return pa.array(
        [
            f"d1.{hashlib.sha256(str(i).encode()).hexdigest()[:32].translate(letters)}"
            for i in range(n)
        ]
    )


def run_records(run_id: str, n: int = SUBJECTS) -> pa.Table:
    """Ingest (two sources), join and rule evaluation records of n subjects, as a run makes them."""
    ctx = AuditContext(run_id, "proactive-entitlement-signalling", "2025.1")
    subjects = pids(n)
    batches = [
        audit_batch(ctx, "ingest", subjects, "accepted", f'{{"source":"{s}"}}', pa.array([s] * n))
        for s in ("brp", "tax")
    ]
    batches.append(audit_batch(ctx, "join", subjects, "joined", '{"household_pid":"d1.x"}'))
    status = pa.array(["entitled" if i % 3 == 0 else "not_entitled" for i in range(n)])
    batches.append(
        audit_batch(ctx, "rule_evaluation", subjects, status, '{"scheme":"zorgtoeslag"}')
    )
    return pa.Table.from_batches(batches, schema=AUDIT_SCHEMA)


@pytest.fixture
def signer():
    ring = Keyring()
    ring.add("audit-signing")
    return Signer(ring)


@pytest.fixture
def log_root(tmp_path, signer):
    root = tmp_path / "audit-log"
    log = AuditLog(root)
    for i in range(3):
        log.append(run_records(f"2025-0{i + 1}-01-run"), f"2025-0{i + 1}-01-run", signer)
    return root


def verify_cli(root, *extra) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["audit", "verify", "--log", str(root), *extra])
    return code, err.getvalue()


def rewrite(path, table: pa.Table) -> None:
    pq.write_table(table, path)


# -- what an untouched log looks like ---------------------------------------------------------


def test_three_runs_make_a_chain_of_signed_checkpoints_that_verifies(log_root):
    log = AuditLog(log_root)
    cps = log.checkpoints()
    per_run = 4 * SUBJECTS
    assert [c.sequence for c in cps] == [0, 1, 2]
    assert [(c.first_leaf, c.tree_size) for c in cps] == [
        (0, per_run),
        (per_run, 2 * per_run),
        (2 * per_run, 3 * per_run),
    ]
    for before, after in zip(cps, cps[1:], strict=False):
        assert merkle.verify_consistency(
            before.tree_size, after.tree_size, before.root, after.root, after.consistency_proof
        )
    report = verify_log(log_root)
    assert report.ok, report.problems
    assert report.records == 3 * per_run and report.consistency_proofs == 2
    assert report.inclusion_proofs > 0
    assert verify_cli(log_root) == (0, "")
    assert (log_root / "public_key.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    # Segments name data subjects: owner and group (the auditors) only; checkpoints are public.
    import stat

    for segment in log.committed_segments():
        assert stat.S_IMODE(segment.stat().st_mode) == 0o640, segment
    assert stat.S_IMODE(log.checkpoint_files()[0].stat().st_mode) & 0o004


def test_verification_tells_its_progress_up_to_the_signed_size(log_root, monkeypatch):
    seen = []
    report = verify_log(log_root, progress=lambda done, total: seen.append((done, total)))
    total = AuditLog(log_root).latest().tree_size
    assert report.ok and len(seen) >= 3  # at least once per segment
    assert seen[-1] == (total, total) and {t for _, t in seen} == {total}
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    # The command line says it on stderr (here at every step; by default every 5 s).
    from flows import cli_audit

    monkeypatch.setattr(cli_audit, "PROGRESS_EVERY", 0)
    code, err = verify_cli(log_root)
    assert code == 0 and f"verifying: {total:,} of {total:,} records checked (100%)" in err


def test_the_root_is_the_rfc_6962_root_of_the_canonical_leaves(log_root):
    log = AuditLog(log_root)
    table = pa.concat_tables(pq.read_table(p) for p in log.committed_segments())
    rows = table.to_pylist()
    leaves = [leaf_bytes(r["leaf_index"], r) for r in rows]
    tree = merkle.Tree(0, {}, b"".join(merkle.leaf_hash(x) for x in leaves))
    assert tree.root() == log.latest().root
    assert [r["leaf_index"] for r in rows] == list(range(len(rows)))


@pytest.fixture(params=["gathered in C", "joined by Arrow"])
def leaf_path(request, monkeypatch):
    """Both ways leaf_hashes builds a leaf: gathered by the C extension, or joined column-wise
    for sha256.slices (where the extension was not built)."""
    from privacy.audit import sha256

    if request.param == "gathered in C" and not sha256.NATIVE:
        pytest.skip("the C extension was not built here")
    if request.param == "joined by Arrow":
        monkeypatch.setattr(sha256, "NATIVE", False)
    return request.param


@pytest.mark.usefixtures("leaf_path")
def test_vectorised_leaf_bytes_equal_the_reference_with_nulls_and_unicode():
    records = run_records("r").to_pylist()[:3]
    records[0]["parent_span_id"] = None
    records[1]["attributes"] = '{"naam":"Zoë Ünal","bedrag":1.5}'
    records[2]["data_subject_pid"] = None
    table = pa.Table.from_pylist(records, schema=AUDIT_SCHEMA)
    expected = b"".join(merkle.leaf_hash(leaf_bytes(7 + i, r)) for i, r in enumerate(records))
    assert leaf_hashes(table, 7) == expected
    assert leaf_hashes(table, 7, chunk_rows=2) == expected


def _random_record(rng: random.Random, nulls: bool) -> dict:
    def maybe(value, p=0.2):
        return None if nulls and rng.random() < p else value

    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randrange(10**12))
    return {
        "trace_id": maybe(rng.randbytes(16)),
        "span_id": maybe(rng.randbytes(8), 0.05),
        "parent_span_id": maybe(rng.randbytes(8)),
        "name": maybe(rng.choice(["ingest", "join", "Zoë"])),
        "status": maybe(rng.choice(["ok", "", "x" * rng.randrange(5)])),
        "start_time": maybe(at),
        "end_time": maybe(at + dt.timedelta(seconds=1)),
        "run_id": maybe("r"),
        "processing_activity_id": maybe(str(rng.randrange(3))),
        "register_version": rng.choice(["", "v1"]),
        "data_subject_pid": maybe("d1." + "a" * rng.randrange(3)) if nulls else "d1.abc",
        "attributes": maybe('{"a":"ü"}' * rng.randrange(3)),
    }


@pytest.mark.usefixtures("leaf_path")
@pytest.mark.parametrize("nulls", [True, False])
def test_leaf_hashes_equal_the_reference_whichever_way_the_columns_are_built(nulls):
    # leaf_hashes builds fixed-width neighbours as one block, low-cardinality ones as one
    # code and the rest element-wise: every path, with and without nulls, equal-length or
    # not, over chunk and batch edges, must give the reference's bytes.
    rng = random.Random(6962)
    for _ in range(60):
        records = [_random_record(rng, nulls) for _ in range(rng.randrange(0, 30))]
        table = pa.Table.from_pylist(records, schema=AUDIT_SCHEMA)
        first = rng.randrange(2**40)
        expected = b"".join(
            merkle.leaf_hash(leaf_bytes(first + i, r)) for i, r in enumerate(records)
        )
        for chunk_rows in (1, 4, 100_000):
            assert leaf_hashes(table, first, chunk_rows) == expected
        if len(records) > 3:
            batches = pa.concat_tables([table.slice(0, 2), table.slice(2)])
            assert leaf_hashes(batches.slice(1), first + 1) == expected[32:]


@pytest.mark.usefixtures("leaf_path")
def test_leaf_hashes_do_not_depend_on_how_the_columns_are_typed_or_batched():
    rng = random.Random(16)
    records = [_random_record(rng, nulls=True) for _ in range(50)]
    for record in records:  # whole milliseconds, so a millisecond column holds them
        for name in ("start_time", "end_time"):
            if record[name] is not None:
                record[name] = record[name].replace(
                    microsecond=record[name].microsecond // 1000 * 1000
                )
    table = pa.Table.from_pylist(records, schema=AUDIT_SCHEMA)
    expected = b"".join(merkle.leaf_hash(leaf_bytes(5 + i, r)) for i, r in enumerate(records))

    def retyped(name: str, values) -> pa.Table:
        return table.set_column(table.schema.get_field_index(name), name, values)

    variants = {
        "dictionary name": retyped("name", table.column("name").dictionary_encode()),
        "string_view status": retyped("status", table.column("status").cast(pa.string_view())),
        "large_string attributes": retyped(
            "attributes", table.column("attributes").cast(pa.large_string())
        ),
        "milliseconds elsewhere": retyped(
            "start_time", table.column("start_time").cast(pa.timestamp("ms", "Europe/Amsterdam"))
        ),
        "one-record batches": pa.Table.from_batches(table.to_batches(max_chunksize=1)),
        "columns reordered": table.select(list(reversed(table.column_names))),
    }
    for label, variant in variants.items():
        assert leaf_hashes(variant, 5) == expected, label


@pytest.mark.usefixtures("leaf_path")
def test_leaf_hashes_of_many_distinct_values_in_coded_columns():
    # More combinations of name, status and run than are merged into one code.
    rng = random.Random(1)
    records = [_random_record(rng, nulls=False) for _ in range(300)]
    for i, record in enumerate(records):
        record.update(name=f"n{i}", status=f"s{i}", run_id=f"r{i}")
    table = pa.Table.from_pylist(records, schema=AUDIT_SCHEMA)
    expected = b"".join(merkle.leaf_hash(leaf_bytes(i, r)) for i, r in enumerate(records))
    assert leaf_hashes(table, 0) == expected


def test_appending_a_run_again_changes_nothing(log_root, signer):
    log = AuditLog(log_root)
    before = sorted(p.read_bytes() for p in log.checkpoint_files())
    result = log.append(run_records("2025-02-01-run"), "2025-02-01-run", signer)
    assert not result.appended and result.checkpoint.sequence == 1
    assert sorted(p.read_bytes() for p in log.checkpoint_files()) == before


def test_records_with_the_same_span_id_are_logged_once(tmp_path, signer):
    records = run_records("r")
    twice = pa.concat_tables([records, records.slice(0, 10)])
    cp = AuditLog(tmp_path / "log").append(twice, "r", signer).checkpoint
    assert cp.leaf_count == records.num_rows


# -- tampering ----------------------------------------------------------------------------------


def _segment(root, sequence=1):
    return root / "segments" / segment_name(sequence)


def test_flipping_one_byte_of_a_segment_is_caught(log_root):
    path = _segment(log_root)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, err = verify_cli(log_root)
    assert code == 1
    assert segment_name(1) in err.splitlines()[1]


def test_flipping_a_byte_of_a_record_value_names_that_record(log_root):
    path = _segment(log_root)
    table = pq.read_table(path)
    attrs = table.column("attributes").to_pylist()
    attrs[17] = attrs[17].replace("brp", "brq")
    table = table.set_column(
        table.schema.get_field_index("attributes"), "attributes", pa.array(attrs)
    )
    rewrite(path, table)
    code, err = verify_cli(log_root)
    first = err.splitlines()[1]
    leaf = 4 * SUBJECTS + 17
    assert code == 1
    assert f"leaf {leaf} ({segment_name(1)} row 17" in first and "record altered" in first


def test_a_big_segment_is_verified_in_worker_processes_with_the_same_findings(
    tmp_path, signer, monkeypatch
):
    from privacy.audit import log as audit_log
    from privacy.audit import verify

    monkeypatch.setattr(audit_log, "CHUNK_ROWS", 7)  # row groups of 7: work for every worker
    root = tmp_path / "audit-log"
    for run in ("2025-01-01-run", "2025-02-01-run"):
        AuditLog(root).append(run_records(run), run, signer)
    here = verify_log(root, seed=3)
    monkeypatch.setattr(verify, "PARALLEL_RECORDS", 1)
    monkeypatch.setattr(verify, "cores", lambda: 2)  # workers even on a 1-core machine
    there = verify_log(root, seed=3)
    assert here.ok and there.ok, there.problems
    assert (there.records, there.inclusion_proofs) == (here.records, here.inclusion_proofs)
    assert there.records == 8 * SUBJECTS and there.inclusion_proofs >= 12

    path = _segment(root)
    table = pq.read_table(path)
    attrs = table.column("attributes").to_pylist()
    attrs[100] = attrs[100].replace("}", ',"x":1}', 1)
    index = table.schema.get_field_index("attributes")
    pq.write_table(table.set_column(index, "attributes", pa.array(attrs)), path, row_group_size=7)
    report = verify_log(root)
    leaf = 4 * SUBJECTS + 100
    assert f"leaf {leaf} ({segment_name(1)} row 100" in report.problems[0]
    assert "record altered" in report.problems[0]


def test_a_hashing_process_that_dies_leaves_the_log_not_judged(tmp_path, signer, monkeypatch):
    # Killed as an out-of-memory kill would be: verification cannot say the log holds, nor
    # that it was tampered with (exit 1); it says it could not finish (exit 3).
    from flows.faults import FAULT_ENV
    from privacy.audit import log as audit_log
    from privacy.audit import verify

    monkeypatch.setattr(audit_log, "CHUNK_ROWS", 7)  # row groups enough for two workers
    log_root = tmp_path / "audit-log"
    AuditLog(log_root).append(run_records("2025-01-01-run"), "2025-01-01-run", signer)
    # Hashed here instead of in workers, the kill would end this test process.
    assert pq.ParquetFile(_segment(log_root, 0)).num_row_groups >= 2
    monkeypatch.setattr(verify, "PARALLEL_RECORDS", 1)
    monkeypatch.setattr(verify, "cores", lambda: 2)
    monkeypatch.setenv(FAULT_ENV, "verify_worker")  # the workers inherit it, not this process
    with pytest.raises(verify.VerificationIncomplete, match="died"):
        verify_log(log_root)
    code, err = verify_cli(log_root)
    assert code == 3 and "NOT VERIFIED" in err and "nothing was judged" in err


def test_deleting_a_record_names_the_missing_leaf(log_root):
    path = _segment(log_root)
    table = pq.read_table(path)
    rewrite(path, pa.concat_tables([table.slice(0, 5), table.slice(6)]))
    code, err = verify_cli(log_root)
    assert code == 1
    assert f"leaf {4 * SUBJECTS + 5} is missing (deleted)" in err.splitlines()[1]


def test_reordering_records_is_caught_with_or_without_renumbering(log_root):
    path = _segment(log_root)
    table = pq.read_table(path)
    order = list(range(table.num_rows))
    order[3], order[4] = order[4], order[3]
    swapped = table.take(pa.array(order))
    rewrite(path, swapped)
    code, err = verify_cli(log_root)
    assert code == 1 and "out of order" in err.splitlines()[1]
    # Renumbered so leaf_index runs on: the moved record no longer matches its leaf hash.
    renumbered = swapped.set_column(0, "leaf_index", table.column("leaf_index"))
    rewrite(path, renumbered)
    code, err = verify_cli(log_root)
    assert code == 1
    assert f"leaf {4 * SUBJECTS + 3} ({segment_name(1)} row 3" in err.splitlines()[1]


def test_truncating_a_segment_and_padding_it_to_the_same_size_is_caught(log_root):
    path = _segment(log_root)
    size = path.stat().st_size
    data = path.read_bytes()[: size // 2]
    path.write_bytes(data + b"\0" * (size - len(data)))
    assert path.stat().st_size == size
    code, err = verify_cli(log_root)
    assert code == 1 and "unreadable as Parquet" in err.splitlines()[1]


def test_truncating_records_and_forging_others_with_their_hashes_is_caught(log_root):
    """Drop the last two records and write two forged ones in their place, same indices, with
    leaf hashes recomputed correctly: only the signed root can tell, and it does."""
    path = _segment(log_root)
    table = pq.read_table(path)
    n = table.num_rows
    forged = table.slice(n - 2).to_pylist()
    for row in forged:
        row["status"] = "not_entitled" if row["status"] == "entitled" else "entitled"
    records = pa.Table.from_pylist(forged, schema=table.schema)
    hashes = leaf_hashes(records, forged[0]["leaf_index"])
    hashes = pa.array([hashes[i : i + 32] for i in range(0, len(hashes), 32)], pa.binary(32))
    records = records.set_column(records.num_columns - 1, "leaf_hash", hashes)
    rewrite(path, pa.concat_tables([table.slice(0, n - 2), records]))
    code, err = verify_cli(log_root)
    assert code == 1
    assert "give another root than checkpoint 1 signed" in err.splitlines()[1]


def test_truncating_a_segment_is_named_with_the_missing_leaves(log_root):
    path = _segment(log_root, 2)
    table = pq.read_table(path)
    rewrite(path, table.slice(0, table.num_rows - 3))
    code, err = verify_cli(log_root)
    assert code == 1
    assert f"leaves {12 * SUBJECTS - 3}..{12 * SUBJECTS - 1} are missing" in err.splitlines()[1]


def test_an_altered_checkpoint_fails_its_signature(log_root):
    path = log_root / "checkpoints" / "00000001.json"
    doc = json.loads(path.read_text())
    doc["records_per_operation"]["join"] -= 1
    path.write_text(json.dumps(doc))
    code, err = verify_cli(log_root)
    assert code == 1 and "checkpoint 00000001.json: the signature does not verify" in err
    assert "not checked: the later checkpoint 00000002.json and its segment, since" in err
    path = log_root / "checkpoints" / "00000000.json"
    doc = json.loads(path.read_text())
    doc["records_per_operation"]["join"] -= 1
    path.write_text(json.dumps(doc))
    code, err = verify_cli(log_root)
    assert "not checked: 2 later checkpoints, 00000001.json .. 00000002.json, and their" in err


def test_a_log_signed_by_another_key_fails_against_the_pinned_key(log_root, tmp_path):
    other = Keyring()
    other.add("audit-signing")
    forged = tmp_path / "forged"
    AuditLog(forged).append(run_records("x"), "x", Signer(other))
    pinned = log_root / "public_key.pem"
    assert verify_cli(forged)[0] == 0  # its own published key: consistent with itself
    code, err = verify_cli(forged, "--public-key", str(pinned))
    assert code == 1 and "not a trusted key" in err


def test_a_rewritten_and_re_signed_history_is_caught_by_a_kept_checkpoint(
    log_root, signer, tmp_path
):
    kept = tmp_path / "kept-checkpoint.json"
    shutil.copy(log_root / "checkpoints" / "00000001.json", kept)
    # Someone holding the signing key rebuilds the log with run 1 missing one subject.
    shutil.rmtree(log_root)
    log = AuditLog(log_root)
    log.append(run_records("2025-01-01-run"), "2025-01-01-run", signer)
    fewer = run_records("2025-02-01-run").filter(
        pc.invert(pc.equal(pc.field("data_subject_pid"), pids(1)[0].as_py()))
    )
    log.append(fewer, "2025-02-01-run", signer)
    log.append(run_records("2025-03-01-run"), "2025-03-01-run", signer)
    assert verify_cli(log_root)[0] == 0  # consistent with itself ...
    code, err = verify_cli(log_root, "--trusted-checkpoint", str(kept))
    assert code == 1 and "history rewritten: checkpoint 1" in err  # ... but not with history


def test_a_log_cut_back_to_an_earlier_state_is_caught_by_a_kept_checkpoint(log_root, tmp_path):
    kept = tmp_path / "kept.json"
    shutil.copy(log_root / "checkpoints" / "00000002.json", kept)
    (log_root / "checkpoints" / "00000002.json").unlink()
    _segment(log_root, 2).unlink()
    assert verify_cli(log_root)[0] == 0
    code, err = verify_cli(log_root, "--trusted-checkpoint", str(kept))
    assert code == 1 and "the log ends before checkpoint 2" in err


def test_an_interrupted_append_is_reported_and_repaired_by_the_next(log_root, signer):
    # A crash after the segment's rename and before the checkpoint's: an uncovered segment.
    shutil.copy(_segment(log_root, 2), _segment(log_root, 3))
    code, err = verify_cli(log_root)
    assert code == 1 and f"{segment_name(3)}: not covered by any signed checkpoint" in err
    AuditLog(log_root).append(run_records("2025-04-01-run"), "2025-04-01-run", signer)
    assert verify_cli(log_root)[0] == 0


# -- runs and events ----------------------------------------------------------------------------


def _staged_run(folder, run_id, records):
    """A staging folder as the pipeline and finalise leave it: the audit records as parts."""
    (folder / "audit_parts").mkdir(parents=True)
    write_part(records, folder / "audit_parts", "a0")
    return folder


def test_a_rerun_after_a_failed_publication_reconciles_instead_of_logging_twice(tmp_path, signer):
    root = tmp_path / "audit-log"
    first = _staged_run(tmp_path / ".staging-1", "R", run_records("R"))
    cp = append_run(first, "R", root, signer)
    # The publication failed; the rerun makes the same records at other times.
    rerun_records = run_records("R")
    assert rerun_records.column("start_time") != pq.read_table(first / RUN_COPY)["start_time"]
    second = _staged_run(tmp_path / ".staging-2", "R", rerun_records)
    again = append_run(second, "R", root, signer)
    assert again == cp and len(AuditLog(root).checkpoints()) == 1
    # The rerun's folder gets the logged segment itself: the first attempt's records and times.
    logged = AuditLog(root).batch_records("R")
    assert pq.read_table(second / RUN_COPY).equals(logged)
    assert not (second / "audit_parts").exists()
    entry = json.loads((second / LOG_ENTRY).read_text())
    assert entry["audit_log"] == "audit-log" and entry["leaf_count"] == logged.num_rows


def test_a_rerun_with_other_records_under_the_same_run_id_is_refused(tmp_path, signer):
    root = tmp_path / "audit-log"
    append_run(_staged_run(tmp_path / "a", "R", run_records("R")), "R", root, signer)
    other = _staged_run(tmp_path / "b", "R", run_records("R", SUBJECTS - 1))
    with pytest.raises(AuditLogError, match="with other records than this rerun made"):
        append_run(other, "R", root, signer)


def test_deletion_records_are_appended_once_per_event(log_root, signer):
    ctx = AuditContext("2025-01-01-run", "proactive-entitlement-signalling", "2025.1")
    records = deletion_records(ctx, pids(5), dataset="households", reason="retention")
    batch = "2025-01-01-run/deletion/households"
    cp = append_events(log_root, records, batch, signer)
    assert cp.leaf_count == 5 and cp.body["kind"] == "events"
    again = deletion_records(ctx, pids(5), dataset="households", reason="retention")
    assert again.column("span_id").equals(records.column("span_id"))
    assert append_events(log_root, again, batch, signer) == cp
    assert verify_log(log_root).ok


def test_a_keyring_without_an_audit_signing_key_cannot_sign():
    from privacy.keys import KeyringError

    ring = Keyring()
    ring.add("run-data")
    with pytest.raises(KeyringError, match="no active audit-signing key"):
        Signer(ring)


def test_public_key_pem_follows_the_latest_checkpoint_even_after_a_crash(tmp_path, monkeypatch):
    """public_key.pem is written after the checkpoint it belongs to; a crash in between
    (after an audit-signing key rotation) is mended by the next append."""
    ring = Keyring()
    ring.add("audit-signing")
    root = tmp_path / "audit-log"
    AuditLog(root).append(run_records("2025-01-01-run"), "2025-01-01-run", Signer(ring))
    first = (root / "public_key.pem").read_bytes()
    ring.rotate("audit-signing", None)

    mend = AuditLog._publish_current_key
    new_pem = signing_public_pem(Signer(ring).public)

    def crash(log, pem):
        if pem == new_pem:  # the new checkpoint's key, just after its checkpoint
            raise OSError("killed after the checkpoint")
        return mend(log, pem)

    monkeypatch.setattr(AuditLog, "_publish_current_key", crash)
    with pytest.raises(OSError):
        AuditLog(root).append(run_records("2025-02-01-run"), "2025-02-01-run", Signer(ring))
    monkeypatch.undo()
    assert (root / "public_key.pem").read_bytes() == first  # the crash left the old one
    report = verify_log(root)
    assert any("public_key.pem: holds key" in p for p in report.problems)
    AuditLog(root).append(run_records("2025-02-01-run"), "2025-02-01-run", Signer(ring))  # rerun
    assert (root / "public_key.pem").read_bytes() != first
    assert verify_log(root).ok


def test_a_keyring_that_never_held_the_latest_signing_key_cannot_extend_the_log(tmp_path):
    """After an audit-signing key rotation, a keyring from before it would sign with the
    retired key after the new one; another programme's keyring is not this log's."""
    import copy

    ring = Keyring()
    ring.add("audit-signing")
    stale = copy.deepcopy(ring)
    root = tmp_path / "audit-log"
    AuditLog(root).append(run_records("2025-01-01-run"), "2025-01-01-run", Signer(ring))
    ring.rotate("audit-signing", None)
    AuditLog(root).append(run_records("2025-02-01-run"), "2025-02-01-run", Signer(ring))
    other = Keyring()
    other.add("audit-signing")
    for keyring in (stale, other):
        with pytest.raises(AuditLogError, match="which this keyring does not hold"):
            AuditLog(root).check_signer(Signer(keyring))  # what a run asks before its work
        with pytest.raises(AuditLogError, match="which this keyring does not hold"):
            AuditLog(root).append(run_records("2025-03-01-run"), "2025-03-01-run", Signer(keyring))
    AuditLog(root).check_signer(Signer(ring))
    AuditLog(tmp_path / "no-log-yet").check_signer(Signer(other))
    assert len(AuditLog(root).checkpoints()) == 2 and verify_log(root).ok
    AuditLog(root).append(run_records("2025-03-01-run"), "2025-03-01-run", Signer(ring))
