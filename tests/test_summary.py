"""The run summary printed after a run: what it says about the deliveries it used."""

from __future__ import annotations

import json

from flows.summary import run_summary_lines


def _manifest(folder, reference_date: str, delivered: dict[str, str]) -> None:
    sources = {n: {"rows_in": 10, "accepted": 9, "quarantined": 1} for n in delivered}
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "run_id": f"{reference_date}-abc",
                "reference_date": reference_date,
                "inputs": {n: {"reference_date": d} for n, d in delivered.items()},
                "counts": {
                    "sources": sources,
                    "households": 5,
                    "signals_per_scheme": {"zorgtoeslag": 2},
                    "signals": 2,
                    "estimated_annual_amount_total": "100.00",
                    "audit_records": 40,
                },
            }
        )
    )


def test_a_run_on_an_older_delivery_says_which(tmp_path):
    _manifest(tmp_path, "2025-02-01", {"brp": "2025-02-01", "tax": "2025-01-01"})
    lines = run_summary_lines(tmp_path)
    assert "older deliveries used (the newest on or before): tax 2025-01-01" in lines
    _manifest(tmp_path, "2025-02-01", {"brp": "2025-02-01", "tax": "2025-02-01"})
    assert not [li for li in run_summary_lines(tmp_path) if li.startswith("older deliveries")]


def test_a_rule_that_was_not_evaluated_is_named(tmp_path):
    _manifest(tmp_path, "2025-01-01", {"brp": "2025-01-01"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["rules_skipped"] = [{"rule_id": "huurtoeslag", "reason": "figures not verified"}]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert "not evaluated: huurtoeslag (why: `signals runs show`)" in run_summary_lines(tmp_path)
