"""The columns of a purpose audit record (data model of the Dutch standard Logboek
Dataverwerkingen): what the pipeline writes (pipelines/audit_records.py), the log stores
(log.py) and the leaf hashes (leaf.py).

A module of its own, with nothing but pyarrow: the log append's hashing processes import
it, and should not pay for Beam's import (~1 s each).
"""

from __future__ import annotations

import pyarrow as pa

AUDIT_SCHEMA = pa.schema(
    [
        ("trace_id", pa.binary(16)),
        ("span_id", pa.binary(8)),
        ("parent_span_id", pa.binary(8)),
        ("name", pa.string()),
        ("status", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("end_time", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("processing_activity_id", pa.string()),
        ("register_version", pa.string()),
        ("data_subject_pid", pa.string()),
        ("attributes", pa.string()),  # canonical JSON: source, legal basis, rule, outcome...
    ]
)

# How the pipeline's audit parts hold attributes that many records share (a subject's ingest
# record names one of a few dozen combinations of sources; a household's members share its
# rule_evaluation record's): each text once, and a code a record (privacy/audit/parts.py).
# Reading a part gives AUDIT_SCHEMA again: the leaves and the log hold the text itself.
CODED_ATTRIBUTES = pa.dictionary(pa.int32(), pa.string())
CODED_SCHEMA = AUDIT_SCHEMA.set(
    AUDIT_SCHEMA.get_field_index("attributes"), pa.field("attributes", CODED_ATTRIBUTES)
)
