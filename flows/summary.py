"""Printing a published run's summary: counts per source and stage, signals per scheme."""

from __future__ import annotations

import json
from pathlib import Path


def run_summary_lines(run_dir: Path) -> list[str]:
    m = json.loads((Path(run_dir) / "manifest.json").read_text())
    c = m["counts"]
    lines = [f"run {m['run_id']}  (reference date {m['reference_date']})", ""]
    lines.append(f"{'source':<18}{'rows in':>12}{'accepted':>12}{'quarantined':>13}")
    for name, s in c["sources"].items():
        lines.append(f"{name:<18}{s['rows_in']:>12,}{s['accepted']:>12,}{s['quarantined']:>13,}")
    # A run takes each source's newest delivery on or before its reference date: say so
    # when that is an older one, so a missing month does not go unnoticed.
    older = [
        f"{name} {given['reference_date']}"
        for name, given in m.get("inputs", {}).items()
        if given.get("reference_date", m["reference_date"]) != m["reference_date"]
    ]
    if older:
        lines.append(f"older deliveries used (the newest on or before): {', '.join(older)}")
    lines += ["", f"households evaluated   {c['households']:,}", ""]
    lines.append(f"{'scheme':<24}{'signals':>10}")
    for scheme, n in sorted(c["signals_per_scheme"].items()):
        lines.append(f"{scheme:<24}{n:>10,}")
    lines.append(f"{'total':<24}{c['signals']:>10,}")
    lines.append(f"estimated annual amount EUR {float(c['estimated_annual_amount_total']):,.2f}")
    skipped = [r.get("rule_id", "?") for r in m.get("rules_skipped", [])]
    if skipped:
        lines.append(f"not evaluated: {', '.join(skipped)} (why: `signals runs show`)")
    lines += ["", f"audit records          {c['audit_records']:,}"]
    lines += ["", "outputs:"]
    run_dir = Path(run_dir)
    # Personal-data outputs are published encrypted (*.enc): list what is actually there.
    for path in sorted(run_dir.iterdir()):
        lines.append(f"  {path}{'/' if path.is_dir() else ''}")
    return lines


def print_run_summary(run_dir: Path) -> None:
    print("\n".join(run_summary_lines(run_dir)))
