"""The in-memory shape of a rule: scheme definition, dated parameters, and the value types.

A Rule is what loader.py reads from `schemes/<id>.yaml` plus every
`parameters/<id>/<year>.yaml`; compiler.py turns one Rule and one year into SQL. The types
here validate nothing themselves: the loader does, so that its messages can name the file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from entitlement_rules.expressions import Expression

# Parameter status. "verified": checked against the official text (or the project's checked
# facts sheet, which was). "corroborated": taken from a secondary source that cites the
# official publication AND reproducing independently published figures (see the self-check
# tests). "unverified": not confirmed; the compiler refuses to use it.
STATUSES = ("verified", "corroborated", "unverified")
USABLE_STATUSES = ("verified", "corroborated")

# Rule value types and the DuckDB type each is computed in. Money is wide so that exact
# decimal arithmetic (scale grows with every multiplication) cannot overflow.
SQL_TYPES = {
    "money": "DECIMAL(38, 2)",
    "percent": "DECIMAL(9, 6)",
    "decimal": "DECIMAL(18, 6)",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "string": "VARCHAR",
    "date": "DATE",
    "string_list": "VARCHAR[]",
    "integer_list": "INTEGER[]",
}
PARAMETER_TYPES = ("money", "percent", "decimal", "integer", "boolean", "string")
VALUE_TYPES = ("money", "percent", "decimal", "integer", "boolean", "string")
# Decimal places a parameter value may have, per type (percent: as written, e.g. 1.896).
DECIMAL_PLACES = {"money": 2, "percent": 4, "decimal": 6}

ROUNDING_METHODS = ("half_away_from_zero_to_cents",)

# Names the compiled SQL uses itself (CTEs and output columns): no rule may define them.
RESERVED_NAMES = frozenset(
    {
        "parameters",
        "household",
        "rule_values",
        "conditions",
        "decision",
        "outcome",
        "household_pid",
        "applicant_pid",
        "scheme",
        "benefit_year",
        "rule_id",
        "rule_version",
        "parameter_version",
        "entitled",
        "estimated_annual_amount",
        "already_receiving",
        "explanation",
        "explanation_nl",
        "failed_conditions",
        "confidence",
        "repayment_risk",
    }
)


@dataclass(frozen=True)
class Text:
    """A text in English and Dutch."""

    en: str
    nl: str


@dataclass(frozen=True)
class LegalBasis:
    """The law a rule implements: its name, BWB id, articles and official link."""

    law: str
    bwb_id: str
    articles: tuple[str, ...]
    url: str

    def citation(self) -> str:
        return f"{self.law} ({self.bwb_id}), art. {', '.join(self.articles)}"


@dataclass(frozen=True)
class ParameterSpec:
    """A parameter a rule needs every year: its name, type, meaning and legal anchor."""

    name: str
    type: str
    label: Text
    legal: str


@dataclass(frozen=True)
class TableSpec:
    """Parameters that differ per value of a household column (e.g. per municipality_code)."""

    name: str
    key: str
    columns: dict[str, ParameterSpec]


@dataclass(frozen=True)
class ValueDef:
    """A named intermediate value of the formula, computed from earlier names."""

    id: str
    type: str
    expr: Expression
    label: Text
    legal: str


@dataclass(frozen=True)
class ConditionDef:
    """A condition of entitlement; `explain` holds {name} placeholders for the values used."""

    id: str
    expr: Expression
    legal: str
    explain: Text


@dataclass(frozen=True)
class AmountDef:
    """Which value is the annual amount, how it is rounded and how it is explained."""

    value: str
    rounding: str
    legal: str
    explain: Text


@dataclass(frozen=True)
class ParameterValue:
    """One dated parameter value with its source; `value` is None when unknown."""

    name: str
    type: str
    value: Decimal | int | bool | str | None
    unit: str
    status: str
    source: str
    url: str = ""
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.value is not None and self.status in USABLE_STATUSES


@dataclass(frozen=True)
class TableRow:
    """One row of a parameter table: the key value, its parameters and their source."""

    key: str
    values: dict[str, ParameterValue]
    status: str
    source: str
    url: str = ""
    path: Path | None = None

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES and all(v.usable for v in self.values.values())

    def problems(self) -> list[str]:
        """Why this row is not used: its own status or that of a value."""
        if self.status not in USABLE_STATUSES and self.path is None:
            return [f"the row is {self.status}"]
        return [
            f"{n} is {v.status}" + (f" ({v.note})" if v.note else "")
            for n, v in self.values.items()
            if not v.usable
        ]


@dataclass(frozen=True)
class ParameterSet:
    """The parameter values of one scheme for one benefit year, read from one file."""

    scheme: str
    year: int
    version: int
    valid_from: dt.date
    valid_to: dt.date
    values: dict[str, ParameterValue]
    tables: dict[str, tuple[TableRow, ...]]
    path: Path
    digest: str

    @property
    def parameter_version(self) -> str:
        """`<year>.<version>+<hash>`: the hash changes if anyone edits the file in place."""
        return f"{self.year}.{self.version}+{self.digest[:8]}"


@dataclass(frozen=True)
class UncertaintyPolicy:
    """How much an estimate can be trusted given the income it rests on (not law: policy)."""

    status_factors: dict[str, Decimal]
    year_gap_factors: tuple[Decimal, ...]
    older_factor: Decimal
    unknown_income_factor: Decimal
    path: Path


@dataclass(frozen=True)
class Rule:
    """One scheme's rule: metadata, legal basis, conditions, formula and dated parameters."""

    id: str
    version: str
    digest: str
    label: Text
    description: Text
    legal_basis: LegalBasis
    references: tuple[dict[str, str], ...]
    inputs: tuple[str, ...]
    parameters: dict[str, ParameterSpec]
    tables: dict[str, TableSpec]
    values: tuple[ValueDef, ...]
    conditions: tuple[ConditionDef, ...]
    amount: AmountDef
    income_uncertainty: bool
    notes: tuple[str, ...]
    path: Path
    uncertainty: UncertaintyPolicy
    parameter_sets: dict[int, ParameterSet] = field(default_factory=dict)
    cases_path: Path | None = None

    @property
    def scheme(self) -> str:
        return self.id

    @property
    def rule_version(self) -> str:
        """`<version>+<hash>` of the scheme file, so an in-place edit shows in the output."""
        return f"{self.version}+{self.digest[:8]}"

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(sorted(self.parameter_sets))

    def missing_parameters(self, year: int) -> list[str]:
        """Why `year` cannot be compiled: one line per absent or unusable parameter."""
        params = self.parameter_sets.get(year)
        if params is None:
            return [f"no parameter file parameters/{self.id}/{year}.yaml"]
        problems = []
        for name in self.parameters:
            value = params.values.get(name)
            if value is None:
                problems.append(f"parameter {name} is missing")
            elif value.value is None:
                problems.append(f"parameter {name} is unknown ({value.note or value.status})")
            elif not value.usable:
                problems.append(f"parameter {name} is {value.status} ({value.note})")
        for table in self.tables:
            # An incomplete row only leaves its own key (e.g. one municipality) unserved;
            # the year needs at least one usable row.
            if not any(row.usable for row in params.tables.get(table, ())):
                problems.append(f"table {table} has no row with confirmed values")
        return problems

    def skipped_rows(self, year: int) -> list[tuple[str, str, list[str]]]:
        """(table, key, reasons) of each table row of `year` that is not used."""
        params = self.parameter_sets.get(year)
        if params is None:
            return []
        return [
            (table, row.key, row.problems())
            for table in self.tables
            for row in params.tables.get(table, ())
            if not row.usable
        ]

    def ready_years(self) -> tuple[int, ...]:
        """The benefit years whose parameters are all present and confirmed."""
        return tuple(y for y in self.years if not self.missing_parameters(y))

    def names(self) -> dict[str, str]:
        """Every name the rule defines (parameters, table columns, values) and its type."""
        names = {p.name: p.type for p in self.parameters.values()}
        for table in self.tables.values():
            names.update({c.name: c.type for c in table.columns.values()})
        names.update({v.id: v.type for v in self.values})
        return names
