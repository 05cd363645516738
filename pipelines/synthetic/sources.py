"""Arrow tables, one per supplying body, in exactly the contract's columns and order.

Each builder turns the population's arrays into a table with natural types (string,
date32, int64, decimal128(14,2)). The brp table also yields a mask of rows that bad-row
injection must leave alone (heads and partners of multi-person households), so corrupted
rows never leave a good household without its head or a partner without its partner.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.contract import BENEFIT_SCHEMES, DATE, DECIMAL, INT, SOURCES

from . import stats as S
from .arrowutil import MONEY, dates, digit_strings, euros, ints, pick_strings
from .demography import HEAD, PARTNER, ROLES, Population
from .economy import income_index
from .living import SOCIAL, TENURES
from .registers import ENERGY, HEALTH, HOUSING, SCOPES, SECTORS

STATUSES = ("definitive", "provisional", "estimated")
NATURAL_TYPES = {DATE: pa.date32(), INT: pa.int64(), DECIMAL: MONEY}


def natural_schema(source: str) -> pa.Schema:
    """The Parquet (natural-type) schema of a source: string unless date, int or decimal."""
    return pa.schema(
        [pa.field(c.name, NATURAL_TYPES.get(c.kind, pa.string())) for c in SOURCES[source].columns]
    )


def build_tables(pop: Population, rng: np.random.Generator) -> dict[str, tuple[pa.Table, object]]:
    """source -> (table, protected row mask or None)."""
    ids = _identifiers(pop)
    return {
        "brp": _brp(pop, ids),
        "tax": (_tax(pop, ids, rng), None),
        "benefits": (_benefits(pop, ids), None),
        "housing": (_housing(pop, ids), None),
        "arrears": (_arrears(pop, ids), None),
        "health_insurance": (_health_insurance(pop, ids), None),
        "objections": (_objections(pop, ids), None),
    }


def _table(source: str, columns: dict[str, pa.Array]) -> pa.Table:
    schema = natural_schema(source)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _identifiers(pop: Population) -> dict[str, pa.Array]:
    landlord = pop.extra["landlord"]
    corp = digit_strings(np.maximum(landlord, 0), 4, prefix="L")
    private = digit_strings(np.maximum(landlord - 10_000, 0), 5, prefix="PV")
    tenure = pop.extra["tenure"]
    codes = np.where(landlord < 0, -1, np.where(tenure == SOCIAL, 0, 1))
    landlord_ids = _choose(codes, [corp, private])
    return {
        "bsn": digit_strings(pop.p_bsn, 9),
        "address": digit_strings(pop.h_address, 16),
        "landlord": landlord_ids,
        "insurer": pa.array([code for code, _ in S.INSURERS], pa.string()),
    }


def _choose(codes: np.ndarray, options: list[pa.Array]) -> pa.Array:
    """Row i from options[codes[i]]; code -1 gives null."""
    stacked = pa.concat_arrays(options)
    n = len(codes)
    index = np.where(codes < 0, 0, codes * n + np.arange(n))
    return stacked.take(pa.array(index, mask=codes < 0))


def _nullable_dates(values: np.ndarray) -> pa.Array:
    valid = ~np.isnat(values)
    return dates(np.where(valid, values, np.datetime64("1970-01-01", "D")), valid)


def _brp(pop: Population, ids) -> tuple[pa.Table, np.ndarray]:
    bsn = ids["bsn"]
    partner = pop.p_partner
    district_codes, district_index = _districts(pop)
    table = _table(
        "brp",
        {
            "bsn": bsn,
            "birth_date": dates(pop.p_birth),
            "household_id": digit_strings(pop.h_id, 10, prefix="HH").take(pa.array(pop.p_hh)),
            "role": pick_strings(ROLES, pop.p_role),
            "partner_bsn": bsn.take(pa.array(np.maximum(partner, 0), mask=partner < 0)),
            "address_id": ids["address"].take(pa.array(pop.p_hh)),
            "municipality_code": pick_strings(
                tuple(m for m, _, _ in S.MUNICIPALITIES), pop.h_municipality[pop.p_hh]
            ),
            "district_code": pick_strings(district_codes, district_index[pop.p_hh]),
            "registered_since": dates(pop.extra["registered_since"]),
            "deregistered_on": _nullable_dates(pop.extra["deregistered_on"]),
        },
    )
    protected = np.isin(pop.p_role, (HEAD, PARTNER)) & (pop.h_size[pop.p_hh] > 1)
    return table, protected


def _districts(pop: Population):
    codes, offsets = [], []
    for code, _, n_districts in S.MUNICIPALITIES:
        offsets.append(len(codes))
        codes.extend(f"WK{code[2:]}{d:02d}" for d in range(1, n_districts + 1))
    return tuple(codes), np.array(offsets)[pop.h_municipality] + pop.h_district - 1


def _tax(pop: Population, ids, rng) -> pa.Table:
    x = pop.extra
    person = np.flatnonzero(x["adult"] & x["tax_record"])
    older = person[x["tax_older"][person]]
    rows = np.concatenate([person, older])
    newest = np.concatenate([np.ones(len(person), bool), np.zeros(len(older), bool)])
    year = np.where(newest, x["tax_year"][rows], x["tax_year"][rows] - 1)
    noise = np.where(newest, 1.0, np.exp(rng.normal(0, 0.12, len(rows))))
    income = np.round(x["income_2022"][rows] * income_index(year) * noise)
    assets = np.round(
        x["assets"][rows] * np.where(newest, 1.0, np.exp(rng.normal(0, 0.1, len(rows))))
    )
    status = np.where(newest, x["tax_status"][rows], x["tax_older_status"][rows])
    order = np.lexsort((year, rows))  # per person, oldest year first
    rows, year, income, assets, status = (a[order] for a in (rows, year, income, assets, status))
    return _table(
        "tax",
        {
            "bsn": ids["bsn"].take(pa.array(rows)),
            "year": ints(year),
            "assessed_income": euros(income),
            "assets": euros(assets),
            "assessment_status": pick_strings(STATUSES, status),
        },
    )


def _benefits(pop: Population, ids) -> pa.Table:
    b = pop.extra["benefits"]
    return _table(
        "benefits",
        {
            "bsn": ids["bsn"].take(pa.array(b["person"])),
            "scheme": pick_strings(BENEFIT_SCHEMES, b["scheme"]),
            "monthly_amount": euros(b["amount"]),
            "start_date": dates(b["start"]),
            "end_date": _nullable_dates(b["end"]),
        },
    )


def _housing(pop: Population, ids) -> pa.Table:
    x = pop.extra
    renter = ~np.isnan(x["rent"])
    return _table(
        "housing",
        {
            "address_id": ids["address"],
            "tenure": pick_strings(TENURES, x["tenure"]),
            "monthly_rent": euros(np.nan_to_num(x["rent"]), renter),
            "service_costs": euros(np.nan_to_num(x["service"]), renter),
            "landlord_id": ids["landlord"],
            "contract_start": dates(x["move_in"], renter),
        },
    )


def _arrears(pop: Population, ids) -> pa.Table:
    a = pop.extra["arrears"]
    n = len(a["person"])
    sector = a["sector"]
    insurer = ids["insurer"].take(pa.array(pop.extra["insurer"][a["person"]]))
    landlord = ids["landlord"].take(pa.array(a["household"]))
    energy = digit_strings(a["energy_supplier"], 2, prefix="EN")
    water = digit_strings(pop.h_municipality[a["household"]] + 1, 2, prefix="DW")
    code = np.select([sector == HEALTH, sector == HOUSING, sector == ENERGY], [0, 1, 2], 3)
    creditor = pa.concat_arrays([insurer, landlord, energy, water]).take(
        pa.array(code * n + np.arange(n))
    )
    return _table(
        "arrears",
        {
            "bsn": ids["bsn"].take(pa.array(a["person"])),
            "creditor_sector": pick_strings(SECTORS, sector),
            "creditor_id": creditor,
            "amount_overdue": euros(a["amount"]),
            "months_overdue": ints(a["months"]),
            "reported_on": dates(a["reported_on"]),
        },
    )


def _health_insurance(pop: Population, ids) -> pa.Table:
    x = pop.extra
    current = np.flatnonzero(x["has_policy"])
    previous = np.flatnonzero(x["prev_policy"])
    person = np.concatenate([current, previous])
    insurer = np.concatenate([x["insurer"][current], x["prev_insurer"][previous]])
    start = np.concatenate([x["insured_from"][current], x["prev_from"][previous]])
    end = np.concatenate([x["insured_to"][current], x["prev_to"][previous]])
    order = np.lexsort((start.astype(np.int64), person))
    person, insurer, start, end = (a[order] for a in (person, insurer, start, end))
    return _table(
        "health_insurance",
        {
            "bsn": ids["bsn"].take(pa.array(person)),
            "insurer_id": ids["insurer"].take(pa.array(insurer)),
            "insured_from": dates(start),
            "insured_to": _nullable_dates(end),
        },
    )


def _objections(pop: Population, ids) -> pa.Table:
    o = pop.extra["objections"]
    return _table(
        "objections",
        {
            "bsn": ids["bsn"].take(pa.array(o["person"])),
            "objected_on": dates(o["objected_on"]),
            "scope": pick_strings(SCOPES, o["scope"]),
        },
    )
