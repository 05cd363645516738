"""The aggregate report for policy makers: national and local picture, trend, take-up, fairness.

build_report(run_dir, out_html) reads one published run (signals, the household table and
every rule evaluation), counts households per cell with DuckDB, protects the counts with
privacy.disclosure (small cells and everything they could be derived from are hidden, the
same way across all tables and consecutive periods; amounts rounded) and writes:

    <out_html>                       a self-contained HTML page with inline SVG charts
    <stem>-tables/<table>.parquet    every aggregate table, long form, as published
    <stem>-tables/<table>.csv        the same as CSV
    <stem>-tables/tables.json        what each table's columns mean (dims, groups, fixed)
    <stem>-tables/suppression.json   the disclosure state the next period's report reads

Nothing at the level of a person or a household leaves this module: no pseudonym, no
signal id, only counts of at least `threshold` households and rounded amounts.

Status of a household per scheme (one row per household x scheme, benefit year of the run):
signalled; receiving (entitled and already receiving); withheld (entitled, not signalled:
objection, proportionality); deregistered (entitled, but the law forbids signalling: the
applicant died or emigrated); not entitled (by the rules' estimate). "Entitled" is the first
four. Coverage parity compares, per age band, household type and district, the signals per
household that could have been signalled with the national rate; deregistered households are
not in that base (holding them back is the law, not a reach failure). A ratio outside
[1/r, r] is flagged; a group whose base is not published or is under the threshold is not
assessed.

Withheld households are broken down by why (table withheld_reasons, from the run's
suppressed.parquet): by law (an objection to this scheme) or by proportionality (fatigue,
open case, minimum amount, confidence, necessity); a household with several reasons counts
once, under the first of WITHHELD_REASONS. The page also states what a reader needs around
the figures, from the run manifest: the rules and parameter versions used, the schemes not
evaluated and why (one line), rows quarantined per source and persons excluded for objecting
to all processing (both protected as counts: table inputs). Every published table carries
the run id and reference date, so a file on its own says where it came from.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from flows import report_charts as charts
from privacy.disclosure import (
    ALL,
    GROUP,
    LEAF,
    TOTAL,
    CountTable,
    Dimension,
    Protected,
    Rules,
    carried_from,
    check_policy,
    protect,
)
from privacy.files import written_whole

STATUSES = ("signalled", "receiving", "withheld", "deregistered", "not_entitled")
STATUS_LABELS = {
    "signalled": "signalled",
    "receiving": "already receiving",
    "withheld": "entitled, not signalled (objection, proportionality)",
    "deregistered": "entitled, held back by law (applicant deceased or emigrated)",
    "not_entitled": "not entitled (estimate)",
    "entitled": "entitled (estimate)",
}
AGE_BANDS = ("under 30", "30-44", "45-64", "65-74", "75 and over", "unknown")
HOUSEHOLD_TYPES = ("single", "single with children", "couple", "couple with children")
INCOME_BANDS = (
    "under 15k",
    "15k-25k",
    "25k-35k",
    "35k-50k",
    "50k and over",
    "unknown",
)
DEBT = ("early debt signal", "no debt signal")
# Readable names for the page; a scheme not listed is shown with its id's underscores as
# spaces. The tables keep the id (column scheme) next to the name (scheme_name).
SCHEME_NAMES = {
    "zorgtoeslag": "zorgtoeslag",
    "huurtoeslag": "huurtoeslag",
    "kinderopvangtoeslag": "kinderopvangtoeslag",
    "kindgebonden_budget": "kindgebonden budget",
    "aio": "AIO (aanvullende inkomensvoorziening ouderen)",
    "kwijtschelding": "kwijtschelding gemeentelijke belastingen",
}
# Why an entitled household not already receiving was not signalled, in order of precedence
# (pipelines/proportionality.py REASONS): (reason, class, what it means). The law first.
# already_receiving and deregistered are statuses of their own; not_recorded is a withheld
# household without a suppressed.parquet row (a run made before that output).
BY_LAW, BY_PROPORTIONALITY = "by law", "by proportionality"
INCOMPLETE = "incomplete_household"  # shown only in a month that has one (reason_dim)
WITHHELD_REASONS = (
    ("objection", BY_LAW, "objected to signals for this scheme"),
    (
        "fatigue",
        BY_PROPORTIONALITY,
        "fatigue: signalled for this scheme by an earlier run {window}",
    ),
    ("open_case", BY_PROPORTIONALITY, "open case: an operator is already working on it"),
    (
        INCOMPLETE,
        BY_PROPORTIONALITY,
        "a row about it was quarantined at its body: who lives there, what it earns, what "
        "it is paid or who is insured is not known",
    ),
    ("minimum_amount", BY_PROPORTIONALITY, "estimated amount below the scheme's minimum"),
    ("confidence", BY_PROPORTIONALITY, "estimate below the minimum confidence"),
    ("necessity", BY_PROPORTIONALITY, "the data it needs is not allowed for this purpose"),
    # The run holds back a household whose receipt or registration it could not tell (no
    # such data delivered for it): the report counts it as withheld, the run as possibly
    # receiving or deregistered.
    (
        "status_unknown",
        BY_LAW,
        "not known whether it already receives the scheme or is still registered",
    ),
    ("not_recorded", "reason not recorded", "reason not recorded in this run"),
)
# Reasons the run gives that the report counts under status_unknown.
UNKNOWN_STATUS_REASONS = ("already_receiving", "deregistered")
# Operator feedback, most advanced first: a signal's outcome is its most advanced one.
OUTCOMES = ("granted", "not_entitled", "declined", "applied", "contacted", "unreachable")
NO_FEEDBACK = "no feedback"
REPORT_FORMAT = "signals-report/1"

STATUS = Dimension(
    "status",
    STATUSES,
    groups=tuple((s, "entitled") for s in STATUSES[:4]),
    group_name="status_group",
)
AGE = Dimension("age_band", AGE_BANDS)
HOUSEHOLD = Dimension("household_type", HOUSEHOLD_TYPES)
INCOME = Dimension("income_band", INCOME_BANDS)
DEBT_DIM = Dimension("debt", DEBT)
NOT_RECORDED = WITHHELD_REASONS[-1][0]
STATUS_UNKNOWN = WITHHELD_REASONS[-2][0]


def reason_dim(present: set[str] | bool) -> Dimension:
    """The reasons a withheld household is held back. "status unknown", "not recorded" and
    an incomplete household only when some withheld household has that reason (`present`:
    the reasons found; True for all), as districts are those with households: an
    always-empty category would only cost suppression of real figures."""
    optional = (STATUS_UNKNOWN, NOT_RECORDED, INCOMPLETE)
    reasons = [
        r for r in WITHHELD_REASONS if r[0] not in optional or present is True or r[0] in present
    ]
    return Dimension(
        "reason",
        tuple(r for r, _, _ in reasons),
        groups=tuple((r, c) for r, c, _ in reasons if c == BY_PROPORTIONALITY),
        group_name="reason_class",
    )


OUTCOME = Dimension(
    "outcome",
    OUTCOMES + (NO_FEEDBACK,),
    groups=tuple((o, "with feedback") for o in OUTCOMES),
    group_name="feedback",
)

SIG, ENT, REC, WH, DEREG = (
    (LEAF, "signalled"),
    (GROUP, "entitled"),
    (LEAF, "receiving"),
    (LEAF, "withheld"),
    (LEAF, "deregistered"),
)
TOT = (ALL, TOTAL)
DIM_LABELS = {
    "district": "district",
    "age_band": "age band",
    "household_type": "household type",
    "income_band": "income band",
    "debt": "early debt signal",
}


# Every household is evaluated for every scheme: its count over all statuses is the same
# number in each scheme's table, and one cell for the disclosure model.
SAME = (("scheme", "status"),)


class ReportError(Exception):
    """A report cannot be built from this run folder (missing or malformed input)."""


@dataclass(frozen=True)
class ReportOptions:
    rules: Rules = field(default_factory=Rules)
    max_disparity_ratio: float = 1.25  # flag coverage below 1/r or above r times the national
    significance: float = 0.05  # ... and only when a binomial test says it is not chance
    parity_basis: str = "unclaimed"  # per unclaimed entitlement, or "entitled" (incl. receiving)
    feedback: Path | None = None  # default: <run>/feedback/*.parquet when present
    dp: object | None = None  # privacy.dp.DPSettings: noisy counts and sums instead of exact


@dataclass
class Report:
    html: Path
    tables_dir: Path
    protected: Protected
    fairness: list[dict]
    summary: dict


# -- reading the run ----------------------------------------------------------------------------


def _parquet_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _register_input(con, run_dir: Path, name: str, keyring) -> None:
    """Make a run output readable as a DuckDB view: plain Parquet, or decrypted in memory."""
    path = run_dir / name
    plain = [path] if path.is_file() else sorted(path.glob("*.parquet")) if path.is_dir() else []
    if plain:
        con.sql(
            f"CREATE VIEW {name.split('.')[0]} AS SELECT * FROM read_parquet("
            f"{_parquet_list(plain)})"
        )
        return
    encrypted = path.with_name(path.name + ".enc").is_file() or (
        path.is_dir() and any(path.glob("*.parquet.enc"))
    )
    if not encrypted:
        raise ReportError(
            f"{run_dir}: no {name} in this run folder"
            + (
                " (runs made before the evaluations output cannot be reported on)"
                if name == "evaluations"
                else ""
            )
        )
    if keyring is None:
        raise ReportError(
            f"{run_dir}: {name} is encrypted; give the central keyring (--key-file) to read it"
        )
    from privacy.retention import read_run_table

    con.register(f"{name.split('.')[0]}_arrow", read_run_table(run_dir, name, keyring))
    con.sql(f"CREATE VIEW {name.split('.')[0]} AS SELECT * FROM {name.split('.')[0]}_arrow")


UNITS_SQL = """
CREATE TABLE units AS
WITH ev AS (
    SELECT household_pid, scheme, benefit_year, entitled, already_receiving,
           count(DISTINCT benefit_year) OVER (PARTITION BY scheme) AS years
    FROM evaluations
)
SELECT
    CASE WHEN ev.years > 1 THEN ev.scheme || ' ' || ev.benefit_year ELSE ev.scheme END
        AS scheme,
    CASE WHEN s.signal_id IS NOT NULL THEN 'signalled'
         WHEN ev.entitled AND ev.already_receiving THEN 'receiving'
         WHEN ev.entitled AND coalesce(h.applicant_deregistered, false) THEN 'deregistered'
         WHEN ev.entitled THEN 'withheld'
         ELSE 'not_entitled' END AS status,
    coalesce(h.municipality_code, 'unknown') AS municipality,
    coalesce(h.district_code, h.municipality_code || ' unknown district', 'unknown')
        AS district,
    CASE WHEN h.applicant_age IS NULL THEN 'unknown'
         WHEN h.applicant_age < 30 THEN 'under 30'
         WHEN h.applicant_age < 45 THEN '30-44'
         WHEN h.applicant_age < 65 THEN '45-64'
         WHEN h.applicant_age < 75 THEN '65-74'
         ELSE '75 and over' END AS age_band,
    CASE WHEN coalesce(h.has_partner, false)
         THEN CASE WHEN coalesce(h.n_children, 0) > 0 THEN 'couple with children'
                   ELSE 'couple' END
         ELSE CASE WHEN coalesce(h.n_children, 0) > 0 THEN 'single with children'
                   ELSE 'single' END END AS household_type,
    CASE WHEN NOT coalesce(h.income_known, true) OR h.combined_income IS NULL THEN 'unknown'
         WHEN h.combined_income < 15000 THEN 'under 15k'
         WHEN h.combined_income < 25000 THEN '15k-25k'
         WHEN h.combined_income < 35000 THEN '25k-35k'
         WHEN h.combined_income < 50000 THEN '35k-50k'
         ELSE '50k and over' END AS income_band,
    CASE WHEN coalesce(h.arrears_count, 0) > 0 THEN 'early debt signal'
         ELSE 'no debt signal' END AS debt,
    s.signal_id,
    s.estimated_annual_amount AS amount,
    r.rank AS held_rank,
    ev.household_pid  -- the unit of privacy for the optional DP; never leaves this module
FROM ev
JOIN households AS h USING (household_pid)
LEFT JOIN signals AS s
  ON s.household_pid = ev.household_pid AND s.scheme = ev.scheme
 AND s.benefit_year = ev.benefit_year
LEFT JOIN held AS r
  ON r.household_pid = ev.household_pid AND r.scheme = ev.scheme
 AND r.benefit_year = ev.benefit_year
"""


def _held_sql() -> str:
    """View held: per held-back candidate the rank of its first reason in WITHHELD_REASONS."""

    def matches(reason: str) -> str:
        named = UNKNOWN_STATUS_REASONS if reason == STATUS_UNKNOWN else (reason,)
        return " OR ".join(f"list_contains(reasons, '{r}')" for r in named)

    ranks = " ".join(
        f"WHEN {matches(r)} THEN {i}" for i, (r, _, _) in enumerate(WITHHELD_REASONS[:-1])
    )
    return (
        "CREATE VIEW held AS SELECT household_pid, scheme, benefit_year, "
        f"min(CASE {ranks} ELSE {len(WITHHELD_REASONS) - 1} END) AS rank "
        "FROM suppressed GROUP BY household_pid, scheme, benefit_year"
    )


def _reason_sql() -> str:
    """Each withheld unit's reason (the others have none)."""
    names = " ".join(f"WHEN {i} THEN '{r}'" for i, (r, _, _) in enumerate(WITHHELD_REASONS))
    return (
        "ALTER TABLE units ADD COLUMN reason VARCHAR; "
        f"UPDATE units SET reason = CASE coalesce(held_rank, {len(WITHHELD_REASONS) - 1}) "
        f"{names} END WHERE status = 'withheld'"
    )


def _register_suppressed(con, run_dir: Path, keyring) -> None:
    """View suppressed: the run's held-back candidates with their reasons; empty for a run
    made before that output (its withheld households then show "reason not recorded")."""
    if any(run_dir.glob("suppressed.parquet*")):
        _register_input(con, run_dir, "suppressed.parquet", keyring)
        return
    con.sql(
        "CREATE VIEW suppressed AS SELECT NULL::VARCHAR AS household_pid, NULL::VARCHAR AS "
        "scheme, NULL::INTEGER AS benefit_year, NULL::VARCHAR[] AS reasons WHERE false"
    )


def _feedback_files(run_dir: Path, option: Path | None) -> list[Path]:
    """The feedback to report: --feedback, else <run>/feedback/, else <out>/feedback/."""
    if option is not None:
        option = Path(option)
        files = sorted(option.glob("*.parquet")) if option.is_dir() else [option]
        if not files or not all(f.is_file() for f in files):
            raise ReportError(f"{option}: no feedback Parquet file there")
        return files
    for folder in (run_dir / "feedback", run_dir.parent / "feedback"):
        files = sorted(folder.glob("*.parquet"))
        if files:
            return files
    return []


def _load_feedback(con, files: list[Path]) -> int:
    """Newest outcome per signal into view feedback_final; returns rows matching no signal.

    Columns signal_id, scheme, outcome are required; with outcome_date the newest outcome
    counts (ties: the further along, as pipelines/lifecycle.py), else the furthest along.
    """
    lst = _parquet_list(files)
    try:
        con.sql(
            f"CREATE VIEW feedback_raw AS SELECT * FROM read_parquet({lst}, filename=true, "
            "file_row_number=true, union_by_name=true)"
        )
        columns = {r[0] for r in con.execute("DESCRIBE feedback_raw").fetchall()}
        missing = {"signal_id", "scheme", "outcome"} - columns
        if missing:
            raise ReportError(f"feedback {files[0]}: lacks column(s) {', '.join(sorted(missing))}")
        bad = con.execute(
            "SELECT filename, file_row_number, outcome FROM feedback_raw WHERE outcome IS NULL "
            "OR outcome NOT IN (" + ", ".join(f"'{o}'" for o in OUTCOMES) + ") LIMIT 1"
        ).fetchall()
    except duckdb.Error as exc:
        raise ReportError(f"feedback {files[0]}: {str(exc).splitlines()[0]}") from None
    if bad:
        bad = bad[0]
        raise ReportError(
            f"{bad[0]}: row {bad[1] + 1}: outcome {bad[2]!r} is not one of {', '.join(OUTCOMES)}"
        )
    rank = "CASE outcome " + " ".join(f"WHEN '{o}' THEN {i}" for i, o in enumerate(OUTCOMES))
    newest = "outcome_date DESC NULLS LAST, " if "outcome_date" in columns else ""
    con.sql(
        "CREATE VIEW feedback_final AS SELECT signal_id, outcome FROM (SELECT signal_id, "
        f"outcome, row_number() OVER (PARTITION BY signal_id ORDER BY {newest}{rank} END) "
        "AS n FROM feedback_raw) WHERE n = 1"
    )
    return con.execute(
        "SELECT count(*) FROM feedback_final f WHERE NOT EXISTS "
        "(SELECT 1 FROM units u WHERE u.signal_id = f.signal_id)"
    ).fetchall()[0][0]


# -- the tables --------------------------------------------------------------------------------


def _counts(con, dims: list[str], where: str = "TRUE") -> tuple[dict, dict]:
    cols = ", ".join(dims)
    rows = con.execute(
        f"SELECT {cols}, count(*), sum(amount) FROM units WHERE {where} GROUP BY {cols}"
    ).fetchall()
    counts = {tuple(r[: len(dims)]): int(r[len(dims)]) for r in rows}
    amounts = {
        tuple(r[: len(dims)]): Decimal(r[len(dims) + 1])
        for r in rows
        if r[len(dims) + 1] is not None
        and "status" in dims
        and r[dims.index("status")] == "signalled"
    }
    return counts, amounts


def _zero_filled(dims: tuple[Dimension, ...], amounts: dict) -> dict:
    """Amounts of every signalled leaf, zero where no household is: zero is an amount too."""
    leaves = itertools.product(*(d.categories if d is not STATUS else ("signalled",) for d in dims))
    return {k: amounts.get(k, Decimal(0)) for k in leaves}


def _district_dim(con) -> Dimension:
    pairs = con.execute(
        "SELECT DISTINCT district, municipality FROM units ORDER BY municipality, district"
    ).fetchall()
    seen: dict[str, str] = {}
    for d, m in pairs:
        if seen.setdefault(d, m) != m:
            raise ReportError(f"district {d} lies in two municipalities ({seen[d]}, {m})")
    return Dimension("district", tuple(seen), tuple(seen.items()), group_name="municipality")


def current_tables(con, run_id: str, schemes: list[str], feedback: bool) -> list[CountTable]:
    """The count tables of this period: per scheme x status, crossed with one classifier each."""
    scheme = Dimension("scheme", tuple(schemes), has_total=False)
    district = _district_dim(con)
    tables = []
    for name, title, dim in (
        ("by_scheme", "Households per scheme and status", None),
        ("by_district", "Households per district and status", district),
        ("by_age_band", "Households per age band of the applicant and status", AGE),
        ("by_household_type", "Households per household type and status", HOUSEHOLD),
        ("by_income_band", "Households per income band (combined, EUR/year) and status", INCOME),
        ("by_debt_signal", "Households with and without early debt signals, per status", DEBT_DIM),
    ):
        dims = (scheme,) + ((dim,) if dim else ()) + (STATUS,)
        names = [d.name for d in dims]
        if dim is district:
            names = ["scheme", "district", "status"]
        counts, amounts = _counts(con, names)
        amounts = _zero_filled(dims, amounts)
        tables.append(
            CountTable(name, title, dims, counts, amounts, universe=run_id, same_across=SAME)
        )
    # Withheld households per reason: its total over reasons is the withheld cell of every
    # scheme table (same meaning), so the audit sees the reasons add up to it.
    counts, _ = _counts(con, ["scheme", "reason"], "status = 'withheld'")
    reasons = reason_dim({k[1] for k in counts})
    tables.append(
        CountTable(
            "withheld_reasons",
            "Entitled households not signalled (and not already receiving), per reason",
            (scheme, reasons),
            counts,
            fixed=(("status", "withheld"),),
            universe=run_id,
        )
    )
    if feedback:
        counts, _ = _counts(con, ["scheme", "outcome"], "status = 'signalled'")
        tables.append(
            CountTable(
                "feedback",
                "Signals per operator feedback outcome",
                (scheme, OUTCOME),
                counts,
                fixed=(("status", "signalled"),),
                universe=run_id,
            )
        )
    return tables


QUARANTINED, EXCLUDED = "rows quarantined", "persons excluded for objecting"
ALL_SOURCES = "all sources"


def input_tables(manifest: dict, run_id: str) -> list[CountTable]:
    """Delivery rows quarantined per source and persons excluded for objecting to all
    processing (the manifest's exclusion audit records: one per person), as count tables:
    the same disclosure rules as every other count. Left out when the manifest lacks them.
    No totals: the parts alone cannot give a hidden one away."""
    counts, out = manifest.get("counts", {}), []
    sources = counts.get("sources")
    if sources:
        out.append(
            CountTable(
                "inputs@quarantined",
                "Delivery rows quarantined per source (failed validation)",
                (Dimension("source", tuple(sources), has_total=False),),
                {(k,): int(v.get("quarantined", 0)) for k, v in sources.items()},
                fixed=(("measure", QUARANTINED),),
                universe=run_id,
            )
        )
    per_operation = counts.get("audit_records_per_operation")
    if per_operation is not None:
        out.append(
            CountTable(
                "inputs@excluded",
                "Persons excluded for objecting to all processing",
                (Dimension("source", (ALL_SOURCES,), has_total=False),),
                {(ALL_SOURCES,): int(per_operation.get("exclusion", 0))},
                fixed=(("measure", EXCLUDED),),
                universe=run_id,
            )
        )
    return out


def scheme_name(scheme: str) -> str:
    """The readable name of a scheme id ("aio" -> "AIO (aanvullende ...)"); a benefit year
    appended to the id (a run over two years) is kept."""
    base, _, year = scheme.partition(" ")
    name = SCHEME_NAMES.get(base, base.replace("_", " "))
    return f"{name} {year}" if year else name


def _problems(reason: str) -> list[str]:
    """A skip reason's problems: joined by "; " outside parentheses (flows/run.py)."""
    problems, depth, start = [], 0, 0
    for i, ch in enumerate(reason):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and reason.startswith("; ", i):
            problems.append(reason[start:i])
            start = i + 2
    return problems + [reason[start:]]


def skip_line(reason: str, year) -> str:
    """Why a scheme was not evaluated, in one line (the manifest holds the whole text)."""
    problems = _problems(reason)
    unknown = [
        m.group(1)
        for p in problems
        if (m := re.match(r"parameter (\S+) is (?:unknown|missing)", p))
    ]
    if unknown and len(unknown) == len(problems):
        n = len(unknown)
        return (
            f"{n} parameter{'s' if n > 1 else ''} for {year} unknown (no official value "
            f"found: {', '.join(unknown)})"
        )
    from flows.runs import short_reason

    return short_reason(reason, 100)


def rules_rows(manifest: dict) -> list[dict]:
    """The schemes of the run: rule and parameter version of each evaluated one, and why
    each other one was not evaluated."""
    rows = [
        {
            "scheme": r.get("rule_id"),
            "scheme_name": scheme_name(str(r.get("rule_id"))),
            "evaluated": True,
            "benefit_year": r.get("benefit_year"),
            "rule_version": r.get("rule_version"),
            "parameter_version": r.get("parameter_version"),
            "not_evaluated_because": None,
        }
        for r in manifest.get("rules", [])
    ]
    return rows + [
        {
            "scheme": r.get("rule_id"),
            "scheme_name": scheme_name(str(r.get("rule_id"))),
            "evaluated": False,
            "benefit_year": r.get("benefit_year"),
            "rule_version": None,
            "parameter_version": None,
            "not_evaluated_because": skip_line(r.get("reason", ""), r.get("benefit_year")),
        }
        for r in manifest.get("rules_skipped", [])
    ]


def fatigue_months(manifest: dict) -> int | None:
    """The fatigue window of the run's proportionality policy, when the policy file it names
    is still the version the run used (else unknown: the page then names no number)."""
    from pipelines.proportionality import PolicyError, load_policy

    policy = manifest.get("proportionality", {}).get("policy", {})
    path = policy.get("path")
    if not path or not Path(path).is_file():
        return None
    try:
        loaded = load_policy(path)
    except PolicyError:
        return None
    return loaded.fatigue_months if loaded.version == policy.get("version") else None


@dataclass
class PastRun:
    run_id: str
    reference_date: str
    created_at: str
    directory: Path
    manifest: dict


def sibling_runs(run_dir: Path) -> list[PastRun]:
    """Published runs in the same output root, oldest first (by reference date, creation)."""
    runs = []
    for d in sorted(Path(run_dir).resolve().parent.iterdir()):
        m = d / "manifest.json"
        if d.name.startswith(".") or not m.is_file():
            continue
        try:
            manifest = json.loads(m.read_text())
            runs.append(
                PastRun(
                    manifest["run_id"],
                    manifest["reference_date"],
                    manifest.get("created_at", ""),
                    d,
                    manifest,
                )
            )
        except (ValueError, KeyError):
            continue  # not a run manifest
    return sorted(runs, key=lambda r: (r.reference_date, r.created_at, r.run_id))


def _previous(runs: list[PastRun], run_id: str) -> list[PastRun]:
    ids = [r.run_id for r in runs]
    return runs[: ids.index(run_id)] if run_id in ids else runs


def _state_of(run: PastRun) -> dict | None:
    path = run.directory / "report" / "report-tables" / "suppression.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # what this report hides depends on what that one hid
        raise ReportError(
            f"{path}: the earlier report's suppression record is damaged ({exc}); restore it "
            f"or build that run's report again (signals report --run {run.directory} "
            f"--out {run.directory / 'report'})"
        ) from None


def _published_amounts(run: PastRun) -> dict[str, Decimal] | None:
    """The signalled amount per scheme as the run's own report published it (None: no
    report). A scheme it hid is absent: the trend hides that cell too (forced)."""
    path = run.directory / "report" / "report-tables" / "by_scheme.parquet"
    if not path.is_file():
        return None
    rows = pq.read_table(path, columns=["scheme", "status", "amount_eur"]).to_pylist()
    return {
        r["scheme"]: Decimal(r["amount_eur"])
        for r in rows
        if r["status"] == "signalled" and r["amount_eur"] is not None
    }


def trend_tables(
    con, run_id: str, schemes: list[str], past: list[PastRun]
) -> tuple[list[CountTable], set]:
    """Signals per scheme per run: past runs as their own reports published them, this run
    from its data. A past run without a published report is left out (it published nothing
    to show; its suppression pattern is unknown).

    Returns the tables and the cells each past run's own report hid (hidden here too).
    """
    tables, forced = [], set()
    for run in past:
        c = run.manifest.get("counts", {})
        # Every scheme the run evaluated, 0 where it signalled nobody (signals_per_scheme
        # lists only schemes with signals): a quiet month is a 0, not "not evaluated".
        evaluated = {r["rule_id"]: 0 for r in run.manifest.get("rules", [])}
        per_scheme = evaluated | {k: int(v) for k, v in c.get("signals_per_scheme", {}).items()}
        published = _published_amounts(run)
        if not per_scheme or published is None:
            continue
        dim = Dimension("scheme", tuple(sorted(per_scheme)))
        total = ((ALL, TOTAL),)
        extra = {total: Decimal(str(c.get("estimated_annual_amount_total", "0")))}
        # Every scheme cell carries the amount the run's report published; one it hid is
        # hidden here as well (its state), so no cell is shown without its amount.
        extra |= {((LEAF, k),): published[k] for k in per_scheme if k in published}
        tables.append(
            CountTable(
                f"trend@{run.run_id}",
                "Signals per run",
                (dim,),
                {(k,): v for k, v in per_scheme.items()},
                extra_amounts=extra,
                fixed=(("status", "signalled"),),
                universe=run.run_id,
            )
        )
        state = _state_of(run) or {"suppressed": []}
        forced |= {
            (s["universe"], s["cell"]) for s in state["suppressed"] if s["universe"] == run.run_id
        }
        t = tables[-1]
        forced |= {t.cell_id(((LEAF, k),)) for k in per_scheme if k not in published}
    counts, _ = _counts(con, ["scheme"], "status = 'signalled'")
    dim = Dimension("scheme", tuple(schemes))
    tables.append(
        CountTable(
            f"trend@{run_id}",
            "Signals per run",
            (dim,),
            counts,
            _scheme_amounts(con),
            fixed=(("status", "signalled"),),
            universe=run_id,
        )
    )
    return tables, forced


def _scheme_amounts(con) -> dict:
    rows = con.execute(
        "SELECT scheme, sum(amount) FROM units WHERE status = 'signalled' GROUP BY scheme"
    ).fetchall()
    found = {s: Decimal(a) for s, a in rows if a is not None}
    schemes = [r[0] for r in con.execute("SELECT DISTINCT scheme FROM units").fetchall()]
    return {(s,): found.get(s, Decimal(0)) for s in schemes}


# -- fairness ----------------------------------------------------------------------------------


def coverage_parity(
    protected: Protected,
    exact: dict,
    table: str,
    dim: Dimension,
    schemes: list[str],
    options: ReportOptions,
) -> list[dict]:
    """Signals per household that could be signalled, per group, relative to the national rate.

    The base is the group's unclaimed entitlement (signalled + withheld: entitled, not yet
    receiving, not held back by law) or, with basis "entitled", also those already
    receiving. Deregistered households are never in the base: the law forbids signalling
    them, so they are no reach failure. A group is assessed only when its household count
    is published and the published figures show a base of at least the threshold (the base
    itself, directly or as the entitled group minus its other parts, or its published parts
    alone): a rate on fewer households than the threshold is never assessed, and whether a
    group is assessed never depends on a hidden number (state "unassessed", reason in
    "note").
    An assessed group is flagged when its ratio lies outside [1/r, r] and a two-sided
    binomial test says the gap is unlikely to be chance (p < significance). The test uses
    the exact counts, so a gap is flagged even when they are hidden; the ratio itself is
    shown only when the signals and the base are published. Such a flag tells that the rate is
    low: an inequality on a hidden cell, not its value (see the method section).
    """
    from scipy.stats import binomtest

    parts, others = _basis_parts(options.parity_basis)
    threshold = options.rules.threshold
    out = []
    for scheme in schemes:

        def value(coord, status, source, _scheme=scheme):
            return source(table, ((LEAF, _scheme), coord, status))

        def basis(coord, source):
            direct = [value(coord, st, source) for st in parts]
            if None not in direct:
                return sum(direct)
            entitled = value(coord, ENT, source)
            rest = [value(coord, st, source) for st in others]
            return None if entitled is None or None in rest else entitled - sum(rest)

        exact_of = lambda t, k: exact[(t, k)]  # noqa: E731
        s_all, b_all = value(TOT, SIG, exact_of), basis(TOT, exact_of)
        national = s_all / b_all if b_all else None
        coords = [(LEAF, c) for c in dim.categories] + [(GROUP, g) for g in dim.group_names()]
        for coord in coords:
            if value(coord, TOT, exact_of) == 0:
                continue
            s, b = value(coord, SIG, exact_of), basis(coord, exact_of)
            row = {
                "scheme": scheme,
                "dimension": dim.name,
                "group": coord[1] if coord[0] == LEAF else f"{coord[1]} (all)",
                "level": coord[0],
                "households": value(coord, TOT, protected.count),
                "basis": basis(coord, protected.count),
                "signals": value(coord, SIG, protected.count),
                "ratio": None,
                "p_value": None,
                "state": "unassessed",
                "note": None,
            }
            floor = _published_floor(
                row["basis"], [value(coord, st, protected.count) for st in parts]
            )
            if row["households"] is None:
                row["note"] = "not assessed: household count suppressed"
            elif floor < threshold:
                row["note"] = (
                    f"not assessed: base under {threshold} households"
                    if row["basis"] is not None
                    else f"not assessed: published figures do not show a base of {threshold}+"
                )
            elif national:
                ratio = (s / b) / national
                p_value = binomtest(s, b, min(national, 1.0)).pvalue
                row["state"] = _parity_state(ratio, p_value, options)
                if row["signals"] is not None and row["basis"] is not None:
                    row["ratio"], row["p_value"] = round(ratio, 2), round(p_value, 4)
            out.append(row)
    return out


def _published_floor(basis: int | None, parts: list[int | None]) -> int:
    """The least the base can be, from published figures alone: the base itself when it is
    published, else the sum of its published parts (a hidden part may be 0)."""
    return basis if basis is not None else sum(v for v in parts if v is not None)


def _parity_state(ratio: float, p_value: float, options: ReportOptions) -> str:
    """flag: reached less than 1/r times as well as the country (a gap); high: more than r
    times (shown, not flagged: nobody is left out by it); ok otherwise or if it may be chance."""
    if p_value >= options.significance:
        return "ok"
    if ratio < 1 / options.max_disparity_ratio:
        return "flag"
    return "high" if ratio > options.max_disparity_ratio else "ok"


def _basis_parts(basis: str) -> tuple[tuple, tuple]:
    """The statuses in the base, and the other statuses of the entitled group."""
    if basis == "unclaimed":
        return (SIG, WH), (REC, DEREG)
    if basis == "entitled":
        return (SIG, REC, WH), (DEREG,)
    raise ReportError(f"parity basis {basis!r}: use 'unclaimed' or 'entitled'")


# -- building ----------------------------------------------------------------------------------


def report_path(out: Path) -> Path:
    """The HTML file a report is written to: `out` itself when it ends in .html, else
    <out>/report.html (a folder, as a run's own report/ folder). Refused up front when a
    folder or a file is in the way, so that nothing is half written."""
    out = Path(out).resolve()
    if out.suffix.lower() != ".html":
        if out.exists() and not out.is_dir():
            raise ReportError(f"{out}: is a file; give a folder, or a path ending in .html")
        out = out / "report.html"
    if out.is_dir():
        raise ReportError(f"{out}: is a folder; give a path ending in .html for the page")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ReportError(f"{parent}: is a file, so {out} cannot be written")
            break
    return out


WEIGHTS = {"status=signalled": 10.0}  # the headline figures: hide others first
# The run's personal-data outputs the report reads: these, and suppressed.parquet if present.
REQUIRED_INPUTS = ("signals.parquet", "households", "evaluations")
REPORT_INPUTS = (*REQUIRED_INPUTS, "suppressed.parquet")


def build_report(
    run_dir: Path,
    out: Path,
    options: ReportOptions | None = None,
    keyring=None,
) -> Report:
    """Build the report of one published run into `out` (see report_path) and its tables."""
    options = options or ReportOptions()
    check_policy(options.rules)
    run_dir, out_html = Path(run_dir).resolve(), report_path(out)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ReportError(f"{run_dir}: not a published run (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    run_id = manifest["run_id"]
    if keyring is not None:  # logged before anything is decrypted (privacy/retention.py)
        from privacy.retention import log_reading

        log_reading(run_dir, REPORT_INPUTS, keyring, "aggregate report")
    con = duckdb.connect()
    try:
        for name in REQUIRED_INPUTS:
            _register_input(con, run_dir, name, keyring)
        _register_suppressed(con, run_dir, keyring)
        con.sql(_held_sql())
        con.sql(UNITS_SQL)
        for statement in _reason_sql().split("; "):
            con.execute(statement)
        feedback_files = _feedback_files(run_dir, options.feedback)
        unmatched = None
        if feedback_files:
            unmatched = _load_feedback(con, feedback_files)
            con.sql("ALTER TABLE units ADD COLUMN outcome VARCHAR")
            con.sql(
                f"UPDATE units SET outcome = coalesce((SELECT f.outcome FROM feedback_final f "
                f"WHERE f.signal_id = units.signal_id), '{NO_FEEDBACK}') "
                "WHERE status = 'signalled'"
            )
        schemes = [
            r[0] for r in con.execute("SELECT DISTINCT scheme FROM units ORDER BY 1").fetchall()
        ]
        if not schemes:
            raise ReportError(f"{run_dir}: the run evaluated no household")
        tables = current_tables(con, run_id, schemes, bool(feedback_files))
        runs = sibling_runs(run_dir)
        past = _previous(runs, run_id)
        trends, forced = trend_tables(con, run_id, schemes, past)
        tables += trends
        units = con.sql("SELECT * FROM units").to_arrow_table() if options.dp else None
    finally:
        con.close()
    # Counts of rows and persons, not of households: never noised, protected all the same.
    inputs = input_tables(manifest, run_id)
    previous_state = _state_of(past[-1]) if past else None
    carried = {
        (run_id, m) for u, m in carried_from(previous_state) if past and u == past[-1].run_id
    }
    dp_ledger = None
    if options.dp is not None:
        from privacy.dp import apply_dp

        # DP comes on top of the disclosure control, never instead of it: every cell the
        # exact report hides is hidden in the noisy one too, so little noise (a large
        # epsilon) cannot make hidden cells computable from the published ones.
        exact = protect(tables + inputs, options.rules, forced, carried, weights=WEIGHTS)
        tables, dp_ledger = apply_dp(units, tables, run_id, options.dp)
        forced, carried = _unlinked_ids(tables + inputs, set(exact.suppressed)), set()
    protected = protect(
        tables + inputs,
        options.rules,
        forced=forced,
        carried=carried,
        link=dp_ledger is None,
        weights=WEIGHTS,
    )
    exact = {(t, c.key): c.count for t, cs in protected.cells.items() for c in cs}
    fairness = []
    district = next(t.dims[1] for t in tables if t.name == "by_district")
    for table, dim in (
        ("by_age_band", AGE),
        ("by_household_type", HOUSEHOLD),
        ("by_district", district),
    ):
        fairness += coverage_parity(protected, exact, table, dim, schemes, options)
    tables_dir = out_html.parent / f"{out_html.stem}-tables"
    summary = {
        "format": REPORT_FORMAT,
        "run_id": run_id,
        "reference_date": manifest["reference_date"],
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rules": options.rules.as_dict(),
        "max_disparity_ratio": options.max_disparity_ratio,
        "disclosure": protected.summary(),
        "feedback": "present" if feedback_files else "absent",
        "flags": sum(1 for f in fairness if f["state"] == "flag"),
        "dp": dp_ledger,
        "schemes": rules_rows(manifest),
        "fatigue_months": fatigue_months(manifest),
        "reference_dates": {r.run_id: r.reference_date for r in past}
        | {run_id: manifest["reference_date"]},
    }
    # Tables first, the page last, each put in place whole (a crash leaves the old one or
    # none): the flow takes an existing report.html as a finished report.
    staged = tables_dir.with_name(f".{tables_dir.name}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    write_tables(protected, fairness, staged, summary)
    shutil.rmtree(tables_dir, ignore_errors=True)
    os.replace(staged, tables_dir)
    page = render_html(protected, fairness, summary, schemes, past, unmatched, options)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(out_html) as partial:
        partial.write_text(page, encoding="utf-8")
    return Report(out_html, tables_dir, protected, fairness, summary)


def _unlinked_ids(tables: list[CountTable], hidden: set) -> set:
    """The ids protect(link=False) gives the cells whose linked id is in `hidden`."""
    return {
        (t.universe, f"{t.name}:{t.meaning(k)}")
        for t in tables
        for k in t.keys()
        if t.cell_id(k) in hidden
    }


# -- writing the tables ------------------------------------------------------------------------


def published_tables(protected: Protected, summary: dict) -> dict[str, list[dict]]:
    """Every published table as rows, each row with the run id and reference date it is of
    (a file on its own says where it came from); trend tables of all runs merged into one
    (with the run that published it, report_run_id), the inputs tables into one."""
    out: dict[str, list[dict]] = {}
    run_id, dates = summary["run_id"], summary["reference_dates"]
    here = {"run_id": run_id, "reference_date": dates[run_id]}
    for name, table in protected.tables.items():
        rows = protected.rows(name)
        if "scheme" in [d.name for d in table.dims]:
            rows = [_with_name(r) for r in rows]
        if name.startswith("trend@"):
            for r in rows:
                r.setdefault("amount_eur", None)
            u = table.universe
            of = {"run_id": u, "reference_date": dates.get(u), "report_run_id": run_id}
            out.setdefault("trend", []).extend(of | r for r in rows)
        elif name.startswith("inputs@"):
            measure = dict(table.fixed)["measure"]
            out.setdefault("inputs", []).extend(
                here
                | {"measure": measure, "source": r["source"], "count": r["households"]}
                | {"suppressed": r["suppressed"]}
                for r in rows
            )
        else:
            out[name] = [here | r for r in rows]
    return out


def _with_name(row: dict) -> dict:
    """The row with scheme_name after scheme (Total stays Total)."""
    out = {}
    for k, v in row.items():
        out[k] = v
        if k == "scheme":
            out["scheme_name"] = v if v == TOTAL else scheme_name(v)
    return out


def write_tables(protected: Protected, fairness: list[dict], folder: Path, summary: dict):
    folder.mkdir(parents=True, exist_ok=True)
    tables = published_tables(protected, summary)
    run_id = summary["run_id"]
    here = {"run_id": run_id, "reference_date": summary["reference_dates"][run_id]}
    tables["coverage_parity"] = [
        here | _with_name({k: v for k, v in f.items() if k != "level"}) for f in fairness
    ]
    tables["rules"] = [here | r for r in summary["schemes"]]
    origin = {
        b"run_id": here["run_id"].encode(),
        b"reference_date": here["reference_date"].encode(),
    }
    for name, rows in tables.items():
        table = pa.Table.from_pylist(rows) if rows else _empty(here)
        table = table.replace_schema_metadata(origin)
        pq.write_table(table, folder / f"{name}.parquet")
        pacsv.write_csv(table, folder / f"{name}.csv")
    meta = {
        "format": REPORT_FORMAT,
        "run_id": summary["run_id"],
        "rules": summary["rules"],
        "tables": {n: t.describe() for n, t in protected.tables.items()},
        "note": "households: count, empty when suppressed; amount_eur: estimated EUR per "
        "year, rounded, empty when suppressed (0 with households > 0: under the rounding "
        "unit, not zero); 'Total' marks a total over that column",
    }
    (folder / "tables.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    state = protected.state() | {"run_id": summary["run_id"]}
    (folder / "suppression.json").write_text(json.dumps(state, indent=2) + "\n")
    if summary.get("dp"):
        (folder / "dp_ledger.json").write_text(json.dumps(summary["dp"], indent=2) + "\n")


def _empty(here: dict) -> pa.Table:
    """A table without rows that still says which run it is of."""
    return pa.table({k: pa.array([], pa.string()) for k in here})


def _version() -> str:
    try:
        return version("entitlement-signals")
    except PackageNotFoundError:
        return "0+unknown"


# -- the page ----------------------------------------------------------------------------------


def _cell(value, unit="") -> str:
    if value is None:
        return '<td class="sup">suppressed</td>'
    return f"<td>{escape(charts.fmt(value, unit))}</td>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _amount(p: Protected, table: str, key: tuple):
    """A published amount for the page: rounded, or Under(unit) when it rounds to 0 but is
    not 0 (a handful of signals of a few hundred euros must not read as EUR 0)."""
    if p.amount_under_unit(table, key):
        return charts.Under(p.rules.amount_rounding)
    return p.amount(table, key)


def _key(scheme: str, *coords) -> tuple:
    return ((LEAF, scheme),) + tuple(coords)


def _scheme_section(p: Protected, scheme: str, window: str) -> str:
    t = "by_scheme"
    figures = [
        ("signals", p.count(t, _key(scheme, SIG)), ""),
        ("estimated unclaimed per year", _amount(p, t, _key(scheme, SIG)), "EUR "),
        ("entitled households (estimate)", p.count(t, _key(scheme, ENT)), ""),
        ("already receiving", p.count(t, _key(scheme, REC)), ""),
        ("held back (see below)", p.count("withheld_reasons", _key(scheme, TOT)), ""),
        ("held back by law: deregistered", p.count(t, _key(scheme, DEREG)), ""),
        ("households evaluated", p.count(t, _key(scheme, TOT)), ""),
    ]
    boxes = "".join(
        f'<div class="figure"><b>{escape(charts.fmt(v, u))}</b><span>{escape(label)}</span></div>'
        for label, v, u in figures
    )
    return (
        f'<h3>{escape(scheme_name(scheme))}</h3><div class="figures">{boxes}</div>'
        + _held_back_table(p, scheme, window)
    )


def _held_back_table(p: Protected, scheme: str, window: str) -> str:
    """Entitled households not signalled and not receiving, per reason class and reason."""
    t = "withheld_reasons"
    rows = [
        [
            f"<td>{BY_LAW}</td>",
            "<td>applicant deregistered (deceased, emigrated)</td>",
            _cell(p.count("by_scheme", _key(scheme, DEREG))),
        ]
    ]
    recorded = p.tables[t].dims[1].categories
    for reason, cls, label in WITHHELD_REASONS:
        if reason not in recorded:
            continue
        n = p.count(t, _key(scheme, (LEAF, reason)))
        text = label.format(window=window)
        rows.append([f"<td>{escape(cls)}</td>", f"<td>{escape(text)}</td>", _cell(n)])
        if reason == "necessity":
            n = p.count(t, _key(scheme, (GROUP, BY_PROPORTIONALITY)))
            rows.append([f"<td>{BY_PROPORTIONALITY}</td>", "<td>all of these</td>", _cell(n)])
    rows.append(
        [
            "<td>held back</td>",
            "<td>entitled, not signalled, not receiving, not deregistered</td>",
            _cell(p.count(t, _key(scheme, TOT))),
        ]
    )
    return "<p>Held back, per reason (households):</p>" + _table(
        ["held back", "reason", "households"], rows
    )


def _window(months: int | None) -> str:
    if months is None:
        return "within the fatigue window of the run's proportionality policy"
    return f"less than {months} months before this run's reference date"


def _held_back_note(window: str) -> str:
    return (
        '<p class="note">Entitled households (the rules\' estimate) are signalled, already '
        "receiving, or held back. Held back <b>by law</b>: the applicant is deregistered "
        "(deceased, emigrated) or objected to signals for the scheme. Held back <b>by "
        "proportionality</b>: fatigue, an open case, an amount under the scheme's minimum, "
        "an uncertain estimate, or data the purpose does not allow. Fatigue: a household "
        f"signalled for a scheme is not signalled again for it {window}, whether or not it "
        "has applied since. So in the months after a run most entitled households that are "
        "not receiving have been signalled already, and a low number of signals is not "
        "non-take-up solved: those households are counted under fatigue. A household held "
        "back for several reasons is counted once, under the first in the table.</p>"
    )


def _count_or_why(p: Protected, table: str, key: tuple) -> str:
    """A standalone count's cell: the number, or why it is hidden."""
    n = p.count(table, key)
    if n is not None:
        return _cell(n)
    why = p.suppressed.get(p.tables[table].cell_id(key))
    said = {
        "primary": f"suppressed (under {p.rules.threshold})",
        "carried": "suppressed (as in the previous report)",
    }.get(why, "suppressed")
    return f'<td class="sup">{escape(said)}</td>'


def _context_section(p: Protected, summary: dict) -> str:
    """What the figures rest on: rules and versions, schemes not evaluated, data not used."""
    schemes = summary["schemes"]
    used = [r for r in schemes if r["evaluated"]]
    out = ["<h2>What this report covers</h2>"]
    if used:
        rows = [
            [
                f"<td>{escape(r['scheme_name'])}</td>",
                f"<td>{escape(str(r['benefit_year']))}</td>",
                f"<td>{escape(str(r['rule_version']))}</td>",
                f"<td>{escape(str(r['parameter_version']))}</td>",
            ]
            for r in used
        ]
        out.append("<p>Schemes evaluated, with the version of their rules and parameters:</p>")
        out.append(_table(["scheme", "benefit year", "rule version", "parameter version"], rows))
    else:
        out.append("<p>The run's manifest does not record its rule versions.</p>")
    skipped = [r for r in schemes if not r["evaluated"]]
    if skipped:
        lines = "; ".join(
            f"{escape(r['scheme_name'])}: {escape(r['not_evaluated_because'])}" for r in skipped
        )
        out.append(
            f"<p><b>Not evaluated:</b> {lines}. These schemes have no figures in this report "
            "(the run's manifest holds the full reason).</p>"
        )
    quarantine = p.tables.get("inputs@quarantined")
    excluded = p.tables.get("inputs@excluded")
    out.append(
        "<h3>Data not used</h3><p>Delivery rows that failed validation are quarantined and "
        "are in no figure of this report; persons who objected to all processing are left "
        "out before anything is joined. Counts of rows and persons, with the same "
        "suppression as every other count.</p>"
    )
    if quarantine:
        rows = [
            [f"<td>{escape(s)}</td>", _count_or_why(p, quarantine.name, ((LEAF, s),))]
            for s in quarantine.dims[0].categories
        ]
        out.append(_table(["source", "rows quarantined"], rows))
    else:
        out.append("<p>Rows quarantined: not recorded in the run's manifest.</p>")
    if excluded:
        cell = _count_or_why(p, excluded.name, ((LEAF, ALL_SOURCES),))
        out.append(
            _table(["", "persons"], [["<td>excluded for objecting to all processing</td>", cell]])
        )
    else:
        out.append("<p>Persons excluded for objecting: not recorded in the run's manifest.</p>")
    return "".join(out)


def _classifier_section(p: Protected, table: str, dim: Dimension, scheme: str, title: str):
    coords = [(LEAF, c) for c in dim.categories]
    signals = [(c[1], p.count(table, _key(scheme, c, SIG))) for c in coords]
    amounts = [(c[1], _amount(p, table, _key(scheme, c, SIG))) for c in coords]
    rows = []
    for c in coords + [TOT]:
        label = c[1]
        rows.append(
            [
                f"<td>{escape(label)}</td>",
                _cell(p.count(table, _key(scheme, c, TOT))),
                _cell(p.count(table, _key(scheme, c, ENT))),
                _cell(p.count(table, _key(scheme, c, REC))),
                _cell(p.count(table, _key(scheme, c, SIG))),
                _cell(_amount(p, table, _key(scheme, c, SIG)), "EUR "),
            ]
        )
    return (
        f"<h3>{escape(title)} ({escape(scheme_name(scheme))})</h3>"
        + charts.bar_chart(f"Signals per {DIM_LABELS[dim.name]}", signals)
        + charts.bar_chart(
            f"Estimated unclaimed EUR per year per {DIM_LABELS[dim.name]}", amounts, "EUR "
        )
        + _table(
            [
                DIM_LABELS[dim.name],
                "households",
                "entitled",
                "already receiving",
                "signals",
                "est. unclaimed EUR/yr",
            ],
            rows,
        )
    )


def _district_section(p: Protected, dim: Dimension, scheme: str) -> str:
    t = "by_district"
    bars, rows = [], []
    for m in dim.group_names():
        members = [c for c, g in dim.groups if g == m]
        for c in [(GROUP, m)] + [(LEAF, d) for d in members]:
            label = f"{m} (municipality)" if c[0] == GROUP else f"  {c[1]}"
            n, hh = p.count(t, _key(scheme, c, SIG)), p.count(t, _key(scheme, c, TOT))
            if c[0] == LEAF:
                bars.append((c[1], n))
            rate = None if n is None or not hh else 1000 * n / hh
            rows.append(
                [
                    f"<td>{escape(label)}</td>",
                    _cell(hh),
                    _cell(p.count(t, _key(scheme, c, ENT))),
                    _cell(n),
                    _cell(rate),
                    _cell(_amount(p, t, _key(scheme, c, SIG)), "EUR "),
                ]
            )
    nat = p.count(t, _key(scheme, TOT, SIG))
    rows.append(
        [
            "<td>national</td>",
            _cell(p.count(t, _key(scheme, TOT, TOT))),
            _cell(p.count(t, _key(scheme, TOT, ENT))),
            _cell(nat),
            "<td></td>",
            _cell(_amount(p, t, _key(scheme, TOT, SIG)), "EUR "),
        ]
    )
    return (
        f"<h3>Signals per district ({escape(scheme_name(scheme))})</h3>"
        + charts.bar_chart("Signals per district", bars, label_width=180)
        + _table(
            [
                "municipality / district",
                "households",
                "entitled",
                "signals",
                "per 1,000 households",
                "est. unclaimed EUR/yr",
            ],
            rows,
        )
    )


def _trend_section(p: Protected, schemes: list[str]) -> str:
    runs = [t for n, t in p.tables.items() if n.startswith("trend@")]
    labels, series, totals = [], {scheme_name(s): [] for s in schemes}, []
    for t in runs:
        labels.append(t.universe[:10])
        cats = t.dims[0].categories
        for s in schemes:
            # A scheme that run did not evaluate is no zero either: a gap.
            value = p.count(t.name, ((LEAF, s),)) if s in cats else charts.ABSENT
            series[scheme_name(s)].append(value)
        totals.append((t.universe, p.count(t.name, (TOT,)), _amount(p, t.name, (TOT,))))
    rows = [[f"<td>{escape(r)}</td>", _cell(n), _cell(a, "EUR ")] for r, n, a in totals]
    note = (
        (
            '<p class="note">Only this run so far: the trend fills as runs are published in the '
            "same output folder.</p>"
        )
        if len(runs) == 1
        else ""
    )
    return (
        "<h2>Trend over runs</h2>"
        + note
        + charts.line_chart("Signals per run", labels, series)
        + _table(["run", "signals (all schemes)", "est. unclaimed EUR/yr"], rows)
    )


def _feedback_section(p: Protected, schemes: list[str], unmatched, threshold: int) -> str:
    if "feedback" not in p.tables:
        return (
            '<h2>Take-up and precision</h2><div class="box">No feedback yet: operators '
            "have not reported outcomes for this run's signals (<code>signals feedback "
            "import</code>).</div>"
        )
    out = ["<h2>Take-up and precision</h2>"]
    for s in schemes:
        parts = [
            (o.replace("_", " "), p.count("feedback", ((LEAF, s), (LEAF, o))))
            for o in OUTCOMES + (NO_FEEDBACK,)
        ]
        granted = p.count("feedback", ((LEAF, s), (LEAF, "granted")))
        wrong = p.count("feedback", ((LEAF, s), (LEAF, "not_entitled")))
        with_fb = p.count("feedback", ((LEAF, s), (GROUP, "with feedback")))
        take_up = granted / with_fb if granted is not None and with_fb else None
        precision = (
            granted / (granted + wrong)
            if granted is not None and wrong is not None and granted + wrong
            else None
        )
        out.append(
            f"<h3>{escape(scheme_name(s))}</h3>" + charts.stacked_bar("Signals by outcome", parts)
        )
        out.append(
            _table(
                ["measure", "value"],
                [
                    [
                        "<td>take-up: granted / signals with feedback</td>",
                        _cell(None if take_up is None else round(100 * take_up, 1), "%"),
                    ],
                    [
                        "<td>precision: granted / (granted + not entitled)</td>",
                        _cell(None if precision is None else round(100 * precision, 1), "%"),
                    ],
                ],
            )
        )
    if unmatched:
        n = str(unmatched) if unmatched >= threshold else f"fewer than {threshold}"
        out.append(f'<p class="note">{n} feedback records refer to signals not in this run.</p>')
    return "".join(out)


def _fairness_section(fairness: list[dict], schemes: list[str], options: ReportOptions) -> str:
    ratio = options.max_disparity_ratio
    low, high = 1 / ratio, ratio
    basis = (
        "unclaimed entitled household (entitled, not yet receiving)"
        if options.parity_basis == "unclaimed"
        else "entitled household"
    )
    threshold = options.rules.threshold
    out = [
        "<h2>Fairness: coverage parity</h2>",
        f"<p>Signals per {basis} in each group, divided by the same rate for the country. "
        f"1.0 means the group is reached as well as the country as a whole. A group is "
        f"flagged when its ratio is below {low:.2f} and a binomial test says the gap is "
        f"unlikely to be chance (p &lt; {options.significance}); above {high:.2f} is marked "
        "but not flagged (nobody is left out by it). Households whose applicant is "
        "deregistered (deceased, emigrated) are not in the base: the law forbids signalling "
        "them, so they are no reach failure. A group is not assessed when its base cannot be "
        "read from the published figures or is under "
        f"{threshold} households: a rate on so few says nothing. A flagged group whose "
        "signal count is suppressed shows the flag without the ratio: the flag says its rate "
        "is low, not what it is.</p>",
    ]
    flagged = [f for f in fairness if f["state"] == "flag"]
    if flagged:
        rows = [
            [
                f"<td>{escape(scheme_name(f['scheme']))}</td>",
                f"<td>{escape(DIM_LABELS[f['dimension']])}</td>",
                f"<td>{escape(f['group'])}</td>",
                _cell(f["basis"]),
                _cell(f["signals"]),
                '<td class="flag">'
                + (f"{f['ratio']:.2f}" if f["ratio"] is not None else "suppressed")
                + "</td>",
            ]
            for f in flagged
        ]
        out.append(
            f'<div class="box warn"><b class="flag">{len(flagged)} coverage disparities '
            "flagged</b>"
            + _table(["scheme", "by", "group", "basis households", "signals", "ratio"], rows)
            + "</div>"
        )
    else:
        out.append('<div class="box">No coverage disparity beyond the configured ratio.</div>')
    for s in schemes:
        for dim in ("age_band", "household_type", "district"):
            items = [
                (f["group"], f["ratio"], f["state"], f["note"])
                for f in fairness
                if f["scheme"] == s and f["dimension"] == dim and f["level"] == LEAF
            ]
            label = DIM_LABELS[dim]
            out.append(f"<h3>By {label} ({escape(scheme_name(s))})</h3>")
            out.append(charts.parity_chart(f"Coverage parity by {label}", items, low, high))
    return "".join(out)


def _method_section(summary: dict, p: Protected) -> str:
    r = summary["rules"]
    d = summary["disclosure"]
    dp = summary.get("dp")
    text = (
        "<h2>Method and disclosure control</h2>"
        f"<p>Counts are households (one row per household and scheme, benefit year of the "
        f"run). Cells of 1 to {r['threshold'] - 1} households are suppressed; further cells "
        "are suppressed until no suppressed cell can be worked out from totals or from other "
        "tables of this report (an attacker's linear programme over every published number "
        f"leaves each suppressed cell an interval at least {r['min_interval']} wide). Cells "
        "suppressed in the previous report stay suppressed in this one"
        ", and a past run's figures in the trend are shown as that run's own report "
        "published them, with its suppression (a past run without a report is left out). "
        f"Amounts are estimates in EUR per year, rounded to the nearest {r['amount_rounding']:,}"
        f" each on its own, so totals can differ from the sum of their parts; an amount "
        f"that rounds to 0 but is not 0 is shown as &lt; EUR {r['amount_rounding']:,}. "
        "These settings are the policy floor: a report may protect more, never less. "
        f"This report publishes {d['cells']:,} distinct cells, {d['suppressed']:,} of them "
        "suppressed. Estimated entitlement is the rules' estimate, including households "
        "already receiving and households whose applicant is deregistered (deceased, "
        "emigrated), whom the law forbids signalling; it is not a decision on anyone's "
        "claim. The coverage parity base leaves deregistered households out: holding them "
        "back is the law, not a failure to reach them.</p>"
    )
    if dp:
        text += (
            "<p>Differential privacy is on for this report, on top of the disclosure control: "
            "its counts and amounts are noisy estimates, every cell the exact report would "
            "suppress is suppressed here too, and so is every noisy cell under the "
            "threshold.</p>"
        )
        rows = [
            [
                f"<td>{escape(e['table'])}</td>",
                f"<td>{escape(e['metric'])}</td>",
                f"<td>{e['epsilon']:.4f}</td>",
                f"<td>{e['delta']:.2e}</td>",
                f"<td>{escape(e['mechanism'])}</td>",
            ]
            for e in dp["entries"]
        ]
        text += (
            "<h3>Differential privacy</h3>"
            f"<p>{escape(dp['explanation'])}</p>"
            + _table(["table", "metric", "epsilon", "delta", "mechanism"], rows)
            + f"<p>Total budget: epsilon {dp['total_epsilon']}, delta {dp['total_delta']}.</p>"
        )
    return text


def render_html(p: Protected, fairness, summary, schemes, past, unmatched, options) -> str:
    district = p.tables["by_district"].dims[1]
    body = [
        "<h1>Proactive entitlement signals: aggregate report</h1>",
        f'<p class="meta">Run {escape(summary["run_id"])} · reference date '
        f"{escape(summary['reference_date'])} · generated {escape(summary['generated_at'])} · "
        f"cells under {summary['rules']['threshold']} households suppressed</p>",
        _context_section(p, summary),
        "<h2>Signals and estimated unclaimed amounts</h2>",
    ]
    window = _window(summary.get("fatigue_months"))
    body.append(_held_back_note(window))
    body += [_scheme_section(p, s, window) for s in schemes]
    body.append(
        charts.bar_chart(
            "Signals per scheme",
            [(scheme_name(s), p.count("by_scheme", _key(s, SIG))) for s in schemes],
        )
    )
    body.append(
        charts.bar_chart(
            "Estimated unclaimed EUR per year per scheme",
            [(scheme_name(s), _amount(p, "by_scheme", _key(s, SIG))) for s in schemes],
            "EUR ",
        )
    )
    body.append("<h2>Local picture</h2>")
    body += [_district_section(p, district, s) for s in schemes]
    body.append(_trend_section(p, schemes))
    body.append(_feedback_section(p, schemes, unmatched, options.rules.threshold))
    body.append("<h2>Overlap with early debt signals</h2>")
    body += [
        _classifier_section(p, "by_debt_signal", DEBT_DIM, s, "Early debt signals") for s in schemes
    ]
    body.append("<h2>Income bands</h2>")
    body += [
        _classifier_section(p, "by_income_band", INCOME, s, "Combined income (EUR/yr)")
        for s in schemes
    ]
    body.append("<h2>Age and household type</h2>")
    body += [
        _classifier_section(p, "by_age_band", AGE, s, "Age band of the applicant") for s in schemes
    ]
    body += [
        _classifier_section(p, "by_household_type", HOUSEHOLD, s, "Household type") for s in schemes
    ]
    body.append(_fairness_section(fairness, schemes, options))
    body.append(_method_section(summary, p))
    template = Template((Path(__file__).with_name("report_template.html")).read_text())
    return template.substitute(
        title=escape(f"Signals report {summary['run_id']}"),
        version=escape(_version()),
        body="\n".join(body),
    )


# -- Prefect artifacts -------------------------------------------------------------------------


def artifact_tables(report: Report) -> dict[str, list[dict]]:
    """The key tables for the Prefect UI: published values only ('suppressed' otherwise)."""
    p = report.protected
    schemes = p.tables["by_scheme"].dims[0].categories
    district = p.tables["by_district"].dims[1]

    def show(v):
        if isinstance(v, charts.Under):
            return charts.fmt(v, "EUR ")
        return "suppressed" if v is None else v

    scheme_rows = [
        {
            "scheme": s,
            "signals": show(p.count("by_scheme", _key(s, SIG))),
            "estimated_unclaimed_eur": show(_amount(p, "by_scheme", _key(s, SIG))),
            "entitled": show(p.count("by_scheme", _key(s, ENT))),
            "already_receiving": show(p.count("by_scheme", _key(s, REC))),
            "households": show(p.count("by_scheme", _key(s, TOT))),
        }
        for s in schemes
    ]
    district_rows = [
        {
            "scheme": s,
            "municipality": district.group_of.get(d, d),
            "district": d,
            "households": show(p.count("by_district", _key(s, (LEAF, d), TOT))),
            "signals": show(p.count("by_district", _key(s, (LEAF, d), SIG))),
            "estimated_unclaimed_eur": show(_amount(p, "by_district", _key(s, (LEAF, d), SIG))),
        }
        for s in schemes
        for d in district.categories
    ]
    flags = [
        {
            "scheme": f["scheme"],
            "by": f["dimension"],
            "group": f["group"],
            "ratio": show(f["ratio"]),
        }
        for f in report.fairness
        if f["state"] == "flag"
    ]
    return {
        "signals-per-scheme": scheme_rows,
        "signals-per-district": district_rows,
        "coverage-flags": flags,
    }


def attach_artifacts(report: Report) -> None:
    """Attach the key tables and a summary to the current Prefect run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    for key, rows in artifact_tables(report).items():
        if rows:
            create_table_artifact(rows, key=key, description=f"{key} (suppressed, rounded)")
    s = report.summary
    d = s["disclosure"]
    create_markdown_artifact(
        "\n".join(
            [
                f"# Aggregate report {s['run_id']}",
                f"- reference date {s['reference_date']}",
                f"- report: `{report.html}`; tables: `{report.tables_dir}`",
                f"- {d['cells']} cells, {d['suppressed']} suppressed "
                f"(threshold {s['rules']['threshold']}, amounts rounded to EUR "
                f"{s['rules']['amount_rounding']})",
                f"- coverage disparities flagged: {s['flags']}",
                f"- operator feedback: {s['feedback']}",
            ]
        ),
        key="aggregate-report",
        description="aggregate report summary",
    )
