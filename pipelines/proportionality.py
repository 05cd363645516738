"""Proportionality: for every candidate, may a signal be sent, and is it worth sending?

After the rules (pipelines/evaluate.py) every entitled household x scheme is a candidate.
Before a signal is emitted each candidate goes through every check below, and each check's
outcome is recorded in the audit trail (operation `proportionality`, one record per candidate
per scheme, for its applicant), whatever the decision:

    necessity       the rule reads only household columns whose source fields the processing
                    register allows for this purpose and scheme; the columns are recorded
    minimum_amount  estimated annual amount >= the scheme's minimum
    confidence      confidence of the estimate >= the minimum confidence
    fatigue         not signalled for this household and scheme by an earlier run less than
                    N calendar months before this run's reference date
    subsidiarity    the scheme is not already paid (already_receiving) and the household has
                    no open case for it (open_case, from operator feedback)
    objection       the applicant or partner did not object to this scheme
    registration    the applicant is not deregistered (death, emigration)
    completeness    the body quarantined no register or tax row of a member (composition,
                    income would be a guess) and no benefits or insurance row of the
                    applicant or partner (what it is paid, who is insured); the sources are
                    recorded

Outcome `signal` when every check passes; otherwise `suppressed`, with reasons REASONS (the
failed checks; already_receiving and open_case name the failing half of subsidiarity,
deregistered the failed registration). Suppressed candidates go to <run>/suppressed.parquet.
A check whose input is unknown (NULL) fails: when in doubt, nobody is contacted.

Thresholds and the reasoning behind them: privacy/proportionality.yaml (`Policy`). History of
earlier runs comes in as a side input (pipelines/lifecycle.py): every candidate gets its
lifecycle status, and open episodes of the batch's households that no longer hold are
resolved here (households absent from the run are resolved after the pipeline).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from entitlement_rules.loader import read_yaml
from pipelines import lifecycle
from pipelines.audit_records import (
    AuditContext,
    canonical_json,
    combinations,
    json_strings,
    proportionality_records,
    scheme_years,
    signal_records,
)
from pipelines.evaluate import SIGNAL_SCHEMA
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS
from pipelines.machine import step_connection

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "privacy" / "proportionality.yaml"

CHECKS = (
    "necessity",
    "minimum_amount",
    "confidence",
    "fatigue",
    "subsidiarity",
    "objection",
    "registration",
    "completeness",
)
REASONS = (
    "necessity",
    "minimum_amount",
    "confidence",
    "fatigue",
    "already_receiving",
    "open_case",
    "objection",
    "deregistered",
    "incomplete_household",
)

SIGNALS, SUPPRESSED, RESOLVED, AUDIT = "signals", "suppressed", "resolved", "audit"

SUPPRESSED_SCHEMA = pa.schema(
    [
        ("signal_id", pa.string()),  # the id the signal would have had
        ("run_id", pa.string()),
        ("household_pid", pa.string()),
        ("applicant_pid", pa.string()),
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("estimated_annual_amount", pa.decimal128(12, 2)),
        ("confidence", pa.float64()),
        ("status", pa.string()),  # lifecycle: new, repeated or resolved
        ("reasons", pa.list_(pa.string())),  # REASONS, in that order
    ]
)

LINEAGE = {c.name: c.derived_from for c in HOUSEHOLD_COLUMNS}
SCHEME_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PolicyError(Exception):
    """The proportionality configuration is missing, malformed or out of range."""


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The thresholds of privacy/proportionality.yaml, validated; `version` hashes the file."""

    default_minimum: Decimal
    scheme_minimums: tuple[tuple[str, Decimal], ...]
    minimum_confidence: Decimal
    fatigue_months: int
    open_case_outcomes: tuple[str, ...]
    open_case_months: int
    version: str
    path: str

    def minimum_for(self, scheme: str) -> Decimal:
        return dict(self.scheme_minimums).get(scheme, self.default_minimum)


def read_config(path: Path | str | None = None) -> tuple[Path, dict[str, Any]]:
    """The configuration file as a mapping (for this module and pipelines/priority.py)."""
    path = Path(path) if path else DEFAULT_PATH
    data = read_yaml(path, PolicyError)
    return path, data


def field(path: Path, data: dict, dotted: str) -> Any:
    """data[a][b]... for 'a.b...'; a missing key is a PolicyError naming file and field."""
    value: Any = data
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PolicyError(f"{path}: {dotted} is required.")
        value = value[key]
    return value


def decimal_in(path: Path, data: dict, dotted: str, low: Decimal, high: Decimal) -> Decimal:
    value = field(path, data, dotted)
    try:
        number = Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not low <= number <= high:
        raise PolicyError(
            f"{path}: {dotted} must be a quoted decimal from {low} to {high}, not {value!r}."
        )
    return number


def whole_in(path: Path, data: dict, dotted: str, low: int, high: int) -> int:
    value = field(path, data, dotted)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PolicyError(
            f"{path}: {dotted} must be a whole number from {low} to {high}, not {value!r}."
        )
    return value


def reasoned(path: Path, data: dict, dotted: str) -> None:
    """Every default carries its reasoning, and a value taken from law its source."""
    entry = field(path, data, dotted)
    if not isinstance(entry, dict):
        raise PolicyError(f"{path}: {dotted} must be a mapping with its value and reasoning.")
    if not isinstance(entry.get("reasoning"), str) or not entry["reasoning"].strip():
        raise PolicyError(f"{path}: {dotted}.reasoning is required: say why this value.")
    if entry.get("status") not in ("verified", "corroborated", "policy"):
        raise PolicyError(
            f"{path}: {dotted}.status must be verified, corroborated or policy, "
            f"not {entry.get('status')!r}."
        )
    if entry["status"] != "policy" and not entry.get("source"):
        raise PolicyError(f"{path}: {dotted}.source is required for a value taken from law.")


def config_version(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate the proportionality thresholds (default privacy/proportionality.yaml)."""
    path, data = read_config(path)
    money = (Decimal("0"), Decimal("100000"))
    reasoned(path, data, "minimum_annual_amount.default")
    schemes = field(path, data, "minimum_annual_amount.schemes")
    if not isinstance(schemes, dict):
        raise PolicyError(f"{path}: minimum_annual_amount.schemes must be a mapping.")
    minimums = []
    for scheme in sorted(schemes):
        if not SCHEME_NAME.match(str(scheme)):  # it goes into SQL as a literal
            raise PolicyError(f"{path}: minimum_annual_amount.schemes has a bad name {scheme!r}.")
        reasoned(path, data, f"minimum_annual_amount.schemes.{scheme}")
        key = f"minimum_annual_amount.schemes.{scheme}.value"
        minimums.append((scheme, decimal_in(path, data, key, *money)))
    for key in ("minimum_confidence", "fatigue_months", "open_case"):
        reasoned(path, data, key)
    outcomes = field(path, data, "open_case.outcomes")
    if not isinstance(outcomes, list) or not set(outcomes) <= set(lifecycle.OUTCOMES):
        raise PolicyError(
            f"{path}: open_case.outcomes must be a list of {', '.join(lifecycle.OUTCOMES)}, "
            f"not {outcomes!r}."
        )
    return Policy(
        default_minimum=decimal_in(path, data, "minimum_annual_amount.default.value", *money),
        scheme_minimums=tuple(minimums),
        minimum_confidence=decimal_in(
            path, data, "minimum_confidence.value", Decimal("0"), Decimal("1")
        ),
        fatigue_months=whole_in(path, data, "fatigue_months.value", 0, 120),
        open_case_outcomes=tuple(outcomes),
        open_case_months=whole_in(path, data, "open_case.months", 0, 120),
        version=config_version(data),
        path=str(path),
    )


# -- necessity -----------------------------------------------------------------------------

NECESSITY_SCHEMA = pa.schema(
    [
        ("scheme", pa.string()),
        ("benefit_year", pa.int32()),
        ("necessary", pa.bool_()),
        ("fields", pa.list_(pa.string())),  # household columns the rule reads
        ("not_allowed", pa.list_(pa.string())),  # "column <- source.field: why"
        # Canonical JSON, for the signal's audit record: per column the source fields it
        # derives from, each with its legal basis for this purpose (privacy/register).
        ("fields_used", pa.string()),
    ]
)


def _field_refusal(activity, scheme: str, column: str, source_field: str) -> str | None:
    """Why the register does not allow `source_field` for this scheme, or None if it does."""
    source, name = source_field.split(".", 1)
    rule = activity.field(source, name)
    where = f"{column} <- {source_field}"
    if rule is None:
        return f"{where}: not in the register for this purpose"
    if not rule.usable:
        return f"{where}: {rule.status}"
    if rule.schemes and scheme not in rule.schemes:
        return f"{where}: allowed for {', '.join(rule.schemes)} only"
    if "aggregate_only" in rule.conditions:
        return f"{where}: aggregate use only"
    return None


def assess_necessity(compiled: list, register=None, purpose: str | None = None) -> pa.Table:
    """Per compiled rule: are all fields it reads allowed for this purpose and scheme?

    With a register (privacy/register.py) every source field behind every household column
    the rule reads (the column's lineage) must be usable for the purpose and the scheme and
    not restricted to aggregate use. Without one, the household table's lineage is the
    bound: the rule may read household columns only (the compiler already refuses others).
    """
    rows = []
    activity = register.activity(purpose) if register is not None else None
    for rule in compiled:
        fields = sorted(rule.fields)
        refused = [f"{c}: not a household column" for c in fields if c not in LINEAGE]
        if register is not None:
            if activity is None:
                refused.append(f"purpose {purpose!r} is not in the register")
            elif rule.scheme not in activity.schemes:
                refused.append(f"scheme {rule.scheme} is not a scheme of {purpose}")
            else:
                refused += [
                    reason
                    for c in fields
                    for source_field in LINEAGE.get(c, ())
                    if (reason := _field_refusal(activity, rule.scheme, c, source_field))
                ]
        rows.append(
            {
                "scheme": rule.scheme,
                "benefit_year": rule.year,
                "necessary": not refused,
                "fields": fields,
                "not_allowed": refused,
                "fields_used": canonical_json(_fields_used(activity, fields)),
            }
        )
    return pa.Table.from_pylist(rows, schema=NECESSITY_SCHEMA)


def _fields_used(activity, fields: list[str]) -> dict:
    """Per household column a rule reads: its source fields and their legal basis.

    Without a register entry (tests, or a purpose the register lacks) the sources are
    known from the lineage but no basis is: `legal_basis` is then empty, never guessed.
    """
    used = {}
    for column in fields:
        sources = []
        for source_field in LINEAGE.get(column, ()):
            source, name = source_field.split(".", 1)
            entry = activity.sources.get(source) if activity else None
            bases = [b.citation() for b in entry.legal_basis] if entry else []
            sources.append({"field": source_field, "legal_basis": bases})
        used[column] = sources
    return used


# -- the stage -----------------------------------------------------------------------------


def _sql_list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]::VARCHAR[]"


# What AssessFn reads of an assessed candidate: the signal and suppressed columns, the decision
# and what the audit records hold. Every other column (the candidate's texts and flags)
# stays in DuckDB: carried out, it was copied again by every filter.
_ASSESSED_COLUMNS = tuple(
    dict.fromkeys([*SIGNAL_SCHEMA.names, *SUPPRESSED_SCHEMA.names, "decision"])
)
_SIGNALLED_COLUMNS = (*SIGNAL_SCHEMA.names, "checks")  # a signal, and its record's checks


def assess_sql(policy: Policy, reference_date: dt.date) -> str:
    """One row per entitled candidate: every check, reasons, decision and status."""
    ref = f"DATE '{reference_date.isoformat()}'"
    minimum = " ".join(f"WHEN '{s}' THEN {m}" for s, m in policy.scheme_minimums)
    minimum = f"CASE c.scheme {minimum} ELSE {policy.default_minimum} END"
    open_case = (
        f"list_contains({_sql_list(policy.open_case_outcomes)}, h.case_outcome) "
        f"AND h.case_on > {ref} - INTERVAL ({policy.open_case_months}) MONTH"
    )
    reasons = ", ".join(
        f"CASE WHEN NOT ok_{check} THEN '{reason}' END"
        for check, reason in (
            ("necessity", "necessity"),
            ("minimum_amount", "minimum_amount"),
            ("confidence", "confidence"),
            ("fatigue", "fatigue"),
            ("not_receiving", "already_receiving"),
            ("no_open_case", "open_case"),
            ("objection", "objection"),
            ("registration", "deregistered"),
            ("completeness", "incomplete_household"),
        )
    )
    return f"""
WITH checked AS (
    SELECT c.*, n.fields AS necessity_fields, coalesce(n.necessary, FALSE) AS ok_necessity,
        CAST({minimum} AS DECIMAL(12, 2)) AS minimum_amount,
        h.last_signalled_on, coalesce(h.episode_open, FALSE) AS episode_open,
        h.case_outcome,
        coalesce({open_case}, FALSE) AS has_open_case,
        coalesce(len(c.quarantined) = 0, FALSE) AS ok_completeness
    FROM candidates AS c
    LEFT JOIN necessity AS n ON n.scheme = c.scheme AND n.benefit_year = c.benefit_year
    LEFT JOIN history AS h ON h.household_pid = c.household_pid AND h.scheme = c.scheme
    WHERE c.entitled
),
judged AS (
    SELECT *,
        coalesce(estimated_annual_amount >= minimum_amount, FALSE) AS ok_minimum_amount,
        coalesce(confidence >= {policy.minimum_confidence}, FALSE) AS ok_confidence,
        last_signalled_on IS NULL
            OR {ref} >= last_signalled_on + INTERVAL ({policy.fatigue_months}) MONTH
            AS ok_fatigue,
        coalesce(NOT already_receiving, FALSE) AS ok_not_receiving,
        NOT has_open_case AS ok_no_open_case,
        coalesce(NOT objected, FALSE) AS ok_objection,
        coalesce(NOT deregistered, FALSE) AS ok_registration
    FROM checked
),
reasoned AS (
    SELECT *,
        list_filter([{reasons}], lambda r: r IS NOT NULL) AS reasons,
        -- A candidate that now receives, objected or is deregistered closes its episode.
        CASE WHEN episode_open AND NOT (ok_not_receiving AND ok_objection AND ok_registration)
            THEN 'resolved' WHEN episode_open THEN 'repeated' ELSE 'new' END AS status
    FROM judged
),
decided AS (
    SELECT *, CASE WHEN len(reasons) = 0 THEN 'signal' ELSE 'suppressed' END AS decision
    FROM reasoned
)
SELECT {", ".join(_ASSESSED_COLUMNS)},
    -- What the record's JSON holds beyond those (AssessedJson): flags and values as text.
    ok_completeness, CASE WHEN NOT ok_completeness THEN quarantined END AS quarantined,
    ok_confidence, printf('%.4f', confidence) AS confidence_text,
    ok_fatigue, CAST(last_signalled_on AS VARCHAR) AS last_signalled_text,
    ok_minimum_amount, CAST(estimated_annual_amount AS VARCHAR) AS amount_text,
    CAST(minimum_amount AS VARCHAR) AS minimum_text,
    ok_necessity, ok_objection, ok_registration, already_receiving,
    CASE WHEN NOT ok_no_open_case THEN case_outcome END AS open_case,
    ok_not_receiving AND ok_no_open_case AS ok_subsidiarity
FROM decided
"""


class AssessedJson:
    """The `checks` and the proportionality record's attributes of assessed rows: canonical
    JSON (keys sorted at every level, no spaces), built column-wise.

        checks      {"completeness":{"outcome","quarantined"},"confidence":{"minimum",
                    "outcome","value"},"fatigue":{"last_signalled_on","months","outcome"},
                    "minimum_amount":{"amount","minimum","outcome"},"necessity":{"fields",
                    "outcome"},"objection":{"outcome"},"registration":{"outcome"},
                    "subsidiarity":{"already_receiving","open_case","outcome"}}
        attributes  {"benefit_year","checks","decision","household_pid","lifecycle",
                    "policy_version","reasons","scheme","signal_id"}

    A bucket's rows share a few dozen combinations of everything but the confidence, the
    amount, the last signal's date and the ids, so each combination's JSON is made once
    around those (with json.dumps) and the rows' values are joined in. Made by DuckDB's
    json_object per row, the two took ~150 ms of a 1M-person bucket's 220 ms assessment.
    Ids, pseudonyms and the values' texts need no escaping (audit_records._json_fields).
    """

    _FLAGS = (
        "ok_completeness",
        "ok_confidence",
        "ok_fatigue",
        "ok_minimum_amount",
        "ok_necessity",
        "ok_objection",
        "ok_registration",
        "ok_subsidiarity",
    )
    # Per row: a JSON string (or null) each, in the JSON's order (keys sorted).
    _CHECK_VALUES = ("confidence_text", "last_signalled_text", "amount_text")
    _RECORD_VALUES = ("household_pid", "signal_id")
    _HOLE = "\ue000"  # a placeholder no value holds: where a row's value goes
    _LISTS = ("reasons", "quarantined")
    _SEPARATOR = "\x1f"
    _ESCAPED = r'["\\\x00-\x1f]'  # what JSON would escape in a string

    @classmethod
    def _check(cls, assessed: pa.Table) -> None:
        """Refuse what this cannot write as DuckDB's json_object did: a list with a null or
        the separator in it (two lists would share a key), an id that needs escaping."""
        for name in cls._LISTS:
            values = pc.list_flatten(assessed.column(name))
            if values.null_count or pc.any(pc.match_substring(values, cls._SEPARATOR)).as_py():
                raise ValueError(f"assessed candidates: a {name} list holds a null or \\x1f")
        for name in cls._RECORD_VALUES:
            if pc.any(pc.match_substring_regex(assessed.column(name), cls._ESCAPED)).as_py():
                raise ValueError(f"assessed candidates: a {name} needs JSON escaping")

    def __init__(self, policy: Policy, necessity: pa.Table):
        self.policy = policy
        self.fields = necessity.select(["scheme", "benefit_year", "fields"])

    def __call__(self, assessed: pa.Table) -> tuple[pa.Array, pa.Array]:
        """(checks, attributes), one each a row of `assessed` (assess_sql's columns)."""
        if not assessed.num_rows:
            return pa.array([], pa.string()), pa.array([], pa.string())
        self._check(assessed)
        keyed = assessed.append_column("fields_at", necessity_rows(assessed, self.fields))
        for name in self._LISTS:  # as a key their values joined (_check: that is unique)
            joined = pc.binary_join(assessed.column(name), self._SEPARATOR)
            keyed = keyed.append_column(f"{name}_key", joined)
        discrete = (
            *self._FLAGS,
            "fields_at",
            "minimum_text",
            "quarantined_key",
            "already_receiving",
            "open_case",
            "scheme",
            "benefit_year",
            "decision",
            "status",
            "reasons_key",
        )
        combination, example = combinations(keyed, discrete)
        at = pa.array(combination)
        rows = keyed.take(pa.array(example)).to_pylist()
        fields = self.fields.column("fields").to_pylist()
        values = [json_strings(assessed.column(n)) for n in self._CHECK_VALUES]
        checks = self._joined([self._checks(row, fields) for row in rows], at, values)
        values = [checks] + [json_strings(assessed.column(n)) for n in self._RECORD_VALUES]
        attributes = self._joined([self._record(row) for row in rows], at, values)
        return checks, attributes

    def _checks(self, row: dict, fields: list) -> str:
        def outcome(flag: str) -> str:
            return "pass" if row[flag] else "fail"  # null fails, as NOT NULL passes nothing

        hole = self._HOLE
        at = row["fields_at"]
        return canonical_json(
            {
                "completeness": {
                    "outcome": outcome("ok_completeness"),
                    "quarantined": row["quarantined"],
                },
                "confidence": {
                    "minimum": str(self.policy.minimum_confidence),
                    "outcome": outcome("ok_confidence"),
                    "value": hole + "0",
                },
                "fatigue": {
                    "last_signalled_on": hole + "1",
                    "months": self.policy.fatigue_months,
                    "outcome": outcome("ok_fatigue"),
                },
                "minimum_amount": {
                    "amount": hole + "2",
                    "minimum": row["minimum_text"],
                    "outcome": outcome("ok_minimum_amount"),
                },
                "necessity": {
                    "fields": fields[at] if at is not None else None,
                    "outcome": outcome("ok_necessity"),
                },
                "objection": {"outcome": outcome("ok_objection")},
                "registration": {"outcome": outcome("ok_registration")},
                "subsidiarity": {
                    "already_receiving": row["already_receiving"],
                    "open_case": row["open_case"],
                    "outcome": outcome("ok_subsidiarity"),
                },
            }
        )

    def _record(self, row: dict) -> str:
        hole = self._HOLE
        doc = {
            "benefit_year": row["benefit_year"],
            "checks": hole + "0",
            "decision": row["decision"],
            "household_pid": hole + "1",
            "lifecycle": row["status"],
            "policy_version": self.policy.version,
            "reasons": row["reasons"],
            "scheme": row["scheme"],
            "signal_id": hole + "2",
        }
        # The checks go in as JSON, not as a string: their hole is unquoted.
        return canonical_json(doc).replace(f'"{hole}0"', f"{hole}0", 1)

    def _joined(self, texts: list[str], at: pa.Array, values: list[pa.Array]) -> pa.Array:
        """Row i: text at[i] with values[k][i] in its hole k (quoted holes replaced whole)."""
        cut = []
        for text in texts:
            parts = re.split(f'"?{self._HOLE}(\\d)"?', text)
            if parts[1::2] != [str(k) for k in range(len(values))]:
                raise ValueError(f"a value's place is missing or out of order in {text!r}")
            cut.append(parts[0::2])
        pieces = [pa.array(column, pa.string()).take(at) for column in zip(*cut, strict=True)]
        interleaved = [x for pair in zip(pieces, values, strict=False) for x in pair]
        return pc.binary_join_element_wise(*interleaved, pieces[-1], "")


def necessity_rows(rows: pa.Table, necessity: pa.Table) -> pa.Array:
    """Each row's necessity row (same scheme and year: its rule), or null, as the SQL's
    LEFT JOIN finds it (a null scheme or year matches nothing)."""
    return pc.index_in(scheme_years(rows), value_set=scheme_years(necessity), skip_nulls=True)


def resolve_sql(run_id: str, reference_date: dt.date) -> str:
    """Open episodes of the batch's households that no longer hold (see lifecycle.RESOLUTIONS)."""
    return f"""
SELECT * FROM (
    SELECT h.last_signal_id AS signal_id, '{run_id}' AS run_id,
        DATE '{reference_date.isoformat()}' AS reference_date, h.household_pid, h.scheme,
        h.last_benefit_year AS benefit_year, 'resolved' AS status,
        CASE WHEN c.household_pid IS NULL THEN 'not_evaluated'
            WHEN coalesce(c.deregistered, FALSE) THEN 'deregistered'
            WHEN coalesce(c.objected, FALSE) THEN 'objected'
            WHEN coalesce(c.already_receiving, FALSE) THEN 'now_receiving'
            WHEN NOT c.entitled THEN 'no_longer_entitled'
        END AS reason,
        h.last_signalled_on, h.last_run_id
    FROM history AS h
    SEMI JOIN candidates AS b ON b.household_pid = h.household_pid
    LEFT JOIN (
        SELECT DISTINCT ON (household_pid, scheme)
            household_pid, scheme, deregistered, objected, already_receiving, entitled
        FROM candidates
        ORDER BY household_pid, scheme, benefit_year DESC
    ) AS c ON c.household_pid = h.household_pid AND c.scheme = h.scheme
    WHERE h.episode_open
)
WHERE reason IS NOT NULL
ORDER BY household_pid, scheme
"""


class AssessFn(beam.DoFn):
    """Checks one batch of candidates against the policy and the history side input."""

    def __init__(
        self,
        policy: Policy,
        necessity: pa.Table,
        run_id: str,
        reference_date: dt.date,
        audit: AuditContext,
    ):
        self.necessity, self.audit = necessity, audit
        self.assess = assess_sql(policy, reference_date)
        self.json = AssessedJson(policy, necessity)
        self.resolve = resolve_sql(run_id, reference_date)

    def setup(self):
        self.con = step_connection()
        self.con.register("necessity", self.necessity)

    def process(self, candidates: pa.Table, history: pa.Table):
        self.con.register("candidates", candidates)
        self.con.register("history", history)
        try:
            assessed = self.con.sql(self.assess).to_arrow_table()
            # Without history there is no episode to resolve (the first run; the bench): the
            # query would still sort every candidate.
            resolved = (
                self.con.sql(self.resolve).to_arrow_table()
                if history.num_rows
                else lifecycle.LIFECYCLE_SCHEMA.empty_table()
            )
        finally:
            self.con.unregister("candidates")
            self.con.unregister("history")
        checks, attributes = self.json(assessed)  # the audit records' JSON
        assessed = assessed.append_column("checks", checks).append_column("attributes", attributes)
        signalled = pc.equal(assessed.column("decision"), "signal")
        # Columns chosen before rows: a filter copies every column it is given.
        signalled_rows = assessed.select(_SIGNALLED_COLUMNS).filter(signalled)
        signals = signalled_rows.select(SIGNAL_SCHEMA.names).cast(SIGNAL_SCHEMA)
        suppressed = assessed.select(SUPPRESSED_SCHEMA.names).filter(pc.invert(signalled))
        suppressed = suppressed.cast(SUPPRESSED_SCHEMA)
        Metrics.counter("proportionality", "signals").inc(signals.num_rows)
        Metrics.counter("proportionality", "suppressed").inc(suppressed.num_rows)
        Metrics.counter("proportionality", "resolved").inc(resolved.num_rows)
        if assessed.num_rows:
            yield beam.pvalue.TaggedOutput(AUDIT, proportionality_records(self.audit, assessed))
        if signals.num_rows:
            yield beam.pvalue.TaggedOutput(SIGNALS, signals)
            signalled_rows = with_fields_used(signalled_rows, self.necessity)
            yield beam.pvalue.TaggedOutput(AUDIT, signal_records(self.audit, signalled_rows))
        if suppressed.num_rows:
            yield beam.pvalue.TaggedOutput(SUPPRESSED, suppressed)
        if resolved.num_rows:
            yield beam.pvalue.TaggedOutput(RESOLVED, resolved.cast(lifecycle.LIFECYCLE_SCHEMA))

    def teardown(self):
        self.con.close()


def with_fields_used(rows: pa.Table, necessity: pa.Table) -> pa.Table:
    """`rows` with `fields_used`: what their rule read, with sources and legal basis.

    One text a rule (~3 KB), looked up for the signals only: carried through the
    assessment for every entitled candidate, it was ~80 MB copied a bucket at 1M persons.
    """
    at = necessity_rows(rows, necessity)
    return rows.append_column("fields_used", necessity.column("fields_used").take(at))


ABSENT_SQL = """
SELECT h.last_signal_id AS signal_id, '{run_id}' AS run_id,
    DATE '{reference_date}' AS reference_date, h.household_pid, h.scheme,
    h.last_benefit_year AS benefit_year, 'resolved' AS status, 'not_in_run' AS reason,
    h.last_signalled_on, h.last_run_id
FROM history AS h
ANTI JOIN present AS p ON p.household_pid = h.household_pid
WHERE h.episode_open
ORDER BY h.household_pid, h.scheme
"""


class ResolveAbsentFn(beam.DoFn):
    """Closes the open episodes of households that are not in this run at all (`not_in_run`)."""

    def __init__(self, run_id: str, reference_date: dt.date):
        self.sql = ABSENT_SQL.format(run_id=run_id, reference_date=reference_date.isoformat())

    def process(self, history: pa.Table, present: list[pa.Array]):
        pids = (
            pa.chunked_array(present, pa.string()) if present else pa.chunked_array([], pa.string())
        )
        con = step_connection()
        try:
            con.register("history", history)
            con.register("present", pa.table({"household_pid": pids}))
            absent = con.sql(self.sql).to_arrow_table()
        finally:
            con.close()
        if absent.num_rows:
            yield absent.cast(lifecycle.LIFECYCLE_SCHEMA)


def _household_pids(candidates: pa.Table) -> pa.Array:
    return pc.unique(candidates.column("household_pid"))


class ApplyProportionality(beam.PTransform):
    """Decides signal or suppressed for every candidate, and resolves episodes that ended.

    In: PCollection[pa.Table] of candidates (pipelines/evaluate.py CANDIDATES: one row per
    household x scheme x year with entitled, amount, confidence, already_receiving,
    objected, deregistered, quarantined), e.g. (household_pid='a1.kc..', scheme='zorgtoeslag',
    entitled=True, estimated_annual_amount=Decimal('1573.42'), confidence=1.0, ...).
    `history`: the state table of earlier runs (lifecycle.STATE_SCHEMA; None: no history),
    a side input of every batch; or a Parquet file of it, read where it is used (a run
    writes it to its staging folder: see __init__). Every household of the run with an
    open episode has candidate rows (evaluate.CANDIDATE_ROWS_SQL), so the households of
    the history missing from all batches are those gone from the run; the pseudonyms of
    the batches' households are gathered in one place for that (~40 bytes each).
    Out: a dict of PCollections: `signals` (evaluate.SIGNAL_SCHEMA, status new or
    repeated), `suppressed` (SUPPRESSED_SCHEMA), `resolved` (lifecycle.LIFECYCLE_SCHEMA: a
    tuple of PCollections, the episodes of households in the run and, with a history, of
    those gone from it) and
    `audit` (a `proportionality` record per candidate, a `signal` record per signal).
    """

    def __init__(
        self,
        policy: Policy,
        necessity: pa.Table,
        run_id: str,
        reference_date: dt.date,
        audit: AuditContext,
        history: pa.Table | str | Path | None = None,
    ):
        super().__init__()
        self.assess = AssessFn(policy, necessity, run_id, reference_date, audit)
        self.absent = ResolveAbsentFn(run_id, reference_date)
        # A table given here is pickled into the graph twice (the Creates below): Beam
        # compresses it with bzip2 at level 9, and unpickles it where it runs. 100,000 rows
        # of history took 1.6 s to pickle and 0.5 s to unpickle, each time; a path, nothing.
        if isinstance(history, (str, Path)):
            self.history: pa.Table | str = str(history)
        else:
            self.history = history if history is not None else lifecycle.STATE_SCHEMA.empty_table()

    def _history(self, pipeline, label: str):
        if isinstance(self.history, pa.Table):
            return pipeline | label >> beam.Create([self.history])
        read = beam.Map(lifecycle.read_history).with_output_types(pa.Table)
        return pipeline | label >> beam.Create([self.history]) | f"Read{label}" >> read

    def expand(self, candidates):
        history = self._history(candidates.pipeline, "History")
        tables = {SIGNALS: pa.Table, SUPPRESSED: pa.Table, RESOLVED: pa.Table}
        assessed = candidates | "Assess" >> beam.ParDo(
            self.assess, beam.pvalue.AsSingleton(history)
        ).with_output_types(pa.Table, **tables, **{AUDIT: pa.RecordBatch}).with_outputs(
            SIGNALS, SUPPRESSED, RESOLVED, AUDIT
        )
        # Not flattened: Beam's local runner materialises a Flatten of two steps' outputs
        # whole; each is written where it is made (docs/scaling.md).
        resolved = (assessed[RESOLVED],)
        if not isinstance(self.history, pa.Table) or self.history.num_rows:
            resolved += (self._absent(candidates),)
        # Without a history (a first run) no episode is open, so none ends with its household
        # gone: the step that gathers every household of the run is left out (at 1M persons,
        # a last stage of ~0.3 s on one thread).
        return {
            SIGNALS: assessed[SIGNALS],
            SUPPRESSED: assessed[SUPPRESSED],
            RESOLVED: resolved,
            AUDIT: assessed[AUDIT],
        }

    def _absent(self, candidates):
        """The episodes of households of the history that no batch holds (ResolveAbsentFn)."""
        present = candidates | "HouseholdPids" >> beam.Map(_household_pids).with_output_types(
            pa.Array
        )
        # A Create of its own: one PCollection as side input of Assess and main input here
        # would fuse both into a cycle of stages waiting on each other's side inputs.
        return self._history(
            candidates.pipeline, "HistoryOfAbsent"
        ) | "ResolveAbsent" >> beam.ParDo(
            self.absent, beam.pvalue.AsList(present)
        ).with_output_types(pa.Table)


def _count_by(con, path: Path, column: str) -> dict:
    if not path.is_file():
        return {}
    file = str(path).replace("'", "''")
    sql = f"SELECT {column} AS k, COUNT(*) FROM read_parquet('{file}') GROUP BY k ORDER BY k"
    return dict(con.execute(sql).fetchall())


def summarise_run(folder: Path) -> dict:
    """Counts for the manifest: signals per status, suppressed and resolved per reason."""
    folder = Path(folder)
    con = duckdb.connect()
    try:
        return {
            "signals_per_status": _count_by(con, folder / "signals.parquet", "status"),
            "suppressed_per_reason": _count_by(
                con, folder / "suppressed.parquet", "unnest(reasons)"
            ),
            "resolved_per_reason": _count_by(con, folder / "lifecycle.parquet", "reason"),
        }
    finally:
        con.close()
