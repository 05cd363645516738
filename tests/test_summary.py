"""The run summary printed after a run: what it says about the deliveries it used, and why
the number of signals is what it is (two real monthly runs of the hand-made population)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import pytest

from flows.cli import main
from flows.summary import REASONS_EXPLAINED, proportionality_lines, run_summary_lines


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


def test_fields_withheld_on_reading_are_named(tmp_path):
    _manifest(tmp_path, "2025-01-01", {"brp": "2025-01-01"})
    assert not [li for li in run_summary_lines(tmp_path) if li.startswith("withheld")]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    why = "allowed for huurtoeslag only, which this run does not evaluate"
    manifest["fields_withheld"] = {"housing.service_costs": why, "housing.monthly_rent": why}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    expected = (
        "withheld on reading (no scheme evaluated uses them): "
        "housing.monthly_rent, housing.service_costs"
    )
    assert expected in run_summary_lines(tmp_path)


# -- why these signals: two real monthly runs ----------------------------------------------


@pytest.fixture(scope="module")
def two_months(tmp_path_factory):
    """The hand-made population run for 2025-01-01, the operator's feedback on one signal,
    and a run a month later on the same population delivered again: every earlier signal is
    held back (by fatigue; the one with feedback by its open case as well), so the second
    month has none."""
    from service_support import (
        PASSPHRASE,
        decrypted,
        deliver_again,
        prepare_deliveries,
        published_runs,
        run_args,
    )

    root = tmp_path_factory.mktemp("two-months")
    prepared = prepare_deliveries(root)
    out = root / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(run_args(prepared, out)) == 0
        (first,) = published_runs(out)
        signal_id = decrypted(first, "signals.parquet", prepared.central_keyring)["signal_id"][0]
        feedback = root / "feedback.csv"
        feedback.write_text(f"signal_id,outcome,outcome_date\n{signal_id},contacted,2025-01-10\n")
        key = ["--key-file", str(prepared.central_keyring)]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["feedback", "import", str(feedback), "--runs", str(out), *key]) == 0
        deliver_again(prepared, "2025-02-01")
        args = run_args(prepared, out)
        args[args.index("--reference-date") + 1] = "2025-02-01"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(args) == 0
        (second,) = [p for p in published_runs(out) if p != first]
        yield first, second, printed.getvalue()


def _block(lines: list[str], title: str) -> list[str]:
    at = lines.index(title)
    return [line.strip() for line in itertools.takewhile(bool, lines[at + 1 :])]


def test_a_month_without_signals_says_what_held_them_back(two_months):
    first, second, printed = two_months
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = json.loads((second / "manifest.json").read_text())
    assert m2["counts"]["signals"] == 0 and m1["counts"]["signals"] >= 3
    held = m2["proportionality"]["suppressed_per_reason"]
    assert held["fatigue"] == m1["counts"]["signals"] and held["open_case"] == 1
    block = _block(printed.splitlines(), "why these signals (docs/proportionality.md):")
    words = [line.split() for line in block]
    candidates = m2["proportionality"]["suppressed"]
    assert words[0][:2] == ["candidates", str(candidates)]
    assert words[1][:2] == ["signalled", "0"] and words[2][:3] == ["held", "back", str(candidates)]
    for reason, n in held.items():
        assert [reason, str(n)] in [w[:2] for w in words]
    assert f"history used              1 earlier run: {first.name}" in block
    (stored,) = m2["proportionality"]["feedback_files"]
    assert f"feedback used             1 file: {stored}" in block


def test_the_first_month_says_it_had_no_history(two_months):
    first, _, _ = two_months
    block = _block(run_summary_lines(first), "why these signals (docs/proportionality.md):")
    m1 = json.loads((first / "manifest.json").read_text())
    new = m1["proportionality"]["signals_per_status"]["new"]
    assert block[1].split()[:4] == ["signalled", str(new), "new", f"{new},"]
    assert "history used              no earlier runs" in block
    assert "feedback used             no files" in block


def test_runs_show_prints_the_same_block(two_months, capsys):
    _, second, printed = two_months
    assert main(["runs", "show", str(second)]) == 0
    shown = capsys.readouterr().out.splitlines()
    block = _block(shown, "why these signals (docs/proportionality.md):")
    summary = _block(printed.splitlines(), "why these signals (docs/proportionality.md):")
    assert block == summary  # both indented two spaces under their title


def test_every_suppression_reason_is_explained():
    from pipelines.proportionality import REASONS

    assert set(REASONS_EXPLAINED) == set(REASONS)


def test_a_manifest_without_proportionality_prints_no_block(tmp_path):
    _manifest(tmp_path, "2025-01-01", {"brp": "2025-01-01"})
    assert not [li for li in run_summary_lines(tmp_path) if li.startswith("why these")]
    assert proportionality_lines({}) == []


def test_only_the_newest_history_runs_are_named(tmp_path):
    runs = [f"2024-{month:02d}-01-run{month}" for month in range(1, 8)]
    m = {"counts": {"signals": 0}, "proportionality": {"history": {"runs": runs}}}
    (line,) = [li for li in proportionality_lines(m) if li.startswith("history used")]
    assert line.endswith(
        "7 earlier runs: 2024-07-01-run7, 2024-06-01-run6, 2024-05-01-run5, and 4 older"
    )
