"""The fairness guard: refuses rules that read protected attributes, proxies or unknown fields.

Entitlement may depend on age, income, assets, household composition, insurance and
residence as the law says; never on nationality, origin, sex or where exactly someone
lives. The guard checks every name a rule reads (conditions, formulas, explanation
templates, parameter-table keys) before any SQL is generated:

- a protected attribute or proxy (PROTECTED_TERMS, matched on whole words of the name, so
  `partner_nationality` is caught too) -> ProtectedAttributeError;
- `municipality_code` anywhere but as the key of a parameter table (municipal parameters,
  e.g. kwijtschelding) -> ProtectedAttributeError;
- a name that is no column of the household table (pipelines/household.py) and no
  parameter or value of the rule -> UnknownFieldError;
- a value that uses a later value, or `inputs:` that disagree with what the rule reads
  -> RuleCompileError.
"""

from __future__ import annotations

import pyarrow as pa

from entitlement_rules.errors import ProtectedAttributeError, RuleCompileError, UnknownFieldError
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
