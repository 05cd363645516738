"""The joined, minimised household table: one row per household at the reference date.

This is the contract between the join (which writes it) and the entitlement rules
(which read it). Every column names the source fields it is derived from, so that
lineage and legal basis can be traced per column (see the processing register).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MONEY = pa.decimal128(14, 2)


@dataclass(frozen=True)
class HouseholdColumn:
    name: str
    type: pa.DataType
    derived_from: tuple[str, ...]  # "source.field"
    meaning: str


COLUMNS: tuple[HouseholdColumn, ...] = (
    HouseholdColumn(
        "household_pid", pa.string(), ("brp.household_id",), "pseudonym of the household"
    ),
    HouseholdColumn(
        "applicant_pid",
        pa.string(),
        ("brp.bsn", "brp.role"),
        "pseudonym of the applicant: the head of the household",
    ),
    HouseholdColumn(
        "partner_pid",
        pa.string(),
        ("brp.bsn", "brp.role", "brp.partner_bsn"),
        "pseudonym of the toeslagpartner living at the same address, null if none",
    ),
    HouseholdColumn(
        "municipality_code",
        pa.string(),
        ("brp.municipality_code",),
        "CBS municipality code: selects municipal rule parameters",
    ),
    HouseholdColumn(
        "district_code",
        pa.string(),
        ("brp.district_code",),
        "CBS district code: for aggregate reports only, never a rule condition",
    ),
    HouseholdColumn("reference_date", pa.date32(), (), "the peildatum of the run"),
    HouseholdColumn(
        "applicant_age",
        pa.int32(),
        ("brp.birth_date",),
        "age of the applicant in whole years at the reference date",
    ),
    HouseholdColumn(
        "partner_age",
        pa.int32(),
        ("brp.birth_date",),
        "age of the partner at the reference date, null if none",
    ),
    HouseholdColumn(
        "has_partner",
        pa.bool_(),
        ("brp.role", "brp.partner_bsn"),
        "a toeslagpartner lives in the household",
    ),
    HouseholdColumn(
        "n_persons",
        pa.int32(),
        ("brp.household_id",),
        "registered, not deregistered members at the reference date",
    ),
    HouseholdColumn("n_adults", pa.int32(), ("brp.birth_date",), "members aged 18 or over"),
    HouseholdColumn(
        "n_children",
        pa.int32(),
        ("brp.birth_date", "brp.role"),
        "members with role child, under 18",
    ),
    HouseholdColumn(
        "children_ages",
        pa.list_(pa.int32()),
        ("brp.birth_date", "brp.role"),
        "ages of the children under 18, ascending",
    ),
    HouseholdColumn(
        "applicant_deregistered",
        pa.bool_(),
        ("brp.deregistered_on",),
        "the applicant is deregistered (death, emigration) on or before the reference date",
    ),
    HouseholdColumn(
        "applicant_insured",
        pa.bool_(),
        ("health_insurance.insured_from", "health_insurance.insured_to"),
        "the applicant is insured under the Zvw at the reference date",
    ),
    HouseholdColumn(
        "partner_insured",
        pa.bool_(),
        ("health_insurance.insured_from", "health_insurance.insured_to"),
        "the partner is insured at the reference date, null if no partner",
    ),
    HouseholdColumn(
        "income_year",
        pa.int32(),
        ("tax.year",),
        "the income year used: the newest year known for the applicant",
    ),
    HouseholdColumn(
        "income_status",
        pa.string(),
        ("tax.assessment_status",),
        "weakest status among applicant and partner: estimated < provisional < definitive",
    ),
    HouseholdColumn(
        "income_known",
        pa.bool_(),
        ("tax.year",),
        "an assessment exists for the applicant (and the partner, if any)",
    ),
    HouseholdColumn(
        "applicant_income",
        MONEY,
        ("tax.assessed_income",),
        "toetsingsinkomen of the applicant in income_year",
    ),
    HouseholdColumn(
        "partner_income",
        MONEY,
        ("tax.assessed_income",),
        "toetsingsinkomen of the partner in income_year, null if none",
    ),
    HouseholdColumn(
        "combined_income", MONEY, ("tax.assessed_income",), "applicant + partner toetsingsinkomen"
    ),
    HouseholdColumn(
        "household_income",
        MONEY,
        ("tax.assessed_income",),
        "toetsingsinkomen of all adult members (co-residents included)",
    ),
    HouseholdColumn("combined_assets", MONEY, ("tax.assets",), "applicant + partner vermogen"),
    HouseholdColumn("household_assets", MONEY, ("tax.assets",), "vermogen of all adult members"),
    HouseholdColumn(
        "receiving_schemes",
        pa.list_(pa.string()),
        ("benefits.scheme", "benefits.start_date", "benefits.end_date"),
        "schemes paid to the applicant or partner at the reference date, sorted",
    ),
    HouseholdColumn(
        "aow_monthly_amount",
        MONEY,
        ("benefits.scheme", "benefits.monthly_amount"),
        "AOW paid per month to applicant and partner together at the reference date",
    ),
    HouseholdColumn(
        "tenure",
        pa.string(),
        ("housing.tenure",),
        "social_rent, private_rent, owner_occupied; null if the address is unknown",
    ),
    HouseholdColumn("monthly_rent", MONEY, ("housing.monthly_rent",), "kale huur per month"),
    HouseholdColumn(
        "service_costs", MONEY, ("housing.service_costs",), "subsidisable service costs per month"
    ),
    HouseholdColumn(
        "arrears_count",
        pa.int32(),
        ("arrears.creditor_id",),
        "early debt signals reported for applicant or partner",
    ),
    HouseholdColumn("arrears_total", MONEY, ("arrears.amount_overdue",), "total amount overdue"),
    HouseholdColumn(
        "arrears_max_months", pa.int32(), ("arrears.months_overdue",), "longest arrears in months"
    ),
    HouseholdColumn(
        "arrears_sectors",
        pa.list_(pa.string()),
        ("arrears.creditor_sector",),
        "creditor sectors with arrears, sorted",
    ),
    HouseholdColumn(
        "objected_schemes",
        pa.list_(pa.string()),
        ("objections.scope",),
        "schemes the applicant or partner objected to (scope 'all' is excluded earlier)",
    ),
    HouseholdColumn(
        "member_pids",
        pa.list_(pa.string()),
        ("brp.bsn",),
        "pseudonyms of all members, for the per-subject audit trail",
    ),
)

SCHEMA = pa.schema([pa.field(c.name, c.type) for c in COLUMNS])
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
