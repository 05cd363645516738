"""Minimisation at the body: only needed fields leave, birth dates leave as ages."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_delivery
from population import B

from pipelines.contract import SOURCES
from pipelines.read_deliveries import DeliveryRefused, open_pseudonymised, sha256_of
from privacy.minimise import allowed_fields, needed_fields, pseudonymised_schema
from privacy.pseudonymise import pseudonymise_delivery


def _brp(bsn: str, born: str) -> list[str]:
    return [bsn, born, "H1", "head", "", "0344010000000001", "GM0344", "WK034401", "2000-01-01", ""]


@pytest.mark.parametrize(
    "source, dropped",
    [
        ("brp", ["birth_date"]),
        ("housing", ["landlord_id", "contract_start"]),
        ("health_insurance", ["insurer_id"]),
        ("tax", []),
        ("objections", []),
    ],
)
def test_fields_the_purpose_does_not_need_never_leave_the_body(source, dropped):
    schema = pseudonymised_schema(SOURCES[source])
    assert [n for n in SOURCES[source].column_names if n not in schema.names] == dropped
    assert set(allowed_fields(source)) == set(needed_fields(SOURCES[source]))


@pytest.mark.parametrize(
    "reference_date, born, age",
    [
        ("2025-01-01", "2007-06-01", 17),
        ("2025-06-01", "2007-06-01", 18),  # the birthday itself counts
        ("2025-05-31", "2007-06-01", 17),
        ("2025-02-28", "2004-02-29", 21),  # as DuckDB's date_sub, which the join used before
    ],
)
def test_the_birth_date_leaves_as_the_age_at_the_deliverys_reference_date(
    tmp_path, keyring, reference_date, born, age
):
    header = list(SOURCES["brp"].column_names)
    raw = write_delivery(tmp_path / "raw", "brp", header, [_brp(B[0], born)], reference_date)
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    table = pq.read_table(result.directory / "data.parquet")
    assert "birth_date" not in table.column_names
    assert table.column("age").to_pylist() == [age]
    assert table.schema.field("age").type == pa.int32()
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["minimised"]["dropped"] == []  # coarsened, not dropped
    assert manifest["minimised"]["coarsened"]["birth_date"].startswith("age: ")
    assert reference_date in manifest["minimised"]["coarsened"]["birth_date"]


def test_the_central_run_refuses_a_delivery_with_a_field_the_purpose_does_not_allow(
    tmp_path, keyring
):
    header = list(SOURCES["brp"].column_names)
    raw = write_delivery(tmp_path / "raw", "brp", header, [_brp(B[0], "1980-01-01")])
    result = pseudonymise_delivery(raw, keyring, tmp_path / "pseudo")
    data = result.directory / "data.parquet"
    table = pq.read_table(data)
    pq.write_table(table.append_column("birth_date", pa.array(["1980-01-01"])), data)
    manifest_path = result.directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = sha256_of(data)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DeliveryRefused, match="carries column.s. birth_date that the purpose"):
        open_pseudonymised(result.directory, "brp")


def _activity():
    from privacy.register import load_register

    return load_register().activity("proactive-entitlement-signalling")


def test_a_field_the_register_allows_only_for_schemes_not_evaluated_is_withheld():
    from privacy.minimise import withheld_fields

    every = {"aio", "huurtoeslag", "kindgebonden_budget", "kwijtschelding", "zorgtoeslag"}
    assert withheld_fields(_activity(), every) == {}
    without = withheld_fields(_activity(), every - {"huurtoeslag"})
    assert sorted(without) == ["housing.monthly_rent", "housing.service_costs"]
    assert without["housing.monthly_rent"] == (
        "allowed for huurtoeslag only, which this run does not evaluate"
    )
    # The tenure is allowed for kwijtschelding too: withheld only when neither is evaluated.
    assert "housing.tenure" in withheld_fields(_activity(), {"zorgtoeslag"})


def test_join_keys_and_selection_dates_are_never_withheld():
    """Were the register to tie them to a scheme, blanking them would lose every row."""
    import dataclasses

    from privacy.minimise import withheld_fields

    activity = _activity()
    brp = activity.sources["brp"]
    tied = {n: dataclasses.replace(r, schemes=("huurtoeslag",)) for n, r in brp.fields.items()}
    changed = dataclasses.replace(
        activity, sources={**activity.sources, "brp": dataclasses.replace(brp, fields=tied)}
    )
    withheld = withheld_fields(changed, {"zorgtoeslag"})
    brp_withheld = {w.split(".", 1)[1] for w in withheld if w.startswith("brp.")}
    keys = {c.name for c in SOURCES["brp"].columns if c.is_identifier}
    assert brp_withheld, "some brp field should be withheld in this made-up register"
    assert not brp_withheld & (keys | {"registered_since"})
