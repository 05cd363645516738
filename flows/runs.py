"""Run history, read from the output folder: what ran, on which inputs, with what result.

The output folder is the record. Every published run is a folder `<out>/<run_id>/`
whose manifest.json is written before publication and never changed after it, so the
history survives a reset of Prefect's database. A folder `<out>/.staging-<run_id>/`
is a run that has not finished: it is running now, or it was interrupted and will be
redone from the start by the next run on the same inputs (same run id). Prefect's UI
adds the attempts, their logs and timings (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

from flows.summary import proportionality_lines

STAGING_PREFIX = ".staging-"
LOCK_NAME = ".run.lock"


class RunNotFound(Exception):
    """No run (or more than one) matches what the user asked for."""


class RunLocked(Exception):
    """Another central run is writing to the same output folder."""


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold `<out>/.run.lock` for one central run; refuse at once if another run holds it.

    Two runs on one output folder (a manual run during a scheduled one) would share the
    staging folder, the history and the publication. The lock is an flock, so it goes
    when its process dies: a killed run never leaves the folder locked.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "no details"
            raise RunLocked(
                f"{out}: another central run is writing to this output folder ({holder}). "
                "Wait until it has finished (signals runs list), or give another --out."
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}, started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class RunEntry:
    """One line of the history."""

    run_id: str
    state: str  # published | personal data destroyed | unfinished
    reference_date: str
    created_at: str
    signals: int | None
    households: int | None
    folder: Path
    # An unfinished run's folder is older than a published run of its reference date: it
    # was interrupted and will not be finished (that run's id), so it can be removed.
    superseded_by: str | None = None


def _manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _entry(folder: Path) -> RunEntry | None:
    unfinished = folder.name.startswith(STAGING_PREFIX)
    m = _manifest(folder)
    if m is None and not unfinished:
        return None  # not a run folder (the key store, a file a user left, ...)
    run_id = folder.name[len(STAGING_PREFIX) :] if unfinished else folder.name
    counts = (m or {}).get("counts", {})
    if unfinished:
        state = "unfinished"
    elif (folder / "retention.json").is_file():
        state = "personal data destroyed"
    else:
        state = "published"
    return RunEntry(
        run_id=run_id,
        state=state,
        # The run id starts with its reference date (flows/run.py make_run_id).
        reference_date=(m or {}).get("reference_date", run_id[:10]),
        created_at=(m or {}).get("created_at", ""),
        signals=counts.get("signals"),
        households=counts.get("households"),
        folder=folder,
    )


def _when(created_at: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(created_at)
    except ValueError:
        return None


def made_before(run: Path, published: set[str], started: dt.datetime) -> bool:
    """Whether the run a command returns was published before it `started`: found among the
    runs `published` then, or made by another command of the same inputs that published
    while this one started (its manifest's created_at; to the second, as it is kept)."""
    if run.name in published:
        return True
    created = _when(_field(run, "created_at"))
    try:
        return created is not None and created < started.replace(microsecond=0)
    except TypeError:  # created_at without a zone
        return False  # cannot tell: taken as made now


def same_date_runs(run: Path, published: set[str]) -> list[str]:
    """The runs among `published`, beside `run`, made for its reference date."""
    date = _field(run, "reference_date")
    return sorted(n for n in published if date and _field(run.parent / n, "reference_date") == date)


def _field(folder: Path, key: str) -> str:
    """One value of a run's manifest ("" when it or the manifest is missing)."""
    m = _manifest(folder)
    value = m.get(key) if isinstance(m, dict) else None
    return value if isinstance(value, str) else ""


def _superseded(entry: RunEntry, entries: list[RunEntry]) -> RunEntry:
    """`entry`, with the published run of its date made after its folder was last written.

    A staging folder written after every publication of its date may be a run going on now
    (another id: its inputs changed); one written before a later publication was interrupted
    and replaced. The same inputs would have reused the folder, so it is never finished.
    """
    if entry.state != "unfinished":
        return entry
    written = dt.datetime.fromtimestamp(entry.folder.stat().st_mtime, dt.UTC)
    later = [
        e
        for e in entries
        if e.state != "unfinished"
        and e.reference_date == entry.reference_date
        and (made := _when(e.created_at)) is not None
        and made > written
    ]
    if not later:
        return entry
    newest = max(later, key=lambda e: e.created_at)
    return dataclasses.replace(entry, superseded_by=newest.run_id)


def list_runs(out: Path) -> list[RunEntry]:
    """Every run under `out`, newest reference date first, unfinished ones included."""
    out = Path(out)
    if not out.is_dir():
        raise RunNotFound(f"{out}: output folder does not exist")
    entries = [e for d in out.iterdir() if d.is_dir() and (e := _entry(d))]
    entries = [_superseded(e, entries) for e in entries]
    return sorted(entries, key=lambda e: (e.reference_date, e.created_at, e.run_id), reverse=True)


def find_run(out: Path, run: str) -> Path:
    """The published run folder for a run id, a unique prefix of one, or a folder path."""
    if Path(run).is_dir() and (Path(run) / "manifest.json").is_file():
        return Path(run)
    published = [e for e in list_runs(out) if e.state != "unfinished"]
    exact = [e for e in published if e.run_id == run]
    matches = exact or [e for e in published if e.run_id.startswith(run)]
    if len(matches) == 1:
        return matches[0].folder
    if not matches:
        raise RunNotFound(f"{out}: no published run {run!r} (see `signals runs list`)")
    names = ", ".join(e.run_id for e in matches)
    raise RunNotFound(f"{out}: {run!r} matches {len(matches)} runs ({names}); give more of the id")


def add_run_arguments(parser) -> None:
    """`--run` and `--runs` of a command that works on one published run (run_folder)."""
    parser.add_argument(
        "--run", required=True, help="published run: its folder, or its id (a prefix)"
    )
    parser.add_argument("--runs", help="folder holding the runs, for a run id (default: paths.out)")


def run_folder(run: str, runs: str | None) -> Path:
    """The run a command names: its folder, or its id (or a unique prefix of one) in
    `runs`, the folder holding the runs (default: `paths.out` of the configuration)."""
    if Path(run).is_dir():
        return Path(run)
    if "/" in run or run.startswith("."):  # a path, and run ids have no slashes
        raise RunNotFound(f"{run}: not a published run (no such folder)")
    if runs is None:
        from flows.config import load_config

        config = load_config(None)
        if config.paths.out is None:
            raise RunNotFound(
                f"{run!r} is not a run folder; to name a run by its id, give the folder "
                "holding the runs with --runs (or set paths.out in signals.toml)"
            )
        runs = config.paths.out
    return find_run(Path(runs), run)


def history_lines(entries: list[RunEntry]) -> list[str]:
    lines = [f"{'run':<26}{'reference':<12}{'state':<25}{'households':>11}{'signals':>9}  created"]
    notes = []
    for e in entries:
        households = f"{e.households:,}" if e.households is not None else "-"
        signals = f"{e.signals:,}" if e.signals is not None else "-"
        state = f"{e.state} (superseded)" if e.superseded_by else e.state
        lines.append(
            f"{e.run_id:<26}{e.reference_date:<12}{state:<25}{households:>11}{signals:>9}"
            f"  {e.created_at or '-'}"
        )
        if e.superseded_by:
            notes.append(
                f"{e.run_id}: interrupted; a later run of {e.reference_date} is published "
                f"({e.superseded_by}): the folder {e.folder} can be removed"
            )
    return lines + ([""] + notes if notes else [])


def _inputs_lines(m: dict) -> list[str]:
    sources = m.get("counts", {}).get("sources", {})
    lines = [f"{'source':<18}{'reference':<12}{'rows in':>10}{'accepted':>10}{'quarantined':>12}"]
    lines[0] += "  sha256        key"
    for name, i in sorted(m.get("inputs", {}).items()):
        c = sources.get(name, {})
        lines.append(
            f"{name:<18}{i.get('reference_date', '-'):<12}{c.get('rows_in', 0):>10,}"
            f"{c.get('accepted', 0):>10,}{c.get('quarantined', 0):>12,}"
            f"  {str(i.get('sha256', ''))[:12]:<12}  {i.get('pseudonym_key_id', '-')}"
        )
    return lines


def _counts_lines(m: dict) -> list[str]:
    c = m.get("counts", {})
    lines = [f"households evaluated  {c.get('households', 0):,}"]
    for scheme, n in sorted(c.get("signals_per_scheme", {}).items()):
        lines.append(f"signals {scheme:<22}{n:>8,}")
    lines.append(f"signals total                 {c.get('signals', 0):>8,}")
    amount = float(c.get("estimated_annual_amount_total", 0) or 0)
    lines.append(f"estimated annual amount EUR {amount:,.2f}")
    lines.append(f"audit records         {c.get('audit_records', 0):,}")
    for op, n in sorted(c.get("audit_records_per_operation", {}).items()):
        lines.append(f"  {op:<20}{n:>10,}")
    return lines


def _outside_parentheses(text: str) -> str:
    """`text` without its parenthesised parts, nested ones included."""
    kept, depth = [], 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch != ")":
            kept.append(ch)
    return " ".join("".join(kept).split())


def short_reason(reason: str, width: int = 70) -> str:
    """A skip reason in one line: its first problem without the details in parentheses
    (which figure is missing, where from: a paragraph), and how many more there are."""
    problems, depth, start = [], 0, 0
    for i, ch in enumerate(reason):  # the problems are joined by "; " (flows/run.py)
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and reason.startswith("; ", i):
            problems.append(reason[start:i])
            start = i + 2
    problems.append(reason[start:])
    first = _outside_parentheses(problems[0]) or "no reason recorded"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return textwrap.shorten(first, width - len(more), placeholder=" ...") + more


def _rules_lines(m: dict) -> list[str]:
    lines = [f"{'rule':<24}{'rule version':<16}{'parameters':<16}year"]
    for r in m.get("rules", []):
        lines.append(
            f"{r.get('rule_id', '?'):<24}{str(r.get('rule_version', '-')):<16}"
            f"{str(r.get('parameter_version', '-')):<16}{r.get('benefit_year', '-')}"
        )
    skipped = m.get("rules_skipped", [])
    for r in skipped:
        # A reason can run to pages (which figures are missing, and where from): one line
        # here, the whole text in the manifest.
        lines.append(f"{r.get('rule_id', '?'):<24}skipped: {short_reason(r.get('reason', ''))}")
    if skipped:
        run = m.get("run_id", "RUN")
        lines.append(f"full reasons: signals runs show {run} --json (rules_skipped)")
    return lines


def _rekeyed(m: dict) -> str:
    """Which earlier keys the run's history was re-keyed from (a domain-key rotation) or
    linked from (a body-key rotation)."""
    history = m.get("proportionality", {}).get("history", {})
    older = [k for k in history.get("domain_keys", []) if k != m.get("domain_key_id")]
    said = f"   history re-keyed from {', '.join(older)}" if older else ""
    links = history.get("body_links", [])
    if links:
        said += f"   linked across body keys {', '.join(links)}"
        if history.get("unlinked_households"):
            said += f" ({history['unlinked_households']:,} households not in the link table)"
    return said


def show_lines(run_dir: Path) -> list[str]:
    """A published run's manifest as text: identity, inputs, counts, rule versions."""
    run_dir = Path(run_dir)
    m = _manifest(run_dir)
    if m is None:
        raise RunNotFound(f"{run_dir}: no readable manifest.json; not a published run")
    lines = [
        f"run {m.get('run_id', run_dir.name)}",
        f"  reference date       {m.get('reference_date', '-')}",
        f"  created              {m.get('created_at', '-')}",
        f"  code version         {m.get('code_version', '-')}   runner {m.get('runner', '-')}",
        f"  processing activity  {m.get('processing_activity_id', '-')}"
        f"   register version {m.get('register_version', '-')}",
        f"  pseudonyms           domain key {m.get('domain_key_id') or '-'}{_rekeyed(m)}",
        f"  folder               {run_dir}",
    ]
    retention = run_dir / "retention.json"
    if retention.is_file():
        info = json.loads(retention.read_text(encoding="utf-8"))
        lines.append(
            f"  personal data        destroyed {info.get('key_destroyed_at', '?')} "
            f"(retention {info.get('period', '?')})"
        )
    for title, part in (
        ("inputs", _inputs_lines(m)),
        ("counts", _counts_lines(m)),
        ("why these signals (docs/proportionality.md)", proportionality_lines(m)),
        ("rules", _rules_lines(m)),
    ):
        if part:  # an older manifest has no proportionality block
            lines += ["", f"{title}:"] + ["  " + line for line in part]
    return lines
