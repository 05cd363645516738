"""Printing a published run's summary: counts per source and stage, signals per scheme, and
why the number of signals is what it is (the proportionality block of the manifest).

`proportionality_lines` is shared with `signals runs show` (flows/runs.py): candidates held
back per reason, signals per lifecycle status, earlier signals resolved per reason, and the
history (earlier runs, operator feedback files) the run used. Counts, ids and file names
only: nothing here names a household.
"""

from __future__ import annotations

import json
from pathlib import Path

# What each suppression reason means (pipelines/proportionality.py REASONS; thresholds in
# privacy/proportionality.yaml). A reason missing here is still printed, without a gloss.
REASONS_EXPLAINED = {
    "necessity": "the register does not allow a field the rule reads",
    "minimum_amount": "estimated amount below the scheme's minimum",
    "confidence": "estimate below the minimum confidence",
    "fatigue": "signalled by an earlier run within the fatigue period",
    "already_receiving": "already receives the scheme",
    "open_case": "open case in the operator's feedback",
    "objection": "the applicant or partner objected to the scheme",
    "deregistered": "the applicant is deregistered (death, emigration)",
    "incomplete_household": "a register or tax row of a member, or a benefits or insurance "
    "row of the applicant or partner, was quarantined at the body",
}
LISTED = 3  # earlier runs and feedback files named; the rest are counted


def _newest(names: list[str], what: str) -> str:
    """`names` (oldest first, as the manifest has them): the newest few, and how many more."""
    if not names:
        return f"no {what}s"
    shown = ", ".join(reversed(names[-LISTED:]))
    more = f", and {len(names) - LISTED} older" if len(names) > LISTED else ""
    return f"{len(names)} {what}{'s' if len(names) != 1 else ''}: {shown}{more}"


def _line(label: str, n: int, note: str = "") -> str:
    return f"{label:<26}{n:>8,}  {note}".rstrip()


def _per_key(counts: dict) -> list[str]:
    """One line per key, the largest count first (the main cause on top)."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [_line(f"  {key}", n, REASONS_EXPLAINED.get(key, "")) for key, n in ordered]


def proportionality_lines(m: dict) -> list[str]:
    """Why the run signalled what it did: [] for a manifest without a proportionality block."""
    p = m.get("proportionality")
    if not p:
        return []
    signals = m.get("counts", {}).get("signals", 0)
    suppressed = p.get("suppressed", 0)
    statuses = {"new": 0, "repeated": 0} | p.get("signals_per_status", {})
    per_status = ", ".join(f"{status} {n:,}" for status, n in statuses.items())
    lines = [
        _line("candidates", signals + suppressed, "household x scheme the rules found entitled"),
        _line("signalled", signals, per_status),
        _line("held back", suppressed, "per reason (a candidate can have several):"),
        *_per_key(p.get("suppressed_per_reason", {})),
        _line("earlier signals resolved", p.get("resolved", 0)),
        *_per_key(p.get("resolved_per_reason", {})),
    ]
    history = p.get("history", {})
    lines.append(f"history used              {_newest(history.get('runs', []), 'earlier run')}")
    lines.append(f"feedback used             {_newest(p.get('feedback_files', []), 'file')}")
    return lines


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
    withheld = sorted(m.get("fields_withheld", {}))
    if withheld:
        lines.append(f"withheld on reading (no scheme evaluated uses them): {', '.join(withheld)}")
    # The total alone does not say why (a second month can be 0 by fatigue alone).
    why = proportionality_lines(m)
    if why:
        lines += ["", "why these signals (docs/proportionality.md):"] + ["  " + li for li in why]
    lines += ["", f"audit records          {c['audit_records']:,}"]
    lines += ["", "outputs:"]
    run_dir = Path(run_dir)
    # Personal-data outputs are published encrypted (*.enc): list what is actually there.
    for path in sorted(run_dir.iterdir()):
        lines.append(f"  {path}{'/' if path.is_dir() else ''}")
    return lines


def print_run_summary(run_dir: Path) -> None:
    print("\n".join(run_summary_lines(run_dir)))
