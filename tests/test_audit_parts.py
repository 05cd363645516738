"""Audit parts written inside the pipeline, and the log append putting them together unsorted.

Real Beam (DirectRunner) writes the parts; real Parquet files; finalise counts them and
the log append streams them into a signed segment, which the run folder links to.
The order of the run's audit copy must not depend on the order in which batches arrive
or on a retried bundle, and a record made twice (same span id) is kept once.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.audit_records import AuditContext, WriteAuditPartsFn, audit_batch
from pipelines.options import pipeline_options
from pipelines.publish import finalise
from privacy.audit.log import RUN_COPY, AuditLog, append_run
from privacy.audit.parts import read_part, write_part
from privacy.audit.signing import Signer
from privacy.keys import Keyring

CONTEXT = AuditContext("2025-01-01-parts", "proactive-entitlement-signalling", "2025.1")


def pids(start: int, n: int) -> pa.Array:
    letters = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
    return pa.array(
        [
            f"d1.{hashlib.sha256(str(i).encode()).hexdigest()[:32].translate(letters)}"
            for i in range(start, start + n)
        ]
    )


def batches() -> list[pa.RecordBatch]:
    """Three batches of one operation; the third repeats two subjects of the first."""
    return [
        audit_batch(CONTEXT, "join", pids(0, 30), "joined", "{}"),
        audit_batch(CONTEXT, "join", pids(30, 30), "joined", "{}"),
        audit_batch(CONTEXT, "join", pids(28, 2), "joined", "{}"),
    ]


def write_parts(staging, elements) -> None:
    with beam.Pipeline(options=pipeline_options()) as p:
        _ = (
            p
            | beam.Create(elements, reshuffle=False)
            | beam.ParDo(WriteAuditPartsFn(staging / "audit_parts", "a0"))
        )


def audit_copy(staging) -> pa.Table:
    """finalise, then the log append: the run's records as its log segment holds them."""
    counts = finalise(staging, {})
    ring = Keyring()
    ring.add("audit-signing")
    checkpoint = append_run(staging, CONTEXT.run_id, staging / "audit-log", Signer(ring))
    assert checkpoint.leaf_count == counts["audit_records"]
    assert not (staging / "audit_parts").exists()  # written once, into the log
    copy = pq.read_table(staging / RUN_COPY)
    assert copy.equals(pq.read_table(AuditLog(staging / "audit-log").segment_path(checkpoint)))
    return copy


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0, 2)])
def test_the_audit_copy_is_the_same_whatever_the_batch_order_and_retries(tmp_path, order):
    reference = tmp_path / "reference"
    write_parts(reference, batches())
    expected = audit_copy(reference)
    staging = tmp_path / "staging"
    write_parts(staging, [batches()[i] for i in order])  # (1, 2, 0, 2): batch 2 retried
    got = audit_copy(staging)
    assert got.column("span_id").equals(expected.column("span_id"))
    # 30 + 30 subjects; the two repeated ones are kept once.
    assert got.num_rows == 60
    assert len(set(got.column("span_id").to_pylist())) == 60


def test_repeated_records_are_counted_once_per_operation(tmp_path):
    from privacy.audit.parts import AuditParts

    write_parts(tmp_path, [batches()[i] for i in (1, 2, 0, 2, 2)])  # batch 2 three times
    parts = AuditParts(tmp_path / "audit_parts")
    assert parts.records == 60 and parts.keep is not None
    assert parts.per_operation == {"join": 60}
    assert len(parts.span_ids()) == 60
    names, subjects = parts._names_and_subjects(np.array([], dtype=np.int64))  # none asked
    assert len(names) == len(subjects) == 0
    write_parts(tmp_path / "once", batches()[:2])  # no subject twice
    assert AuditParts(tmp_path / "once" / "audit_parts").keep is None


def test_shared_attributes_stay_coded_in_the_parts_and_are_logged_as_text(tmp_path):
    # Records picking their attributes (rows=) point at a shared text in the part; the
    # log must hold exactly what the same records written out in full give.
    texts = pa.array(['{"sources":{"brp":{}}}', '{"sources":{"tax":{}}}', None])
    rows = pa.array([i % 3 for i in range(40)])
    subjects = pids(100, 40)
    coded = audit_batch(CONTEXT, "ingest", subjects, "accepted", texts, rows=rows)
    assert pa.types.is_dictionary(coded.schema.field("attributes").type)
    plain = coded.set_column(11, "attributes", coded.column("attributes").cast(pa.string()))
    # Two batches, a part each, with different dictionaries; the first one retried.
    second = audit_batch(
        CONTEXT, "ingest", pids(140, 5), "accepted", texts[1:], rows=pa.array([1, 0, 1, 0, 1])
    )
    write_parts(tmp_path / "coded", [coded, second, coded])
    parts = sorted((tmp_path / "coded" / "audit_parts").glob("*.arrow"))
    assert len(parts) == 2
    for part in parts:
        read = read_part(part)
        assert read.schema.field("attributes").type == pa.string()
        assert pa.types.is_dictionary(pa.ipc.open_file(part).schema.field("attributes").type)
    # A table of both batches is one part, decoded (a part holds one dictionary).
    (tmp_path / "one").mkdir()
    both = write_part(pa.Table.from_batches([coded, second]), tmp_path / "one", "a0")
    assert read_part(both).num_rows == 45
    second_plain = second.set_column(
        11, "attributes", second.column("attributes").cast(pa.string())
    )
    write_parts(tmp_path / "plain", [plain, second_plain])
    # The same records, times included (the plain ones are copies): leaf hashes and all.
    got, expected = audit_copy(tmp_path / "coded"), audit_copy(tmp_path / "plain")
    assert got.num_rows == 45 and got.equals(expected)
    by_subject = dict(
        zip(got["data_subject_pid"].to_pylist(), got["attributes"].to_pylist(), strict=True)
    )
    assert by_subject[subjects[4].as_py()] == texts[1].as_py()
    assert by_subject[subjects[5].as_py()] is None


def test_a_part_is_named_after_its_span_ids_and_sorted_by_them(tmp_path):
    write_parts(tmp_path, batches()[:1])
    (part,) = (tmp_path / "audit_parts").glob("*.arrow")
    assert part.name.startswith("a0-") and not any(c.isdigit() for c in part.name[3:-6])
    spans = read_part(part).column("span_id").to_pylist()
    assert spans == sorted(spans)
    write_parts(tmp_path, batches()[:1])  # a retry writes the same file again
    assert [p.name for p in (tmp_path / "audit_parts").glob("*.arrow")] == [part.name]


def test_a_batch_is_the_same_whatever_order_its_subjects_came_in():
    subjects = pids(0, 25)
    attributes = pa.array([f'{{"n":{i}}}' for i in range(25)])
    forward = audit_batch(CONTEXT, "join", subjects, "joined", attributes)
    backward = audit_batch(CONTEXT, "join", subjects[::-1], "joined", attributes[::-1])
    for name in ("span_id", "data_subject_pid", "attributes"):
        assert forward.column(name).equals(backward.column(name)), name
    spans = forward.column("span_id").to_pylist()
    assert spans == sorted(spans)
    # Each record keeps its own subject's attributes through the sort.
    pairs = dict(zip(subjects.to_pylist(), attributes.to_pylist(), strict=True))
    assert all(
        pairs[s] == a
        for s, a in zip(
            forward.column("data_subject_pid").to_pylist(),
            forward.column("attributes").to_pylist(),
            strict=True,
        )
    )


@pytest.fixture(params=["threads", "processes"])
def workers_kind(request, monkeypatch):
    """Hashing workers are threads with the C hashing loop, processes without it."""
    from privacy.audit import sha256

    if request.param == "threads" and not sha256.NATIVE:
        pytest.skip("the C hashing loop was not built here")
    if request.param == "processes":
        monkeypatch.setattr(sha256, "NATIVE", False)
    return request.param


def test_leaves_hashed_in_workers_equal_those_hashed_here(tmp_path, workers_kind):
    from privacy.audit.leaf import leaf_hashes
    from privacy.audit.parts import AuditParts

    write_parts(tmp_path, batches())
    parts = AuditParts(tmp_path / "audit_parts")
    # Chunks of 20 records: several chunks, so the work is spread over the workers.
    here = list(parts.hashed_tables(20, 1000, workers=1))
    there = list(parts.hashed_tables(20, 1000, workers=2))
    assert len(here) > 1 and len(here) == len(there)
    for (table, hashes, _), (table2, hashes2, subtrees) in zip(here, there, strict=True):
        assert table.equals(table2) and hashes == hashes2
        assert subtrees.count == table.num_rows
    whole = pa.concat_tables([t for t, *_ in here])
    assert whole.num_rows == parts.records == 60
    assert b"".join(h for _, h, _ in here) == leaf_hashes(whole, 1000)
    assert [s.first for *_, s in there] == [
        1000 + sum(len(t) for t, *_ in here[:i]) for i in range(len(here))
    ]


def test_an_append_hashed_in_workers_signs_the_same_tree(tmp_path, monkeypatch, workers_kind):
    import shutil

    from privacy.audit import log

    for run, copy in (("one", "three"), ("two", "four")):
        write_parts(tmp_path / run, batches())
        shutil.copytree(tmp_path / run, tmp_path / copy)
    ring = Keyring()
    ring.add("audit-signing")
    # Two runs into each log: the second starts from a tree of 60 leaves, not a power of
    # two, so its subtrees join an old frontier and its checkpoint carries a consistency proof.
    here = [
        append_run(tmp_path / run, run, tmp_path / "log-here", Signer(ring)).body
        for run in ("one", "two")
    ]
    # A run this small would not use them; chunks of 7 records spread it over them.
    monkeypatch.setattr(log, "PARALLEL_RECORDS", 1)
    monkeypatch.setattr(log, "CHUNK_ROWS", 7)
    monkeypatch.setattr(log, "cores", lambda: 2)  # workers even on a one-core machine
    there = [
        append_run(tmp_path / run, name, tmp_path / "log-there", Signer(ring)).body
        for run, name in (("three", "one"), ("four", "two"))
    ]
    signed = ("tree_size", "root_hash", "consistency_proof", "frontier")
    assert [{k: b[k] for k in signed} for b in here] == [{k: b[k] for k in signed} for b in there]
    assert there[1]["tree_size"] == 120 and there[1]["consistency_proof"]


def test_first_occurrences_match_numpy_unique_on_random_repeats():
    import numpy as np

    from privacy.audit.parts import _first_occurrences

    def same_record(where):  # every repeat of an id is a copy of the same record
        return pa.repeat("join", len(where)), pa.repeat("d1.x", len(where))

    rng = np.random.default_rng(7)
    for _ in range(50):
        # Parts of sorted span ids drawn from a small pool: repeats across and within parts.
        parts = [np.sort(rng.integers(0, 60, rng.integers(0, 12), dtype=np.uint64)) for _ in "abcd"]
        ids = np.concatenate(parts)
        _, first = np.unique(ids, return_index=True)
        expected = np.zeros(len(ids), bool)
        expected[first] = True
        ordered = np.sort(ids)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        assert np.array_equal(_first_occurrences(parts, repeated, same_record), expected)


def test_first_of_each_keeps_records_that_only_share_a_span_id():
    import numpy as np

    from privacy.audit.parts import first_of_each

    ids = np.array([5, 5, 5, 9, 5, 9], np.uint64)
    names = pa.array(["join", "join", "join", "ingest", "signal", "ingest"])
    subjects = pa.array(["d1.a", "d1.a", "d1.b", "d1.a", "d1.a", "d1.a"])
    # A copy of row 0, a collision on subject, one on operation, and a copy of row 3.
    assert first_of_each(ids, names, subjects).tolist() == [True, False, True, True, True, False]


def _collided(batch: pa.RecordBatch, row: int, like: int) -> pa.RecordBatch:
    """The batch with record `row` given the span id of record `like` (another subject)."""
    spans = batch.column("span_id").to_pylist()
    spans[row] = spans[like]
    i = batch.schema.get_field_index("span_id")
    return batch.set_column(i, "span_id", pa.array(spans, pa.binary(8)))


def test_records_whose_span_ids_collide_are_both_logged(tmp_path):
    """Two different records under one 8-byte span id (a chance of ~1 in 10,000 at 60 M
    records) are both logged; the copies of a record the parts also hold are dropped."""
    first, second, repeat = batches()
    # A record of the second batch's subject 3 under the span id of the first's record 0.
    collided = pa.RecordBatch.from_arrays(
        [
            pa.array([first.column("span_id")[0].as_py()], pa.binary(8))
            if name == "span_id"
            else second.column(name).slice(3, 1)
            for name in second.schema.names
        ],
        schema=second.schema,
    )
    write_parts(tmp_path, [first, second, repeat, collided])
    records = audit_copy(tmp_path)
    # 60 subjects joined once each, and the collided record a second time under its own
    # subject: 61, where dropping by span id alone gave 60 and lost it.
    assert records.num_rows == 61
    shared = first.column("span_id")[0].as_py()
    holders = records.filter(pc.equal(records.column("span_id"), pa.scalar(shared, pa.binary(8))))
    assert sorted(holders.column("data_subject_pid").to_pylist()) == sorted(
        [first.column("data_subject_pid")[0].as_py(), second.column("data_subject_pid")[3].as_py()]
    )


def test_a_batch_appended_as_a_table_keeps_collided_records(tmp_path):
    """Events (worklist, decryption, deletion) are appended as tables: same rule."""
    first = batches()[0]
    table = pa.Table.from_batches([first, _collided(first, 4, 2), first.slice(7, 1)])
    ring = Keyring()
    ring.add("audit-signing")
    result = AuditLog(tmp_path / "log").append(table, "event/1", Signer(ring))
    # 30 records, the 30 again with one collided (so one of them is new), and a copy.
    assert result.checkpoint.leaf_count == 31


def test_a_second_reader_takes_the_summary_until_the_parts_change(tmp_path):
    import numpy as np

    from privacy.audit.parts import AuditParts

    write_parts(tmp_path, [batches()[i] for i in (1, 2, 0, 2)])
    folder = tmp_path / "audit_parts"
    first = AuditParts(folder)
    assert (folder / AuditParts.SUMMARY).is_file()
    again = AuditParts(folder)
    assert (again.records, again.per_operation, again.sizes) == (
        first.records,
        first.per_operation,
        first.sizes,
    )
    assert np.array_equal(again.keep, first.keep)
    # A part more (another operation's records): the summary no longer applies.
    extra = audit_batch(CONTEXT, "exclusion", pids(100, 5), "excluded", "{}")
    write_parts(tmp_path, [extra])
    changed = AuditParts(folder)
    assert changed.records == first.records + 5
    assert changed.per_operation == {"exclusion": 5, "join": 60}


def test_the_hashing_processes_do_not_import_beam():
    # Each worker of the log append imports privacy.audit.parts; Beam would add ~1 s and
    # ~65 MB to each, for nothing they use.
    import subprocess
    import sys

    code = "import sys, privacy.audit.parts, privacy.audit.log; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _sigint_handler(_):
    import signal

    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_the_hashing_workers_leave_ctrl_c_to_the_run():
    """Ctrl-C reaches the whole process group: the workers ignore it and the run, which
    stops cleanly with one line, shuts them down (else each printed a traceback)."""
    from privacy.audit.pool import in_order

    assert list(in_order(_sigint_handler, [(i,) for i in range(4)], workers=2)) == [True] * 4
