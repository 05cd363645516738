"""The bucketed join on a hand-made population, run as a real Beam pipeline (DirectRunner)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.testing.util import assert_that, equal_to
from population import REFERENCE_DATE, B, write_population

from pipelines import household
from pipelines.contract import SOURCES
from pipelines.exclude import PERSON_SOURCES, ExcludeObjectors
from pipelines.join import (
    HOUSEHOLD_SQL,
    JOIN_SOURCES,
    PERSON_FACTS_SCHEMA,
    JoinHouseholds,
    bucket_of,
)
from pipelines.options import pipeline_options
from pipelines.read_deliveries import ReadDeliveries, open_pseudonymised
from privacy.minimise import pseudonymised_schema
from privacy.pseudonymise import pseudonymise_delivery
from privacy.pseudonyms import DomainPseudonymiser, Pseudonymiser, TwoLayerPseudonymiser


@pytest.fixture(scope="module")
def households(tmp_path_factory):
    """The household table of the hand-made population, keyed by the household's name."""
    from privacy.keys import Keyring

    root = tmp_path_factory.mktemp("join")
    ring = Keyring()
    key = ring.add("body")
    domain_key = Keyring().add("domain", "test")
    write_population(root / "raw")
    deliveries = {}
    for name in SOURCES:
        out = pseudonymise_delivery(root / "raw" / name / REFERENCE_DATE, ring, root / "p")
        deliveries[name] = open_pseudonymised(out.directory, name)
    schemas = {n: pseudonymised_schema(SOURCES[n]) for n in JOIN_SOURCES}
    schemas["brp"] = schemas["brp"].append(pa.field("partner_withheld", pa.bool_()))

    with beam.Pipeline(options=pipeline_options()) as p:
        domain = DomainPseudonymiser(domain_key)
        read = p | ReadDeliveries(deliveries, domain)
        kept = {n: read[n] for n in deliveries} | ExcludeObjectors(PERSON_SOURCES)
        joined = {n: kept[n] for n in JOIN_SOURCES} | JoinHouseholds(
            schemas, dt.date.fromisoformat(REFERENCE_DATE), str(root / "shuffle"), buckets=4
        )
        table = joined["households"]
        assert joined["ingest"] == ()  # no ingest maker, no records
        assert_that(
            table | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum), equal_to([11])
        )
        (
            table
            | beam.Map(lambda b: pa.Table.from_batches([b]))
            | WriteToParquetBatched(str(root / "households" / "part"), schema=household.SCHEMA)
        )
    rows = pq.read_table(root / "households").to_pylist()
    p = TwoLayerPseudonymiser(key, domain_key)
    by_name = {}
    for hh in [f"H{i}" for i in range(1, 12)]:
        pid = p.one("household_id", hh)
        match = [r for r in rows if r["household_pid"] == pid]
        by_name[hh] = match[0] if match else None
    return by_name, p


def test_every_household_with_a_registered_head_gets_one_row(households):
    rows, _ = households
    assert [h for h, r in rows.items() if r is None] == []


def test_a_couple_with_a_child_is_joined_with_combined_income(households):
    rows, p = households
    h2 = rows["H2"]
    assert h2["applicant_pid"] == p.one("bsn", B[1])
    assert h2["partner_pid"] == p.one("bsn", B[2])
    assert (h2["has_partner"], h2["n_persons"], h2["n_adults"], h2["n_children"]) == (True, 3, 2, 1)
    assert h2["children_ages"] == [5]
    assert h2["combined_income"] == Decimal("25000.00")
    assert h2["receiving_schemes"] == ["zorgtoeslag"]
    assert h2["applicant_insured"] and h2["partner_insured"]
    assert h2["tenure"] == "social_rent" and h2["monthly_rent"] == Decimal("650.00")


def test_an_objecting_partner_is_withheld_and_leaves_income_unknown(households):
    rows, p = households
    h3 = rows["H3"]
    assert h3["has_partner"] is True and h3["partner_pid"] is None
    assert h3["income_known"] is False
    assert p.one("bsn", B[5]) not in h3["member_pids"]


def test_a_scheme_scoped_objection_travels_with_the_household(households):
    assert households[0]["H7"]["objected_schemes"] == ["zorgtoeslag"]


def test_deregistration_insurance_and_the_newest_tax_year_are_seen(households):
    rows, _ = households
    assert rows["H6"]["applicant_deregistered"] is True
    assert rows["H5"]["applicant_insured"] is False
    assert (rows["H10"]["income_year"], rows["H10"]["income_status"]) == (2023, "estimated")
    assert rows["H1"]["arrears_total"] == Decimal("420.00")
    assert rows["H1"]["arrears_sectors"] == ["energy"]
    assert rows["H4"]["applicant_age"] == 17


def test_buckets_are_stable_and_spread():
    p = Pseudonymiser(__import__("privacy.keys", fromlist=["Keyring"]).Keyring().add("body"))
    keys = pa.array([p.one("bsn", str(i)) for i in range(4000)])
    buckets = bucket_of(keys, 8)
    assert (bucket_of(keys, 8) == buckets).all()
    tails = [int.from_bytes(k.encode()[-4:], "little") % 8 for k in keys.to_pylist()]
    assert buckets.tolist() == tails
    assert bucket_of(keys.slice(100, 50), 8).tolist() == tails[100:150]
    with pytest.raises(ValueError, match="at least four"):
        bucket_of(pa.array(["d1.abcd", "abc"]), 8)
    assert bucket_of(pa.array([], pa.string()), 8).tolist() == []
    counts = [int((buckets == b).sum()) for b in range(8)]
    assert min(counts) > 400, counts


# -- who is applicant and partner: the household query on its own, in DuckDB ----------------


def _person(pid: str, household: str, role: str, partner: str | None = None, **changes) -> dict:
    row = {f.name: None for f in PERSON_FACTS_SCHEMA}
    row |= {
        "person_pid": pid,
        "household_pid": household,
        "role": role,
        "partner_pid": partner,
        "partner_withheld": False,
        "age": 40,
        "deregistered": False,
        "registered": True,
        "insured": True,
        "receiving_schemes": [],
        "aow_monthly_amount": Decimal("0"),
        "arrears_count": 0,
        "arrears_total": Decimal("0"),
        "arrears_sectors": [],
        "objected_schemes": [],
    }
    return row | changes


def _heads_and_partners(people: list[dict]) -> dict[str, tuple[str, str | None]]:
    con = duckdb.connect()
    con.register("facts", pa.Table.from_pylist(people, schema=PERSON_FACTS_SCHEMA))
    sql = HOUSEHOLD_SQL.format(ref=REFERENCE_DATE)
    rows = con.sql(sql).fetchall()
    names = [d[0] for d in con.sql(sql).description]
    picked = [dict(zip(names, r, strict=True)) for r in rows]
    assert len(picked) == len({r["household_pid"] for r in picked})  # one row a household
    return {r["household_pid"]: (r["applicant_pid"], r["partner_pid"]) for r in picked}


def test_the_applicant_is_the_lowest_registered_head_and_the_partner_the_one_named():
    picked = _heads_and_partners(
        [
            # Two heads: the lower pseudonym applies; an unregistered head never does.
            _person("p.b", "h1", "head"),
            _person("p.c", "h1", "head"),
            _person("p.a", "h1", "head", registered=False),
            # The head names its partner: that member, not a lower one in the partner role.
            _person("p.k", "h2", "head", partner="p.m"),
            _person("p.m", "h2", "partner"),
            _person("p.l", "h2", "partner"),
            # The head names none: the lowest member in the partner role.
            _person("p.x", "h3", "head"),
            _person("p.z", "h3", "partner"),
            _person("p.y", "h3", "partner"),
            # The named partner is deregistered: no partner, and no other taken instead.
            _person("p.q", "h4", "head", partner="p.r"),
            _person("p.r", "h4", "partner", deregistered=True),
            _person("p.s", "h4", "partner"),
        ]
    )
    assert picked == {
        "h1": ("p.b", None),
        "h2": ("p.k", "p.m"),
        "h3": ("p.x", "p.y"),
        "h4": ("p.q", None),
    }
