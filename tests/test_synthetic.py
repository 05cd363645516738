"""Tests of the synthetic population generator against the delivery contract.

Rows are checked with an independent validator written here from pipelines.contract
(not with the generator's own code), so a generator that writes malformed good rows,
miscounts its bad rows or breaks households fails these tests.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from collections import Counter, defaultdict
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.contract import (
    ADDRESS_ID,
    BSN,
    DATE,
    DECIMAL,
    ENUM,
    INT,
    MANIFEST_KEYS,
    SCHEMA_VERSION,
    SOURCES,
    address_id_is_valid,
    bsn_is_valid,
    oin_is_valid,
)
from pipelines.synthetic import generate, write_manifest

REF = dt.date(2025, 7, 1)
PERSONS = 2000
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small run with a raised bad-row rate so that every kind occurs."""
    out = tmp_path_factory.mktemp("deliveries")
    return out, generate(out, PERSONS, seed=11, reference_date=REF, bad_row_rate=0.03)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    return out, generate(out, 20_000, seed=5, reference_date=REF)


# --- independent reading and validation -----------------------------------------------


def read_rows(path: Path) -> list[tuple]:
    """Data rows as tuples of text ('' = null), whatever the format."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=",")
            next(reader)
            return [tuple(row) for row in reader]
    table = pq.read_table(path)
    columns = [c.to_pylist() for c in table.columns]
    return [tuple("" if v is None else str(v) for v in row) for row in zip(*columns, strict=True)]


def cell_ok(column, value: str) -> bool:
    if value == "":
        return column.nullable
    if column.kind == BSN:
        return bsn_is_valid(value)
    if column.kind == ADDRESS_ID:
        return address_id_is_valid(value)
    if column.kind == DATE:
        try:
            return bool(ISO_DATE.match(value)) and dt.date.fromisoformat(value) is not None
        except ValueError:
            return False
    if column.kind in (INT, DECIMAL):
        try:
            number = int(value) if column.kind == INT else Decimal(value)
        except (ValueError, InvalidOperation):
            return False
        return number >= 0 or not column.non_negative
    if column.kind == ENUM:
        return value in column.values
    return True


def split_rows(source: str, rows: list[tuple]) -> tuple[list[dict], int, int]:
    """(good rows as dicts without duplicate copies, invalid count, extra duplicate copies)."""
    columns = SOURCES[source].columns
    seen: set[tuple] = set()
    good, invalid, dupes = [], 0, 0
    for row in rows:
        if not all(cell_ok(c, v) for c, v in zip(columns, row, strict=True)):
            invalid += 1
        elif row in seen:
            dupes += 1
        else:
            seen.add(row)
            good.append(dict(zip(SOURCES[source].column_names, row, strict=True)))
    return good, invalid, dupes


def good_rows(result: dict, source: str) -> list[dict]:
    return split_rows(source, read_rows(result[source]["path"]))[0]


# --- files and manifests ---------------------------------------------------------------


def test_one_delivery_per_source_with_default_formats(run):
    out, result = run
    assert set(result) == set(SOURCES)
    for source in SOURCES:
        directory = out / source / REF.isoformat()
        expected = "data.parquet" if source == "tax" else "data.csv"
        assert sorted(p.name for p in directory.iterdir()) == sorted([expected, "manifest.json"])
        assert result[source]["path"] == directory / expected


def test_manifest_fields_follow_contract(run):
    out, _ = run
    oins = {}
    for source in SOURCES:
        manifest = json.loads((out / source / REF.isoformat() / "manifest.json").read_text())
        assert tuple(manifest) == MANIFEST_KEYS
        assert manifest["source"] == source
        assert oin_is_valid(manifest["supplier_oin"])
        assert manifest["reference_date"] == REF.isoformat()
        assert manifest["schema_version"] == SCHEMA_VERSION
        extracted = dt.datetime.fromisoformat(manifest["extracted_at"])
        assert extracted.date() > REF
        oins[source] = manifest["supplier_oin"]
    assert oins["brp"] == oins["objections"]  # both from the municipality
    assert len(set(oins.values())) == 6


def test_manifest_row_count_and_sha256_match_the_bytes(run):
    out, result = run
    for source in SOURCES:
        path = result[source]["path"]
        manifest = json.loads((path.parent / "manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest["row_count"] == len(read_rows(path)) == result[source]["row_count"]


def test_csv_uses_comma_and_contract_header_order(run):
    _, result = run
    for source in SOURCES:
        path = result[source]["path"]
        if path.suffix != ".csv":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0] == ",".join(SOURCES[source].column_names)
        width = len(SOURCES[source].columns)
        assert all(len(row) == width for row in csv.reader(lines, delimiter=","))
        assert '"' not in path.read_text(encoding="utf-8")


def test_parquet_uses_natural_types(run):
    _, result = run
    schema = pq.read_schema(result["tax"]["path"])
    assert schema.names == list(SOURCES["tax"].column_names)
    assert schema.field("bsn").type == pa.string()
    assert schema.field("year").type == pa.int64()
    assert schema.field("assessed_income").type == pa.decimal128(14, 2)
    assert schema.field("assets").type == pa.decimal128(14, 2)
    assert schema.field("assessment_status").type == pa.string()


def test_format_override_and_bad_format(tmp_path):
    result = generate(
        tmp_path, 300, seed=1, reference_date=REF, formats={"brp": "parquet", "tax": "csv"}
    )
    assert result["brp"]["path"].name == "data.parquet"
    assert result["tax"]["path"].name == "data.csv"
    assert pq.read_schema(result["brp"]["path"]).field("birth_date").type == pa.date32()
    with pytest.raises(ValueError, match="unknown format"):
        generate(tmp_path, 300, seed=1, reference_date=REF, formats={"brp": "xlsx"})
    with pytest.raises(ValueError, match="unknown source"):
        generate(tmp_path, 300, seed=1, reference_date=REF, formats={"brpp": "csv"})


# --- determinism ----------------------------------------------------------------------


def _all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    generate(tmp_path / "a", 1500, seed=3, reference_date=REF)
    generate(tmp_path / "b", 1500, seed=3, reference_date=REF)
    a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 2 * len(SOURCES)
    assert a == b


def test_different_seed_gives_different_data(tmp_path):
    generate(tmp_path / "a", 1500, seed=3, reference_date=REF)
    generate(tmp_path / "b", 1500, seed=4, reference_date=REF)
    a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    for source in SOURCES:
        key = next(k for k in a if k.startswith(source + "/") and "data." in k)
        assert a[key] != b[key], source


def test_exact_person_count(tmp_path):
    result = generate(tmp_path, 1234, seed=9, reference_date=REF, bad_row_rate=0)
    assert result["brp"]["row_count"] == 1234
    assert all(sum(r["bad_rows"].values()) == 0 for r in result.values())


# --- bad rows -------------------------------------------------------------------------


def test_bad_rows_are_counted_exactly_and_every_kind_occurs(run):
    _, result = run
    for source in SOURCES:
        good, invalid, dupes = split_rows(source, read_rows(result[source]["path"]))
        bad = result[source]["bad_rows"]
        assert dupes == bad["duplicate"], source
        assert invalid == sum(bad.values()) - bad["duplicate"], source
    for source in ("brp", "benefits", "health_insurance", "tax"):
        assert all(count > 0 for count in result[source]["bad_rows"].values()), source
    assert "bad_date" not in result["tax"]["bad_rows"]  # not representable in Parquet
    assert set(result["housing"]["bad_rows"]) == {
        "negative_amount",
        "bad_date",
        "unknown_enum",
        "duplicate",
    }


def test_bad_kinds_look_like_their_name(run):
    _, result = run
    rows = read_rows(result["brp"]["path"])
    bsns = [r[0] for r in rows]
    assert (
        sum(len(b) == 8 and b.isdigit() for b in bsns) == result["brp"]["bad_rows"]["bsn_8_digits"]
    )
    typos = [b for b in bsns if len(b) == 9 and not bsn_is_valid(b)]
    assert len(typos) == result["brp"]["bad_rows"]["bsn_checksum"]
    bad_dates = [r[1] for r in rows if not cell_ok(SOURCES["brp"].column("birth_date"), r[1])]
    bad_dates += [
        r[8] for r in rows if not cell_ok(SOURCES["brp"].column("registered_since"), r[8])
    ]
    bad_dates += [r[9] for r in rows if not cell_ok(SOURCES["brp"].column("deregistered_on"), r[9])]
    assert len(bad_dates) == result["brp"]["bad_rows"]["bad_date"]
    negatives = [r for r in read_rows(result["benefits"]["path"]) if r[2].startswith("-")]
    assert len(negatives) == result["benefits"]["bad_rows"]["negative_amount"]


def test_default_bad_row_rate_is_about_half_a_percent(default_run):
    _, result = default_run
    total = sum(r["row_count"] for r in result.values())
    bad = sum(sum(r["bad_rows"].values()) for r in result.values())
    assert 0.004 <= bad / total <= 0.006


# --- content --------------------------------------------------------------------------


def test_every_good_bsn_passes_the_11_proef_and_some_start_with_zero(run):
    _, result = run
    firsts = Counter()
    for source in SOURCES:
        if "bsn" not in SOURCES[source].column_names:
            continue
        for row in good_rows(result, source):
            assert bsn_is_valid(row["bsn"])
            firsts[row["bsn"][0]] += 1
    brp = good_rows(result, "brp")
    assert all(bsn_is_valid(r["partner_bsn"]) for r in brp if r["partner_bsn"])
    assert firsts["0"] > 0
    assert len({r["bsn"] for r in brp}) == len(brp)


def test_household_structure(run):
    _, result = run
    members = defaultdict(list)
    for row in good_rows(result, "brp"):
        members[row["household_id"]].append(row)
    by_bsn = {r["bsn"]: r for rows in members.values() for r in rows}
    for rows in members.values():
        assert [r["role"] for r in rows].count("head") == 1
        assert len({r["address_id"] for r in rows}) == 1
        assert len({(r["municipality_code"], r["district_code"]) for r in rows}) == 1
        assert sum(r["role"] == "partner" for r in rows) <= 1
    for row in by_bsn.values():
        age = _age(row["birth_date"])
        if age < 18:
            assert row["role"] == "child"
        if row["partner_bsn"]:
            partner = by_bsn[row["partner_bsn"]]
            assert partner["partner_bsn"] == row["bsn"]
            assert partner["household_id"] == row["household_id"]
            assert {row["role"], partner["role"]} == {"head", "partner"}
        assert re.match(r"^GM\d{4}$", row["municipality_code"])
        assert re.match(r"^WK\d{6}$", row["district_code"])
        assert row["district_code"][2:6] == row["municipality_code"][2:]
        assert row["address_id"][:4] == row["municipality_code"][2:]


def _age(birth: str) -> int:
    born = dt.date.fromisoformat(birth)
    return REF.year - born.year - ((REF.month, REF.day) < (born.month, born.day))


def test_dates_are_coherent(run):
    _, result = run
    for row in good_rows(result, "brp"):
        assert row["birth_date"] <= row["registered_since"] <= REF.isoformat()
        if row["deregistered_on"]:
            assert row["registered_since"] <= row["deregistered_on"] <= REF.isoformat()
    for row in good_rows(result, "health_insurance"):
        assert not row["insured_to"] or row["insured_from"] <= row["insured_to"]
    for row in good_rows(result, "benefits"):
        assert not row["end_date"] or row["start_date"] <= row["end_date"]
    for row in good_rows(result, "arrears"):
        assert row["reported_on"] <= REF.isoformat()


def test_housing_one_row_per_address_and_rent_only_for_renters(run):
    _, result = run
    housing = good_rows(result, "housing")
    addresses = {r["address_id"] for r in good_rows(result, "brp")}
    assert len({r["address_id"] for r in housing}) == len(housing)
    # Single-person households whose only brp row was made bad lose their address there.
    assert len({r["address_id"] for r in housing} - addresses) <= sum(
        result["brp"]["bad_rows"].values()
    )
    assert len(addresses - {r["address_id"] for r in housing}) <= sum(
        result["housing"]["bad_rows"].values()
    )
    for row in housing:
        renter = row["tenure"] != "owner_occupied"
        assert bool(row["monthly_rent"]) == renter
        assert bool(row["landlord_id"]) == renter


def test_rows_reference_registered_persons(run):
    _, result = run
    persons = {r["bsn"] for r in good_rows(result, "brp")}
    for source in ("tax", "benefits", "arrears", "health_insurance", "objections"):
        refs = {r["bsn"] for r in good_rows(result, source)}
        # Only persons whose own brp row was made bad may be missing from good brp rows.
        assert len(refs - persons) <= sum(result["brp"]["bad_rows"].values()), source


def test_distributions_are_plausible(default_run):
    """Shares near the published figures the generator cites (generous bands)."""
    _, result = default_run
    brp = good_rows(result, "brp")
    households = Counter(r["household_id"] for r in brp)
    sizes = Counter(households.values())
    assert 0.36 <= sizes[1] / len(households) <= 0.44  # CBS: ~40% single-person
    assert 1.95 <= len(brp) / len(households) <= 2.3  # CBS: ~2.1 persons
    ages = [_age(r["birth_date"]) for r in brp]
    assert 0.15 <= sum(a >= 65 for a in ages) / len(ages) <= 0.25
    assert 0.15 <= sum(a < 18 for a in ages) / len(ages) <= 0.25
    tenure = Counter(r["tenure"] for r in good_rows(result, "housing"))
    total = sum(tenure.values())
    assert abs(tenure["owner_occupied"] / total - 0.57) < 0.03
    assert abs(tenure["social_rent"] / total - 0.29) < 0.03
    deregistered = sum(bool(r["deregistered_on"]) for r in brp) / len(brp)
    assert 0.005 <= deregistered <= 0.02
    truth = result["benefits"]["truth"]
    for scheme in ("zorgtoeslag", "huurtoeslag", "kindgebonden_budget"):
        share = truth[scheme]["eligible_not_receiving"] / truth[scheme]["eligible"]
        assert 0.06 <= share <= 0.15, scheme
    insured = {
        r["bsn"]
        for r in good_rows(result, "health_insurance")
        if not r["insured_to"] or r["insured_to"] > REF.isoformat()
    }
    registered = [r["bsn"] for r in brp if not r["deregistered_on"]]
    uninsured = sum(b not in insured for b in registered) / len(registered)
    assert uninsured < 0.01  # 0.1-0.3% uninsured plus rows lost to bad-row injection
    arrears_households = {r["bsn"] for r in good_rows(result, "arrears")}
    assert 0.005 <= len(arrears_households) / len(households) <= 0.06


# --- write_manifest helper ------------------------------------------------------------


def test_write_manifest_for_a_hand_made_file(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes(b"\xef\xbb\xbfbsn,objected_on,scope\r\n111222333,2025-01-02,all\r\n")
    manifest = write_manifest(tmp_path, "objections", "2025-07-01", "data.csv", 1)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert tuple(on_disk) == MANIFEST_KEYS
    assert on_disk["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert on_disk["row_count"] == 1 and on_disk["reference_date"] == "2025-07-01"
    custom = write_manifest(
        tmp_path,
        "objections",
        REF,
        data,
        1,
        supplier_oin="12345678901234567890",
        extracted_at="2025-07-02T03:00:00+00:00",
    )
    assert custom["supplier_oin"] == "12345678901234567890"
    assert custom["extracted_at"] == "2025-07-02T03:00:00+00:00"
    with pytest.raises(ValueError, match="20 digits"):
        write_manifest(tmp_path, "objections", REF, data, 1, supplier_oin="123")
    with pytest.raises(ValueError, match="unknown source"):
        write_manifest(tmp_path, "nope", REF, data, 1)
