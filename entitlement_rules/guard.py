"""The fairness guard: refuses rules that read protected attributes, proxies or unknown fields.

Entitlement may depend on age, income, assets, household composition, insurance and
residence as the law says; never on nationality, origin, sex or where exactly someone
lives. The guard checks every name a rule reads (conditions, formulas, explanation
templates, parameter-table keys) before any SQL is generated:

- a protected attribute or proxy (PROTECTED_TERMS, matched on whole words of the name, so
  `partner_nationality` is caught too) -> ProtectedAttributeError;
- an identifier of a person or household -> IdentifyingFieldError (a ProtectedAttributeError):
  a household column carrying an identifier (a text column derived from a BSN or id source
  field, read from the lineage in pipelines/household.py: applicant_pid, partner_pid,
  household_pid, member_pids), a name with a whole word such as `pid`, `bsn` or `id`, and
  any literal that looks like a pseudonym (`<keyid>.<32 letters a-p>`) or a BSN (nine
  digits) in an expression, an explanation or a parameter value. Rules decide on the
  law's conditions, never on who someone is; the ids the compiled SQL carries for the
  output and the audit trail are written by the compiler, not read by the rule;
- `municipality_code` anywhere but as the key of a parameter table (municipal parameters,
  e.g. kwijtschelding) -> ProtectedAttributeError;
- a name that is no column of the household table (pipelines/household.py) and no
  parameter or value of the rule -> UnknownFieldError;
- a value that uses a later value, or `inputs:` that disagree with what the rule reads
  -> RuleCompileError.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from entitlement_rules.errors import (
    IdentifyingFieldError,
    ProtectedAttributeError,
    RuleCompileError,
    UnknownFieldError,
)
from entitlement_rules.expressions import template_names
from entitlement_rules.model import Rule
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS

# Whole-word terms (split on "_") that make a name protected, and why.
PROTECTED_TERMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("nationality",), "nationality (Grondwet art. 1, Awgb)"),
    (("citizenship",), "nationality (Grondwet art. 1, Awgb)"),
    (("country", "of", "birth"), "proxy for origin"),
    (("birth", "country"), "proxy for origin"),
    (("birthplace",), "proxy for origin"),
    (("ethnicity",), "ethnic origin (AVG art. 9, Grondwet art. 1)"),
    (("ethnic",), "ethnic origin (AVG art. 9, Grondwet art. 1)"),
    (("race",), "racial origin (AVG art. 9, Grondwet art. 1)"),
    (("migration",), "proxy for origin (migration background)"),
    (("origin",), "proxy for origin"),
    (("religion",), "religion (AVG art. 9, Grondwet art. 1)"),
    (("gender",), "gender (Grondwet art. 1, Awgb)"),
    (("sex",), "sex (Grondwet art. 1, Awgb)"),
    (("language",), "proxy for origin"),
    (("district",), "location proxy: district codes are for aggregate reports only"),
    (("neighbourhood",), "location proxy"),
    (("neighborhood",), "location proxy"),
    (("wijk",), "location proxy"),
    (("buurt",), "location proxy"),
    (("postcode",), "location proxy"),
    (("postal",), "location proxy"),
    (("zip",), "location proxy"),
    (("address",), "location proxy"),
    (("street",), "location proxy"),
    (("house", "number"), "location proxy"),
)
# Whole words (split on "_") that make a rule's own name an identifier.
IDENTIFYING_TERMS = frozenset(
    {"pid", "pids", "bsn", "bsns", "id", "ids", "pseudonym", "pseudonyms", "identifier"}
)
# The last word of a source field that identifies someone (brp.bsn, brp.household_id, ...).
IDENTIFYING_SOURCE_WORDS = frozenset({"bsn", "id"})
# A pseudonym inside a text: PSEUDONYM_PATTERN of privacy/pseudonyms.py without its anchors
# (copied, not imported, so the rules package does not load the key machinery; a test
# keeps the two in step).
PSEUDONYM_IN_TEXT = re.compile(r"(?<![a-z0-9-])[a-z][a-z0-9-]*\.[a-p]{32}(?![a-z])")
# A BSN-like number: nine digits, also as 1234.56.789 or 1234 56 789.
BSN_IN_TEXT = re.compile(r"(?<!\d)\d{4}[. ]?\d{2}[. ]?\d{3}(?!\d)")
# Parameter types whose values are checked for identifying literals; amounts are not text.
LITERAL_PARAMETER_TYPES = ("string", "integer")
WHY_NOT_IDENTIFIERS = (
    "rules decide on the law's conditions, never on who someone is: no identifier may be a "
    "rule input, condition, formula, explanation or parameter."
)
# Columns that may only select parameters (the law differs per municipality), never decide.
KEY_ONLY_COLUMNS = frozenset({"municipality_code"})


def _rule_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_decimal(arrow_type):
        return "money"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_list(arrow_type):
        return "integer_list" if pa.types.is_integer(arrow_type.value_type) else "string_list"
    return "string"


# The household table as the rules see it: column name -> rule value type.
HOUSEHOLD_TYPES: dict[str, str] = {c.name: _rule_type(c.type) for c in HOUSEHOLD_COLUMNS}


def _carries_identifier(column) -> bool:
    """A text column derived from an identifying source field holds it (as a pseudonym);
    counts and flags derived from one (n_persons, has_partner) identify nobody."""
    t = column.type
    text = pa.types.is_string(t) or (pa.types.is_list(t) and pa.types.is_string(t.value_type))
    sources = (field.rsplit(".", 1)[-1].split("_")[-1] for field in column.derived_from)
    return text and any(word in IDENTIFYING_SOURCE_WORDS for word in sources)


# Household columns that say who someone is, from their lineage: name -> meaning.
IDENTIFYING_COLUMNS: dict[str, str] = {
    c.name: c.meaning for c in HOUSEHOLD_COLUMNS if _carries_identifier(c)
}


def identifying_reason(name: str) -> str | None:
    """Why `name` identifies a person or household, or None."""
    if name in IDENTIFYING_COLUMNS:
        return f"an identifier ({IDENTIFYING_COLUMNS[name]})"
    words = sorted(IDENTIFYING_TERMS.intersection(name.lower().split("_")))
    return f"named as an identifier (the word {words[0]!r})" if words else None


def identifying_literal(text: str) -> str | None:
    """What identifying value `text` holds (a pseudonym or a BSN-like number), or None."""
    if PSEUDONYM_IN_TEXT.search(text):
        return "a pseudonym (<keyid>.<32 letters a-p>)"
    if BSN_IN_TEXT.search(text):
        return "a BSN-like nine-digit number"
    return None


def protected_reason(name: str) -> str | None:
    """Why `name` is protected, or None: matched on whole words of the snake_case name."""
    words = name.lower().split("_")
    for terms, reason in PROTECTED_TERMS:
        n = len(terms)
        if any(tuple(words[i : i + n]) == terms for i in range(len(words) - n + 1)):
            return reason
    return None


def references(rule: Rule) -> list[tuple[str, str]]:
    """Every (place, name) a rule reads outside table keys, in file order."""
    found = []
    for value in rule.values:
        found += [(f"value {value.id}", n) for n in sorted(value.expr.names)]
    for cond in rule.conditions:
        found += [(f"condition {cond.id}", n) for n in sorted(cond.expr.names)]
        for lang in ("en", "nl"):
            where = f"{rule.path}: condition {cond.id} explain.{lang}"
            template = getattr(cond.explain, lang)
            found += [
                (f"explanation of condition {cond.id}", n)
                for n in sorted(template_names(template, where))
            ]
    for lang in ("en", "nl"):
        where = f"{rule.path}: amount explain.{lang}"
        template = getattr(rule.amount.explain, lang)
        found += [("amount explanation", n) for n in sorted(template_names(template, where))]
    found.append(("amount", rule.amount.value))
    return found


def household_fields(rule: Rule) -> set[str]:
    """The household columns a rule's own logic reads (conditions, formulas, table keys)."""
    own = set(rule.names())
    fields = {name for _, name in references(rule) if name not in own}
    fields |= {t.key for t in rule.tables.values()}
    return fields & set(HOUSEHOLD_TYPES)


def check_rule(rule: Rule) -> None:
    """Raise a RuleCompileError subclass if the rule may not be compiled; else return."""
    _check_protected(rule)
    _check_identifying(rule)
    _check_known(rule)
    _check_order(rule)
    _check_inputs(rule)


def _check_protected(rule: Rule) -> None:
    declared = [("parameter", n) for n in rule.parameters] + [
        (f"value {v.id}", v.id) for v in rule.values
    ]
    for table in rule.tables.values():
        declared += [(f"parameter table {table.name} column", c) for c in table.columns]
        reason = protected_reason(table.key)
        if reason:
            raise ProtectedAttributeError(
                f"rule {rule.id}: parameter table {table.name} is keyed on protected field "
                f"{table.key!r} ({reason})."
            )
    for where, name in references(rule) + declared:
        reason = protected_reason(name)
        if reason:
            raise ProtectedAttributeError(
                f"rule {rule.id}: {where} references protected field {name!r} ({reason}); "
                "a rule may not use it as a condition, in a formula or in an explanation."
            )
        if name in KEY_ONLY_COLUMNS:
            raise ProtectedAttributeError(
                f"rule {rule.id}: {where} references {name!r}, which may only select "
                "municipal parameters (as the key of a parameter_tables entry), never decide."
            )


def _check_identifying(rule: Rule) -> None:
    names = [("inputs", n) for n in rule.inputs] + references(rule)
    names += [("parameter", n) for n in rule.parameters] + [("value", v.id) for v in rule.values]
    for table in rule.tables.values():
        names.append((f"parameter table {table.name} key", table.key))
        names += [(f"parameter table {table.name} column", c) for c in table.columns]
    for where, name in names:
        reason = identifying_reason(name)
        if reason:
            raise IdentifyingFieldError(
                f"{rule.path}: rule {rule.id}: {where}: {name!r} is {reason}; "
                + WHY_NOT_IDENTIFIERS
            )
    for path, where, text in _rule_literals(rule) + list(_parameter_literals(rule)):
        kind = identifying_literal(text)
        if kind:
            # The literal itself is not repeated: the message must not spread it further.
            raise IdentifyingFieldError(
                f"{path}: rule {rule.id}: {where} contains {kind}; " + WHY_NOT_IDENTIFIERS
            )


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is str]


def _rule_literals(rule: Rule) -> list[tuple[Path, str, str]]:
    """Every (file, place, text) the scheme file writes as a literal an outcome may depend on
    or show: strings in expressions and the explanation templates."""
    found = [(f"value {v.id}", s) for v in rule.values for s in _strings(v.expr.tree)]
    for cond in rule.conditions:
        found += [(f"condition {cond.id}", s) for s in _strings(cond.expr.tree)]
        found += [(f"explanation of condition {cond.id}", t) for t in vars(cond.explain).values()]
    found += [("amount explanation", t) for t in vars(rule.amount.explain).values()]
    return [(rule.path, where, text) for where, text in found]


def _parameter_literals(rule: Rule) -> Iterator[tuple[Path, str, str]]:
    """Every (file, place, text) of the parameter files: text and integer values, table keys."""
    for params in rule.parameter_sets.values():
        for name, v in params.values.items():
            if v.type in LITERAL_PARAMETER_TYPES and v.value is not None:
                yield params.path, f"parameter {name}", str(v.value)
        for table, rows in params.tables.items():
            for i, row in enumerate(rows):
                path = row.path or params.path
                yield path, f"parameter table {table} row {i + 1} key", row.key
                for name, v in row.values.items():
                    if v.type in LITERAL_PARAMETER_TYPES and v.value is not None:
                        yield path, f"parameter table {table} row {i + 1} {name}", str(v.value)


def _check_known(rule: Rule) -> None:
    shadowing = sorted(set(rule.names()) & set(HOUSEHOLD_TYPES))
    if shadowing:
        raise RuleCompileError(
            f"rule {rule.id}: {', '.join(shadowing)} is a household column; a parameter or value "
            "may not reuse its name."
        )
    known = set(HOUSEHOLD_TYPES) | set(rule.names())
    for where, name in references(rule):
        if name not in known:
            raise UnknownFieldError(
                f"rule {rule.id}: {where} references {name!r}, which is not a column of the "
                "household table (pipelines/household.py) nor a parameter or value of the rule."
            )
    for table in rule.tables.values():
        if table.key not in HOUSEHOLD_TYPES:
            raise UnknownFieldError(
                f"rule {rule.id}: parameter table {table.name} key {table.key!r} is not a "
                "column of the household table (pipelines/household.py)."
            )


def _check_order(rule: Rule) -> None:
    later = [v.id for v in rule.values]
    for value in rule.values:
        later.remove(value.id)
        ahead = sorted(value.expr.names & (set(later) | {value.id}))
        if ahead:
            raise RuleCompileError(
                f"rule {rule.id}: value {value.id} uses {', '.join(ahead)}, defined at or after "
                "it; values are computed in file order."
            )


def _check_inputs(rule: Rule) -> None:
    used = household_fields(rule)
    declared = set(rule.inputs)
    if used != declared:
        missing, unused = sorted(used - declared), sorted(declared - used)
        raise RuleCompileError(
            f"rule {rule.id}: inputs in {rule.path.name} must list exactly the household columns "
            f"the rule reads; missing: {', '.join(missing) or '-'}; "
            f"listed but unused: {', '.join(unused) or '-'}."
        )
