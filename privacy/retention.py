"""Crypto-shredding: a run's personal data is encrypted under its own key, and retention
destroys that key.

Before a run is published, every output that holds personal data (PERSONAL_DATA:
signals, the household table, rule evaluations, lifecycle, suppressed candidates) is encrypted
under a fresh 256-bit data key made for that run alone. The data key is stored wrapped
(AES-256-GCM) under the central keyring's active `run-data` key, in a key store outside
the run folder (`<runs>/.keys/<run_id>.key` by default). `enforce_retention` destroys the wrapped
keys of runs whose retention period has ended: their ciphertext stays on disk (and in
any backup) but can no longer be read by anyone. Aggregate outputs (the manifest's
counts, reports) are not personal data about a person and stay in plain text, so they
remain readable after retention. The quarantine files are plain too (a row number, a
field and a cause that never quotes a value) but name rows the supplying body can trace
to a person: retention removes them with the key. The same pass removes what the
runs leave beside them once it is past its time: operator feedback rows and body-key link
tables (`enforce_retention`).

Files are encrypted in 1 MiB segments, each its own AES-GCM message whose nonce counts
the segment and whose associated data binds the run, the file's path, the segment's
number and whether it is the last: a segment cannot be swapped, reordered, moved to
another run or file, or cut off without decryption failing. Readers decrypt into
memory (`read_run_table`); `decrypt_run` writes plain copies for DuckDB users who
accept to handle them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.files import written_whole
from privacy.keys import Keyring, KeyringError

# Paths in a run folder that hold personal data (pseudonymous, per household or person);
# a folder means its *.parquet files. Absent ones are skipped.
PERSONAL_DATA = (
    "signals.parquet",
    "households",
    "evaluations",
    "lifecycle.parquet",
    "suppressed.parquet",
)
QUARANTINE = "quarantine"  # plain (row, field, cause; never a value), removed at retention
ENCRYPTED_SUFFIX = ".enc"
KEY_STORE = ".keys"
ENCRYPTION_FILE = "encryption.json"
RETENTION_FILE = "retention.json"
SEGMENT = 1 << 20
_MAGIC = b"signals-run-data/1\n"
_KEY_FORMAT = "signals-run-key/1"
ISO_PERIOD = re.compile(r"^P(?=\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


class RunDataUnavailable(Exception):
    """A run's personal data cannot be read: its key was destroyed, is missing, or is not ours."""


class RunDataDestroyed(RunDataUnavailable):
    """A run's personal data was destroyed on purpose (retention); readers may skip the run."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def key_store_of(run_dir: Path) -> Path:
    """The default key store of a run: `.keys` next to the run folders."""
    return Path(run_dir).resolve().parent / KEY_STORE


# -- the per-run data key -------------------------------------------------------------------


def _wrap_aad(run_id: str, kek_id: str) -> bytes:
    return f"{_KEY_FORMAT}\x00{run_id}\x00{kek_id}".encode()


def _write_key(key_store: Path, run_id: str, data_key: bytes, keyring: Keyring) -> Path:
    kek = keyring.active("run-data")
    nonce = secrets.token_bytes(12)
    wrapped = AESGCM(kek.material).encrypt(nonce, data_key, _wrap_aad(run_id, kek.id))
    record = {
        "format": _KEY_FORMAT,
        "run_id": run_id,
        "kek_id": kek.id,
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    key_store.mkdir(parents=True, exist_ok=True)
    path = key_store / f"{run_id}.key"
    with written_whole(path, private=True, durable=True) as tmp:  # without it, no data
        tmp.write_text(json.dumps(record, indent=1))
    return path


def _read_key_record(run_dir: Path, key_store: Path) -> dict:
    run_dir = Path(run_dir)
    path = Path(key_store) / f"{run_dir.name}.key"
    if not path.is_file():
        tombstone = run_dir / RETENTION_FILE
        if tombstone.is_file():
            info = json.loads(tombstone.read_text())
            raise RunDataDestroyed(
                f"{run_dir}: its personal data was destroyed on {info['key_destroyed_at']} "
                f"(retention period {info['period']} ended); only aggregate outputs remain"
            )
        raise RunDataUnavailable(f"{run_dir}: no data key for this run in {key_store}")
    return json.loads(path.read_text())


def run_data_key(run_dir: Path, keyring: Keyring, key_store: Path | None = None) -> bytes:
    """Unwrap a run's data key with the keyring's run-data key (raises if destroyed)."""
    record = _read_key_record(run_dir, key_store or key_store_of(run_dir))
    try:
        kek = keyring.by_id(record["kek_id"])
    except KeyringError:
        raise RunDataUnavailable(
            f"{run_dir}: its data key is wrapped under {record['kek_id']}, which this keyring "
            "does not hold"
        ) from None
    try:
        return AESGCM(kek.material).decrypt(
            base64.b64decode(record["nonce"]),
            base64.b64decode(record["wrapped"]),
            _wrap_aad(record["run_id"], kek.id),
        )
    except InvalidTag:
        raise RunDataUnavailable(
            f"{run_dir}: the data key does not open with key {kek.id}: wrong keyring, or the "
            "key store file was altered"
        ) from None


# -- file encryption ---------------------------------------------------------------------


def _segment_aad(header: bytes, index: int, final: bool) -> bytes:
    return hashlib.sha256(_MAGIC + header).digest() + index.to_bytes(8, "big") + bytes([final])


def encrypt_file(plain: Path, data_key: bytes, run_id: str, relative: str) -> Path:
    """Encrypt `plain` to `<plain>.enc` and remove the plain file; returns the new path."""
    prefix = secrets.token_bytes(4)
    header = (
        json.dumps(
            {"run_id": run_id, "path": relative, "segment": SEGMENT, "nonce_prefix": _b64(prefix)},
            sort_keys=True,
        ).encode()
        + b"\n"
    )
    aead = AESGCM(data_key)
    target = plain.with_name(plain.name + ENCRYPTED_SUFFIX)
    size = plain.stat().st_size
    with open(plain, "rb") as src, open(target, "wb") as dst:
        dst.write(_MAGIC + header)
        index = 0
        while True:
            chunk = src.read(SEGMENT)
            final = src.tell() >= size
            nonce = prefix + index.to_bytes(8, "big")
            dst.write(aead.encrypt(nonce, chunk, _segment_aad(header, index, final)))
            index += 1
            if final:
                break
    plain.unlink()
    return target


def decrypt_bytes(path: Path, data_key: bytes, run_id: str, relative: str) -> bytes:
    """The plain content of an encrypted run file, in memory."""
    data = Path(path).read_bytes()
    if not data.startswith(_MAGIC):
        raise RunDataUnavailable(f"{path}: not an encrypted run file")
    end = data.index(b"\n", len(_MAGIC)) + 1
    header = data[len(_MAGIC) : end]
    meta = json.loads(header)
    if (meta["run_id"], meta["path"]) != (run_id, relative):
        raise RunDataUnavailable(f"{path}: belongs to {meta['run_id']}/{meta['path']}, not here")
    aead, prefix, step = AESGCM(data_key), base64.b64decode(meta["nonce_prefix"]), SEGMENT + 16
    out, offset, index = [], end, 0
    while True:
        segment = data[offset : offset + step]
        offset += len(segment)
        final = offset >= len(data)
        try:
            nonce = prefix + index.to_bytes(8, "big")
            out.append(aead.decrypt(nonce, segment, _segment_aad(header, index, final)))
        except InvalidTag:
            raise RunDataUnavailable(
                f"{path}: segment {index} does not decrypt: the file was altered or cut short"
            ) from None
        index += 1
        if final:
            return b"".join(out)


def _personal_files(run_dir: Path, suffix: str) -> list[Path]:
    found = []
    for name in PERSONAL_DATA:
        path = run_dir / name
        if path.suffix == ".parquet":
            candidate = path.with_name(path.name + suffix) if suffix else path
            found += [candidate] if candidate.is_file() else []
        elif path.is_dir():
            found += sorted(path.glob(f"*.parquet{suffix}"))
    return found


def protect_run(staging: Path, run_id: str, keyring: Keyring, key_store: Path) -> dict:
    """Encrypt a finalised run's personal data under a new data key; returns what was done."""
    staging = Path(staging)
    data_key = AESGCM.generate_key(bit_length=256)
    key_path = _write_key(Path(key_store), run_id, data_key, keyring)
    files = []
    for plain in _personal_files(staging, ""):
        relative = plain.relative_to(staging).as_posix()
        encrypt_file(plain, data_key, run_id, relative)
        files.append(relative + ENCRYPTED_SUFFIX)
    info = {
        "format": "signals-run-data/1",
        "cipher": f"AES-256-GCM, {SEGMENT // (1 << 20)} MiB segments",
        "data_key": {"store": str(key_path.parent), "file": key_path.name},
        "wrapped_under": keyring.active("run-data").id,
        "files": files,
    }
    (staging / ENCRYPTION_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


# -- reading ---------------------------------------------------------------------------------


def read_run_table(
    run_dir: Path, name: str, keyring: Keyring, key_store: Path | None = None, where=None
) -> pa.Table:
    """A personal-data output of a run (`signals.parquet` or `households`), decrypted in memory.

    `where(table) -> table` keeps what it returns of each decrypted file (bounded memory when
    only a few rows are wanted of a big run).
    """
    run_dir = Path(run_dir)
    if name not in PERSONAL_DATA:
        raise ValueError(f"{name!r} is not a personal-data output ({', '.join(PERSONAL_DATA)})")
    data_key = run_data_key(run_dir, keyring, key_store)
    keep = where or (lambda table: table)
    tables = [
        keep(pq.read_table(pa.BufferReader(_decrypt(p, run_dir, data_key))))
        for p in _personal_files(run_dir, ENCRYPTED_SUFFIX)
        if p.relative_to(run_dir).parts[0] in (name, name + ENCRYPTED_SUFFIX)
    ]
    if not tables:
        raise RunDataUnavailable(f"{run_dir}: no encrypted {name} in this run")
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def log_reading(run_dir: Path, names: tuple[str, ...], keyring: Keyring, purpose: str) -> int:
    """Log, before it happens, that the encrypted outputs `names` of a run are decrypted in
    memory for `purpose` (the aggregate report of a published run): one `decryption` record
    per data subject the run holds data on, as `decrypt_run` logs its plain copies. Returns
    the records logged, 0 when none of them is encrypted (nothing is decrypted then)."""
    run_dir = Path(run_dir)
    plain = (_plain_name(p, run_dir) for p in _personal_files(run_dir, ENCRYPTED_SUFFIX))
    files = [name for name in plain if name.split("/")[0] in names]
    return _log_decryption(run_dir, files, keyring, purpose) if files else 0


def _plain_name(path: Path, run_dir: Path) -> str:
    """An encrypted file's path in the run as it was before encryption (what it is bound to)."""
    return path.relative_to(run_dir).as_posix()[: -len(ENCRYPTED_SUFFIX)]


def _decrypt(path: Path, run_dir: Path, data_key: bytes) -> bytes:
    return decrypt_bytes(path, data_key, run_dir.name, _plain_name(path, run_dir))


class Decrypted(NamedTuple):
    files: list[Path]  # the plain copies written
    records: int  # decryption records appended to the audit log, one per data subject


def decrypt_run(
    run_dir: Path, keyring: Keyring, out: Path, key_store: Path | None = None
) -> Decrypted:
    """Write plain copies of a run's personal data under `out` (same layout), for DuckDB.

    Logged first, one `decryption` record per data subject the run holds data on
    (`_run_subjects`): if the log cannot be written (no audit-signing key, say), nothing
    is decrypted.
    """
    run_dir, out = Path(run_dir), Path(out)
    data_key = run_data_key(run_dir, keyring, key_store)
    sources = _personal_files(run_dir, ENCRYPTED_SUFFIX)
    records = _log_decryption(run_dir, [_plain_name(p, run_dir) for p in sources], keyring)
    written = []
    for path in sources:
        target = out / _plain_name(path, run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(target, private=True) as tmp:  # plain personal data
            tmp.write_bytes(_decrypt(path, run_dir, data_key))
        written.append(target)
    return Decrypted(written, records)


# -- retention -------------------------------------------------------------------------------


def add_period(start: dt.date, period: str) -> dt.date:
    """`start` plus an ISO 8601 period of years, months, weeks and days (P1Y, P13M, P30D)."""
    m = ISO_PERIOD.match(period)
    if not m:
        raise ValueError(f"retention period must be an ISO 8601 duration like P1Y, not {period!r}")
    years, months, weeks, days = (int(g or 0) for g in m.groups())
    month0 = start.month - 1 + months + 12 * years
    year, month = start.year + month0 // 12, month0 % 12 + 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(start.day, last_day)) + dt.timedelta(weeks=weeks, days=days)


def _destroy(path: Path) -> None:
    """Overwrite, then remove: best effort against recovery from the same disk."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(secrets.token_bytes(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()


def retention_status(runs_root: Path, period: str, key_store: Path | None = None) -> list[dict]:
    """Every run with a data key: when it was made, until when it is kept, and its state."""
    runs_root = Path(runs_root)
    key_store = Path(key_store) if key_store else runs_root / KEY_STORE
    out = []
    for path in sorted(key_store.glob("*.key")) if key_store.is_dir() else []:
        record = json.loads(path.read_text())
        created = dt.datetime.fromisoformat(record["created"]).date()
        out.append(
            {
                "run_id": record["run_id"],
                "created": created.isoformat(),
                "keep_until": add_period(created, period).isoformat(),
                "key_file": path,
            }
        )
    return out


def _run_subjects(run_dir: Path, required: bool = False):
    """(the run's audit context, the data subjects it holds data on).

    They are the ones the run's own audit copy names, so nothing needs decrypting to find
    them: the household members of its `join` records, and the households of its
    `resolution` records (lifecycle.parquet holds the closed episodes of households that
    left the run too, which have no members in it). Without that copy there are none to
    name: `required` refuses then.
    """
    from pipelines.audit_records import AuditContext
    from privacy.audit.log import RUN_COPY

    manifest = json.loads((run_dir / "manifest.json").read_text())
    copy = run_dir / RUN_COPY
    pids = pa.array([], pa.string())
    if copy.is_file():
        audit = pq.read_table(copy, columns=["name", "data_subject_pid"])
        named = pc.is_in(audit["name"], value_set=pa.array(["join", "resolution"]))
        pids = pc.unique(audit.filter(named)["data_subject_pid"].combine_chunks())
    elif required:
        raise RunDataUnavailable(
            f"{copy}: missing, so the persons whose data this run holds cannot be logged; "
            "nothing decrypted"
        )
    context = AuditContext(
        manifest["run_id"], manifest["processing_activity_id"], manifest["register_version"]
    )
    return context, pids


def _log_deletion(run_dir: Path, period: str, keyring: Keyring) -> int:
    """One `deletion` audit record per data subject whose data the run holds, in the log.

    Logged before the key goes: if the log cannot be written, nothing is destroyed.
    """
    from privacy.audit.events import append_to_run_log, deletion_records

    context, pids = _run_subjects(run_dir)
    records = deletion_records(
        context, pids, dataset="run-personal-data", reason=f"retention period {period} ended"
    )
    append_to_run_log(run_dir, records, "deletion/run-personal-data", keyring)
    return len(pids)


def _log_decryption(
    run_dir: Path, files: list[str], keyring: Keyring, purpose: str = "plain copies"
) -> int:
    """One `decryption` audit record per data subject whose data the run holds (one event)."""
    from privacy.audit.events import actor, append_to_run_log, decryption_records, new_event_id

    context, pids = _run_subjects(run_dir, required=True)
    event = new_event_id()
    records = decryption_records(context, pids, files, event, actor(), purpose)
    append_to_run_log(run_dir, records, f"decryption/{event}", keyring)
    return len(pids)


@dataclass(frozen=True)
class Enforced:
    """What one retention pass destroyed."""

    runs: list[str]  # ids of the runs whose data key was destroyed
    feedback_rows: int  # operator feedback rows past the period, removed
    link_tables: list[str]  # link tables (file names) no kept run or feedback needs any more
    deliveries: list[str] = ()  # reference dates whose pseudonymised deliveries were removed


def enforce_retention(
    runs_root: Path,
    period: str,
    as_of: dt.date,
    keyring: Keyring,
    key_store: Path | None = None,
    deliveries_root: Path | None = None,
) -> Enforced:
    """Destroy what the retention period no longer allows to keep, as of `as_of`:

    - the data keys of runs whose period, counted from the run, ended;
    - with `deliveries_root`: the pseudonymised deliveries the runs read, whose period,
      counted from their reference date, ended (plain Parquet: income, assets,
      objections; keeping them would keep what the runs' keys no longer open);
    - operator feedback rows whose period, counted from their outcome date, ended
      (`<runs>/feedback/`, pseudonymised: the household and its outcome);
    - the link tables of body-key rotations (`<runs>/links/`) that no run whose data is
      kept, and no feedback left, was made with the old key of.

    Each destruction is logged first, one `deletion` record per data subject, in the audit
    log (signed with the keyring's audit-signing key): if it cannot be logged, nothing
    of it is destroyed. Writes `retention.json` into each destroyed run's folder so
    readers learn why the data is gone.
    """
    runs = _destroy_run_keys(Path(runs_root), period, as_of, keyring, key_store)
    rows = _expire_feedback(Path(runs_root), period, as_of, keyring)
    links = _expire_links(Path(runs_root), keyring)
    days = []
    if deliveries_root is not None:
        days = _expire_deliveries(Path(deliveries_root), Path(runs_root), period, as_of, keyring)
    return Enforced(runs, rows, links, days)


def _destroy_run_keys(runs_root, period, as_of, keyring, key_store) -> list[str]:
    destroyed = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for run in retention_status(runs_root, period, key_store):
        if dt.date.fromisoformat(run["keep_until"]) >= as_of:
            continue
        run_dir = Path(runs_root) / run["run_id"]
        if run_dir.is_dir():
            _log_deletion(run_dir, period, keyring)
            (run_dir / RETENTION_FILE).write_text(
                json.dumps(
                    {
                        "key_destroyed_at": now,
                        "period": period,
                        "kept_until": run["keep_until"],
                        "destroyed": list(PERSONAL_DATA) + [QUARANTINE],
                    },
                    indent=2,
                )
                + "\n"
            )
            # Plain, but each record is a row of a delivery the body can trace to a person.
            for path in sorted((run_dir / QUARANTINE).glob("*.parquet")):
                _destroy(path)
        _destroy(run["key_file"])
        destroyed.append(run["run_id"])
    return destroyed


# -- what the runs leave beside them: operator feedback and link tables ----------------------

FEEDBACK_DATASET = "operator-feedback"
LINK_DATASET = "body-key-link-table"
_EXPIRED = ".expired"  # an old file's second name while its bytes are overwritten


def _log_root(runs_root: Path) -> Path:
    from privacy.audit.log import LOG_DIRNAME, AuditLogError

    root = runs_root / LOG_DIRNAME
    if not (root / "checkpoints").is_dir():
        raise AuditLogError(
            f"{root}: no audit log beside the runs, so the deletion cannot be logged; "
            "nothing destroyed"
        )
    return root


def _context(runs_root: Path, run_id: str):
    """The audit context of a run: from its manifest, else the programme's in the register."""
    from pipelines.audit_records import AuditContext
    from privacy.keys import DEFAULT_DOMAIN
    from privacy.register import load_register

    manifest = runs_root / run_id / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        return AuditContext(run_id, m["processing_activity_id"], m["register_version"])
    return AuditContext(run_id, DEFAULT_DOMAIN, load_register().version)


def _replace_destroying(path: Path, table: pa.Table | None) -> None:
    """Put `table` in place of the Parquet file at `path` (None: remove it), and overwrite
    the old bytes: renaming alone leaves them on the disk. A leftover second name of a
    pass that was killed is destroyed by the next (`_destroy_leftovers`)."""
    held = path.with_name(f".{path.name}{_EXPIRED}")
    os.link(path, held)  # the old bytes keep a name until they are overwritten
    if table is None:
        path.unlink()
    else:
        with written_whole(path, private=True, durable=True) as tmp:
            pq.write_table(table, tmp)
    _destroy(held)


def _destroy_leftovers(folder: Path) -> None:
    """The second names a killed pass left. One whose file still has its live name too (the
    pass was killed before replacing it) is only unlinked: overwriting it would overwrite
    the live file, and the pass replaces it again. One alone is destroyed."""
    for held in folder.glob(f".*{_EXPIRED}") if folder.is_dir() else []:
        if held.stat().st_nlink > 1:
            held.unlink()
        else:
            _destroy(held)


def _expire_feedback(runs_root: Path, period: str, as_of: dt.date, keyring: Keyring) -> int:
    """Remove the feedback rows whose period, counted from their outcome date, ended before
    `as_of`; returns how many. A file keeps its name with the rows left, none at worst,
    so importing the same file again is still recognised as done."""
    from pipelines.lifecycle import FEEDBACK_SCHEMA, feedback_folder

    folder = feedback_folder(runs_root)
    _destroy_leftovers(folder)
    tables, gone = {}, []
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        table = pq.read_table(path, schema=FEEDBACK_SCHEMA)
        dates = [d for d in pc.unique(table["outcome_date"]).to_pylist() if d is not None]
        ended = pa.array([d for d in dates if add_period(d, period) < as_of], pa.date32())
        if len(ended):
            expired = pc.is_in(table["outcome_date"], value_set=ended)
            tables[path] = table.filter(pc.invert(expired))
            gone.append(table.filter(expired))
    if not gone:
        return 0
    rows = pa.concat_tables(gone)
    _log_feedback_deletion(runs_root, rows, period, keyring)
    for path, left in tables.items():
        _replace_destroying(path, left)
    return rows.num_rows


def _log_feedback_deletion(runs_root: Path, rows: pa.Table, period: str, keyring) -> None:
    """One `deletion` record per household a run's removed feedback rows were about, under
    that run's trace (the feedback is on its signals), in one batch named after the rows."""
    from privacy.audit.events import append_events, deletion_records
    from privacy.audit.signing import Signer

    keys = sorted(zip(rows["import_id"].to_pylist(), rows["row_number"].to_pylist(), strict=True))
    digest = hashlib.sha256(repr(keys).encode()).hexdigest()[:16]
    reason = f"retention period {period} ended, counted from the outcome date"
    records = []
    for run_id in sorted(pc.unique(rows["run_id"]).to_pylist()):
        pids = pc.unique(rows.filter(pc.equal(rows["run_id"], run_id))["household_pid"])
        context = _context(runs_root, run_id)
        records.append(deletion_records(context, pids, FEEDBACK_DATASET, reason, part=digest))
    batch = f"retention/{FEEDBACK_DATASET}/{digest}"
    append_events(_log_root(runs_root), pa.concat_tables(records), batch, Signer(keyring))


def _expire_links(runs_root: Path, keyring: Keyring) -> list[str]:
    """Remove the link tables nothing kept needs any more (privacy/body_links.py); logs one
    `deletion` record per household they linked (its new pseudonym, as when linked)."""
    from pipelines.audit_records import AuditContext
    from privacy.audit.events import append_events, deletion_records
    from privacy.audit.log import file_sha256
    from privacy.audit.signing import Signer
    from privacy.body_links import LINKS_DIR, link_domain, unneeded_tables
    from privacy.register import load_register

    _destroy_leftovers(runs_root / LINKS_DIR)
    removed = []
    for path in unneeded_tables(runs_root):
        pids = pc.unique(pq.read_table(path, columns=["new_pid"])["new_pid"].combine_chunks())
        digest = file_sha256(path).hex()[:16]
        domain = link_domain(path, keyring)
        context = AuditContext(f"retention/{path.stem}", domain, load_register().version)
        reason = "no run or feedback kept was made with its old body key"
        records = deletion_records(context, pids, LINK_DATASET, reason, part=digest)
        batch = f"retention/{path.stem}/{digest}"
        append_events(_log_root(runs_root), records, batch, Signer(keyring))
        _replace_destroying(path, None)
        removed.append(path.name)
    return removed


DELIVERIES_DATASET = "pseudonymised-deliveries"


def _expired_deliveries(root: Path, period: str, as_of: dt.date) -> dict[dt.date, list[Path]]:
    """Delivery folders (<root>/<source>/<date>/) per reference date whose period ended, but
    never a source's newest: it is what the next run reads (a body that delivers less
    often than the runs, thresholds.max_delivery_age_days)."""
    found: dict[dt.date, list[Path]] = {}
    for source in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        dated = []
        for folder in source.iterdir():
            try:
                dated.append((dt.date.fromisoformat(folder.name), folder))
            except ValueError:
                continue  # `.2025-01-01.partial-1`: a delivery being written
        for day, folder in sorted(dated)[:-1]:
            if folder.is_dir() and add_period(day, period) < as_of:
                found.setdefault(day, []).append(folder)
    return found


def _expire_deliveries(
    root: Path, runs_root: Path, period: str, as_of: dt.date, keyring: Keyring
) -> list[str]:
    """Remove the expired deliveries of each reference date, after logging one `deletion`
    record per person they hold (their domain pseudonym, as the runs named them)."""
    from pipelines.audit_records import AuditContext
    from pipelines.contract import SOURCES
    from privacy.audit.events import append_events, deletion_records
    from privacy.audit.signing import Signer
    from privacy.keys import DEFAULT_DOMAIN
    from privacy.pseudonyms import DomainPseudonymiser
    from privacy.register import load_register

    removed = []
    for day, folders in sorted(_expired_deliveries(root, period, as_of).items()):
        domain = DomainPseudonymiser(keyring.active("domain", DEFAULT_DOMAIN))
        persons = []
        for folder in folders:
            source = SOURCES.get(folder.parent.name)
            data = folder / "data.parquet"
            if source is not None and source.subject == "bsn" and data.is_file():
                persons.append(pq.read_table(data, columns=["bsn"])["bsn"].combine_chunks())
        pids = pc.unique(pa.concat_arrays(persons)) if persons else pa.array([], pa.string())
        version = load_register().version
        context = AuditContext(f"retention/deliveries/{day}", DEFAULT_DOMAIN, version)
        reason = f"retention period {period} ended, counted from the reference date"
        records = deletion_records(
            context, domain.array(pids.drop_null()), DELIVERIES_DATASET, reason, part=str(day)
        )
        # Named after what goes, not only the date: deliveries of that date found later (a
        # restored backup) are another deletion and are logged again.
        made = sorted(f"{f.parent.name}:{_manifest_sha(f)}" for f in folders)
        digest = hashlib.sha256("\n".join(made).encode()).hexdigest()[:16]
        batch = f"retention/deliveries/{day.isoformat()}/{digest}"
        append_events(_log_root(runs_root), records, batch, Signer(keyring))
        for folder in folders:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                _destroy(path)
            shutil.rmtree(folder)
        removed.append(day.isoformat())
    return removed


def _manifest_sha(folder: Path) -> str:
    try:
        return json.loads((folder / "manifest.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return "no manifest"
