"""`signals register`: what may we do with this data? The processing register, from the shell.

    signals register check --purpose P   the purpose check for a run of purpose P, as a
                                         readable decision flow and a table per (source,
                                         field), plus the lineage check of every rule;
                                         exit 0 when a run may proceed, 1 when it is refused
    signals register show [--purpose P]  the register: version, activities, legal bases

Both read only the register and the rule files, never a delivery.
"""

from __future__ import annotations

import argparse
import datetime as dt
import textwrap
from pathlib import Path


def register(subparsers) -> None:
    """Adds `signals register check|show` to the `signals` command line."""
    group = subparsers.add_parser(
        "register", help="the processing register: check a purpose, show the activities"
    ).add_subparsers(dest="register_command", required=True, metavar="ACTION")

    p = group.add_parser(
        "check", help="may a run for this purpose read its sources and fields? (exit 1: no)"
    )
    p.add_argument("--purpose", required=True, help="processing activity id")
    p.add_argument(
        "--register", help="register folder (default: paths.register, else privacy/register/)"
    )
    p.add_argument("--config", help="signals.toml (default: found as for every command)")
    p.add_argument("--rules-root", help="rules root (default: the package's own rules)")
    p.add_argument(
        "--on",
        type=dt.date.fromisoformat,
        default=dt.date.today(),
        help="the reference date every legal basis must hold on (default: today)",
    )
    p.add_argument(
        "--format",
        choices=("both", "flow", "table"),
        default="both",
        help="the decision flow, the field table, or both (default)",
    )
    p.set_defaults(func=cmd_check)

    p = group.add_parser("show", help="the register's version, activities and legal bases")
    p.add_argument("--purpose", help="show only this processing activity")
    p.add_argument(
        "--register", help="register folder (default: paths.register, else privacy/register/)"
    )
    p.add_argument("--config", help="signals.toml (default: found as for every command)")
    p.set_defaults(func=cmd_show)


def _load(args):
    from flows.config import load_config
    from privacy.register import load_register

    root = args.register or load_config(args.config).paths.register
    return load_register(Path(root) if root else None)


def cmd_check(args: argparse.Namespace) -> int:
    from privacy.purpose_check import check_purpose

    reg = _load(args)
    outcome = check_purpose(reg, args.purpose, on=args.on)
    if args.format in ("both", "flow"):
        print(outcome.flow_text())
    if args.format in ("both", "table") and outcome.fields:
        print("\nPer source and field:")
        print(outcome.table())
    if outcome.refused:
        print("\n" + outcome.explain())
        return 1
    print("\nRules (fields checked against the register; the run does the same at compile time):")
    rules_root = Path(args.rules_root) if args.rules_root else None
    refused = _print_rules(reg, args.purpose, rules_root)
    if refused:
        print(
            f"\nREFUSED: the register allows the run's sources and fields, but {refused} "
            "rule(s) above may not run: a run would stop when it compiles them."
        )
    return 1 if refused else 0


def _print_rules(reg, purpose: str, root: Path | None = None) -> int:
    """One line per rule: allowed, or why not. Returns the number of rules refused."""
    from entitlement_rules import RuleCompileError, load_rules, rules_fields
    from entitlement_rules.guard import check_rule
    from privacy.purpose_check import RuleFieldNotAllowed, check_fields

    refused = 0
    for rule in load_rules(root=root):
        try:  # the fairness guard first, as compile_rule does in a run
            check_rule(rule)
        except RuleCompileError as exc:
            refused += 1
            print(f"  {rule.id}: REFUSED by the rule guard")
            print(f"    {exc}")
            continue
        try:
            lineage = check_fields(reg, purpose, rule.id, rule.scheme, rules_fields(rule))
        except RuleFieldNotAllowed as exc:
            refused += 1
            print(f"  {rule.id}: REFUSED")
            print("\n".join("    " + line for line in str(exc).splitlines()[1:]))
            continue
        sources = sorted({item.source_field for item in lineage})
        print(f"  {rule.id}: allowed ({len(sources)} source fields: {', '.join(sources)})")
    return refused


def cmd_show(args: argparse.Namespace) -> int:
    from flows.cli import UsageError

    reg = _load(args)
    if args.purpose and reg.activity(args.purpose) is None:
        raise UsageError(
            f"purpose {args.purpose!r} is not in the register "
            f"(registered: {', '.join(sorted(reg.activities))})"
        )
    print(f"processing register {reg.root}")
    print(f"version {reg.version}")
    for activity in reg.activities.values():
        if args.purpose in (None, activity.id):
            print()
            print("\n".join(_activity_lines(activity)))
    return 0


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    first = indent if first is None else first
    return textwrap.wrap(text, width=96, initial_indent=first, subsequent_indent=indent)


def _activity_lines(a) -> list[str]:
    r, d = a.retention, a.dpia
    lines = [f"{a.id}  (file {a.path.name}, version {a.digest[:12]})"]
    lines += _wrap(a.title, "  ")
    lines.append(f"  controller: {a.controller}")
    lines += _wrap(f"purpose: {a.purpose}", "  ")
    lines.append(f"  schemes: {', '.join(a.schemes) or 'none'}")
    if r:
        flag = " [ASSUMPTION]" if r["assumption"] else ""
        lines.append(f"  retention: {r['period']}{flag} for {r['applies_to']}")
    else:
        lines.append("  retention: NOT SET")
    if d:
        placeholder = " (pilot placeholder)" if d["placeholder"] else ""
        lines.append(f"  DPIA: {d['reference'] or 'none'}, {d['status']}{placeholder}")
    else:
        lines.append("  DPIA: NOT RECORDED")
    lines.append(f"  conditions: {', '.join(a.conditions) or 'none'}")
    lines.append("  general legal basis:")
    for b in a.general_basis:
        lines += _basis_lines(b, "    ")
    for entry in a.sources.values():
        lines.append(f"  source {entry.name}:")
        for b in entry.legal_basis:
            lines += _basis_lines(b, "    ")
        for status in ("allowed", "conditional", "not_allowed"):
            names = [
                f.name
                + (f" [{', '.join(f.conditions)}]" if f.conditions else "")
                + (f" (only {', '.join(f.schemes)})" if f.schemes else "")
                for f in entry.fields.values()
                if f.status == status
            ]
            if names:
                lines += _wrap(f"{status}: {', '.join(names)}", "    ")
    return lines


def _basis_lines(basis, indent: str) -> list[str]:
    lines = _wrap(basis.citation(), indent + "  ", first=indent + "- ")
    if basis.url:
        lines.append(f"{indent}  {basis.url}")
    if basis.assumption:
        lines += _wrap(f"why an assumption: {basis.note}", indent + "  ")
        said = basis.confirmation() or "NOT CONFIRMED by the DPO (confirmed: in the register)"
        lines += _wrap(said, indent + "  ")
    return lines
