"""Synthetic published run folders for the report tests, written as real Parquet files.

A run is described as cohorts: `n` identical households with a district, an age, a
household type, an income, arrears and a status per scheme. write_run() turns them into
the run folder layout the pipeline publishes (households/, evaluations/, signals.parquet,
manifest.json, and suppressed.parquet with every held-back candidate's reasons), so the
report reads exactly what it reads from a real run. The manifest carries what a real one
does for the report's context: the rules and their versions, the schemes not evaluated,
rows quarantined per source and persons excluded for objecting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import household
from pipelines.evaluate import EVALUATION_SCHEMA, SIGNAL_SCHEMA
from pipelines.proportionality import SUPPRESSED_SCHEMA

SCHEME = "zorgtoeslag"


@dataclass(frozen=True)
class Cohort:
    n: int
    status: str  # signalled | receiving | withheld | not_entitled
    district: str = "WK000101"
    age: int = 40
    partner: bool = False
    children: int = 0
    income: float | None = 20_000.0
    arrears: int = 0
    amount: Decimal = Decimal("1000.00")
    scheme: str = SCHEME
    also: tuple[tuple[str, str], ...] = ()  # (scheme, status) of the same households
    deregistered: bool = False  # the applicant died or emigrated: never signalled by law
    # Why a held-back candidate was not signalled (pipelines/proportionality.py REASONS);
    # default: already_receiving / deregistered for those statuses, none for withheld.
    reasons: tuple[str, ...] = ()


def pid(kind: str, i: int) -> str:
    """A pseudonym-shaped id: key id, a dot, 32 letters a-p (as privacy/pseudonyms.py)."""
    digest = hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:32]
    return "k1." + digest.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))


def _evaluation(h: str, scheme: str, status: str, year: int, amount: Decimal) -> dict:
    entitled = status != "not_entitled"
    return {
        "household_pid": h,
        "scheme": scheme,
        "benefit_year": year,
        "rule_id": scheme,
        "rule_version": "1",
        "parameter_version": str(year),
        "entitled": entitled,
        "already_receiving": status == "receiving",
        "estimated_annual_amount": amount if entitled else Decimal(0),
        "failed_conditions": [] if entitled else ["income"],
        "confidence": 0.9,
        "repayment_risk": False,
    }


def _signal(h: str, i: int, scheme: str, year: int, run_id: str, amount: Decimal) -> dict:
    return {
        "signal_id": "s." + pid("s" + scheme, i)[3:],
        "run_id": run_id,
        "household_pid": h,
        "applicant_pid": pid("p", i),
        "scheme": scheme,
        "benefit_year": year,
        "estimated_annual_amount": amount,
        "explanation": "synthetic",
        "explanation_nl": "synthetisch",
        "rule_id": scheme,
        "rule_version": "1",
        "parameter_version": str(year),
        "confidence": 0.9,
        "repayment_risk": False,
        "status": "new",
    }


def _held_back(h: str, i: int, c: Cohort, scheme: str, status: str, year: int, run_id: str):
    """The suppressed.parquet row of a candidate the proportionality checks held back."""
    reasons = list(c.reasons) if scheme == c.scheme else []
    if status == "receiving":
        reasons = ["already_receiving"] + reasons
    if c.deregistered:
        reasons.append("deregistered")
    if status == "signalled" or status == "not_entitled" or not reasons:
        return None
    row = _signal(h, i, scheme, year, run_id, c.amount)
    kept = ("signal_id", "run_id", "household_pid", "applicant_pid", "scheme", "benefit_year")
    kept += ("estimated_annual_amount", "confidence", "status")
    return {k: row[k] for k in kept} | {"reasons": reasons}


def _rows(cohorts: list[Cohort], run_id: str, year: int):
    households, evaluations, signals, held = {}, [], [], []
    i = 0
    for c in cohorts:
        for _ in range(c.n):
            i += 1
            h = pid("h", i)
            households[h] = {
                "household_pid": h,
                "applicant_pid": pid("p", i),
                "municipality_code": "GM" + c.district[2:6],
                "district_code": c.district,
                "applicant_age": c.age,
                "has_partner": c.partner,
                "n_persons": 1 + int(c.partner) + c.children,
                "n_children": c.children,
                "income_known": c.income is not None,
                "combined_income": None if c.income is None else Decimal(f"{c.income:.2f}"),
                "arrears_count": c.arrears,
                "applicant_deregistered": c.deregistered,
                "member_pids": [pid("p", i)],
            }
            for scheme, status in ((c.scheme, c.status), *c.also):
                evaluations.append(_evaluation(h, scheme, status, year, c.amount))
                if status == "signalled":
                    signals.append(_signal(h, i, scheme, year, run_id, c.amount))
                row = _held_back(h, i, c, scheme, status, year, run_id)
                if row:
                    held.append(row)
    return list(households.values()), evaluations, signals, held


def write_run(
    root: Path,
    cohorts: list[Cohort],
    run_id: str = "2025-01-01-synthetic",
    reference_date: str = "2025-01-01",
    quarantined: dict[str, int] | None = None,
    excluded: int | None = None,
    skipped: dict[str, str] | None = None,
) -> Path:
    """Write a published run folder <root>/<run_id>; returns it.

    `quarantined`: rows quarantined per source; `excluded`: persons excluded for objecting
    to all processing (the manifest's exclusion audit records); `skipped`: schemes not
    evaluated, with the reason (the manifest's rules_skipped). None leaves them out of the
    manifest, as an older run's manifest would.
    """
    run = Path(root) / run_id
    year = int(reference_date[:4])
    households, evaluations, signals, held = _rows(cohorts, run_id, year)
    (run / "households").mkdir(parents=True, exist_ok=True)
    (run / "evaluations").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(households, schema=household.SCHEMA),
        run / "households" / "part-00000.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist(evaluations, schema=EVALUATION_SCHEMA),
        run / "evaluations" / "part-00000.parquet",
    )
    pq.write_table(pa.Table.from_pylist(signals, schema=SIGNAL_SCHEMA), run / "signals.parquet")
    pq.write_table(pa.Table.from_pylist(held, schema=SUPPRESSED_SCHEMA), run / "suppressed.parquet")
    per_scheme: dict[str, int] = {}
    for s in signals:
        per_scheme[s["scheme"]] = per_scheme.get(s["scheme"], 0) + 1
    total = sum((s["estimated_annual_amount"] for s in signals), Decimal(0))
    manifest = {
        "run_id": run_id,
        "reference_date": reference_date,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "counts": {
            "households": len(households),
            "signals": len(signals),
            "signals_per_scheme": per_scheme,
            "estimated_annual_amount_total": f"{total:.2f}",
        },
        "rules": [
            {
                "rule_id": scheme,
                "rule_version": "1.0.0+synthetic",
                "parameter_version": f"{year}.1+synthetic",
                "benefit_year": year,
            }
            for scheme in sorted({e["scheme"] for e in evaluations})
        ],
    }
    if quarantined is not None:
        manifest["counts"]["sources"] = {
            name: {"rows_in": 1000 + n, "accepted": 1000, "quarantined": n}
            for name, n in quarantined.items()
        }
    if excluded is not None:
        per_operation = {"ingest": 1000} | ({"exclusion": excluded} if excluded else {})
        manifest["counts"]["audit_records_per_operation"] = per_operation
    if skipped is not None:
        manifest["rules_skipped"] = [
            {"rule_id": r, "benefit_year": year, "reason": why} for r, why in skipped.items()
        ]
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run
