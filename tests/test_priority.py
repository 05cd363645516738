"""The priority score and the worklist, on hand-made signals with scores computed by hand.

Weights of privacy/proportionality.yaml: priority = 100 x (0.6 debt + 0.4 benefit);
debt = max sector weight x (min(months, 6) / 6 + min(arrears, 2000) / 2000) / 2;
benefit = min(total amount, 3000) / 3000.

    A  energy arrears (0.9), 3 months, 420.00; zorgtoeslag 1,573.42
       debt = 0.9 x (0.5 + 0.21) / 2 = 0.3195; benefit = 1573.42 / 3000 = 0.524473
       priority = 100 x (0.6 x 0.3195 + 0.4 x 0.524473) = 40.15
    B  no arrears; zorgtoeslag 1,000.00 + huurtoeslag 2,500.00 = 3,500.00 (capped at 3,000)
       priority = 100 x 0.4 x 1 = 40.00
    C  housing arrears (1.0), 12 months, 5,000.00 (both capped); kwijtschelding 100.00
       debt = 1.0; benefit = 0.033333; priority = 100 x (0.6 + 0.013333) = 61.33

Without the debt part (the register keeps arrears for aggregate use only):
    A 100 x 0.4 x 0.524473 = 20.98, B 40.00, C 100 x 0.4 x 0.033333 = 1.33.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from entitlement_rules.guard import protected_reason
from pipelines.evaluate import SIGNAL_SCHEMA
from pipelines.household import COLUMN_NAMES
from pipelines.household import SCHEMA as HOUSEHOLD_SCHEMA
from pipelines.priority import (
    PRIORITY_INPUTS,
    WORKLIST_SCHEMA,
    build_worklist,
    load_weights,
    worklist_table,
    write_worklist,
)
from pipelines.proportionality import DEFAULT_PATH, PolicyError
from privacy.register import DEFAULT_ROOT, load_register

D = Decimal
PURPOSE = "proactive-entitlement-signalling"


def _signal(household: str, scheme: str, amount: str, status: str = "new") -> dict:
    return {
        "signal_id": f"s.{household}.{scheme}",
        "run_id": "2025-01-01-run",
        "household_pid": f"h.{household}",
        "applicant_pid": f"a.{household}",
        "scheme": scheme,
        "benefit_year": 2025,
        "estimated_annual_amount": D(amount),
        "explanation": f"{scheme} entitled",
        "explanation_nl": f"{scheme} recht",
        "rule_id": scheme,
        "rule_version": "1",
        "parameter_version": "1",
        "confidence": 0.9 if scheme == "huurtoeslag" else 1.0,
        "repayment_risk": scheme == "huurtoeslag",
        "status": status,
    }


SIGNALS = pa.Table.from_pylist(
    [
        _signal("A", "zorgtoeslag", "1573.42"),
        _signal("B", "zorgtoeslag", "1000.00", "repeated"),
        _signal("B", "huurtoeslag", "2500.00"),
        _signal("C", "kwijtschelding", "100.00"),
    ],
    schema=SIGNAL_SCHEMA,
)


def _households(**proxies) -> pa.Table:
    arrears = {
        "A": (["energy"], D("420.00"), 3),
        "B": ([], None, None),
        "C": (["housing", "water"], D("5000.00"), 12),
    }
    rows = []
    for name, (sectors, total, months) in arrears.items():
        row = dict.fromkeys(COLUMN_NAMES)
        row |= {
            "household_pid": f"h.{name}",
            "applicant_pid": f"a.{name}",
            "arrears_sectors": sectors,
            "arrears_total": total,
            "arrears_max_months": months,
            "arrears_count": len(sectors),
        }
        rows.append(row | proxies)
    return pa.Table.from_pylist(rows, schema=HOUSEHOLD_SCHEMA)


@pytest.fixture(scope="module")
def permissive_register(tmp_path_factory):
    """The shipped register, but with the arrears fields allowed for individual use."""
    folder = tmp_path_factory.mktemp("register")
    for path in DEFAULT_ROOT.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for rule in data["sources"].get("arrears", {}).get("fields", {}).values():
            rule["status"] = "allowed"
            rule.pop("conditions", None)
        (folder / path.name).write_text(yaml.safe_dump(data))
    return load_register(folder)


def _scores(table: pa.Table) -> dict[str, tuple[int, Decimal]]:
    return {
        r["household_pid"].removeprefix("h."): (r["rank"], r["priority"]) for r in table.to_pylist()
    }


def test_debt_and_amount_give_the_hand_computed_scores_and_order(permissive_register):
    table = worklist_table(SIGNALS, _households(), register=permissive_register, purpose=PURPOSE)
    assert _scores(table) == {"C": (1, D("61.33")), "A": (2, D("40.15")), "B": (3, D("40.00"))}


def test_without_the_registers_consent_debt_does_not_count_and_every_row_says_so():
    table = worklist_table(SIGNALS, _households(), register=load_register(), purpose=PURPOSE)
    assert _scores(table) == {"B": (1, D("40.00")), "A": (2, D("20.98")), "C": (3, D("1.33"))}
    for row in table.to_pylist():
        assert (
            "debt not used (arrears.creditor_sector is for aggregate use only under "
            f"{PURPOSE})" in row["priority_explanation"]
        )


def test_no_register_means_no_debt_part():
    table = worklist_table(SIGNALS, _households())
    assert _scores(table)["C"] == (3, D("1.33"))


def test_one_household_one_row_with_all_its_signals(permissive_register):
    table = worklist_table(SIGNALS, _households(), register=permissive_register, purpose=PURPOSE)
    assert table.schema == WORKLIST_SCHEMA
    b = {r["household_pid"]: r for r in table.to_pylist()}["h.B"]
    assert b["schemes"] == "huurtoeslag; zorgtoeslag"
    assert b["signal_ids"] == "s.B.huurtoeslag; s.B.zorgtoeslag"
    assert b["statuses"] == "new; repeated"
    assert b["signals"] == 2
    assert b["estimated_total_amount"] == D("3500.00")
    assert b["min_confidence"] == 0.9 and b["repayment_risk"] is True
    assert (
        b["explanation"] == "huurtoeslag: huurtoeslag entitled | zorgtoeslag: zorgtoeslag entitled"
    )
    assert b["applicant_pid"] == "a.B"
    assert "bsn" not in table.column_names


def test_the_explanation_shows_the_computation(permissive_register):
    table = worklist_table(SIGNALS, _households(), register=permissive_register, purpose=PURPOSE)
    a = {r["household_pid"]: r for r in table.to_pylist()}["h.A"]
    assert a["priority_explanation"] == (
        "priority 40.15 = 100 x (0.6 x debt + 0.4 x benefit); "
        "debt 0.320: energy arrears, 3 of 6 months, EUR 420.00 of 2000.00; "
        "benefit 0.524: EUR 1573.42 a year of 3000.00"
    )


def test_equal_scores_are_ordered_by_amount_then_pseudonym():
    signals = pa.Table.from_pylist(
        [_signal("Y", "zorgtoeslag", "500.00"), _signal("X", "zorgtoeslag", "500.00")],
        schema=SIGNAL_SCHEMA,
    )
    rows = worklist_table(signals, _households()).to_pylist()
    assert [r["household_pid"] for r in rows] == ["h.X", "h.Y"]


def test_no_input_of_the_score_is_a_protected_attribute_or_proxy():
    for name in PRIORITY_INPUTS:
        assert protected_reason(name) is None, name
        assert name in COLUMN_NAMES or name in SIGNAL_SCHEMA.names


def test_age_composition_and_location_do_not_change_the_worklist(permissive_register):
    base = worklist_table(SIGNALS, _households(), register=permissive_register, purpose=PURPOSE)
    other = worklist_table(
        SIGNALS,
        _households(
            applicant_age=80,
            n_children=4,
            has_partner=True,
            district_code="WK999999",
            municipality_code="GM9999",
        ),
        register=permissive_register,
        purpose=PURPOSE,
    )
    assert other.equals(base)


def test_csv_and_parquet_hold_the_same_worklist(tmp_path):
    table = worklist_table(SIGNALS, _households())
    csv_path, parquet_path = write_worklist(table, tmp_path / "out" / "worklist.csv")
    assert pq.read_table(parquet_path).equals(table)
    as_text = pacsv.ConvertOptions(column_types={"priority": pa.string()})
    from_csv = pacsv.read_csv(csv_path, convert_options=as_text).to_pylist()
    assert [r["household_pid"] for r in from_csv] == table.column("household_pid").to_pylist()
    assert [r["priority"] for r in from_csv] == [
        str(p) for p in table.column("priority").to_pylist()
    ]
    assert oct(csv_path.stat().st_mode & 0o777) == "0o600"


def test_a_published_run_folder_gives_its_worklist(tmp_path):
    run = tmp_path / "2025-01-01-run"
    (run / "households").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"processing_activity_id": PURPOSE}))
    pq.write_table(SIGNALS, run / "signals.parquet")
    pq.write_table(_households(), run / "households" / "part-00000.parquet")
    assert build_worklist(run).equals(worklist_table(SIGNALS, _households()))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(debt_weight="0.7"), "debt_weight + priority.benefit_weight must be 1"),
        (lambda p: p["sector_weights"].pop("water"), "sector_weights must give exactly"),
        (lambda p: p.update(months_cap=0), "months_cap must be a whole number from 1"),
    ],
)
def test_broken_weights_are_refused(tmp_path, edit, message):
    data = yaml.safe_load(DEFAULT_PATH.read_text())
    edit(data["priority"])
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_weights(path)
