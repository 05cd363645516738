"""`signals rules`: list the entitlement rules, explain one for a benefit year, run their tests.

    signals rules list                          every rule: law, years, ready years, cases
    signals rules explain <scheme> --year Y     the rule, its parameters and their sources
    signals rules test [--scheme S]             the truth tables (cases/<scheme>.yaml)

Registered in flows/cli.py COMMAND_MODULES. `test` exits 1 when a case fails, so it can gate a
change to a rule file the same way pytest does. A rule that does not compile (the guard refuses
it, a parameter is missing) fails its cases with one message; it is printed once, not per case.
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    rules = subparsers.add_parser("rules", help="list, explain and test the entitlement rules")
    sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="every rule with its law, years and cases")
    p.add_argument("--root", help="rules root (default: the package's own rules)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("explain", help="a rule, its parameters and their sources for one year")
    p.add_argument("scheme")
    p.add_argument("--year", type=int, required=True, help="benefit year")
    p.add_argument("--root", help="rules root (default: the package's own rules)")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("test", help="run the truth tables; exit 1 if any case fails")
    p.add_argument("--scheme", help="only this scheme")
    p.add_argument("--root", help="rules root (default: the package's own rules)")
    p.add_argument("--verbose", action="store_true", help="print every case, not only failures")
    p.set_defaults(func=cmd_test)


def _root(args) -> Path | None:
    return Path(args.root) if args.root else None


def cmd_list(args) -> int:
    from entitlement_rules import list_rules

    for r in list_rules(_root(args)):
        years = ", ".join(str(y) for y in r["years"]) or "-"
        ready = ", ".join(str(y) for y in r["ready_years"]) or "none"
        print(f"{r['id']:<20} {r['label_nl']}")
        print(f"{'':<20} {r['law']} ({r['bwb_id']}), rule version {r['rule_version']}")
        print(f"{'':<20} years {years}; ready {ready}; {r['cases']} cases")
    return 0


def cmd_explain(args) -> int:
    from entitlement_rules import explain

    print(explain(args.scheme, args.year, _root(args)), end="")
    return 0


def cmd_test(args) -> int:
    from entitlement_rules import run_cases

    results = run_cases(args.scheme, _root(args))
    failed = [r for r in results if not r.passed]
    refusals = _refusals(failed)
    for r in results:
        same = refusals.get((r.scheme, r.problems), [r])
        if (r.passed and args.verbose) or (not r.passed and same[0] is r):
            print(_heading(r, same))
            for problem in r.problems:
                print(f"     {problem}")
    schemes = sorted({r.scheme for r in results})
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({', '.join(schemes)})")
    return 1 if failed else 0


def _refusals(failed: list) -> dict[tuple, list]:
    """Failed cases grouped by the compile refusal they share (a guard refusal fails every
    case of the rule with one message: it is shown once, with the number of cases)."""
    groups: dict[tuple, list] = {}
    for r in failed:
        if "compile_error" in r.actual:
            groups.setdefault((r.scheme, r.problems), []).append(r)
    return groups


def _heading(r, same: list) -> str:
    if len(same) == 1:
        return f"{'PASS' if r.passed else 'FAIL'} {r.scheme} {r.year}: {r.name}"
    years = ", ".join(str(y) for y in sorted({s.year for s in same}))
    return f"FAIL {r.scheme} {years}: {len(same)} cases, the rule did not compile"
