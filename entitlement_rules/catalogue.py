"""Readable descriptions of the rules, for `signals rules list` and `signals rules explain`.

list_rules() gives one dict per rule (id, labels, law, years with parameters, years ready
to compile, number of cases); explain(scheme, year) prints the rule as a person checking
it against the law wants to read it: the law, what it reads, every parameter with its
value, status and source, the formula in order, the conditions and the known gaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entitlement_rules.cases import load_cases
from entitlement_rules.compiler import display, rules_fields
from entitlement_rules.loader import load_rules
from entitlement_rules.model import Rule


def list_rules(root: Path | None = None) -> list[dict[str, Any]]:
    """One summary per rule under `root` (default: the package's own rules)."""
    return [
        {
            "id": rule.id,
            "rule_version": rule.rule_version,
            "label_en": rule.label.en,
            "label_nl": rule.label.nl,
            "law": rule.legal_basis.law,
            "bwb_id": rule.legal_basis.bwb_id,
            "articles": list(rule.legal_basis.articles),
            "url": rule.legal_basis.url,
            "years": list(rule.years),
            "ready_years": list(rule.ready_years()),
            "cases": len(load_cases(rule)),
            "reads": sorted(rules_fields(rule)),
        }
        for rule in load_rules(root=root)
    ]


def explain(scheme: str, year: int, root: Path | None = None) -> str:
    """The rule of `scheme` for benefit `year`, its parameters and their sources, as text."""
    (rule,) = load_rules(schemes=[scheme], root=root)
    lines = _heading(rule, year)
    lines += _parameters(rule, year)
    lines.append("")
    lines.append("Formula, computed in this order:")
    for v in rule.values:
        lines.append(f"  {v.id} = {v.expr.source}")
        lines.append(f"      {v.label.en} ({v.legal})")
    lines.append("")
    lines.append("Conditions (entitled only when every one holds):")
    for c in rule.conditions:
        lines.append(f"  {c.id}: {c.expr.source}")
        lines.append(f"      {c.legal}")
    for t in rule.tables.values():
        lines.append(f"  {t.name}_parameters_known: the household's {t.key} has parameters")
    lines.append("")
    lines.append(
        f"Amount: {rule.amount.value}, rounded half away from zero to cents, once, on the "
        f"annual amount ({rule.amount.legal})."
    )
    lines += _uncertainty(rule)
    if rule.notes:
        lines.append("")
        lines.append("Known simplifications and gaps:")
        lines += [f"  - {note}" for note in rule.notes]
    return "\n".join(lines) + "\n"


def _heading(rule: Rule, year: int) -> list[str]:
    params = rule.parameter_sets.get(year)
    problems = rule.missing_parameters(year)
    status = "ready to compile" if not problems else "NOT compiled: " + "; ".join(problems)
    version = f", parameter version {params.parameter_version}" if params else ""
    url = f"{rule.legal_basis.url}/{year}-01-01"
    return [
        f"{rule.id}: {rule.label.nl} / {rule.label.en} (rule version {rule.rule_version})",
        f"Benefit year {year}{version}: {status}",
        f"Law: {rule.legal_basis.citation()}, {url}",
        *[f"  also: {r['law']} art. {r['article']}: {r['about']}" for r in rule.references],
        "",
        rule.description.en,
        "",
        "Reads (household columns): " + ", ".join(sorted(rules_fields(rule))),
    ]


def _parameters(rule: Rule, year: int) -> list[str]:
    params = rule.parameter_sets.get(year)
    if params is None:
        return ["", f"Parameters: none for {year} (no parameters/{rule.id}/{year}.yaml)."]
    valid = f"valid {params.valid_from} to {params.valid_to}"
    lines = ["", f"Parameters ({params.path.name}, {valid}):"]
    for name, spec in rule.parameters.items():
        value = params.values.get(name)
        if value is None:
            lines.append(f"  {name}: MISSING ({spec.label.en}; {spec.legal})")
            continue
        lines.append(f"  {name} = {display(value)} {value.unit} [{value.status}]")
        lines.append(f"      {spec.label.en}")
        lines.append(f"      source: {value.source}")
        if value.url:
            lines.append(f"      url: {value.url}")
        if value.note:
            lines.append(f"      note: {value.note}")
    for table in rule.tables:
        for row in params.tables.get(table, ()):
            used = "used" if row.usable else "NOT used: " + "; ".join(row.problems())
            if row.path is None:
                shown = ", ".join(f"{k} = {display(v)}" for k, v in row.values.items())
                lines.append(f"  {table}[{row.key}]: {shown} [{row.status}] source: {row.source}")
                lines.append(f"      {used}")
                continue
            lines.append(f"  {table}[{row.key}] ({row.source}): {used}")
            for name, value in row.values.items():
                lines.append(f"    {name} = {display(value)} {value.unit} [{value.status}]")
                lines.append(f"        source: {value.source}")
                if value.url:
                    lines.append(f"        url: {value.url}")
    return lines


def _uncertainty(rule: Rule) -> list[str]:
    if not rule.income_uncertainty:
        return ["", "Income uncertainty: not applied (confidence 1.0)."]
    p = rule.uncertainty
    statuses = ", ".join(f"{k} {v}" for k, v in p.status_factors.items())
    gaps = ", ".join(f"{i} year(s) {f}" for i, f in enumerate(p.year_gap_factors))
    return [
        "",
        f"Confidence (project policy, {p.path.name}, not law): status factor ({statuses}) x "
        f"year-gap factor ({gaps}, older {p.older_factor}); no income: "
        f"{p.unknown_income_factor}. repayment_risk = entitled and confidence < 1.0.",
    ]
