"""Compiles one Rule for one benefit year into a single DuckDB SELECT over the household table.

The SQL is meant to be read by people who check it against the law: a header comment
(rule, versions, legal basis, grain), upper-case keywords, explicit casts and named CTEs:

    parameters   one row: the year's values as typed literals, each with its source
    <table>      per-key parameters (e.g. per municipality_code), when the rule has any
    household    the household columns the rule reads, cast to the rule's types
    rule_values  the formula step by step, in exact decimal arithmetic
    conditions   each condition of entitlement: TRUE holds, FALSE fails, NULL unknown
    decision     entitled (every condition TRUE), confidence, already receiving
    outcome      the amount, rounded once, and the repayment risk
    shown        the values the explanations show, formatted once for both languages

The final SELECT gives one row per household (the grain) with the columns of evaluate().
The households relation appears as the placeholder {{ households }}; CompiledRule.render()
puts in the real table name. Everything is set-based: no per-household Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from entitlement_rules.errors import MissingParameterError
from entitlement_rules.expressions import TEMPLATE_FIELD
from entitlement_rules.guard import HOUSEHOLD_TYPES, check_rule, household_fields
from entitlement_rules.model import SQL_TYPES, ParameterSet, ParameterValue, Rule, TableSpec
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS

HOUSEHOLDS_PLACEHOLDER = "{{ households }}"
# Which rows get explanation text: every row (the audited, golden form), only entitled rows
# (signals need it; refusals keep failed_conditions), or none (decisions only). Formatting
# the explanation costs far more than the decision itself, so the pipeline asks for less.
EXPLAIN_MODES = ("all", "entitled", "none")
IDENTITY_FIELDS = ("household_pid", "applicant_pid", "receiving_schemes")
INCOME_FIELDS = ("income_known", "income_year", "income_status")
UNKNOWN = {"en": "unknown", "nl": "onbekend"}


@dataclass(frozen=True)
class CompiledRule:
    """A rule compiled for one benefit year: its SQL and the versions that produced it."""

    rule_id: str
    rule_version: str
    scheme: str
    year: int
    sql: str
    parameter_version: str
    fields: frozenset[str]
    # The same SELECT with less explanation text: {"entitled": sql, "none": sql}.
    variants: tuple[tuple[str, str], ...] = ()

    def render(self, households: str, explain: str = "all") -> str:
        """The SQL reading from the table or view named `households`."""
        if explain not in EXPLAIN_MODES:
            raise ValueError(f"explain must be one of {', '.join(EXPLAIN_MODES)}, not {explain!r}")
        sql = self.sql if explain == "all" else dict(self.variants)[explain]
        return sql.replace(HOUSEHOLDS_PLACEHOLDER, quote_identifier(households))


def quote_identifier(name: str) -> str:
    """Quote a (possibly schema-qualified) table name for DuckDB."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def rules_fields(rule: Rule) -> set[str]:
    """Every household column the compiled rule reads: its logic, identity and income basis."""
    fields = household_fields(rule) | set(IDENTITY_FIELDS)
    if rule.income_uncertainty:
        fields |= set(INCOME_FIELDS)
    return fields


def compile_rule(rule: Rule, year: int) -> CompiledRule:
    """Compile `rule` for benefit `year`; RuleCompileError if guarded or incomplete."""
    check_rule(rule)
    problems = rule.missing_parameters(year)
    if problems:
        raise MissingParameterError(
            f"cannot compile {rule.id} for benefit year {year}: {'; '.join(problems)}."
        )
    params = rule.parameter_sets[year]
    return CompiledRule(
        rule_id=rule.id,
        rule_version=rule.rule_version,
        scheme=rule.scheme,
        year=year,
        sql=_Writer(rule, params).sql(),
        parameter_version=params.parameter_version,
        fields=frozenset(rules_fields(rule)),
        variants=tuple((mode, _Writer(rule, params, mode).sql()) for mode in EXPLAIN_MODES[1:]),
    )


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def _literal(value: ParameterValue) -> str:
    """A parameter value as a typed SQL literal."""
    v, sql_type = value.value, SQL_TYPES[value.type]
    if value.type == "boolean":
        return "TRUE" if v else "FALSE"
    if value.type == "string":
        return f"CAST({_string(v)} AS VARCHAR)"
    if value.type == "money":
        return f"CAST({Decimal(v):.2f} AS {sql_type})"
    if value.type in ("percent", "decimal"):
        return f"CAST({Decimal(v):.6f} AS {sql_type})"
    return f"CAST({v} AS {sql_type})"


def display(value: ParameterValue) -> str:
    """A parameter value as people read it: percentages in percent, money with cents."""
    v = value.value
    if v is None:
        return "unknown"
    if value.type == "percent":
        return f"{_plain(Decimal(v) * 100)}%"
    if value.type == "money":
        return f"{Decimal(v):,.2f}"
    return _plain(v) if isinstance(v, Decimal) else str(v)


def _plain(number: Decimal) -> str:
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class _Writer:
    """Writes the SQL of one rule and year, CTE by CTE."""

    def __init__(self, rule: Rule, params: ParameterSet, explain: str = "all") -> None:
        self.rule, self.params, self.year = rule, params, params.year
        self.explain = explain
        self.types = HOUSEHOLD_TYPES | rule.names()
        fields = rules_fields(rule)
        self.fields = [c for c in HOUSEHOLD_COLUMNS if c.name in fields]
        for table in rule.tables.values():
            self.types[f"{table.name}_key"] = "string"
        self.types["estimated_annual_amount"] = "money"

    def sql(self) -> str:
        ctes = [
            self.parameters_cte(),
            *(self.table_cte(t) for t in self.rule.tables.values()),
            self.household_cte(),
            self.values_cte(),
            self.conditions_cte(),
            self.decision_cte(),
            self.outcome_cte(),
            *([self.shown_cte()] if self.explain != "none" else []),
        ]
        return self.header() + "WITH\n" + ",\n".join(ctes) + "\n" + self.final_select() + ";\n"

    def header(self) -> str:
        rule, p = self.rule, self.params
        lines = [
            f"Rule {rule.id}: {rule.label.nl} / {rule.label.en}",
            f"Rule version {rule.rule_version}, benefit year {self.year}, "
            f"parameter version {p.parameter_version}",
            f"Legal basis: {rule.legal_basis.citation()}",
            f"  {self.law_url()}",
            f"Grain: one row per household of {HOUSEHOLDS_PLACEHOLDER} "
            "(the household table of pipelines/household.py).",
            f"Generated by entitlement_rules.compiler from schemes/{rule.id}.yaml and",
            f"parameters/{rule.id}/{self.year}.yaml: change those files, not this SQL.",
        ]
        return "".join(f"-- {line}\n" for line in lines)

    def law_url(self) -> str:
        return f"{self.rule.legal_basis.url.rstrip('/')}/{self.params.valid_from.isoformat()}"

    # -- CTEs ---------------------------------------------------------------------------------

    def parameters_cte(self) -> str:
        lines = []
        for name in self.rule.parameters:
            value = self.params.values[name]
            note = f"{display(value)} {value.unit}; {value.source} [{value.status}]"
            lines.append((f"{_literal(value)} AS {name}", _comment(f"{name} = {note}")))
        return _cte(
            "parameters",
            f"One row: the dated values for benefit year {self.year}, each with its source.",
            "SELECT\n" + _columns(lines),
        )

    def table_cte(self, table: TableSpec) -> str:
        rows = [r for r in self.params.tables.get(table.name, ()) if r.usable]
        names = [f"{table.name}_key", *table.columns]
        if not rows:
            nulls = [f"CAST(NULL AS VARCHAR) AS {names[0]}"] + [
                f"CAST(NULL AS {SQL_TYPES[c.type]}) AS {c.name}" for c in table.columns.values()
            ]
            body = "SELECT " + ", ".join(nulls) + "\n    WHERE FALSE"
        else:
            tuples = []
            for i, row in enumerate(rows):
                cells = [f"CAST({_string(row.key)} AS VARCHAR)"] + [
                    _literal(row.values[c]) for c in table.columns
                ]
                comma = "," if i < len(rows) - 1 else ""
                tuples.append(
                    f"        ({', '.join(cells)}){comma}  -- "
                    + _comment(f"{row.source} [{row.status}]")
                )
            body = (
                "SELECT *\n    FROM (VALUES\n"
                + "\n".join(tuples)
                + f"\n    ) AS {table.name}({', '.join(names)})"
            )
        return _cte(
            table.name,
            f"Parameters per {table.key} for benefit year {self.year}, each row with its source.",
            body,
        )

    def household_cte(self) -> str:
        lines = [
            (
                f"CAST(h.{c.name} AS {SQL_TYPES[HOUSEHOLD_TYPES[c.name]]}) AS {c.name}",
                _comment(c.meaning),
            )
            for c in self.fields
        ]
        return _cte(
            "household",
            "The household columns this rule reads, in the types the rule computes with.",
            "SELECT\n" + _columns(lines) + f"\n    FROM {HOUSEHOLDS_PLACEHOLDER} AS h",
        )

    def values_cte(self) -> str:
        lines = [("household.*", None), ("parameters.*", None)]
        lines += [(f"{t}.*", None) for t in self.rule.tables]
        lines += [
            (f"{v.expr.to_sql()} AS {v.id}", _comment(f"{v.label.en} ({v.legal})"))
            for v in self.rule.values
        ]
        joins = "\n    CROSS JOIN parameters"
        for t in self.rule.tables.values():
            joins += f"\n    LEFT JOIN {t.name} ON household.{t.key} = {t.name}.{t.name}_key"
        return _cte(
            "rule_values",
            "The formula step by step (each value may use the ones above it), in exact "
            "decimal arithmetic: nothing is rounded before the amount.",
            "SELECT\n" + _columns(lines) + "\n    FROM household" + joins,
        )

    def condition_list(self) -> list[tuple[str, str, str]]:
        """(id, SQL, legal) of every condition, the parameter-table checks first."""
        found = [
            (
                f"{t.name}_parameters_known",
                f"{t.name}_key IS NOT NULL",
                f"parameters for this {t.key} exist in parameters/{self.rule.id}/{self.year}.yaml",
            )
            for t in self.rule.tables.values()
        ]
        return found + [(c.id, c.expr.to_sql(), c.legal) for c in self.rule.conditions]

    def conditions_cte(self) -> str:
        lines = [("rule_values.*", None)] + [
            (f"{sql} AS cond_{cid}", _comment(legal)) for cid, sql, legal in self.condition_list()
        ]
        return _cte(
            "conditions",
            "Each condition of entitlement: TRUE holds, FALSE fails, NULL means an input is "
            "unknown.",
            "SELECT\n" + _columns(lines) + "\n    FROM rule_values",
        )

    def decision_cte(self) -> str:
        checks = "\n            AND ".join(
            f"cond_{cid} IS TRUE" for cid, _, _ in self.condition_list()
        )
        lines = [
            ("conditions.*", None),
            (checks + " AS entitled", "entitled only when every condition is known to hold"),
            (
                self.confidence_sql() + " AS confidence",
                f"trust in the income basis: {self.rule.uncertainty.path.name}",
            ),
            (
                f"COALESCE(LIST_CONTAINS(receiving_schemes, {_string(self.rule.scheme)}), FALSE)"
                " AS already_receiving",
                "the scheme is already paid to applicant or partner",
            ),
        ]
        return _cte(
            "decision",
            "Entitlement, trust in the income basis, current receipt.",
            "SELECT\n" + _columns(lines) + "\n    FROM conditions",
        )

    def confidence_sql(self) -> str:
        if not self.rule.income_uncertainty:
            return "CAST(1.0 AS DOUBLE)"
        policy = self.rule.uncertainty
        statuses = " ".join(
            f"WHEN {_string(s)} THEN {_plain(f)}" for s, f in policy.status_factors.items()
        )
        gaps = " ".join(f"WHEN {i} THEN {_plain(f)}" for i, f in enumerate(policy.year_gap_factors))
        unknown = _plain(policy.unknown_income_factor)
        return (
            "CAST(CASE\n"
            f"            WHEN income_known IS NOT TRUE OR income_year IS NULL THEN {unknown}\n"
            f"            ELSE (CASE income_status {statuses} ELSE {unknown} END)\n"
            f"                * (CASE ABS({self.year} - income_year) {gaps} "
            f"ELSE {_plain(policy.older_factor)} END)\n"
            "        END AS DOUBLE)"
        )

    def outcome_cte(self) -> str:
        value = self.rule.amount.value
        lines = [
            ("decision.*", None),
            (
                f"CASE WHEN entitled THEN CAST(ROUND({value}, 2) AS DECIMAL(12, 2)) END"
                " AS estimated_annual_amount",
                "ROUND on a DECIMAL rounds half away from zero: once, to cents, on the annual "
                "amount",
            ),
            (
                "entitled AND confidence < 1 AS repayment_risk",
                "entitled on income that is not the definitive income of the benefit year",
            ),
        ]
        return _cte(
            "outcome",
            "The annual amount and the risk that an advance is repaid.",
            "SELECT\n" + _columns(lines) + "\n    FROM decision",
        )

    def final_select(self) -> str:
        rule = self.rule
        failed = ",\n".join(
            f"        CASE WHEN cond_{cid} IS NOT TRUE THEN {_string(cid)} END"
            for cid, _, _ in self.condition_list()
        )
        lines = [
            ("household_pid", "the household (pseudonym)"),
            ("applicant_pid", "the applicant (pseudonym)"),
            (f"CAST({_string(rule.scheme)} AS VARCHAR) AS scheme", None),
            (f"CAST({self.year} AS INTEGER) AS benefit_year", None),
            (f"CAST({_string(rule.id)} AS VARCHAR) AS rule_id", None),
            (f"CAST({_string(rule.rule_version)} AS VARCHAR) AS rule_version", None),
            (
                f"CAST({_string(self.params.parameter_version)} AS VARCHAR) AS parameter_version",
                None,
            ),
            ("entitled", "every condition held"),
            ("estimated_annual_amount", "EUR a year; NULL when not entitled"),
            ("already_receiving", None),
            (self.explanation("en") + " AS explanation", "plain English"),
            (self.explanation("nl") + " AS explanation_nl", "in Dutch"),
            (
                "CAST(LIST_FILTER([\n" + failed + "\n    ], LAMBDA condition_id: condition_id "
                "IS NOT NULL) AS VARCHAR[]) AS failed_conditions",
                "conditions that failed or could not be evaluated",
            ),
            ("confidence", "1.0 = definitive income of the benefit year"),
            ("repayment_risk", None),
        ]
        source = "outcome" if self.explain == "none" else "shown"
        return "SELECT\n" + _columns(lines, indent=4) + f"\nFROM {source}"

    # -- explanations -------------------------------------------------------------------------

    def explanation(self, lang: str) -> str:
        """The explanation in `lang` as one CONCAT (a long || chain is slow in DuckDB)."""
        if self.explain == "none":
            return "CAST(NULL AS VARCHAR)"
        text = self.full_explanation(lang)
        return text if self.explain == "all" else f"CASE WHEN entitled THEN {text} END"

    def full_explanation(self, lang: str) -> str:
        rule, en = self.rule, lang == "en"
        label = getattr(rule.label, lang)
        verdicts = (
            ("'holds: '", "'FAILS: '", "'UNKNOWN: '")
            if en
            else ("'voldaan: '", "'NIET voldaan: '", "'ONBEKEND: '")
        )
        amount = self.formatted("estimated_annual_amount", lang)
        estimated = _string("entitled, estimated " if en else "recht, geschat ")
        outcome = (
            f"CASE WHEN entitled THEN CONCAT({estimated}, {amount}, "
            f"{_string(' a year' if en else ' per jaar')}) "
            f"ELSE {_string('not entitled' if en else 'geen recht')} END"
        )
        lines = [
            _string(f"{label}, {'benefit year' if en else 'berekeningsjaar'} {self.year}: "),
            outcome,
            "CASE WHEN already_receiving THEN "
            + _string("; already receiving it" if en else "; ontvangt deze al")
            + " ELSE '' END",
            _string(". Conditions: " if en else ". Voorwaarden: "),
        ]
        for i, (cid, _, _) in enumerate(self.condition_list()):
            verdict = (
                f"CASE WHEN cond_{cid} IS TRUE THEN {verdicts[0]} "
                f"WHEN cond_{cid} IS FALSE THEN {verdicts[1]} ELSE {verdicts[2]} END"
            )
            separator = ["'; '"] if i else []
            lines.append(", ".join([*separator, verdict, *self.condition_text(cid, lang)]))
        refusal = _string(
            "none, because not every condition held"
            if en
            else "geen, want niet aan elke voorwaarde is voldaan"
        )
        pieces = ", ".join(self.template(getattr(rule.amount.explain, lang), lang))
        lines.append(_string(". Amount: " if en else ". Bedrag: "))
        lines.append(f"CASE WHEN entitled THEN CONCAT({pieces}) ELSE {refusal} END")
        if rule.income_uncertainty:
            lines.append(self.income_text(lang))
        law = f"{rule.legal_basis.citation()}, {self.law_url()}"
        lines.append(_string(f". {'Law' if en else 'Wet'}: {law}."))
        return "CONCAT(\n" + ",\n".join(" " * 8 + x for x in lines) + "\n    )"

    def income_text(self, lang: str) -> str:
        en = lang == "en"
        if en:
            status = f"COALESCE(income_status, {_string(UNKNOWN[lang])})"
        else:
            status = (
                "COALESCE(CASE income_status WHEN 'definitive' THEN 'definitief' "
                "WHEN 'provisional' THEN 'voorlopig' WHEN 'estimated' THEN 'geschat' "
                "ELSE income_status END, 'onbekend')"
            )
        confidence = "FORMAT('{:.2f}', confidence)"
        if not en:
            confidence = f"TRANSLATE({confidence}, '.', ',')"
        year = f"COALESCE(CAST(income_year AS VARCHAR), {_string(UNKNOWN[lang])})"
        risk = (
            _string("; risk of repayment: the final assessment may be lower")
            if en
            else _string("; risico op terugbetaling: de definitieve berekening kan lager uitvallen")
        )
        pieces = [
            _string(". Income basis: income year " if en else ". Inkomensbasis: inkomensjaar "),
            year,
            "' ('",
            status,
            _string("), confidence " if en else "), betrouwbaarheid "),
            confidence,
            f"CASE WHEN repayment_risk THEN {risk} ELSE '' END",
        ]
        return ", ".join(pieces)

    def condition_text(self, cid: str, lang: str) -> list[str]:
        for table in self.rule.tables.values():
            if cid == f"{table.name}_parameters_known":
                text = (
                    f"parameters for {table.key} {{{table.key}}} are known"
                    if lang == "en"
                    else f"parameters voor {table.key} {{{table.key}}} zijn bekend"
                )
                return self.template(text, lang)
        cond = next(c for c in self.rule.conditions if c.id == cid)
        return self.template(getattr(cond.explain, lang), lang)

    def template(self, template: str, lang: str) -> list[str]:
        """A template with {name} placeholders as CONCAT arguments (literals and values)."""
        parts, pos = [], 0
        for match in TEMPLATE_FIELD.finditer(template):
            if match.start() > pos:
                parts.append(_string(template[pos : match.start()]))
            parts.append(self.formatted(match.group(1), lang))
            pos = match.end()
        if pos < len(template):
            parts.append(_string(template[pos:]))
        return parts or ["''"]

    def shown_names(self) -> list[str]:
        """Names whose values the explanations show, formatted once for both languages."""
        names = ["estimated_annual_amount"]
        for template in self.templates():
            for match in TEMPLATE_FIELD.finditer(template):
                if match.group(1) not in names and self.types[match.group(1)] != "boolean":
                    names.append(match.group(1))
        return names

    def templates(self) -> list[str]:
        rule = self.rule
        found = [rule.amount.explain.en, rule.amount.explain.nl]
        for cond in rule.conditions:
            found += [cond.explain.en, cond.explain.nl]
        return found + [f"{{{t.key}}}" for t in rule.tables.values()]

    def shown_cte(self) -> str:
        guard = (
            (lambda sql: sql)
            if self.explain == "all"
            else (lambda sql: f"CASE WHEN entitled THEN {sql} END")
        )
        lines = [("outcome.*", None)] + [
            (f"{guard(self.shown_sql(name))} AS shown_{name}", None) for name in self.shown_names()
        ]
        return _cte(
            "shown",
            "The values the explanations show, as text in English notation (1,234.56); NULL "
            "when unknown.",
            "SELECT\n" + _columns(lines) + "\n    FROM outcome",
        )

    def shown_sql(self, name: str) -> str:
        kind = self.types[name]
        if kind == "money":
            return f"FORMAT('{{:,.2f}}', ROUND({name}, 2))"
        if kind in ("percent", "decimal"):
            scaled = f"{name} * 100" if kind == "percent" else name
            return f"RTRIM(RTRIM(FORMAT('{{:.6f}}', {scaled}), '0'), '.')"
        if kind in ("string_list", "integer_list"):
            return f"ARRAY_TO_STRING(CAST({name} AS VARCHAR[]), ', ')"
        return f"CAST({name} AS VARCHAR)"

    def formatted(self, name: str, lang: str) -> str:
        """`name` as display text in `lang` (Dutch: 1.234,56); 'unknown' when NULL."""
        kind, nl = self.types[name], lang == "nl"
        shown = f"shown_{name}"
        if kind == "money":
            text = f"'€ ' || TRANSLATE({shown}, ',.', '.,')" if nl else f"'EUR ' || {shown}"
        elif kind in ("percent", "decimal"):
            text = f"TRANSLATE({shown}, '.', ',')" if nl else shown
            text = f"{text} || '%'" if kind == "percent" else text
        elif kind == "boolean":
            yes, no = ("'ja'", "'nee'") if nl else ("'yes'", "'no'")
            text = f"CASE WHEN {name} THEN {yes} WHEN NOT {name} THEN {no} END"
        else:
            text = shown
        return f"COALESCE({text}, {_string(UNKNOWN[lang])})"


def _cte(name: str, comment: str, body: str) -> str:
    return f"{name} AS (\n    -- {comment}\n    {body}\n)"


def _columns(lines: list[tuple[str, str | None]], indent: int = 8) -> str:
    """Select-list lines, each with its comment after the comma."""
    out = []
    for i, (expr, comment) in enumerate(lines):
        comma = "," if i < len(lines) - 1 else ""
        out.append(" " * indent + f"{expr}{comma}" + (f"  -- {comment}" if comment else ""))
    return "\n".join(out)
