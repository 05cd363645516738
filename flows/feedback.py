"""Operator feedback on signals: validated import, storage, and take-up and precision per scheme.

A feedback file (CSV, UTF-8, comma separated, header row; or Parquet) has one row per
outcome the operator recorded:

    signal_id     required  the signal's id, as on the worklist (s.xxxx...)
    outcome       required  contacted, applied, granted, declined, not_entitled, unreachable
    outcome_date  required  the day it happened, ISO (YYYY-MM-DD)
    scheme        optional  when given, must be the signal's scheme (a cross-check)

No other column is accepted: names, BSNs and free-text notes have no place here, feedback
is kept under pseudonyms only. Every row is checked (the signal exists in a published run
of the output folder; known outcome; a real date, not in the future and not before the
signal was first made; the scheme matches; no row repeated) and every problem is reported
by row and field. If anything is wrong, nothing is written. `signals retention enforce`
removes each row once the retention period, counted from its outcome date, has ended
(privacy/retention.py).

Stored as <out>/feedback/<import id>.parquet (pipelines/lifecycle.FEEDBACK_SCHEMA: the
rows as given plus the signal's household pseudonym, benefit year and first run), named
by the SHA-256 of the file, so importing the same file twice changes nothing. The next
runs read it for open cases (pipelines/lifecycle.py); reports read it for take-up.

Statistics per scheme (`feedback_statistics`), over every signal with feedback. Outcomes
of one signal across imports are taken together (the same outcome on the same day counts
once):

    contacted     signals with any outcome but unreachable: the household was reached
                  (applied and a decision imply contact)
    applied       signals with applied, granted or not_entitled
    granted       signals whose latest decision (granted or not_entitled) is granted
    not_entitled  signals whose latest decision is not_entitled
    declined      signals whose latest outcome is declined
    unreachable   signals never reached (only unreachable)
    take_up       granted / contacted: of the households reached, the share now receiving
    precision     granted / (granted + not_entitled) = 1 - not_entitled / decided: of the
                  signals a body decided on, the share that was right

A rate is null when its denominator is 0. Counts are of signals, not households, and are
not disclosure-controlled: reports for policy makers apply their own suppression.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines import lifecycle
from privacy.files import written_whole

REQUIRED = ("signal_id", "outcome", "outcome_date")
OPTIONAL = ("scheme",)
MAX_REPORTED = 20  # problems listed in the message; the rest are counted

STATISTICS_SCHEMA = pa.schema(
    [
        ("scheme", pa.string()),
        ("signals_with_feedback", pa.int64()),
        ("contacted", pa.int64()),
        ("applied", pa.int64()),
        ("granted", pa.int64()),
        ("not_entitled", pa.int64()),
        ("declined", pa.int64()),
        ("unreachable", pa.int64()),
        ("take_up", pa.float64()),
        ("precision", pa.float64()),
    ]
)


class FeedbackError(Exception):
    """A feedback file cannot be imported; the message names file, rows and fields."""


# -- reading ----------------------------------------------------------------------------


def _read_text_table(path: Path) -> pa.Table:
    """The file as a table of strings, whatever its format."""
    if not path.is_file():
        raise FeedbackError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise FeedbackError(f"{path}: cannot be read as Parquet ({exc})") from None
        return pa.table({n: _as_text(table.column(n)) for n in table.column_names})
    try:
        with path.open(encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        options = pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        )
        read = pacsv.ReadOptions(encoding="utf8")
        return pacsv.read_csv(path, read_options=read, convert_options=options)
    except (UnicodeDecodeError, pa.ArrowInvalid) as exc:
        raise FeedbackError(
            f"{path}: cannot be read as CSV (UTF-8, comma separated, header row): "
            f"{_csv_problem(path, exc)}"
        ) from None


def _csv_problem(path: Path, exc: Exception) -> str:
    """What is wrong, by row where it can be found; never the row's content (a BSN, maybe)."""
    text = str(exc).splitlines()[0]
    if not text.startswith("CSV parse error"):
        return text
    # Only on this error path: find the row whose number of fields differs from the header.
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        width = len(next(rows, []))
        for number, row in enumerate(rows, start=1):
            if len(row) != width:
                return f"row {number} has {len(row)} field(s), the header {width}"
    return text.rsplit(": ", 1)[0]


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text as in a CSV: a missing value is an empty string (and so fails its check)."""
    if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
        column = column.cast(pa.date32())
    return pc.fill_null(column.cast(pa.string()), "")


def _check_columns(path: Path, table: pa.Table) -> None:
    names = table.column_names
    missing = [c for c in REQUIRED if c not in names]
    extra = [c for c in names if c not in REQUIRED + OPTIONAL]
    if len(names) == 1 and ";" in names[0]:  # Excel's CSV where the decimal mark is a comma
        raise FeedbackError(
            f"{path}: the columns are separated by semicolons ({names[0]}); save it as CSV "
            'with commas (e.g. Excel\'s "CSV UTF-8"), or as Parquet'
        )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(
                f"column(s) {', '.join(extra)} not accepted (feedback is kept under "
                "pseudonyms only: no names, BSNs or notes)"
            )
        allowed = ", ".join(REQUIRED + OPTIONAL)
        raise FeedbackError(f"{path}: {'; '.join(parts)}. Columns: {allowed}.")
    if len(set(names)) != len(names):
        raise FeedbackError(f"{path}: a column name appears twice")


# -- validation ---------------------------------------------------------------------------

PROBLEMS_SQL = """
WITH f AS (
    SELECT *, TRY_CAST(nullif(trim(outcome_date), '') AS DATE) AS day FROM feedback
),
joined AS (
    SELECT f.*, k.scheme AS signal_scheme, k.first_on, k.first_run
    FROM f LEFT JOIN known AS k ON k.signal_id = trim(f.signal_id)
)
SELECT row_number, field, problem FROM (
    SELECT row_number, 'signal_id' AS field, 'is empty' AS problem
    FROM joined WHERE trim(signal_id) = ''
    UNION ALL
    SELECT row_number, 'signal_id', printf('%s is not a signal of any published run', signal_id)
    FROM joined WHERE trim(signal_id) <> '' AND signal_scheme IS NULL
    UNION ALL
    SELECT row_number, 'outcome', CASE WHEN trim(outcome) = '' THEN 'is empty'
        ELSE printf('%s is not one of %s', outcome, $outcomes) END
    FROM joined WHERE NOT list_contains($outcome_list, trim(outcome))
    UNION ALL
    SELECT row_number, 'outcome_date', CASE WHEN trim(outcome_date) = '' THEN 'is empty'
        ELSE printf('%s is not a date (YYYY-MM-DD)', outcome_date) END
    FROM joined WHERE day IS NULL
    UNION ALL
    SELECT row_number, 'outcome_date', printf('%s is in the future', outcome_date)
    FROM joined WHERE day > $today
    UNION ALL
    SELECT row_number, 'outcome_date',
        printf('%s is before the signal was first made (run %s, reference date %s)',
            outcome_date, first_run, first_on)
    FROM joined WHERE day < first_on
    UNION ALL
    SELECT row_number, 'scheme',
        printf('%s, but signal %s is for %s', scheme, signal_id, signal_scheme)
    FROM joined
    WHERE trim(scheme) <> '' AND signal_scheme IS NOT NULL AND trim(scheme) <> signal_scheme
    UNION ALL
    SELECT row_number, 'row', printf('repeats row %d', first_row) FROM (
        SELECT row_number, min(row_number) OVER (
            PARTITION BY trim(signal_id), trim(outcome), day
        ) AS first_row
        FROM joined
    ) WHERE row_number > first_row
)
ORDER BY row_number, field
"""

ROWS_SQL = """
SELECT trim(f.signal_id) AS signal_id, k.scheme, trim(f.outcome) AS outcome,
    CAST(trim(f.outcome_date) AS DATE) AS outcome_date, k.household_pid,
    k.benefit_year, k.first_run AS run_id, $import_id AS import_id, f.row_number
FROM feedback AS f JOIN known AS k ON k.signal_id = trim(f.signal_id)
ORDER BY f.row_number
"""

KNOWN_SQL = """
SELECT signal_id, arg_min(scheme, reference_date) AS scheme,
    arg_min(household_pid, reference_date) AS household_pid,
    arg_min(benefit_year, reference_date) AS benefit_year,
    min(reference_date) AS first_on, arg_min(run_id, reference_date) AS first_run
FROM events WHERE event = 'signalled'
GROUP BY signal_id
"""


def known_signals(runs_root: Path, read=None) -> pa.Table:
    """Every signal ever emitted in runs_root: scheme, household, year, first run and date."""
    runs = lifecycle.prior_runs(runs_root, dt.date.max)
    events = lifecycle.events_of(runs, read or lifecycle.run_reader())
    con = duckdb.connect()
    try:
        con.register("events", events)
        return con.sql(KNOWN_SQL).to_arrow_table()
    finally:
        con.close()


def _problems(con, today: dt.date) -> list[tuple[int, str, str]]:
    params = {
        "outcomes": ", ".join(lifecycle.OUTCOMES),
        "outcome_list": list(lifecycle.OUTCOMES),
        "today": today,
    }
    return con.execute(PROBLEMS_SQL, params).fetchall()


def validate(path: Path, runs_root: Path, read=None, today: dt.date | None = None) -> pa.Table:
    """The feedback rows of `path`, checked and enriched (FEEDBACK_SCHEMA); else FeedbackError."""
    path = Path(path)
    table = _read_text_table(path)
    _check_columns(path, table)
    if not table.num_rows:
        raise FeedbackError(f"{path}: no rows")
    import_id = hashlib.sha256(path.read_bytes()).hexdigest()
    table = table.append_column("row_number", pa.array(range(1, table.num_rows + 1), pa.int64()))
    if "scheme" not in table.column_names:
        table = table.append_column("scheme", pa.array([""] * table.num_rows, pa.string()))
    con = duckdb.connect()
    try:
        con.register("feedback", table)
        con.register("known", known_signals(runs_root, read))
        problems = _problems(con, today or dt.date.today())
        if problems:
            raise FeedbackError(_problem_message(path, problems))
        rows = (
            con.sql(ROWS_SQL, params={"import_id": import_id})
            .to_arrow_table()
            .cast(lifecycle.FEEDBACK_SCHEMA)
        )
        if rows.num_rows != table.num_rows:  # every row passed its checks: none may vanish
            raise AssertionError(f"{path}: {table.num_rows - rows.num_rows} checked row(s) lost")
        return rows
    finally:
        con.close()


def _problem_message(path: Path, problems: list[tuple[int, str, str]]) -> str:
    rows = len({p[0] for p in problems})
    lines = [f"  row {r}, {field}: {text}" for r, field, text in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"  ... and {len(problems) - MAX_REPORTED} more problem(s)")
    return (
        f"{path}: {len(problems)} problem(s) in {rows} row(s); nothing imported "
        "(rows count from 1, after the header):\n" + "\n".join(lines)
    )


# -- storing and statistics ---------------------------------------------------------------


def store(table: pa.Table, runs_root: Path) -> tuple[Path, bool]:
    """Write the validated rows under <runs>/feedback/; (path, False) if already imported."""
    folder = lifecycle.feedback_folder(runs_root)
    import_id = table.column("import_id")[0].as_py()
    path = folder / f"{import_id[:32]}.parquet"
    if path.is_file():
        return path, False
    folder.mkdir(parents=True, exist_ok=True)
    with written_whole(path, private=True) as tmp:  # pseudonymised personal data
        pq.write_table(table, tmp)
    return path, True


STATISTICS_SQL = """
WITH outcomes AS (
    SELECT DISTINCT signal_id, scheme, outcome, outcome_date FROM feedback
),
ranked AS (
    SELECT *, CASE outcome {ranks} END AS rank FROM outcomes
),
per_signal AS (
    SELECT signal_id, any_value(scheme) AS scheme,
        bool_or(outcome <> 'unreachable') AS contacted,
        bool_or(outcome IN ('applied', 'granted', 'not_entitled')) AS applied,
        arg_max(outcome, (outcome_date, rank))
            FILTER (WHERE outcome IN ('granted', 'not_entitled')) AS decision,
        arg_max(outcome, (outcome_date, rank)) AS latest
    FROM ranked
    GROUP BY signal_id
)
SELECT scheme,
    count(*) AS signals_with_feedback,
    count(*) FILTER (WHERE contacted) AS contacted,
    count(*) FILTER (WHERE applied) AS applied,
    count(*) FILTER (WHERE decision = 'granted') AS granted,
    count(*) FILTER (WHERE decision = 'not_entitled') AS not_entitled,
    count(*) FILTER (WHERE latest = 'declined') AS declined,
    count(*) FILTER (WHERE NOT contacted) AS unreachable,
    count(*) FILTER (WHERE decision = 'granted')
        / nullif(count(*) FILTER (WHERE contacted), 0) AS take_up,
    count(*) FILTER (WHERE decision = 'granted')
        / nullif(count(*) FILTER (WHERE decision IS NOT NULL), 0) AS precision
FROM per_signal
GROUP BY scheme
ORDER BY scheme
"""


def feedback_statistics(runs_root: Path) -> pa.Table:
    """Take-up and precision per scheme over all stored feedback (see the module docstring)."""
    files = sorted(lifecycle.feedback_folder(runs_root).glob("*.parquet"))
    if not files:
        return STATISTICS_SCHEMA.empty_table()
    ranks = " ".join(f"WHEN '{o}' THEN {r}" for o, r in lifecycle.OUTCOME_RANK.items())
    con = duckdb.connect()
    try:
        con.register("feedback", pq.read_table(files, schema=lifecycle.FEEDBACK_SCHEMA))
        table = con.sql(STATISTICS_SQL.format(ranks=ranks)).to_arrow_table()
        return table.cast(STATISTICS_SCHEMA)
    finally:
        con.close()


def refresh_statistics(runs_root: Path) -> Path:
    """statistics.json over the feedback there now (after retention removed some)."""
    return write_statistics(runs_root, feedback_statistics(runs_root))


def write_statistics(runs_root: Path, statistics: pa.Table) -> Path:
    """<runs>/feedback/statistics.json: aggregates per scheme, for the reports."""
    path = lifecycle.feedback_folder(runs_root) / "statistics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"definitions": "flows/feedback.py", "per_scheme": statistics.to_pylist()}
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


# -- the import ---------------------------------------------------------------------------


def _reader(runs: Path, key_file: str | None):
    """Opens the runs' signals; with the central keyring when they are encrypted."""
    from privacy.keys import load_keyring, passphrase_from_env
    from privacy.retention import KEY_STORE

    keyring = load_keyring(Path(key_file), passphrase_from_env()) if key_file else None
    return lifecycle.run_reader(keyring, runs / KEY_STORE)


def import_feedback(file: Path, runs: Path, key_file: str | None = None) -> dict:
    """Validate, store and summarise one feedback file; returns what happened.

    A plain function, not a Prefect flow: it is one small local step whose every failure
    is a message for the operator, and it must work when no Prefect server is reachable.
    """
    runs = Path(runs)
    table = validate(Path(file), runs, _reader(runs, key_file))
    stored, new = store(table, runs)
    statistics = feedback_statistics(runs)
    write_statistics(runs, statistics)
    return {"rows": table.num_rows, "stored": stored, "new": new, "statistics": statistics}
