"""Keyring, pseudonyms and the body-side pseudonymise step, on real files."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_delivery

from pipelines.contract import SOURCES
from pipelines.read_deliveries import DeliveryRefused, open_pseudonymised
from privacy.keys import Keyring, KeyringError, load_keyring, save_keyring
from privacy.pseudonymise import pseudonymise_delivery
from privacy.pseudonyms import PSEUDONYM, Pseudonymiser

BRP_HEADER = list(SOURCES["brp"].column_names)


def _brp_row(bsn, partner="", household="H1", role="head"):
    return [
        bsn,
        "1980-05-01",
        household,
        role,
        partner,
        "0344010000000001",
        "GM0344",
        "WK034401",
        "2000-01-01",
        "",
    ]


def test_a_keyring_round_trips_and_never_shows_material(tmp_path, passphrase):
    ring = Keyring()
    key = ring.add("body")
    save_keyring(ring, tmp_path / "k", passphrase)
    loaded = load_keyring(tmp_path / "k", passphrase)
    assert loaded.active("body").material == key.material
    assert key.material.hex() not in (tmp_path / "k").read_text()
    assert "material" not in json.dumps(loaded.active("body").public_view())
    assert key.material.hex() not in repr(key)


def test_a_wrong_passphrase_is_a_clear_error(tmp_path, passphrase):
    ring = Keyring()
    ring.add("body")
    save_keyring(ring, tmp_path / "k", passphrase)
    with pytest.raises(KeyringError, match="wrong passphrase, or the file was altered"):
        load_keyring(tmp_path / "k", "not the passphrase")


def test_a_corrupted_or_missing_keyring_is_a_clear_error(tmp_path, passphrase):
    ring = Keyring()
    ring.add("body")
    save_keyring(ring, tmp_path / "k", passphrase)
    doc = json.loads((tmp_path / "k").read_text())
    doc["ciphertext"] = doc["ciphertext"][:-8] + "AAAAAAA="
    (tmp_path / "k").write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="cannot decrypt"):
        load_keyring(tmp_path / "k", passphrase)
    (tmp_path / "k").write_text("{not json")
    with pytest.raises(KeyringError, match="damaged"):
        load_keyring(tmp_path / "k", passphrase)
    with pytest.raises(KeyringError, match="not found"):
        load_keyring(tmp_path / "missing", passphrase)


def test_pseudonyms_are_stable_per_key_and_differ_across_keys_and_kinds():
    ring = Keyring()
    a, b = Pseudonymiser(ring.add("body")), Pseudonymiser(ring.add("body"))
    assert a.one("bsn", "111222333") == a.one("bsn", "111222333")
    assert a.one("bsn", "111222333") != b.one("bsn", "111222333")
    assert a.one("bsn", "111222333") != a.one("address_id", "111222333")
    assert PSEUDONYM.match(a.one("bsn", "111222333"))
    arr = a.array("bsn", pa.array(["111222333", None, "111222333"]))
    assert arr[0].as_py() == a.one("bsn", "111222333") and arr[1].as_py() is None
    assert arr[0] == arr[2]


def test_pseudonymise_writes_a_checked_delivery_without_any_bsn(tmp_path, keyring):
    rows = [
        _brp_row("111222333", partner="123456782"),
        _brp_row("123456782", partner="111222333", role="partner"),
        _brp_row("12345678"),  # leading zero lost: quarantined
    ]
    raw = write_delivery(tmp_path / "raw", "brp", BRP_HEADER, rows)
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    assert (result.rows, result.accepted, result.quarantined) == (3, 2, 1)
    delivery = open_pseudonymised(result.directory, "brp")
    data = pq.read_table(delivery.data_path)
    assert data.column("partner_bsn")[0] == data.column("bsn")[1]
    for name in ("bsn", "partner_bsn", "household_id", "address_id"):
        assert all(PSEUDONYM.match(v) for v in data.column(name).to_pylist())
    for path in result.directory.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            assert not re.search(r"111222333|123456782|12345678", text), path


def test_columns_outside_the_contract_are_left_out_on_record_and_the_output_is_owner_only(
    tmp_path, keyring, capsys
):
    """A body that sends more than the contract (here protected attributes) is told so: the
    columns are never read nor passed on, and the manifest records them for the DPO."""
    import stat

    from flows.cli import main

    header = BRP_HEADER + ["nationality", "gender"]
    rows = [_brp_row("111222333") + ["NL", "F"], _brp_row("123456782") + ["TR", "M"]]
    raw = write_delivery(tmp_path / "raw", "brp", header, rows)
    keyring_file = tmp_path / "body.keyring"
    save_keyring(keyring, keyring_file, "correct horse battery staple")
    out = tmp_path / "pseudo"
    argv = ["pseudonymise", "--delivery", str(raw), "--key-file", str(keyring_file)]
    assert main(argv + ["--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "column(s) nationality, gender are not in the delivery contract" in err
    (folder,) = (out / "brp").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["minimised"]["not_read"] == ["nationality", "gender"]
    assert not {"nationality", "gender"} & set(pq.read_schema(folder / "data.parquet").names)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_central_side_refuses_a_raw_delivery(tmp_path):
    raw = write_delivery(tmp_path, "brp", BRP_HEADER, [_brp_row("111222333")])
    with pytest.raises(DeliveryRefused, match="not pseudonymised"):
        open_pseudonymised(raw, "brp")


OBJECTIONS_HEADER = list(SOURCES["objections"].column_names)


def _objections(tmp_path, keyring):
    rows = [
        ["111222333", "2024-05-01", "all"],
        ["123456782", "2024-05-01", "zorgtoeslagg"],  # scope misspelt: quarantined
        ["123456782", "2024-13-01", "all"],  # the same person, a month 13: quarantined
        ["12345678", "2024-05-01", "all"],  # leading zero lost: nobody to name
        ["111222333", "2024-05-01", "all"],  # a copy: quarantined, its first row accepted
    ]
    raw = write_delivery(tmp_path / "raw", "objections", OBJECTIONS_HEADER, rows)
    return pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")


def test_the_persons_of_quarantined_objection_rows_are_named_where_known(tmp_path, keyring):
    result = _objections(tmp_path, keyring)
    assert (result.accepted, result.quarantined) == (1, 4)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    record = manifest["quarantined_objectors"]
    objectors = pq.read_table(result.directory / record["file"])
    # Once each, as body pseudonyms, and only where the BSN is one.
    assert objectors.column("bsn").to_pylist() == [
        Pseudonymiser(keyring.active("body")).one("bsn", "123456782")
    ]
    assert record["row_count"] == 1
    delivery = open_pseudonymised(result.directory, "objections")
    assert delivery.manifest["quarantined_objectors"] == record


def test_a_quarantined_register_row_names_its_household_and_other_sources_nobody(tmp_path, keyring):
    rows = [_brp_row("111222333", household="H1"), _brp_row("12345678", household="H2")]
    raw = write_delivery(tmp_path / "raw", "brp", BRP_HEADER, rows)
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    record = json.loads((result.directory / "manifest.json").read_text())["quarantined_households"]
    named = pq.read_table(result.directory / record["file"]).column("household_id")
    assert named.to_pylist() == [Pseudonymiser(keyring.active("body")).one("household_id", "H2")]
    header = list(SOURCES["arrears"].column_names)
    arrears = [["123456782", "energy", "ENECO", "420.00", "3", "2024-02-30"]]
    raw = write_delivery(tmp_path / "raw", "arrears", header, arrears)
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    assert result.quarantined == 1
    assert sorted(p.name for p in result.directory.iterdir()) == [
        "data.parquet",
        "manifest.json",
        "quarantine.parquet",
    ]


def test_quarantined_benefits_rows_name_their_persons_where_known(tmp_path, keyring):
    rows = [
        ["111222333", "zorgtoeslag", "150.00", "2024-02-30", ""],  # no such date
        ["123456782", "huurtoeslag", "-1.00", "2024-01-01", ""],  # a negative amount
        ["123456782", "zorgtoeslag", "150.00", "2024-01-01", ""],  # accepted
        ["12345678", "zorgtoeslag", "150.00", "2024-01-01", ""],  # leading zero lost: nobody
    ]
    header = list(SOURCES["benefits"].column_names)
    raw = write_delivery(tmp_path / "raw", "benefits", header, rows)
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    assert (result.accepted, result.quarantined) == (1, 3)
    record = json.loads((result.directory / "manifest.json").read_text())["quarantined_recipients"]
    named = pq.read_table(result.directory / record["file"]).column("bsn").to_pylist()
    body = Pseudonymiser(keyring.active("body"))
    assert named == sorted(body.one("bsn", b) for b in ("111222333", "123456782"))


def test_objections_that_do_not_say_whose_rows_were_quarantined_are_refused(tmp_path, keyring):
    # As made before the persons were named: the run would process those objectors.
    result = _objections(tmp_path, keyring)
    where = result.directory / "manifest.json"
    manifest = json.loads(where.read_text())
    record = manifest.pop("quarantined_objectors")
    where.write_text(json.dumps(manifest))
    with pytest.raises(DeliveryRefused, match="4 objections row.* quarantined .* older"):
        open_pseudonymised(result.directory, "objections")
    # An altered list of objectors is refused too.
    where.write_text(json.dumps(manifest | {"quarantined_objectors": record}))
    pq.write_table(pa.table({"bsn": pa.array([], pa.string())}), result.directory / record["file"])
    with pytest.raises(DeliveryRefused, match="checksum does not match"):
        open_pseudonymised(result.directory, "objections")


def test_a_damaged_parquet_file_whose_checksum_matches_is_refused_naming_it(tmp_path, keyring):
    """A body that wrote a broken file wrote its checksum too: the file is named, not a
    traceback from the Parquet reader."""
    import hashlib

    result = _objections(tmp_path, keyring)
    where = result.directory / "manifest.json"
    manifest = json.loads(where.read_text())
    data = result.directory / "data.parquet"
    data.write_bytes(data.read_bytes()[:200])
    manifest["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    where.write_text(json.dumps(manifest))
    with pytest.raises(DeliveryRefused, match=rf"{re.escape(str(data))}: not a readable Parquet"):
        open_pseudonymised(result.directory, "objections")
