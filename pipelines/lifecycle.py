"""The lifecycle of a signal across runs (new, repeated, resolved), and the history it rests on.

A signal concerns one household and one scheme. Its id depends only on household, scheme
and benefit year (pipelines/evaluate.py), so the same id comes back in every run. An
*episode* of (household, scheme) runs from its first signal until it is resolved. In a run:

    new       a candidate without an open episode: never signalled, or resolved since
    repeated  a candidate with an open episode: signalled before and still entitled
              (whether it is signalled again now is for the fatigue check to decide)
    resolved  an open episode that no longer holds, for one of RESOLUTIONS; written to
              <run>/lifecycle.parquet, one row per episode closed in that run. A candidate
              that closes its episode (now receiving, objected, deregistered) is suppressed
              and carries this status too.

What a run knows of the past ("history") comes from the same output root only:

- published runs (folders with a manifest.json) with an EARLIER reference date. A second
  run for the same reference date (say, after a corrected delivery) replaces the first; it
  does not follow it, so it does not see it. A later run sees both, the replacing one last:
  the first one's signals may have been worked from its worklist already. Their signals
  may be encrypted at rest (privacy/retention.py): reading them needs the central
  keyring. A run whose personal data was destroyed at the end of its retention period is
  no history any more;
- operator feedback (<out>/feedback/*.parquet, see flows/feedback.py) with an outcome date
  on or before the run's reference date.

After a domain-key rotation the history's household pseudonyms are of the older key: a run
maps them to its own (`load_history(rekey=...)`, flows/run.py) before comparing; after a
body-key rotation it maps them through the controller's link table (privacy/body_links.py).

History is reduced to one state row per (household, scheme) (STATE_SCHEMA) before the
pipeline starts: the last signal and its date (fatigue), whether the episode is open
(lifecycle) and the newest operator outcome (open cases). The pipeline reads it as a side
input (pipelines/proportionality.py). Its fingerprint enters the run id: the same inputs
and the same history give the same run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Operator outcomes per signal (flows/feedback.py), with the rank that breaks a tie between
# outcomes recorded on the same day: the further along the case, the higher.
OUTCOMES = ("unreachable", "contacted", "applied", "declined", "not_entitled", "granted")
OUTCOME_RANK = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}

RESOLUTIONS = (
    "deregistered",  # the applicant died or emigrated
    "objected",  # the applicant or partner objected to this scheme
    "now_receiving",  # the scheme is now paid to applicant or partner
    "no_longer_entitled",  # the conditions of entitlement no longer hold
    "not_evaluated",  # the household is in the run, but the scheme was not evaluated
    "not_in_run",  # the household is no longer in the household table
)

STATE_SCHEMA = pa.schema(
    [
        ("household_pid", pa.string()),
        ("scheme", pa.string()),
        ("last_signal_id", pa.string()),
        ("last_benefit_year", pa.int32()),
        ("last_signalled_on", pa.date32()),  # reference date of the run that signalled it
        ("last_run_id", pa.string()),
        ("episode_open", pa.bool_()),
        ("case_outcome", pa.string()),  # newest operator outcome, null if none
        ("case_on", pa.date32()),
    ]
)


def read_history(path: str | Path) -> pa.Table:
    """The history a run wrote for its steps (pipelines/central.py), as STATE_SCHEMA."""
    return pq.read_table(path).cast(STATE_SCHEMA)


def open_episodes(path: str | Path) -> pa.Table:
    """The households with an open episode in the history at `path` (column household_pid)."""
    state = read_history(path)
    households = state.filter(pc.fill_null(state.column("episode_open"), False))
    return pa.table({"household_pid": pc.unique(households.column("household_pid"))})


LIFECYCLE_SCHEMA = pa.schema(
    [
        ("signal_id", pa.string()),  # the episode's last signal
        ("run_id", pa.string()),  # the run that resolved it
        ("reference_date", pa.date32()),
        ("household_pid", pa.string()),
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("status", pa.string()),  # always "resolved"
        ("reason", pa.string()),  # one of RESOLUTIONS
        ("last_signalled_on", pa.date32()),
        ("last_run_id", pa.string()),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        ("signal_id", pa.string()),
        ("scheme", pa.string()),
        ("outcome", pa.string()),
        ("outcome_date", pa.date32()),
        ("household_pid", pa.string()),
        ("benefit_year", pa.int32()),
        ("run_id", pa.string()),  # the first run that emitted the signal
        ("import_id", pa.string()),  # SHA-256 of the imported file: one file, one import
        ("row_number", pa.int64()),  # data row in the imported file (1 = first after header)
    ]
)


@dataclass(frozen=True)
class PriorRun:
    run_id: str
    reference_date: dt.date
    created_at: str
    path: Path


@dataclass(frozen=True)
class History:
    """What a run knows of the past: the state table and where it came from."""

    state: pa.Table
    runs: tuple[str, ...]  # prior run ids, oldest first
    feedback_files: tuple[str, ...]
    fingerprint: str  # SHA-256 of the state content
    keys: tuple[str, ...] = ()  # the domain key ids the history was written with, before rekey
    body_links: tuple[str, ...] = ()  # body-key link tables used ("b1->b2"; privacy/body_links.py)
    unlinked_households: int = 0  # history households (signals, feedback) no table held


def feedback_folder(out_root: Path) -> Path:
    return Path(out_root) / "feedback"


def prior_runs(out_root: Path, reference_date: dt.date) -> list[PriorRun]:
    """Published runs under out_root with a reference date before `reference_date`, oldest first."""
    runs = []
    root = Path(out_root)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        manifest = folder / "manifest.json"
        if folder.name.startswith(".") or not manifest.is_file():
            continue
        if (folder / "retention.json").is_file():
            continue  # its personal data is destroyed (privacy/retention.py): no history left
        m = json.loads(manifest.read_text())
        day = dt.date.fromisoformat(m["reference_date"])
        if day < reference_date:
            runs.append(PriorRun(m["run_id"], day, str(m.get("created_at", "")), folder))
    return sorted(runs, key=lambda r: (r.reference_date, r.created_at, r.run_id))


class HistoryUnavailable(Exception):
    """An earlier run's outputs cannot be read, so fatigue and lifecycle cannot be applied."""


Reader = Callable[[Path, str], "pa.Table | None"]
Rekey = Callable[[pa.Array, pa.Array], pa.Array]  # (household pids, their run ids) -> pids


def run_reader(keyring=None, key_store: Path | None = None) -> Reader:
    """Reads a prior run's table, published in plain or encrypted (privacy/retention.py).

    An encrypted table without a keyring to open it is an error, never an empty history:
    a history read short would let fatigue wave through a household signalled last month.
    """
    from privacy.retention import ENCRYPTED_SUFFIX, RunDataUnavailable, read_run_table

    def read(run_dir: Path, name: str) -> pa.Table | None:
        path = Path(run_dir) / name  # a file (signals.parquet) or a folder of parts
        if path.is_file() or (path.is_dir() and any(path.glob("*.parquet"))):
            return pq.read_table(path)
        sealed = path.with_name(path.name + ENCRYPTED_SUFFIX)
        if not (sealed.is_file() or any(path.glob(f"*.parquet{ENCRYPTED_SUFFIX}"))):
            return None
        if keyring is None:
            raise HistoryUnavailable(
                f"{run_dir}: {name} is encrypted and no central keyring was given; "
                "fatigue and lifecycle need the earlier runs' signals"
            )
        try:
            return read_run_table(run_dir, name, keyring, key_store)
        except RunDataUnavailable as exc:
            raise HistoryUnavailable(f"{run_dir}: {name} cannot be read ({exc})") from None

    return read


EVENT_SCHEMA = pa.schema(
    [
        ("signal_id", pa.string()),
        ("household_pid", pa.string()),
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("event", pa.string()),  # signalled or resolved
        ("seq", pa.int32()),  # the run's place in the order of runs
        ("reference_date", pa.date32()),
        ("run_id", pa.string()),
    ]
)


def events_of(runs: list[PriorRun], read: Reader) -> pa.Table:
    """Signals and resolutions of the prior runs as one table, with each run's order `seq`."""
    keys = ["signal_id", "household_pid", "scheme", "benefit_year"]
    parts = [EVENT_SCHEMA.empty_table()]
    for seq, run in enumerate(runs):
        for event, name in (("signalled", "signals.parquet"), ("resolved", "lifecycle.parquet")):
            table = read(run.path, name)
            if table is None or not table.num_rows:
                continue
            n = table.num_rows
            extra = {
                "event": pa.array([event] * n, pa.string()),
                "seq": pa.array([seq] * n, pa.int32()),
                "reference_date": pa.array([run.reference_date] * n, pa.date32()),
                "run_id": pa.array([run.run_id] * n, pa.string()),
            }
            columns = {k: table.column(k) for k in keys} | extra
            parts.append(pa.table(columns).cast(EVENT_SCHEMA))
    return pa.concat_tables(parts)


def _feedback_sql(has_rows: bool, reference_date: dt.date) -> str:
    ranks = " ".join(f"WHEN '{o}' THEN {r}" for o, r in OUTCOME_RANK.items())
    if not has_rows:
        return (
            "SELECT NULL::VARCHAR AS household_pid, NULL::VARCHAR AS scheme, "
            "NULL::VARCHAR AS case_outcome, NULL::DATE AS case_on WHERE FALSE"
        )
    return f"""
        SELECT household_pid, scheme, outcome AS case_outcome, outcome_date AS case_on
        FROM (
            SELECT *, row_number() OVER (
                PARTITION BY household_pid, scheme
                ORDER BY outcome_date DESC, CASE outcome {ranks} END DESC
            ) AS newest
            FROM feedback
            WHERE outcome_date <= DATE '{reference_date.isoformat()}'
        )
        WHERE newest = 1"""


def _feedback(files: list[Path]) -> pa.Table:
    columns = ["household_pid", "scheme", "outcome", "outcome_date", "run_id"]
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables) if tables else FEEDBACK_SCHEMA.empty_table().select(columns)


def _key_ids(tables: list[pa.Table]) -> tuple[str, ...]:
    """The key ids (`d1`, `d2`: the part before the dot) of the tables' household pseudonyms."""
    ids = set()
    for table in tables:
        if table.num_rows:
            pids = pc.unique(table.column("household_pid").combine_chunks())
            ids |= {p.split(".", 1)[0] for p in pids.to_pylist() if p}
    return tuple(sorted(ids))


def _rekeyed(table: pa.Table, rekey: Rekey | None, what: str) -> pa.Table:
    """`table` with its household pseudonyms under the run's domain key (a rotation)."""
    if rekey is None or not table.num_rows:
        return table
    i = table.schema.get_field_index("household_pid")
    try:
        pids = rekey(table.column(i).combine_chunks(), table.column("run_id").combine_chunks())
        return table.set_column(i, "household_pid", pids)
    except HistoryUnavailable as exc:
        raise HistoryUnavailable(f"{what}: {exc}") from None


STATE_SQL = """
WITH signalled AS (
    SELECT household_pid, scheme,
        arg_max(signal_id, seq) AS last_signal_id,
        arg_max(benefit_year, seq) AS last_benefit_year,
        max(reference_date) AS last_signalled_on,
        arg_max(run_id, seq) AS last_run_id,
        max(seq) AS last_signal_seq
    FROM events WHERE event = 'signalled'
    GROUP BY household_pid, scheme
),
resolved AS (
    SELECT household_pid, scheme, max(seq) AS last_resolved_seq
    FROM events WHERE event = 'resolved'
    GROUP BY household_pid, scheme
),
cases AS ({feedback})
SELECT s.household_pid, s.scheme, s.last_signal_id,
    CAST(s.last_benefit_year AS INTEGER) AS last_benefit_year,
    s.last_signalled_on, s.last_run_id,
    s.last_signal_seq > coalesce(r.last_resolved_seq, -1) AS episode_open,
    c.case_outcome, c.case_on
FROM signalled AS s
LEFT JOIN resolved AS r USING (household_pid, scheme)
LEFT JOIN cases AS c USING (household_pid, scheme)
ORDER BY s.household_pid, s.scheme
"""


def load_history(
    out_root: Path, reference_date: dt.date, read: Reader | None = None, rekey: Rekey | None = None
) -> History:
    """The history a run with `reference_date` sees in out_root (see the module docstring).

    `read` opens a prior run's tables (default: run_reader() without a keyring, which
    reads plain files and refuses encrypted ones). `rekey(pids, run_ids)` maps household
    pseudonyms made with earlier keys to the run's (privacy.pseudonyms.translate after a
    domain-key rotation, privacy.body_links.relink after a body-key rotation): the same
    household keeps its history.
    """
    runs = prior_runs(out_root, reference_date)
    files = sorted(feedback_folder(out_root).glob("*.parquet"))
    events, feedback = events_of(runs, read or run_reader()), _feedback(files)
    keys = _key_ids([events, feedback])
    events = _rekeyed(events, rekey, "the earlier runs' signals")
    feedback = _rekeyed(feedback, rekey, f"operator feedback in {feedback_folder(out_root)}")
    con = duckdb.connect()
    try:
        con.register("events", events)
        con.register("feedback", feedback)
        sql = STATE_SQL.format(feedback=_feedback_sql(feedback.num_rows > 0, reference_date))
        state = con.sql(sql).to_arrow_table().cast(STATE_SCHEMA)
        con.register("state", state)
        fingerprint = con.execute(
            "SELECT sha256(coalesce(string_agg(concat_ws('|', household_pid, scheme, "
            "last_signal_id, last_benefit_year, last_signalled_on, last_run_id, episode_open, "
            "coalesce(case_outcome, ''), coalesce(CAST(case_on AS VARCHAR), '')), "
            "chr(10) ORDER BY household_pid, scheme), '')) FROM state"
        ).fetchone()[0]
    finally:
        con.close()
    return History(
        state=state,
        runs=tuple(r.run_id for r in runs),
        feedback_files=tuple(f.name for f in files),
        fingerprint=fingerprint,
        keys=keys,
    )
