"""Reading and validating raw deliveries: refusals name file and cause; rows are accounted for."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_delivery, write_manifest

from pipelines.contract import SOURCES, bsn_is_valid
from pipelines.read_deliveries import DeliveryRefused, open_delivery, validate_delivery

OBJ_HEADER = ["bsn", "objected_on", "scope"]
GOOD = ["111222333", "2024-03-01", "all"]


def _collect(delivery):
    valid, quarantine = [], []
    counts = validate_delivery(delivery, valid.append, quarantine.append)
    q = pa.Table.from_batches(quarantine) if quarantine else None
    return counts, valid, q


@pytest.mark.parametrize(
    "value, ok",
    [
        ("111222333", True),
        ("123456782", True),
        ("123456789", False),
        ("000000000", False),
        ("11122233", False),
        ("1112223334", False),
        ("11122233a", False),
    ],
)
def test_the_eleven_proef_accepts_only_nine_digits_with_a_valid_check(value, ok):
    assert bsn_is_valid(value) is ok


def test_a_delivery_without_manifest_is_refused_naming_the_manifest(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD], manifest=False)
    with pytest.raises(DeliveryRefused, match=r"manifest.json: manifest is missing"):
        open_delivery(folder)


def test_a_wrong_checksum_is_refused_naming_the_data_file(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD])
    (folder / "data.csv").write_text("bsn,objected_on,scope\n111222333,2024-03-02,all\n")
    with pytest.raises(DeliveryRefused, match=r"data.csv: checksum mismatch"):
        open_delivery(folder)


def test_a_missing_column_is_refused_naming_the_column(tmp_path):
    folder = write_delivery(tmp_path, "objections", ["bsn", "scope"], [["111222333", "all"]])
    with pytest.raises(
        DeliveryRefused, match=r"data.csv: missing required column\(s\) objected_on"
    ):
        _collect(open_delivery(folder))


def test_a_semicolon_separated_file_is_refused_with_that_diagnosis(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD], sep=";")
    with pytest.raises(DeliveryRefused, match=r"data.csv: .*semicolon-separated"):
        _collect(open_delivery(folder))


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    folder = write_delivery(
        tmp_path, "objections", OBJ_HEADER, [["111222333", "2024-03-01", "all"]], encoding="utf-16"
    )
    with pytest.raises(DeliveryRefused, match=r"data.csv: "):
        _collect(open_delivery(folder))


def test_a_row_count_that_differs_from_the_manifest_is_refused(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD], row_count=2)
    with pytest.raises(DeliveryRefused, match=r"row_count is 2 but the file has 1 data rows"):
        _collect(open_delivery(folder))


def test_an_unknown_schema_version_is_refused(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD])
    m = (
        (folder / "manifest.json")
        .read_text()
        .replace('"schema_version": "1"', '"schema_version": "2"')
    )
    (folder / "manifest.json").write_text(m)
    with pytest.raises(DeliveryRefused, match="schema_version '2' is not supported"):
        open_delivery(folder)


def test_bom_and_crlf_are_accepted(tmp_path):
    folder = write_delivery(tmp_path, "objections", OBJ_HEADER, [GOOD], bom=True, newline="\r\n")
    counts, valid, _ = _collect(open_delivery(folder))
    assert (counts.accepted, counts.quarantined) == (1, 0)
    assert valid[0].column("scope").to_pylist() == ["all"]


def test_bad_rows_are_quarantined_with_row_field_and_cause_and_nothing_is_lost(tmp_path):
    rows = [
        GOOD,  # 1 ok
        ["11122233", "2024-03-01", "all"],  # 2 leading zero lost
        ["123456789", "2024-03-01", "all"],  # 3 11-proef
        ["123456782", "2024-02-30", "all"],  # 4 impossible date
        ["123456782", "2024-03-01", "everything"],  # 5 unknown enum
        GOOD,  # 6 duplicate of row 1
        ["", "2024-03-01", "zorgtoeslag"],  # 7 empty bsn
        ["123456782", "2024-03-01", "zorgtoeslag"],  # 8 ok
    ]
    counts, valid, q = _collect(
        open_delivery(write_delivery(tmp_path, "objections", OBJ_HEADER, rows))
    )
    assert counts.accepted + counts.quarantined == counts.rows == 8
    assert counts.accepted == 2
    by_row = {r["row_number"]: r for r in q.to_pylist()}
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7]
    assert by_row[2]["field"] == "bsn" and "8 digits" in by_row[2]["cause"]
    assert "11-proef" in by_row[3]["cause"]
    assert by_row[4]["field"] == "objected_on"
    assert by_row[4]["cause"] == "objected_on: is not a date (YYYY-MM-DD)"
    assert by_row[5]["cause"].startswith("scope: is not one of: all, zorgtoeslag, ")
    assert "duplicate (bsn, scope) of row 1" == by_row[6]["cause"]
    assert "empty but required" in by_row[7]["cause"]
    # A quarantine cause never quotes a value: neither an identifier nor anything else.
    causes = " ".join(r["cause"] for r in by_row.values())
    assert not any(v in causes for v in ("1112223", "2024-02-30", "everything"))


def test_money_and_counts_are_typed_and_negative_amounts_quarantined(tmp_path):
    header = list(SOURCES["arrears"].column_names)
    rows = [
        ["111222333", "energy", "C1", "120.50", "3", "2024-12-01"],
        ["123456782", "water", "C2", "-5.00", "1", "2024-12-01"],
        ["123456782", "water", "C3", "5.001", "1", "2024-12-01"],
    ]
    counts, valid, q = _collect(open_delivery(write_delivery(tmp_path, "arrears", header, rows)))
    assert counts.accepted == 1
    assert str(valid[0].column("amount_overdue")[0].as_py()) == "120.50"
    assert valid[0].schema.field("months_overdue").type == pa.int64()
    causes = q.column("cause").to_pylist()
    assert causes[0] == "amount_overdue: is negative"
    assert "is not a valid decimal" in causes[1]


def test_parquet_deliveries_are_read_with_natural_types(tmp_path):
    folder = tmp_path / "tax" / "2025-01-01"
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "bsn": ["111222333", "11122233"],
            "year": pa.array([2023, 2023], pa.int64()),
            "assessed_income": pa.array([25000, 1], pa.decimal128(14, 2)),
            "assets": pa.array([0, 0], pa.decimal128(14, 2)),
            "assessment_status": ["definitive", "provisional"],
        }
    )
    pq.write_table(table, folder / "data.parquet")
    write_manifest(folder, "tax", "2025-01-01", (folder / "data.parquet").read_bytes(), 2)
    counts, valid, q = _collect(open_delivery(folder))
    assert (counts.accepted, counts.quarantined) == (1, 1)
    assert q.column("row_number").to_pylist() == [2]


def test_the_central_reader_refuses_a_delivery_under_another_source_name(tmp_path):
    # The name tags the rows and picks the schema they are read with: a mix-up must not
    # read one body's file as another's.
    from pipelines.read_deliveries import Delivery, ReadDeliveries
    from privacy.keys import Keyring
    from privacy.pseudonyms import DomainPseudonymiser

    delivery = Delivery(SOURCES["objections"], tmp_path, tmp_path / "data.parquet", {})
    domain = DomainPseudonymiser(Keyring().add("domain", "test"))
    with pytest.raises(ValueError, match="delivery of 'objections' given as 'tax'"):
        ReadDeliveries({"tax": delivery}, domain)
    ReadDeliveries({"objections": delivery}, domain)  # its own name: accepted


def test_an_impossible_income_year_is_quarantined(tmp_path):
    """A sign error or a typo in tax.year (-5, 202) is a bad row, not an income year."""
    header = list(SOURCES["tax"].column_names)
    rows = [
        ["111222333", "2023", "20000.00", "0.00", "definitive"],
        ["123456782", "-5", "20000.00", "0.00", "definitive"],
        ["111222333", "202", "20000.00", "0.00", "definitive"],
    ]
    counts, valid, q = _collect(open_delivery(write_delivery(tmp_path, "tax", header, rows)))
    assert (counts.accepted, counts.quarantined) == (1, 2)
    assert q.column("cause").to_pylist() == ["year: is before 1900"] * 2
    assert valid[0].column("year").to_pylist() == [2023]
