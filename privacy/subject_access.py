"""A person's pseudonyms from their BSN, for a subject access request (AVG art. 15).

The audit log names data subjects by domain pseudonym (`d1.…`); a person who asks what
was done with their data gives a BSN. Only the controller can link the two: layer 1
needs a body key and layer 2 the domain keys, which no other party holds together
(privacy/pseudonyms.py). Every key of both layers is tried, retired ones too, so the
records made before a key rotation are found as well.

Some records name the person's household rather than the person (the resolution of a
signal episode, the decryption or deletion of data on a household that left a run): the
households the person was joined into (their `join` records) are looked up too.

With an extract folder, the rows of every kept run that concern each person are written
there too, for the controller's answer (the data itself, art. 15(3)): each run's files are
decrypted in memory, and only rows of the households the person was joined into in that
run, or with them as applicant, are kept. A household's row holds its other members' data
as well (a partner's income): the controller reviews an extract before giving anything
out (art. 15(4)). Each run's extract is logged first, a `decryption` record per data
subject whose data it holds.

The lookup itself processes a BSN, so it is logged before any pseudonym is shown: one
`subject_lookup` record per pseudonym that has records, and for the pseudonym of the
active keys (so a lookup that finds nothing is on record too), naming who asked and the
event, never the BSN. After a body-key rotation one lookup names a person's pseudonyms
under both body keys in one event: the log then links them for that person, as the
controller's lookup did (docs/privacy.md). The command reads BSNs from standard input,
never from its arguments (which land in shell history and the process list).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.audit_records import AuditContext, audit_batch, canonical_json
from pipelines.contract import bsn_is_valid
from privacy.audit.events import actor, append_events, new_event_id
from privacy.audit.log import AuditLog, AuditLogError, Checkpoint
from privacy.audit.signing import Signer
from privacy.audit.verify import require_as_signed
from privacy.body_links import LINK_SCHEMA, LINKS_DIR
from privacy.files import written_whole
from privacy.keys import DEFAULT_DOMAIN, Keyring, KeyringError, check_custody
from privacy.pseudonyms import TwoLayerPseudonymiser, translate
from privacy.register import load_register
from privacy.retention import PERSONAL_DATA

OPERATION = "subject_lookup"
PURPOSE = "subject access request (AVG art. 15)"


class SubjectAccessError(Exception):
    """The lookup cannot be done; the message says why (and never quotes a BSN)."""


@dataclass(frozen=True)
class Subject:
    line: int  # the line of the input that gave the BSN
    records: dict[str, int]  # each pseudonym of the person -> audit records naming it before
    households: dict[str, int]  # each household the person was joined into -> its records
    # A household's pseudonym under another domain key -> the one the person was joined
    # into (the same household across a rotation); absent: it is that one itself.
    joined_as: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Extract:
    folder: Path
    rows: dict[str, dict[str, int]]  # "line-<n>/<run id>" -> table -> rows written
    destroyed: list[str]  # runs that name the persons but whose data (or folder) is gone
    logged: int  # decryption records appended


@dataclass(frozen=True)
class Lookup:
    subjects: list[Subject]
    event: str
    checkpoint: Checkpoint
    logged: int  # subject_lookup records appended


def read_bsns(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, BSN) of each non-blank line; a line that is no BSN is refused by number."""
    bsns = []
    for number, line in enumerate(lines, start=1):
        value = line.strip().removeprefix("\ufeff")  # a byte-order mark from an editor
        if not value:
            continue
        if not bsn_is_valid(value):
            raise SubjectAccessError(
                f"line {number} of the input is not a BSN (nine digits passing the 11-proef); "
                "nothing was looked up"
            )
        bsns.append((number, value))
    if not bsns:
        raise SubjectAccessError("no BSN on standard input: give one per line")
    return bsns


def _keys(keyring: Keyring, domain: str, role: str) -> list:
    keys = [k for k in keyring.keys if k.role == role and k.domain == domain]
    if not keys:
        raise KeyringError(f"the keyring holds no {role} key{f' of {domain!r}' if domain else ''}")
    return keys


def pseudonyms(bsn: str, keyring: Keyring, domain: str = DEFAULT_DOMAIN) -> list[str]:
    """The person's domain pseudonyms under every body key and every key of `domain`;
    the first is that of the active keys."""
    active = TwoLayerPseudonymiser(keyring.active("body"), keyring.active("domain", domain))
    every = [
        TwoLayerPseudonymiser(body, key).one("bsn", bsn)
        for body in _keys(keyring, None, "body")
        for key in _keys(keyring, domain, "domain")
    ]
    first = active.one("bsn", bsn)
    return [first] + [p for p in every if p != first]


def _segments(log_root: Path) -> list[str]:
    files = [str(p) for p in AuditLog(log_root).committed_segments()]
    if not files:
        raise AuditLogError(f"{log_root}: the audit log holds no checkpoint yet")
    return files


def _query(log_root: Path, sql: str, pids: list[str]) -> list[tuple]:
    con = duckdb.connect()
    try:
        params = {"files": _segments(log_root), "pids": pids}
        return con.sql(sql, params=params).fetchall()
    finally:
        con.close()


def _counts(log_root: Path, subjects: list[str]) -> dict[str, int]:
    sql = (
        "SELECT data_subject_pid, COUNT(*) FROM read_parquet($files) "
        "WHERE list_contains($pids, data_subject_pid) GROUP BY data_subject_pid"
    )
    return dict(_query(log_root, sql, subjects))


def _joined(log_root: Path, persons: list[str], by: str) -> dict[str, set[str]]:
    """The households the persons were joined into (their `join` records), per person
    (`by="data_subject_pid"`) or per run (`by="run_id"`)."""
    if by not in ("data_subject_pid", "run_id"):
        raise ValueError(f"households are grouped by person or run, not {by!r}")
    sql = (
        f"SELECT DISTINCT {by}, json_extract_string(attributes, '$.household_pid') "
        "FROM read_parquet($files) WHERE name = 'join' AND list_contains($pids, data_subject_pid)"
    )
    joined: dict[str, set[str]] = {}
    for key, household in _query(log_root, sql, persons):
        if household:
            joined.setdefault(key, set()).add(household)
    return joined


def _under_every_key(
    households: list[str], keyring: Keyring, domain: str, links: Path
) -> dict[str, list[str]]:
    """Each household pseudonym, then the same household's under every other key: every
    key of `domain`, and the other body key of every link table in `links`.

    A join record names the household as the run's keys did; a later run, after a
    domain-key rotation, names it under the new domain key (privacy.pseudonyms.translate,
    both ways), after a body-key rotation under the new body key (privacy/body_links.py).
    """
    variants = {h: [h] for h in households}
    if not households:
        return variants
    values = pa.array(households, pa.string())
    for h, v in zip(households, _linked(values, keyring, domain, links), strict=True):
        variants[h] += [x for x in v if x not in variants[h]]
    for key in _keys(keyring, domain, "domain"):
        for h in households:
            every = pa.array(variants[h], pa.string())
            rekeyed = translate(every, keyring, domain, to=key).to_pylist()
            variants[h] += [v for v in rekeyed if v not in variants[h]]
    return variants


def _linked(values: pa.Array, keyring: Keyring, domain: str, links: Path) -> list[list[str]]:
    """Per household, its pseudonyms across the body-key link tables in `links` (either
    side, and on through further tables: b1 -> b2 -> b3), under the domain's active key."""
    pairs = []
    for path in sorted(links.glob("households-*.parquet")) if links.is_dir() else []:
        table = pq.read_table(path, schema=LINK_SCHEMA)
        old, new = (
            translate(table[n].combine_chunks(), keyring, domain) for n in LINK_SCHEMA.names
        )
        pairs += [(old, new), (new, old)]
    out: list[list[str]] = []
    for start in translate(values, keyring, domain).to_pylist():
        found, frontier = [], [start]
        while frontier:  # a few tables at most: one per body-key rotation
            step = pa.array(frontier, pa.string())
            frontier = []
            for here, there in pairs:
                for v in pc.take(there, pc.index_in(step, value_set=here)).to_pylist():
                    if v is not None and v != start and v not in found:
                        found.append(v)
                        frontier.append(v)
        out.append(found)
    return out


def _records(subjects: list[str], domain: str, event: str) -> pa.Table:
    register = load_register()
    context = AuditContext(f"subject-access/{event}", domain, register.version)
    attributes = canonical_json({"purpose": PURPOSE, "actor": actor(), "event": event})
    batch = audit_batch(
        context,
        OPERATION,
        pa.array(subjects, pa.string()),
        "looked_up",
        attributes,
        discriminator=pa.repeat(pa.scalar(event, pa.string()), len(subjects)),
    )
    return pa.Table.from_batches([batch])


def look_up(
    bsns: list[tuple[int, str]], keyring: Keyring, log_root: Path, domain: str = DEFAULT_DOMAIN
) -> Lookup:
    """Each person's pseudonyms and households, and how many audit records name each; the
    lookup is logged (see the module doc) before anything is returned."""
    check_custody(keyring, "controller")
    log_root = Path(log_root)
    # An answer must hold every record about the person, and the lookup is appended to the
    # log: neither from, or onto, a log that is not as signed.
    require_as_signed(log_root, "answer")
    found = [(line, pseudonyms(bsn, keyring, domain)) for line, bsn in bsns]
    persons = sorted({p for _, pids in found for p in pids})
    joined = _joined(log_root, persons, by="data_subject_pid")
    homes = sorted({h for hs in joined.values() for h in hs})
    variants = _under_every_key(homes, keyring, domain, log_root.parent / LINKS_DIR)
    households = sorted({v for vs in variants.values() for v in vs})
    before = _counts(log_root, persons + households)
    logged = {pids[0] for _, pids in found} | {p for p in persons + households if before.get(p)}
    event = new_event_id()
    records = _records(sorted(logged), domain, event)
    checkpoint = append_events(log_root, records, f"subject-access/{event}", Signer(keyring))
    subjects = []
    for line, pids in found:
        # A household the person was joined into, and its pseudonyms under other domain or
        # body keys that records name (a later run resolved its episode after a rotation).
        homes = {
            v: h
            for p in pids
            for h in joined.get(p, ())
            for v in variants[h]
            if v == h or before.get(v)
        }
        subjects.append(
            Subject(
                line,
                {p: before.get(p, 0) for p in pids},
                {h: before.get(h, 0) for h in sorted(homes)},
                {v: h for v, h in homes.items() if v != h},
            )
        )
    return Lookup(subjects, event, checkpoint, records.num_rows)


def _runs_naming(log_root: Path, subjects: list[str]) -> dict[str, set[str]]:
    """Run id -> the given subjects its records name (runs only, not later events)."""
    sql = (
        "SELECT DISTINCT run_id, data_subject_pid FROM read_parquet($files) "
        "WHERE list_contains($pids, data_subject_pid) "
        "AND NOT contains(run_id, '/')"  # events with a trace of their own (subject-access/...)
    )
    named: dict[str, set[str]] = {}
    for run_id, pid in _query(log_root, sql, subjects):
        named.setdefault(run_id, set()).add(pid)
    return dict(sorted(named.items()))


def _run_order(log_root: Path, run_ids: list[str]) -> dict[str, tuple[str, int]]:
    """Run id -> (its reference date, the first leaf of its records in the log): runs in
    the order of the dates they describe (a rerun of an earlier date may be logged later),
    then of the log."""
    sql = (
        "SELECT run_id, min(leaf_index) FROM read_parquet($files) "
        "WHERE list_contains($pids, run_id) GROUP BY run_id"
    )
    order = {}
    for run_id, first in _query(log_root, sql, run_ids):
        manifest = log_root.parent / run_id / "manifest.json"
        day = (
            json.loads(manifest.read_text()).get("reference_date", "") if manifest.is_file() else ""
        )
        order[run_id] = (day or _day_of(run_id), first)
    return order


def _day_of(run_id: str) -> str:
    """The reference date a run id starts with (`2025-01-01-…`, flows/run.py), or ""."""
    try:
        return dt.date.fromisoformat(run_id[:10]).isoformat()
    except ValueError:
        return ""


def _not_before(run: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether `run` comes at or after `other`: by the dates they describe when both have
    one (a published manifest), else by their place in the log."""
    if run[0] and other[0]:
        return run >= other
    return run[1] >= other[1]


def _rows(table: pa.Table, persons: list[str], households: set[str]) -> pa.Table:
    """The rows of `households`, or with one of `persons` as applicant."""
    keep = pc.is_in(
        table.column("household_pid"), value_set=pa.array(sorted(households), pa.string())
    )
    if "applicant_pid" in table.column_names:
        applicants = pa.array(persons, pa.string())
        keep = pc.or_(keep, pc.is_in(table.column("applicant_pid"), value_set=applicants))
    return table.filter(pc.fill_null(keep, False))


def _json_rows(table: pa.Table) -> bytes:
    rows = table.to_pylist()
    return (json.dumps(rows, indent=1, default=str, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class _Part:
    """One person's rows of one run, and every data subject those rows hold data on."""

    line: int
    run_id: str
    tables: dict[str, pa.Table]
    subjects: set[str]


def _person_parts(subject: Subject, log_root: Path, runs: dict, read) -> list[_Part]:
    """A person's rows of every run that names them (runs: run id -> its run folder).

    Each person's rows are read on their own: a request holds one person or a few, and
    filtering each decrypted file as it is read keeps memory to their rows.
    """
    persons = sorted(subject.records)
    households = set(subject.households)
    # A household is the person's in the runs that joined them into it: in a later run it
    # may hold only other people. A later run that names one of their households otherwise
    # (it closed its signal episode) gives its lifecycle rows only; an earlier run's
    # concern the household before the person was in it, and are not theirs.
    joined = _joined(log_root, persons, by="run_id")
    named = _runs_naming(log_root, persons + sorted(households))
    order = _run_order(log_root, sorted(named))
    joins: dict[str, list[tuple[str, int]]] = {}  # household -> when the person was joined
    for run_id, homes in joined.items():
        for h in homes:
            joins.setdefault(h, []).append(order[run_id])
    parts = []
    for run_id in named:
        if run_id not in runs:
            continue
        since = {
            h
            for h in named[run_id] & households
            if any(
                _not_before(order[run_id], j) for j in joins.get(subject.joined_as.get(h, h), [])
            )
        }
        tables = {}
        for name in PERSONAL_DATA:
            homes = joined.get(run_id, set())
            if name == "lifecycle.parquet":
                homes = homes | since
            rows = read(runs[run_id], name, lambda t, h=homes: _rows(t, persons, h))
            if rows.num_rows:
                tables[name.removesuffix(".parquet")] = rows
        if tables:
            subjects = set(named[run_id])  # the person, and households named as subjects
            if "households" in tables:  # a household row holds every member's data
                members = pc.list_flatten(tables["households"].column("member_pids"))
                subjects |= {m for m in members.to_pylist() if m}
                subjects |= set(tables["households"].column("household_pid").to_pylist())
            parts.append(_Part(subject.line, run_id, tables, subjects - {None}))
    return parts


def extract(
    lookup: Lookup,
    keyring: Keyring,
    log_root: Path,
    out: Path,
    key_store: Path | None = None,
) -> Extract:
    """Write each looked-up person's rows of every kept run to `out/line-<n>/<run_id>/
    <table>.json` (owner-only); see the module doc.

    Every run is read first (a run that cannot be read stops the extract before anything
    is logged or written); then each run's extract is logged, one `decryption` record per
    data subject whose data it holds (the person, and the other members of their
    household rows); then the files are written into a new folder renamed to `out` whole.
    """
    from privacy.audit.events import append_to_run_log, decryption_records
    from privacy.retention import RETENTION_FILE, read_run_table

    log_root, out = Path(log_root), Path(out)
    every = sorted({p for s in lookup.subjects for p in [*s.records, *s.households]})
    runs, destroyed = {}, []
    for run_id in _runs_naming(log_root, every):
        run_dir = log_root.parent / run_id
        if (run_dir / RETENTION_FILE).is_file() or not run_dir.is_dir():
            destroyed.append(run_id)  # its data destroyed, or the folder too since
        elif not (run_dir / "manifest.json").is_file():
            raise SubjectAccessError(
                f"{run_dir}: run {run_id} names the person in the audit log but is not a "
                "published run; nothing logged or written"
            )
        else:
            runs[run_id] = run_dir

    def read(run_dir, name, where):
        return read_run_table(run_dir, name, keyring, key_store, where)

    parts = [p for s in lookup.subjects for p in _person_parts(s, log_root, runs, read)]
    logged = 0
    for run_id in sorted({p.run_id for p in parts}):
        mine = [p for p in parts if p.run_id == run_id]
        files = sorted({f"line-{p.line}/{run_id}/{name}.json" for p in mine for name in p.tables})
        subjects = sorted(set().union(*(p.subjects for p in mine)))
        manifest = json.loads((runs[run_id] / "manifest.json").read_text())
        context = AuditContext(
            run_id, manifest["processing_activity_id"], manifest["register_version"]
        )
        records = decryption_records(
            context, pa.array(subjects, pa.string()), files, lookup.event, actor(), PURPOSE
        )
        append_to_run_log(runs[run_id], records, f"decryption/{lookup.event}", keyring)
        logged += records.num_rows
    if parts:
        _write_parts(parts, out, lookup.event)
    written: dict[str, dict[str, int]] = {}
    for p in parts:
        key = f"line-{p.line}/{p.run_id}"
        written[key] = {name: rows.num_rows for name, rows in p.tables.items()}
    return Extract(out, written, destroyed, logged)


def _write_parts(parts: list[_Part], out: Path, event: str) -> None:
    """The files in a new owner-only folder beside `out`, renamed to `out` when all are in."""
    import os
    import shutil

    building = out.with_name(f".{out.name}.{event}.partial")
    building.mkdir(mode=0o700, parents=True)
    try:
        for part in parts:
            folder = building / f"line-{part.line}" / part.run_id
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder.parent, 0o700)
            for name, rows in part.tables.items():
                with written_whole(folder / f"{name}.json", private=True) as tmp:
                    tmp.write_bytes(_json_rows(rows))
        if out.exists():
            out.rmdir()  # empty (the command refuses a folder that is not)
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
