"""Joining sources on pseudonyms: hash the key into buckets, join inside each bucket in DuckDB.

Rows with the same key land in the same bucket whatever their source, so a bucket
holds everything needed to join its keys and buckets are independent: a runner can
spread them over workers. Three joins make the household table:

    brp ---------(address)--> persons at address (+ housing)
    persons, tax, benefits, arrears, health_insurance, objections --(person)--> person facts
    person facts ----------(household)--> one row per household (pipelines/household.py)
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipelines import household
from pipelines.machine import step_connection
from pipelines.shuffle import load, spill_pieces

# The most buckets a run uses. Memory goes with the size of a bucket (its rows are joined
# in DuckDB at once), so the cap is set for a national population: 18 M persons in 256
# buckets is ~70,000 a bucket.
DEFAULT_BUCKETS = 256
JOIN_SOURCES = ("brp", "housing", "tax", "benefits", "arrears", "health_insurance", "objections")
# Persons a bucket is sized for. Every bucket costs ~0.15 s of DuckDB planning (three
# joins, the rules, proportionality) whatever its size: many buckets of a small population
# are mostly that. Two buckets run at once on 2 cores (pipelines/options.py), and smaller
# buckets hold less. Measured, pipeline at 1,000,000 persons on 2 cores: 100,000 a bucket
# 32.5 s and 2.6 GB, 50,000 31.6 s and 2.0 GB, 25,000 37.1 s and 1.3 GB (later, with the
# runner's costs lower: 50,000 25.5 s, 25,000 28.2 s). Since the per-record costs fell, the
# fixed ones weigh more (fifteenth round, docs/scaling.md): 100,000 15.3-15.4 s and 2.0-2.1
# GB, 50,000 16.2-16.4 s and 1.4-1.5 GB; at 10M, 100,000 a bucket peaked at 2.9 GB.
PERSONS_PER_BUCKET = 100_000
# Rows gathered into one shuffle file. A file per input batch made every bucket read a
# piece of every batch: the joins after the first take one batch per bucket, so pieces grew
# with buckets squared (40,000 a join at 10M persons, ~250 rows each).
SPILL_ROWS = 500_000
# A population too small for two buckets per core at that size gets smaller buckets, down
# to this, so that two threads or more get work (options.local_threads gives a thread two
# buckets): at 100,000 persons, 4 buckets of 25,000 on two threads took 4.8-4.9 s, 2 of
# 50,000 on one thread 5.3 s.
SMALLEST_BUCKET = 20_000


def buckets_for(persons: int, most: int = DEFAULT_BUCKETS, cores: int = 1) -> int:
    """Buckets for a population, 1 to `most`: one per PERSONS_PER_BUCKET persons, or more,
    up to two per core, when that lets two threads or more run and keeps SMALLEST_BUCKET
    persons a bucket."""
    buckets = -(-persons // PERSONS_PER_BUCKET)
    per_core = min(2 * cores, persons // SMALLEST_BUCKET)
    if per_core >= 4:
        buckets = max(buckets, per_core)
    return max(1, min(most, buckets))


def bucket_of(keys: pa.Array, buckets: int) -> np.ndarray:
    """Bucket numbers for pseudonyms, from their last four bytes (a little-endian number).

    Pseudonyms end in HMAC output, so their tails are uniform and the same in every
    process: no hash seed, no per-row Python. Read straight from the Arrow buffers:
    slicing the tails out first took 3x as long (0.34-0.37 s against 0.11 s for the 7 M
    keys a 1M-person run buckets).
    """
    if keys.null_count:
        raise ValueError("a join key must not be null")
    binary = keys.cast(pa.binary())
    n = len(binary)
    offsets = np.frombuffer(binary.buffers()[1], np.int32)[binary.offset : binary.offset + n + 1]
    if n and (np.diff(offsets) < 4).any():
        raise ValueError("join keys must be pseudonyms (at least four characters)")
    data = np.frombuffer(binary.buffers()[2], np.uint8) if n else np.zeros(0, np.uint8)
    ends = offsets[1:]
    words = np.zeros(n, np.uint32)
    for byte in range(4):  # little-endian: the last byte is the most significant
        words |= data[ends - 4 + byte].astype(np.uint32) << np.uint32(8 * byte)
    return (words % np.uint32(buckets)).astype(np.int64)


class SplitByBucketFn(beam.DoFn):
    """Splits record batches on a key column into (bucket, Spilled) pairs: the batches of a
    bundle are gathered up to SPILL_ROWS rows and written to one file under `folder`, each
    bucket's rows a record batch of it (pipelines/shuffle.py)."""

    def __init__(self, key: str, buckets: int, folder: str):
        self.key, self.buckets, self.folder = key, buckets, folder

    def start_bundle(self):
        self.pending, self.rows = [], 0

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= SPILL_ROWS:
            yield from self._spill()

    def finish_bundle(self):
        for pair in self._spill():
            yield GlobalWindows.windowed_value(pair)

    def _spill(self):
        if not self.pending:
            return
        # Taken straight from the batches: combining them first copied every row once more.
        table = pa.Table.from_batches(self.pending)
        self.pending, self.rows = [], 0
        bucket = bucket_of(table.column(self.key).combine_chunks(), self.buckets)
        # As 16-bit numbers numpy's stable sort is a radix sort: 82 -> 8 ms for 2 M rows.
        order = np.argsort(
            bucket.astype(np.uint16) if self.buckets <= 1 << 16 else bucket, kind="stable"
        )
        sorted_buckets = bucket[order]
        edges = np.flatnonzero(np.diff(sorted_buckets)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(order)]])
        pieces = [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]
        # The batches in bucket order, written once: a record batch per bucket in one file.
        ordered = table.take(pa.array(order)).combine_chunks().to_batches()[0]
        handles = spill_pieces(ordered, pieces, self.folder)
        for (start, _), handle in zip(pieces, handles, strict=True):
            yield int(sorted_buckets[start]), handle


class JoinBucketFn(beam.DoFn):
    """Runs one SQL statement in DuckDB over the tables of one bucket.

    With `audit`, a callable given the bucket's tables ({tag: pa.Table}), its audit batch
    (AUDIT_SCHEMA or CODED_SCHEMA) is a second output, tagged AUDIT: the records of the
    subjects the bucket read.
    """

    AUDIT = "audit"

    def __init__(
        self,
        schemas: dict[str, pa.Schema],
        sql: str,
        out_schema: pa.Schema,
        name: str,
        audit=None,
    ):
        self.schemas, self.sql, self.out_schema, self.name = schemas, sql, out_schema, name
        self.audit = audit

    def setup(self):
        self.con = step_connection()

    def process(self, element):
        bucket, groups = element
        tables = {tag: load(list(groups.get(tag, [])), s) for tag, s in self.schemas.items()}
        for tag, table in tables.items():
            self.con.register(tag, table)
        try:
            result = self.con.sql(self.sql).to_arrow_table()
        finally:
            for tag in self.schemas:
                self.con.unregister(tag)
        Metrics.counter("join", f"{self.name}_rows").inc(result.num_rows)
        if result.num_rows:
            yield result.cast(self.out_schema).combine_chunks().to_batches()[0]
        if self.audit is not None:
            records = self.audit(tables)
            if records.num_rows:
                yield beam.pvalue.TaggedOutput(self.AUDIT, records)

    def teardown(self):
        self.con.close()


class BucketJoin(beam.PTransform):
    """Joins tagged collections of record batches with one DuckDB query per bucket.

    In: {tag: PCollection[RecordBatch]}, each with its key column named in `keys`.
    Out: PCollection[RecordBatch] of `out_schema`, one batch per non-empty bucket; with
    `audit` (see JoinBucketFn), {"rows": that, "audit": the audit record batches}.
    The SQL sees each tag as a table, e.g. `SELECT ... FROM brp LEFT JOIN housing USING (...)`.
    The grouping moves file paths: the rows go through files under `shuffle`
    (pipelines/shuffle.py), a folder every worker can reach.
    """

    def __init__(
        self,
        keys: dict[str, str],
        schemas: dict[str, pa.Schema],
        sql: str,
        out_schema: pa.Schema,
        shuffle: str,
        buckets: int = DEFAULT_BUCKETS,
        name: str = "join",
        audit=None,
    ):
        super().__init__()
        self.keys, self.schemas, self.sql = keys, schemas, sql
        self.out_schema, self.buckets, self.name = out_schema, buckets, name
        self.shuffle, self.audit = str(shuffle), audit

    def expand(self, tagged):
        bucketed = {
            tag: pcoll
            | f"Bucket_{tag}"
            >> beam.ParDo(SplitByBucketFn(self.keys[tag], self.buckets, f"{self.shuffle}/{tag}"))
            for tag, pcoll in tagged.items()
        }
        join = beam.ParDo(
            JoinBucketFn(self.schemas, self.sql, self.out_schema, self.name, self.audit)
        )
        grouped = bucketed | "GroupByBucket" >> beam.CoGroupByKey()
        if self.audit is None:
            return grouped | "JoinInBucket" >> join.with_output_types(pa.RecordBatch)
        # Each tagged output names its type, or Beam pickles its batches.
        typed = join.with_output_types(pa.RecordBatch, **{JoinBucketFn.AUDIT: pa.RecordBatch})
        out = grouped | "JoinInBucket" >> typed.with_outputs(JoinBucketFn.AUDIT, main="rows")
        return {"rows": out.rows, "audit": out[JoinBucketFn.AUDIT]}


# -- The three joins ------------------------------------------------------------------

PERSON_AT_ADDRESS_SQL = """
-- Grain: one row per BRP person, with the housing facts of their address (if known).
SELECT
    b.*,
    h.tenure,
    h.monthly_rent,
    h.service_costs
FROM brp AS b
LEFT JOIN housing AS h USING (address_id)
"""

PERSON_FACTS_SQL = """
-- Grain: one row per BRP person, with the facts of every person-keyed source at {ref}.
WITH latest_tax AS (
    -- The newest assessed year on or before the reference year, picked by key as the head
    -- is below (a tax row's key is BSN and year).
    SELECT t.bsn, t.year, t.assessed_income, t.assets, t.assessment_status
    FROM tax AS t
    SEMI JOIN (
        SELECT bsn, max(year) AS year FROM tax WHERE year <= {ref_year} GROUP BY bsn
    ) AS newest USING (bsn, year)
),
insured AS (
    SELECT bsn, TRUE AS insured
    FROM health_insurance
    WHERE insured_from <= DATE '{ref}' AND (insured_to IS NULL OR insured_to >= DATE '{ref}')
    GROUP BY bsn
),
paid AS (
    SELECT
        bsn,
        list_sort(list_distinct(list(scheme))) AS receiving_schemes,
        CAST(SUM(CASE WHEN scheme = 'aow' THEN monthly_amount ELSE 0 END) AS DECIMAL(14, 2))
            AS aow_monthly_amount
    FROM benefits
    WHERE start_date <= DATE '{ref}' AND (end_date IS NULL OR end_date >= DATE '{ref}')
    GROUP BY bsn
),
debts AS (
    SELECT
        bsn,
        CAST(COUNT(*) AS INTEGER) AS arrears_count,
        CAST(SUM(amount_overdue) AS DECIMAL(14, 2)) AS arrears_total,
        CAST(MAX(months_overdue) AS INTEGER) AS arrears_max_months,
        list_sort(list_distinct(list(creditor_sector))) AS arrears_sectors
    FROM arrears
    WHERE reported_on <= DATE '{ref}'
    GROUP BY bsn
),
objected AS (
    -- Every objection delivered applies, also one made after the reference date: an
    -- objection stops processing from when it is made, and this run comes after it (as
    -- scope-all objections, which pipelines/exclude.py applies whatever their date).
    SELECT bsn, list_sort(list_distinct(list(scope))) AS objected_schemes
    FROM objections
    GROUP BY bsn
)
SELECT
    p.bsn AS person_pid,
    p.household_id AS household_pid,
    p.role,
    p.partner_bsn AS partner_pid,
    p.partner_withheld,
    p.municipality_code,
    p.district_code,
    -- Age arrives coarsened at the body (privacy/minimise.py): no birth date comes here.
    p.age,
    (p.deregistered_on IS NOT NULL AND p.deregistered_on <= DATE '{ref}') AS deregistered,
    (p.registered_since <= DATE '{ref}') AS registered,
    p.tenure,
    p.monthly_rent,
    p.service_costs,
    coalesce(i.insured, FALSE) AS insured,
    CAST(t.year AS INTEGER) AS income_year,
    t.assessment_status AS income_status,
    t.assessed_income AS income,
    t.assets,
    coalesce(b.receiving_schemes, []::VARCHAR[]) AS receiving_schemes,
    coalesce(b.aow_monthly_amount, 0) AS aow_monthly_amount,
    coalesce(d.arrears_count, 0) AS arrears_count,
    coalesce(d.arrears_total, 0) AS arrears_total,
    d.arrears_max_months,
    coalesce(d.arrears_sectors, []::VARCHAR[]) AS arrears_sectors,
    coalesce(o.objected_schemes, []::VARCHAR[]) AS objected_schemes
FROM persons AS p
LEFT JOIN latest_tax AS t ON t.bsn = p.bsn
LEFT JOIN insured AS i ON i.bsn = p.bsn
LEFT JOIN paid AS b ON b.bsn = p.bsn
LEFT JOIN debts AS d ON d.bsn = p.bsn
LEFT JOIN objected AS o ON o.bsn = p.bsn
"""

HOUSEHOLD_SQL = """
-- Grain: one row per household with a head at {ref} (see pipelines/household.py).
WITH members AS (
    SELECT * FROM facts WHERE registered AND NOT deregistered
),
head AS (
    -- One applicant per household: the head (the lowest pseudonym if the register has two).
    -- Picked by key, then its row joined back: DISTINCT ON sorted every column of every head
    -- (a third of this query). A person has one row (the BRP's key is the BSN).
    SELECT f.*
    FROM facts AS f
    SEMI JOIN (
        SELECT household_pid, min(person_pid) AS person_pid
        FROM facts
        WHERE role = 'head' AND registered
        GROUP BY household_pid
    ) AS first USING (household_pid, person_pid)
),
partner AS (
    -- The member the head's record names as partner; if it names none, the lowest member
    -- in the partner role. Picked by key, as the head is.
    SELECT m.*
    FROM members AS m
    SEMI JOIN (
        SELECT m.household_pid, min(m.person_pid) AS person_pid
        FROM members AS m
        JOIN head AS h ON h.household_pid = m.household_pid AND m.person_pid <> h.person_pid
        WHERE m.person_pid = h.partner_pid OR (h.partner_pid IS NULL AND m.role = 'partner')
        GROUP BY m.household_pid
    ) AS chosen USING (household_pid, person_pid)
),
composition AS (
    SELECT
        household_pid,
        CAST(COUNT(*) AS INTEGER) AS n_persons,
        CAST(COUNT(*) FILTER (WHERE age >= 18) AS INTEGER) AS n_adults,
        CAST(COUNT(*) FILTER (WHERE role = 'child' AND age < 18) AS INTEGER) AS n_children,
        list_sort(list(age) FILTER (WHERE role = 'child' AND age < 18)) AS children_ages,
        CAST(SUM(CASE WHEN age >= 18 THEN coalesce(income, 0) ELSE 0 END) AS DECIMAL(14, 2))
            AS household_income,
        CAST(SUM(CASE WHEN age >= 18 THEN coalesce(assets, 0) ELSE 0 END) AS DECIMAL(14, 2))
            AS household_assets,
        list_sort(list(person_pid)) AS member_pids
    FROM members
    GROUP BY household_pid
)
SELECT
    h.household_pid,
    h.person_pid AS applicant_pid,
    p.person_pid AS partner_pid,
    h.municipality_code,
    h.district_code,
    DATE '{ref}' AS reference_date,
    h.age AS applicant_age,
    p.age AS partner_age,
    (p.person_pid IS NOT NULL OR h.partner_withheld) AS has_partner,
    coalesce(c.n_persons, 0) AS n_persons,
    coalesce(c.n_adults, 0) AS n_adults,
    coalesce(c.n_children, 0) AS n_children,
    coalesce(c.children_ages, []::INTEGER[]) AS children_ages,
    h.deregistered AS applicant_deregistered,
    h.insured AS applicant_insured,
    p.insured AS partner_insured,
    least(h.income_year, p.income_year) AS income_year,
    CASE
        WHEN 'estimated' IN (h.income_status, p.income_status) THEN 'estimated'
        WHEN 'provisional' IN (h.income_status, p.income_status) THEN 'provisional'
        ELSE h.income_status
    END AS income_status,
    -- A withheld partner (objected) leaves the household's income unknown: no guessing.
    (h.income IS NOT NULL AND NOT h.partner_withheld
        AND (p.person_pid IS NULL OR p.income IS NOT NULL)) AS income_known,
    h.income AS applicant_income,
    p.income AS partner_income,
    CAST(h.income + coalesce(p.income, 0) AS DECIMAL(14, 2)) AS combined_income,
    c.household_income,
    CAST(coalesce(h.assets, 0) + coalesce(p.assets, 0) AS DECIMAL(14, 2)) AS combined_assets,
    c.household_assets,
    list_sort(list_distinct(list_concat(h.receiving_schemes,
        coalesce(p.receiving_schemes, []::VARCHAR[])))) AS receiving_schemes,
    CAST(h.aow_monthly_amount + coalesce(p.aow_monthly_amount, 0) AS DECIMAL(14, 2))
        AS aow_monthly_amount,
    h.tenure,
    h.monthly_rent,
    h.service_costs,
    CAST(h.arrears_count + coalesce(p.arrears_count, 0) AS INTEGER) AS arrears_count,
    CAST(h.arrears_total + coalesce(p.arrears_total, 0) AS DECIMAL(14, 2)) AS arrears_total,
    greatest(h.arrears_max_months, p.arrears_max_months) AS arrears_max_months,
    list_sort(list_distinct(list_concat(h.arrears_sectors,
        coalesce(p.arrears_sectors, []::VARCHAR[])))) AS arrears_sectors,
    list_sort(list_distinct(list_concat(h.objected_schemes,
        coalesce(p.objected_schemes, []::VARCHAR[])))) AS objected_schemes,
    coalesce(c.member_pids, [h.person_pid]) AS member_pids
FROM head AS h
LEFT JOIN partner AS p ON p.household_pid = h.household_pid
LEFT JOIN composition AS c ON c.household_pid = h.household_pid
"""

MONEY = household.MONEY
PERSON_FACTS_SCHEMA = pa.schema(
    [
        ("person_pid", pa.string()),
        ("household_pid", pa.string()),
        ("role", pa.string()),
        ("partner_pid", pa.string()),
        ("partner_withheld", pa.bool_()),
        ("municipality_code", pa.string()),
        ("district_code", pa.string()),
        ("age", pa.int32()),
        ("deregistered", pa.bool_()),
        ("registered", pa.bool_()),
        ("tenure", pa.string()),
        ("monthly_rent", MONEY),
        ("service_costs", MONEY),
        ("insured", pa.bool_()),
        ("income_year", pa.int32()),
        ("income_status", pa.string()),
        ("income", MONEY),
        ("assets", MONEY),
        ("receiving_schemes", pa.list_(pa.string())),
        ("aow_monthly_amount", MONEY),
        ("arrears_count", pa.int32()),
        ("arrears_total", MONEY),
        ("arrears_max_months", pa.int32()),
        ("arrears_sectors", pa.list_(pa.string())),
        ("objected_schemes", pa.list_(pa.string())),
    ]
)


def persons_schema(brp_schema: pa.Schema, housing_schema: pa.Schema) -> pa.Schema:
    """The schema of persons-at-address: BRP columns plus the housing facts."""
    # A left join: an address without a housing record gives nulls.
    extra = [
        housing_schema.field(n).with_nullable(True)
        for n in ("tenure", "monthly_rent", "service_costs")
    ]
    return pa.schema(list(brp_schema) + extra)


class JoinHouseholds(beam.PTransform):
    """Joins all sources into the household table.

    In: {source name: PCollection[RecordBatch]} of pseudonymised, objection-filtered
    sources (brp carries a `partner_withheld` column). Out: {"households":
    PCollection[RecordBatch] of pipelines.household.SCHEMA, e.g. (household_pid='b1.ab..',
    applicant_pid='b1.cd..', has_partner=False, applicant_age=34,
    combined_income=Decimal('21000.00'), ...), "ingest": the PCollections of ingest audit
    records}.
    `shuffle`: the folder the three joins shuffle their rows through (pipelines/shuffle.py).
    `ingest`: makes the audit maker of a bucket from {table: (source, subject column)}
    (pipelines/audit_records.IngestRecords with its context and bases); each data subject's
    rows meet in one bucket of the first two joins (housing's by address, the
    person-keyed sources' by person), which makes its one ingest record. Without it,
    "ingest" is an empty tuple.
    """

    PERSON_SOURCES = ("tax", "benefits", "arrears", "health_insurance", "objections")

    def __init__(
        self,
        schemas: dict[str, pa.Schema],
        reference_date: dt.date,
        shuffle: str,
        buckets: int = DEFAULT_BUCKETS,
        ingest=None,
    ):
        super().__init__()
        self.schemas, self.reference_date, self.buckets = schemas, reference_date, buckets
        self.shuffle, self.ingest = str(shuffle), ingest

    def _audit(self, subjects: dict[str, tuple[str, str]]):
        return None if self.ingest is None else self.ingest(subjects)

    def expand(self, sources):
        ref = self.reference_date.isoformat()
        persons_at_address = persons_schema(self.schemas["brp"], self.schemas["housing"])
        addressed = {"brp": sources["brp"], "housing": sources["housing"]} | "PersonsAtAddress" >> (
            BucketJoin(
                keys={"brp": "address_id", "housing": "address_id"},
                schemas={"brp": self.schemas["brp"], "housing": self.schemas["housing"]},
                sql=PERSON_AT_ADDRESS_SQL,
                out_schema=persons_at_address,
                shuffle=f"{self.shuffle}/persons_at_address",
                buckets=self.buckets,
                name="persons_at_address",
                audit=self._audit({"housing": ("housing", "address_id")}),
            )
        )
        person_inputs = {"persons": _rows(addressed)} | {t: sources[t] for t in self.PERSON_SOURCES}
        subjects = {"persons": ("brp", "bsn")} | {t: (t, "bsn") for t in self.PERSON_SOURCES}
        facts = person_inputs | "PersonFacts" >> BucketJoin(
            keys={"persons": "bsn"} | {t: "bsn" for t in self.PERSON_SOURCES},
            schemas={"persons": persons_at_address}
            | {t: self.schemas[t] for t in self.PERSON_SOURCES},
            sql=PERSON_FACTS_SQL.format(ref=ref, ref_year=self.reference_date.year),
            out_schema=PERSON_FACTS_SCHEMA,
            shuffle=f"{self.shuffle}/person_facts",
            buckets=self.buckets,
            name="person_facts",
            audit=self._audit(subjects),
        )
        households = {"facts": _rows(facts)} | "Households" >> BucketJoin(
            keys={"facts": "household_pid"},
            schemas={"facts": PERSON_FACTS_SCHEMA},
            sql=HOUSEHOLD_SQL.format(ref=ref),
            out_schema=household.SCHEMA,
            shuffle=f"{self.shuffle}/households",
            buckets=self.buckets,
            name="households",
        )
        # Not flattened: each join's records are written in the stage that made them
        # (privacy/audit/parts.py), not held in the runner's buffers for a Flatten.
        ingest = () if self.ingest is None else (addressed["audit"], facts["audit"])
        return {"households": households, "ingest": ingest}


def _rows(joined):
    """The joined rows of a BucketJoin, whether or not it also made audit records."""
    return joined["rows"] if isinstance(joined, dict) else joined
