"""A row quarantined at the body can leave what we know of a household incomplete: held back.

In the hand-made population H11 is a couple (incomes 30,000 and 12,000) signalled for
zorgtoeslag; H2 a couple with a child that already receives it; H1 a single person on
20,000 in 2024. Each case breaks a row so that the body quarantines it (a date that does
not exist, a negative amount). Without the names of whom those rows were about, the run
judged what was left:

- H11's partner's BRP row: H11 read as the head alone, on her income only;
- H2's head's benefits row: a household entitled and not paid, signalled for what it has;
- H11's partner's benefits row: the same, through the partner;
- H11's partner's insurance row: the partner read as uninsured, and H11 was signalled for
  half its zorgtoeslag, saying the partner is not insured;
- H1's 2024 tax row (beside a 2023 one): judged on her older income;
- H11's partner's 2024 tax row (beside a 2023 one): the same, through a member.

With the names kept, the household is evaluated (the aggregate report counts it) but never
signalled: its candidates fail the completeness check, which names the source. A
quarantined row that does not bear on the household (a benefit of a child) holds nothing
back.
"""

from __future__ import annotations

import json
import pickle

import duckdb
import pytest
from conftest import write_delivery
from population import REFERENCE_DATE, SIGNALLED, B, write_population
from service_support import PASSPHRASE, prepare_deliveries

from flows.cli import main
from pipelines.contract import SOURCES
from pipelines.read_deliveries import NAMED_BY_QUARANTINE
from privacy.keys import DEFAULT_DOMAIN, load_keyring
from privacy.pseudonyms import DomainPseudonymiser, TwoLayerPseudonymiser
from privacy.retention import read_run_table


def _broken(source: str, bsn: str, field: str | None = None, value: str = "", added=()):
    """Writes the population with `field` of `bsn`'s rows of `source` set to `value`, and
    the raw rows `added` (of `source`)."""

    def write(folder):
        write_population(folder)
        path = folder / source / REFERENCE_DATE / "data.csv"
        columns = list(SOURCES[source].column_names)
        rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
        for row in rows:
            if field and row[0] == bsn:
                row[columns.index(field)] = value
        write_delivery(folder, source, columns, rows + [list(a) for a in added], REFERENCE_DATE)

    return write


def _older_assessment(bsn: str) -> list[str]:
    return [bsn, "2023", "18000.00", "0.00", "definitive"]


# case -> (source, the household it leaves incomplete, how its raw delivery is broken)
BROKEN = {
    "brp": ("brp", "H11", _broken("brp", B[14], "birth_date", "1985-02-30")),
    "benefits": ("benefits", "H2", _broken("benefits", B[1], "start_date", "2024-02-30")),
    # The partner's, and a child's that bears on nothing (H2 stays already receiving).
    "benefits_of_partner": (
        "benefits",
        "H11",
        _broken(
            "benefits",
            B[14],
            added=[
                (B[14], "ww", "-800.00", "2024-01-01", ""),
                (B[3], "kinderbijslag", "-90.00", "2024-01-01", ""),
            ],
        ),
    ),
    "insurance_of_partner": (
        "health_insurance",
        "H11",
        _broken("health_insurance", B[14], "insured_from", "2010-02-30"),
    ),
    "tax": ("tax", "H1", _broken("tax", B[0], "assets", "-1000.00", [_older_assessment(B[0])])),
    "tax_of_partner": (
        "tax",
        "H11",
        _broken("tax", B[14], "assets", "-3000.00", [_older_assessment(B[14])]),
    ),
}


@pytest.fixture(scope="module", params=sorted(BROKEN))
def run(request, tmp_path_factory):
    source, held, write_raw = BROKEN[request.param]
    root = tmp_path_factory.mktemp(f"incomplete-{request.param}")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    prepared = prepare_deliveries(root, write_raw=write_raw)
    args = ["run", "--deliveries", str(prepared.deliveries), "--reference-date", REFERENCE_DATE]
    assert (
        main(args + ["--key-file", str(prepared.central_keyring), "--out", str(root / "runs")]) == 0
    )
    (run_dir,) = [p for p in (root / "runs").iterdir() if p.name.startswith(REFERENCE_DATE)]
    ring = load_keyring(prepared.central_keyring, PASSPHRASE)
    body = load_keyring(root / "keys" / "body.keyring", PASSPHRASE).active("body")
    pseudonyms = TwoLayerPseudonymiser(body, ring.active("domain", DEFAULT_DOMAIN))
    yield source, held, run_dir, ring, pseudonyms
    mp.undo()


def test_the_household_a_quarantined_row_leaves_incomplete_is_not_signalled(run):
    _, held, run_dir, ring, p = run
    pid = p.one("household_id", held)
    signals = read_run_table(run_dir, "signals.parquet", ring).to_pylist()
    assert pid not in {s["household_pid"] for s in signals}
    zorgtoeslag = {s["household_pid"] for s in signals if s["scheme"] == "zorgtoeslag"}
    assert zorgtoeslag == {p.one("household_id", h) for h in SIGNALLED - {held}}  # as ever
    suppressed = read_run_table(run_dir, "suppressed.parquet", ring).to_pylist()
    reasons = {s["scheme"]: s["reasons"] for s in suppressed if s["household_pid"] == pid}
    assert reasons["zorgtoeslag"] == ["incomplete_household"]
    assert all("incomplete_household" in r for r in reasons.values())
    others = [s for s in suppressed if s["household_pid"] != pid]
    assert others and all("incomplete_household" not in s["reasons"] for s in others)


def test_its_proportionality_record_names_the_source_and_the_run_counts_it(run):
    source, held, run_dir, _, p = run
    pid = p.one("household_id", held)
    records = duckdb.sql(
        f"SELECT attributes FROM read_parquet('{run_dir}/audit/*.parquet') "
        "WHERE name = 'proportionality'"
    ).fetchall()
    records = [json.loads(a) for (a,) in records]
    (attributes,) = [
        a for a in records if a["household_pid"] == pid and a["scheme"] == "zorgtoeslag"
    ]
    assert attributes["checks"]["completeness"] == {"outcome": "fail", "quarantined": [source]}
    assert attributes["decision"] == "suppressed"
    others = [a["checks"]["completeness"] for a in records if a["household_pid"] != pid]
    assert others and all(c == {"outcome": "pass", "quarantined": None} for c in others)
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]["sources"][source]
    # Each broken row here is of another person: as many named as quarantined.
    assert counts[NAMED_BY_QUARANTINE[source].counted_as] == counts["quarantined_at_body"] >= 1
    assert not list(run_dir.rglob("quarantined_*"))


def test_the_rules_step_holds_where_to_read_the_names_not_the_names(tmp_path, monkeypatch):
    """Beam pickles a step for each bundle processor of each thread: holding the pseudonyms
    made it grow with the population. It holds the deliveries and the key, and reads the
    names when it is set up."""
    import datetime as dt

    from apache_beam.internal import pickler

    from pipelines.audit_records import AuditContext
    from pipelines.evaluate import QUARANTINED_ABOUT, EvaluateRulesFn
    from pipelines.read_deliveries import NamedByQuarantine, find_delivery, open_pseudonymised

    monkeypatch.setenv("SIGNALS_KEYRING_PASSPHRASE", PASSPHRASE)
    _, _, write_raw = BROKEN["benefits_of_partner"]
    prepared = prepare_deliveries(tmp_path, write_raw=write_raw)
    date = dt.date.fromisoformat(REFERENCE_DATE)
    deliveries = {
        s: open_pseudonymised(find_delivery(prepared.deliveries, s, date), s)
        for s in QUARANTINED_ABOUT
    }
    domain = load_keyring(prepared.central_keyring, PASSPHRASE).active("domain", DEFAULT_DOMAIN)
    named = NamedByQuarantine(deliveries, DomainPseudonymiser(domain))
    # Two rows quarantined at the body: the partner's and the child's benefit.
    wanted = named.read()["benefits"].to_pylist()
    assert len(wanted) == 2 and all(pid.startswith("d") for pid in wanted)

    step = EvaluateRulesFn([], "run", AuditContext("run", "activity", "1"), named)
    unpickled = pickler.loads(pickler.dumps(step))
    held = pickle.dumps(unpickled.quarantined)
    assert not any(pid.encode() in held for pid in wanted)
    unpickled.setup()
    try:
        names = unpickled.con.sql("SELECT pid FROM quarantined_benefits").fetchall()
        assert sorted(pid for (pid,) in names) == sorted(wanted)
        assert unpickled.con.sql("SELECT count(*) FROM quarantined_brp").fetchall() == [(0,)]
    finally:
        unpickled.teardown()
