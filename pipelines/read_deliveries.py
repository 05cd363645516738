"""Reading a delivery: find it, check its manifest, and stream its rows as Arrow batches.

A delivery is refused whole (DeliveryRefused, naming file and cause) only where the
contract says so: missing or wrong manifest, a missing required column, or a file
that cannot be parsed. Everything else is a row problem and goes to quarantine.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines.contract import MANIFEST_KEYS, SCHEMA_VERSION, SOURCES, Source, oin_is_valid
from pipelines.validate import QUARANTINE_SCHEMA, quarantine_records, validate_batch
from privacy.minimise import pseudonymised_schema
from privacy.pseudonyms import DomainPseudonymiser

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class NamedByQuarantine:
    """What the quarantined rows of a source still name: the identifier `column`, kept as
    body pseudonyms in the file `<key>.parquet` of the pseudonymised delivery (its manifest
    key `key`), counted in the run manifest as `counted_as`."""

    key: str
    column: str
    counted_as: str

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(self.column, pa.string(), nullable=False)])


# A quarantined row is still about someone, where its identifier is valid. An objection row
# with a wrong date or scope is still a person who objected: excluded all the same, from
# everything (the strictest reading, until the body corrects the row); without this they
# were processed, signalled even. A register row with a wrong field is still a member of
# its household: the household's composition is not known. A benefits row with a wrong
# field is still a benefit paid to its person: what their household receives is not known,
# and without this a household already paid was signalled. An insurance row with a wrong
# field is still an insurance: without it a partner read as uninsured, and the household
# was signalled for half its zorgtoeslag, saying so. A tax row with a wrong field is still
# an income: without it a household was judged on an older assessment, or on its other
# members' incomes. Such households' candidates are held back (pipelines/evaluate.py
# QUARANTINED_SQL, pipelines/proportionality.py check completeness).
NAMED_BY_QUARANTINE = {
    "objections": NamedByQuarantine(
        "quarantined_objectors", "bsn", "objectors_of_quarantined_rows"
    ),
    "brp": NamedByQuarantine(
        "quarantined_households", "household_id", "households_of_quarantined_rows"
    ),
    "benefits": NamedByQuarantine(
        "quarantined_recipients", "bsn", "recipients_of_quarantined_rows"
    ),
    "health_insurance": NamedByQuarantine(
        "quarantined_insured", "bsn", "insured_of_quarantined_rows"
    ),
    "tax": NamedByQuarantine("quarantined_taxpayers", "bsn", "taxpayers_of_quarantined_rows"),
}
DATA_FILES = ("data.csv", "data.parquet")


class DeliveryRefused(Exception):
    """A whole delivery cannot be accepted; the message names the file and the cause."""


@dataclass(frozen=True)
class Delivery:
    """A delivery folder whose manifest has been checked against its data file."""

    source: Source
    directory: Path
    data_path: Path
    manifest: dict

    @property
    def reference_date(self) -> str:
        return self.manifest["reference_date"]

    @property
    def row_count(self) -> int:
        return int(self.manifest["row_count"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    if not path.is_file():
        raise DeliveryRefused(f"{path}: manifest is missing; a delivery needs manifest.json")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeliveryRefused(f"{path}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DeliveryRefused(f"{path}: manifest must be a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise DeliveryRefused(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


def _check_manifest_fields(path: Path, manifest: dict, expect_source: str | None) -> Source:
    source_name = manifest["source"]
    if source_name not in SOURCES:
        raise DeliveryRefused(
            f"{path}: unknown source {source_name!r}; expected one of {', '.join(SOURCES)}"
        )
    if expect_source and source_name != expect_source:
        raise DeliveryRefused(
            f"{path}: manifest says source {source_name!r} but the folder is {expect_source!r}"
        )
    if str(manifest["schema_version"]) != SCHEMA_VERSION:
        raise DeliveryRefused(
            f"{path}: schema_version {manifest['schema_version']!r} is not supported "
            f"(this version reads {SCHEMA_VERSION!r})"
        )
    if not oin_is_valid(str(manifest["supplier_oin"])):
        raise DeliveryRefused(f"{path}: supplier_oin must be 20 digits")
    try:
        dt.date.fromisoformat(str(manifest["reference_date"]))
    except ValueError:
        raise DeliveryRefused(
            f"{path}: reference_date {manifest['reference_date']!r} is not an ISO date"
        ) from None
    if not isinstance(manifest["row_count"], int) or manifest["row_count"] < 0:
        raise DeliveryRefused(f"{path}: row_count must be a non-negative integer")
    return SOURCES[source_name]


def open_delivery(directory: Path, expect_source: str | None = None) -> Delivery:
    """Check a delivery folder's manifest and data file checksum; refuse it if wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DeliveryRefused(f"{directory}: delivery folder does not exist")
    manifest = _load_manifest(directory)
    source = _check_manifest_fields(directory / "manifest.json", manifest, expect_source)
    present = [directory / n for n in DATA_FILES if (directory / n).is_file()]
    if len(present) != 1:
        found = "none" if not present else " and ".join(p.name for p in present)
        raise DeliveryRefused(
            f"{directory}: expected exactly one of {' or '.join(DATA_FILES)}, found {found}"
        )
    data_path = present[0]
    actual = sha256_of(data_path)
    if actual != str(manifest["sha256"]).lower():
        raise DeliveryRefused(
            f"{data_path}: checksum mismatch: manifest sha256 {manifest['sha256']} "
            f"but the file's is {actual}; the file is damaged or not the one described"
        )
    return Delivery(source, directory, data_path, manifest)


def find_delivery(root: Path, source: str, reference_date: dt.date) -> Path:
    """The newest delivery of `source` under root with reference date on or before the run's."""
    folder = Path(root) / source
    if not folder.is_dir():
        raise DeliveryRefused(f"{folder}: no delivery of source {source!r} (folder missing)")
    candidates = []
    for d in folder.iterdir():
        try:
            day = dt.date.fromisoformat(d.name)
        except ValueError:
            continue
        if d.is_dir() and day <= reference_date:
            candidates.append((day, d))
    if not candidates:
        raise DeliveryRefused(
            f"{folder}: no delivery dated on or before {reference_date.isoformat()}"
        )
    return max(candidates)[1]


def _csv_reader(delivery: Delivery) -> pacsv.CSVStreamingReader:
    names = delivery.source.column_names
    try:
        reader = pacsv.open_csv(
            delivery.data_path,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                null_values=[""],
                include_columns=None,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise DeliveryRefused(f"{delivery.data_path}: cannot be parsed as CSV ({e})") from None
    header = reader.schema.names
    _check_columns(delivery, header)
    return reader


def _check_columns(delivery: Delivery, header: list[str]) -> None:
    missing = [n for n in delivery.source.column_names if n not in header]
    if not missing:
        return
    hint = ""
    if len(header) == 1 and ";" in header[0]:
        hint = "; the header is one column containing ';': the file is semicolon-separated, "
        hint += "the contract requires commas"
    elif len(header) == 1 and "\t" in header[0]:
        hint = "; the file looks tab-separated, the contract requires commas"
    raise DeliveryRefused(
        f"{delivery.data_path}: missing required column(s) {', '.join(missing)}{hint}"
    )


def undeclared_columns(delivery: Delivery) -> list[str]:
    """Columns of the data file that the delivery contract does not have: never read (only
    the contract's columns are), but the body should leave them out of its extract."""
    path = delivery.data_path
    try:
        if path.suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f), [])
        else:
            header = pq.read_schema(path).names
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowInvalid):
        return []  # an unreadable file is refused when it is read, with its cause
    declared = set(delivery.source.column_names)
    return [name for name in header if name not in declared]


def iter_raw_batches(delivery: Delivery) -> Iterator[pa.RecordBatch]:
    """Stream the data file as batches of string columns in contract order."""
    names = list(delivery.source.column_names)
    if delivery.data_path.suffix == ".csv":
        reader = _csv_reader(delivery)
        try:
            for batch in reader:
                yield pa.RecordBatch.from_arrays([batch.column(n) for n in names], names=names)
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise DeliveryRefused(f"{delivery.data_path}: cannot be parsed as CSV ({e})") from None
        return
    try:
        pf = pq.ParquetFile(delivery.data_path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DeliveryRefused(f"{delivery.data_path}: cannot be read as Parquet ({e})") from None
    _check_columns(delivery, pf.schema_arrow.names)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=names):
        yield pa.RecordBatch.from_arrays(
            [_as_string(delivery, n, batch.column(n)) for n in names], names=names
        )


def _as_string(delivery: Delivery, name: str, col: pa.Array) -> pa.Array:
    """Parquet columns have natural types; validation works on their text form."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.date32())
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DeliveryRefused(
            f"{delivery.data_path}: column {name} has type {col.type}, which cannot hold "
            f"a {delivery.source.column(name).kind}"
        ) from None


class DuplicateFilter:
    """Quarantines rows whose natural key was already seen earlier in the same delivery.

    Keeps the first occurrence: the contract gives no way to tell which copy is right,
    and an exact duplicate is the common case (a row exported twice).
    """

    def __init__(self, source: Source):
        self.source = source
        self.first_seen: dict[str, int] = {}

    def __call__(
        self, valid: pa.RecordBatch, rows: pa.Array
    ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
        keys = pc.binary_join_element_wise(
            *[pc.cast(valid.column(k), pa.string()) for k in self.source.key], "\x1f"
        )
        keep = []
        causes = []
        key_names = ", ".join(self.source.key)
        # A per-row loop: cross-batch state over one sequentially read file; ~0.1 s per 1M rows.
        for key, row in zip(keys.to_pylist(), rows.to_pylist(), strict=True):
            first = self.first_seen.setdefault(key, row)
            keep.append(first == row)
            if first != row:
                causes.append(f"duplicate ({key_names}) of row {first}")
        mask = pa.array(keep, pa.bool_())
        dropped = rows.filter(pc.invert(mask))
        quarantined = quarantine_records(
            self.source.name, dropped, self.source.key[0], pa.array(causes, pa.string())
        )
        return valid.filter(mask), quarantined


@dataclass
class ValidatedDelivery:
    """Counts of a validated delivery; rows flow through the callbacks."""

    rows: int = 0
    accepted: int = 0
    quarantined: int = 0


def validate_delivery(
    delivery: Delivery,
    on_valid,
    on_quarantine,
    on_bad_rows=None,
) -> ValidatedDelivery:
    """Validate every row; hand valid typed batches and quarantine batches to the callbacks.

    `on_bad_rows`, if given, also gets the rows that failed validation as delivered (string
    columns), for a caller that must still act on them: whom they are about still counts
    (NAMED_BY_QUARANTINE, privacy/pseudonymise.py). Duplicates are not among them: their
    first copy is accepted.
    Refuses the delivery (before any callback sees a row) if the row count differs
    from the manifest, so a truncated file never yields a partial delivery.
    """
    counted = sum(b.num_rows for b in iter_raw_batches(delivery))
    if counted != delivery.row_count:
        raise DeliveryRefused(
            f"{delivery.data_path}: manifest row_count is {delivery.row_count} "
            f"but the file has {counted} data rows"
        )
    counts = ValidatedDelivery()
    dedupe = DuplicateFilter(delivery.source)
    next_row = 1
    for raw in iter_raw_batches(delivery):
        valid, quarantined, rows = validate_batch(delivery.source, raw, next_row)
        if on_bad_rows is not None and quarantined.num_rows:  # row numbers count from next_row
            on_bad_rows(raw.take(pc.subtract(quarantined.column("row_number"), next_row)))
        next_row += raw.num_rows
        valid, duplicates = dedupe(valid, rows)
        for q in (quarantined, duplicates):
            if q.num_rows:
                on_quarantine(q)
                counts.quarantined += q.num_rows
        if valid.num_rows:
            on_valid(valid)
            counts.accepted += valid.num_rows
        counts.rows += raw.num_rows
    if not counts.accepted + counts.quarantined == counts.rows == delivery.row_count:
        raise RuntimeError(f"{delivery.data_path}: row accounting does not add up: {counts}")
    return counts


def empty_quarantine() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()


def _parquet_metadata(path: Path) -> pq.FileMetaData:
    """A delivered Parquet file's metadata; a damaged file is refused, named (its checksum
    may match: the body wrote it so)."""
    try:
        return pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DeliveryRefused(
            f"{path}: not a readable Parquet file ({str(e).splitlines()[0]}); the body "
            "must deliver it again"
        ) from None


def open_pseudonymised(directory: Path, expect_source: str | None = None) -> Delivery:
    """Check a pseudonymised delivery: manifest, checksums, schema and row accounting.

    The central run reads nothing else: a raw delivery is refused here, before any row is read.
    """
    delivery = open_delivery(directory, expect_source)
    m, where = delivery.manifest, delivery.directory / "manifest.json"
    if "pseudonymised" not in m:
        raise DeliveryRefused(
            f"{where}: delivery is not pseudonymised; the central run accepts only deliveries "
            "made by `signals pseudonymise` at the supplying body"
        )
    if delivery.data_path.suffix != ".parquet":
        raise DeliveryRefused(f"{delivery.data_path}: a pseudonymised delivery is Parquet")
    q = m.get("quarantine") or {}
    q_path = delivery.directory / str(q.get("file", "quarantine.parquet"))
    if not q_path.is_file() or sha256_of(q_path) != q.get("sha256"):
        raise DeliveryRefused(f"{q_path}: quarantine file missing or its checksum does not match")
    _check_named_by_quarantine(delivery, int(q.get("row_count", 0)))
    original = int((m.get("original") or {}).get("row_count", -1))
    if original != m["row_count"] + int(q.get("row_count", 0)):
        raise DeliveryRefused(
            f"{where}: row accounting does not add up: original {original} rows, "
            f"{m['row_count']} accepted + {q.get('row_count')} quarantined"
        )
    metadata = _parquet_metadata(delivery.data_path)
    if metadata.num_rows != m["row_count"]:
        raise DeliveryRefused(
            f"{delivery.data_path}: manifest row_count is {m['row_count']} "
            f"but the file has {metadata.num_rows} rows"
        )
    expected, actual = pseudonymised_schema(delivery.source), metadata.schema.to_arrow_schema()
    extra = [n for n in actual.names if n not in expected.names]
    if extra:
        raise DeliveryRefused(
            f"{delivery.data_path}: carries column(s) {', '.join(extra)} that the purpose does "
            "not allow; only minimised deliveries are accepted (privacy/minimise.py)"
        )
    for f in expected:
        if f.name not in actual.names:
            raise DeliveryRefused(f"{delivery.data_path}: missing required column {f.name}")
        if not actual.field(f.name).type.equals(f.type):
            raise DeliveryRefused(
                f"{delivery.data_path}: column {f.name} has type {actual.field(f.name).type}, "
                f"expected {f.type}"
            )
    return delivery


def _check_named_by_quarantine(delivery: Delivery, quarantined: int) -> None:
    """A delivery of a source in NAMED_BY_QUARANTINE names what its quarantined rows are
    about, in a file whose checksum matches; other sources have no such file."""
    named = NAMED_BY_QUARANTINE.get(delivery.source.name)
    where = delivery.directory
    if named is None:
        if any(n.key in delivery.manifest for n in NAMED_BY_QUARANTINE.values()):
            raise DeliveryRefused(f"{where}: a {delivery.source.name} delivery names nobody")
        return
    record = delivery.manifest.get(named.key)
    if record is None:
        if quarantined:
            raise DeliveryRefused(
                f"{where}: {quarantined} {delivery.source.name} row(s) were quarantined at the "
                f"body, and the delivery does not say whose ({named.key}): it was made by an "
                f"older `signals pseudonymise`, and this run would miss them. Pseudonymise "
                f"the {delivery.source.name} delivery again."
            )
        return
    path = where / str(record.get("file"))
    if not path.is_file() or sha256_of(path) != record.get("sha256"):
        raise DeliveryRefused(f"{path}: file missing or its checksum does not match")
    metadata = _parquet_metadata(path)
    if metadata.num_rows != record.get("row_count") or metadata.num_rows > quarantined:
        raise DeliveryRefused(
            f"{path}: {metadata.num_rows} named, the manifest says "
            f"{record.get('row_count')} of {quarantined} quarantined row(s)"
        )
    if not metadata.schema.to_arrow_schema().equals(named.schema):
        raise DeliveryRefused(f"{path}: expected one column, {named.column}, of body pseudonyms")


def named_by_quarantine(delivery: Delivery) -> Path | None:
    """The file of what the body's quarantined rows name, if the delivery has one."""
    named = NAMED_BY_QUARANTINE.get(delivery.source.name)
    record = delivery.manifest.get(named.key) if named else None
    return None if record is None else delivery.directory / str(record["file"])


def named_pids(delivery: Delivery | None, domain: DomainPseudonymiser) -> pa.Array:
    """What the body's quarantined rows of `delivery` name (NAMED_BY_QUARANTINE), as the
    purpose domain's pseudonyms; empty when nothing or no delivery.

    Read whole where the run is built (the objectors) or in a step's setup
    (NamedByQuarantine): a few per thousand rows (~40 bytes each), where extra elements in
    the objections read made Beam's local runner hang on a 1M-person flow.
    """
    path = None if delivery is None else named_by_quarantine(delivery)
    if path is None:
        return pa.array([], pa.string())
    try:  # its one column cannot hold a null: open_pseudonymised checked the schema
        return domain.array(pq.read_table(path).column(0))
    except TypeError:
        raise DeliveryRefused(f"{path}: holds a value that is not a body pseudonym") from None


class NamedByQuarantine:
    """named_pids of several deliveries, read where a step uses them (its setup), not where
    the run is built.

    A step holding the pseudonyms themselves pickles with them: Beam compresses every
    pickled step (bzip2, level 9) and each bundle processor of each thread unpickles it, and
    may pickle it again, under one lock. At 1M persons (10,000 pseudonyms, 250 KB
    compressed) that was ~0.4 s of a run, growing with the population; held as paths and a
    key, the step pickles to the same size at any.
    """

    def __init__(self, deliveries: dict[str, Delivery | None], domain: DomainPseudonymiser):
        self.deliveries, self.domain = dict(deliveries), domain

    def read(self) -> dict[str, pa.Array]:
        """Each delivery's named pseudonyms (named_pids), by source name."""
        return {name: named_pids(d, self.domain) for name, d in self.deliveries.items()}


def quarantine_path(delivery: Delivery) -> Path:
    return delivery.directory / str(delivery.manifest["quarantine"]["file"])


class ReadRowGroupFn(beam.DoFn):
    """Reads one Parquet row group of a pseudonymised delivery; rows with a malformed
    identifier go to quarantine (the value is never quoted: it may be a raw BSN). The
    rest leave, under their source's tag, with their identifiers moved to the purpose
    domain's pseudonyms."""

    def __init__(self, domain: DomainPseudonymiser):
        self.domain = domain

    def process(self, element):
        source_name, path, group, first_row = element
        source = SOURCES[source_name]
        names = pseudonymised_schema(source).names
        batch = pq.ParquetFile(path).read_row_group(group, columns=names)
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
        if batch is None:
            return
        ok = pa.array(np.ones(batch.num_rows, dtype=bool))
        causes = []
        for name in source.identifier_columns:
            # Only body pseudonyms may arrive: the domain layer takes nothing else on.
            i = batch.schema.get_field_index(name)
            moved, malformed = self.domain.array_or_malformed(batch.column(i))
            batch = batch.set_column(i, batch.schema.field(i), moved)
            ok = pc.and_(ok, pc.invert(malformed))
            causes.append(
                pc.if_else(malformed, f"{name}: not a pseudonym", pa.scalar(None, pa.string()))
            )
        bad = pc.invert(ok)
        if pc.any(bad).as_py():
            rows = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
            cause = pc.coalesce(*causes)
            Metrics.counter("read", f"{source_name}_quarantined").inc(pc.sum(bad).as_py())
            yield beam.pvalue.TaggedOutput(
                ReadDeliveries.QUARANTINE,
                quarantine_records(source_name, rows.filter(bad), "identifier", cause.filter(bad)),
            )
            batch = batch.filter(ok)
        Metrics.counter("read", f"{source_name}_rows").inc(batch.num_rows)
        if batch.num_rows:
            yield beam.pvalue.TaggedOutput(source_name, batch)


class ReadDeliveries(beam.PTransform):
    """Reads checked, pseudonymised deliveries as Arrow record batches (one per row group).

    In: the pipeline root. Out, tagged: one output per source name, typed RecordBatches
    with the source's minimised columns (privacy/minimise.py) and identifiers as domain
    pseudonyms, e.g. tax -> RecordBatch(bsn='d1.mfoa...', year=2024,
    assessed_income=Decimal('23100.00'), assets=..., assessment_status='definitive'); and
    QUARANTINE, RecordBatches of QUARANTINE_SCHEMA for rows whose identifiers are not
    pseudonyms. Nothing after this step sees a body pseudonym.

    All sources' row groups are listed in one reshuffled Create, so the runner spreads
    them over its workers (one Create per source read each source in a single bundle, on
    one thread; docs/scaling.md, seventh round).
    """

    QUARANTINE = "quarantine"

    def __init__(self, deliveries: dict[str, Delivery], domain: DomainPseudonymiser):
        super().__init__()
        if not isinstance(domain, DomainPseudonymiser):
            raise TypeError("ReadDeliveries needs the purpose domain's DomainPseudonymiser")
        for name, delivery in deliveries.items():
            # The name tags the rows and picks the schema they are read with.
            if name != delivery.source.name:
                raise ValueError(f"delivery of {delivery.source.name!r} given as {name!r}")
        if self.QUARANTINE in deliveries:
            raise ValueError(f"a source cannot be called {self.QUARANTINE!r}")
        self.deliveries, self.domain = dict(deliveries), domain

    def expand(self, pbegin):
        groups = []
        for name, delivery in self.deliveries.items():
            metadata, first = pq.read_metadata(delivery.data_path), 1
            for i in range(metadata.num_row_groups):
                groups.append((name, str(delivery.data_path), i, first))
                first += metadata.row_group(i).num_rows
        tags = [self.QUARANTINE, *self.deliveries]
        return (
            pbegin
            | "ListRowGroups" >> beam.Create(groups)  # reshuffled: read side by side
            | "ReadRowGroups"
            >> beam.ParDo(ReadRowGroupFn(self.domain))
            .with_output_types(pa.RecordBatch, **{tag: pa.RecordBatch for tag in tags})
            .with_outputs(*tags)
        )
