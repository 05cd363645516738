"""The attributes of the audit records the pipeline makes: one spelling for each value.

The log hashes the attribute text, so one value must have one spelling: keys sorted, no
spaces, as `canonical_json` (json.dumps) writes them. The records' attributes are built
column-wise in Arrow, not with json.dumps; these tests pin the text for every kind of value
and for nulls.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pyarrow as pa

from pipelines.audit_records import (
    AuditContext,
    IngestRecords,
    _json_fields,
    audit_batch,
    canonical_json,
    evaluation_records,
)

CONTEXT = AuditContext("2025-01-01-records", "proactive-entitlement-signalling", "2025.1")


def test_json_fields_spell_every_value_and_null_one_way():
    table = pa.table(
        {
            "scheme": ["zorgtoeslag", None, "aio"],
            "benefit_year": pa.array([2025, 2024, None], pa.int32()),
            "entitled": [True, False, None],
            "amount": pa.array([Decimal("1355.04"), None, Decimal("0.00")], pa.decimal128(12, 2)),
            "confidence": [1.0, 0.5, None],
        }
    )
    made = _json_fields(table, ("scheme",), ("benefit_year", "entitled", "amount", "confidence"))
    # Keys sorted, no spaces; money keeps its two decimals, a whole float is written as 1.
    assert made.to_pylist() == [
        '{"amount":1355.04,"benefit_year":2025,"confidence":1,"entitled":true,'
        '"scheme":"zorgtoeslag"}',
        '{"amount":null,"benefit_year":2024,"confidence":0.5,"entitled":false,"scheme":null}',
        '{"amount":0.00,"benefit_year":null,"confidence":null,"entitled":null,"scheme":"aio"}',
    ]
    for text, row in zip(made.to_pylist(), table.to_pylist(), strict=True):
        assert json.loads(text, parse_float=Decimal) == row


def test_a_rule_evaluation_record_lists_each_scheme_in_order_in_canonical_json():
    evaluations = pa.table(
        {
            "household_pid": ["h.b", "h.a", "h.a"],
            "scheme": ["zorgtoeslag", "zorgtoeslag", "aio"],
            "benefit_year": pa.array([2025, 2025, 2025], pa.int32()),
            "rule_id": ["zorgtoeslag", "zorgtoeslag", "aio"],
            "rule_version": ["1.0.0", "1.0.0", "1.0.0"],
            "parameter_version": ["2025.1", "2025.1", "2025.2"],
            "entitled": [False, True, None],
            "already_receiving": [None, False, False],
        }
    )
    households = pa.table(
        {
            "household_pid": ["h.a", "h.b"],
            "member_pids": [["p.a1", "p.a2"], ["p.b1"]],
        }
    )
    records = evaluation_records(CONTEXT, evaluations, households).to_pylist()
    by_subject = {r["data_subject_pid"]: r for r in records}
    assert set(by_subject) == {"p.a1", "p.a2", "p.b1"}
    for record in records:
        attrs = json.loads(record["attributes"])
        assert canonical_json(attrs) == record["attributes"]
    a = json.loads(by_subject["p.a1"]["attributes"])
    assert a["household_pid"] == "h.a"
    assert [e["scheme"] for e in a["evaluations"]] == ["aio", "zorgtoeslag"]
    assert a["evaluations"][0]["entitled"] is None
    assert by_subject["p.a1"]["status"] == "entitled"
    assert by_subject["p.b1"]["status"] == "not_entitled"
    assert by_subject["p.a2"]["attributes"] == by_subject["p.a1"]["attributes"]


def test_rule_evaluation_attributes_are_in_scheme_then_year_order_with_nulls_last():
    # Built once per distinct evaluation and picked per household: the order, the nulls
    # and the statuses must still be each household's own.
    rows = [
        ("h.a", "zorgtoeslag", 2025, True),
        ("h.a", "aio", 2025, False),
        ("h.a", "zorgtoeslag", 2024, False),
        ("h.a", "zorgtoeslag", None, None),
        ("h.b", "aio", 2025, False),
        ("h.b", None, 2025, False),
    ]
    evaluations = pa.table(
        {
            "household_pid": [r[0] for r in rows],
            "scheme": [r[1] for r in rows],
            "benefit_year": pa.array([r[2] for r in rows], pa.int32()),
            "rule_id": [r[1] for r in rows],
            "rule_version": ["1.0.0"] * len(rows),
            "parameter_version": ["2025.1"] * len(rows),
            "entitled": [r[3] for r in rows],
            "already_receiving": [False] * len(rows),
        }
    )
    households = pa.table({"household_pid": ["h.b", "h.a"], "member_pids": [["p.b"], ["p.a"]]})
    records = evaluation_records(CONTEXT, evaluations, households).to_pylist()
    by_subject = {r["data_subject_pid"]: r for r in records}
    listed = {
        s: [(e["scheme"], e["benefit_year"]) for e in json.loads(r["attributes"])["evaluations"]]
        for s, r in by_subject.items()
    }
    assert listed == {
        "p.a": [("aio", 2025), ("zorgtoeslag", 2024), ("zorgtoeslag", 2025), ("zorgtoeslag", None)],
        "p.b": [("aio", 2025), (None, 2025)],
    }
    assert {s: r["status"] for s, r in by_subject.items()} == {
        "p.a": "entitled",
        "p.b": "not_entitled",
    }
    # No evaluations, no records.
    assert evaluation_records(CONTEXT, evaluations.slice(0, 0), households).num_rows == 0


def test_subjects_in_chunks_get_the_records_they_get_whole():
    subjects = ["p.c", "p.a", "p.b"]
    whole = audit_batch(CONTEXT, "join", pa.array(subjects), "joined", "{}")
    chunked = audit_batch(
        CONTEXT, "join", pa.chunked_array([subjects[:1], subjects[1:]]), "joined", "{}"
    )
    keep = [n for n in whole.schema.names if n not in ("start_time", "end_time")]
    assert chunked.select(keep).equals(whole.select(keep))
    # The documented id: the first 8 bytes of SHA-256(run|operation|subject), in id order.
    expected = sorted(
        hashlib.sha256(f"{CONTEXT.run_id}|join|{s}".encode()).digest()[:8] for s in subjects
    )
    assert whole.column("span_id").to_pylist() == expected


def test_an_ingest_record_per_subject_names_every_source_that_delivered_a_row_of_them():
    bases = {
        "brp": {"legal_basis": ["Wet BRP art. 3.3"], "purpose": "p"},
        "tax": {"legal_basis": ["AWR art. 67"], "purpose": "p"},
    }
    make = IngestRecords(CONTEXT, bases, {"persons": ("brp", "bsn"), "tax": ("tax", "bsn")})
    tables = {
        # A subject with two tax years is one subject; one only in tax is still ingested.
        "persons": pa.table({"bsn": ["p.a", "p.b"], "age": [30, 40]}),
        "tax": pa.table({"bsn": ["p.b", "p.b", "p.c"], "year": [2024, 2025, 2025]}),
    }
    records = make(tables).to_pylist()
    by_subject = {r["data_subject_pid"]: r for r in records}
    assert sorted(by_subject) == ["p.a", "p.b", "p.c"]
    assert {r["name"] for r in records} == {"ingest"}
    assert {r["status"] for r in records} == {"accepted"}
    sources = {s: json.loads(r["attributes"])["sources"] for s, r in by_subject.items()}
    assert sources == {"p.a": {"brp": bases["brp"]}, "p.b": bases, "p.c": {"tax": bases["tax"]}}
    for subject, record in by_subject.items():  # the canonical text, hashed by the log
        assert record["attributes"] == canonical_json({"sources": sources[subject]})
        key = f"{CONTEXT.run_id}|ingest|{subject}".encode()
        assert record["span_id"] == hashlib.sha256(key).digest()[:8]
    # A bucket without subjects makes no records.
    empty = {t: table.slice(0, 0) for t, table in tables.items()}
    assert make(empty).num_rows == 0
