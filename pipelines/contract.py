"""The delivery contract: what each supplying body hands over, column by column.

Written from the bodies' contract (SOURCES.md, schema_version "1"). The generator
writes exactly this, ingestion accepts exactly this, and the pseudonymised
deliveries keep the same columns with identifiers replaced by pseudonyms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCHEMA_VERSION = "1"

BENEFIT_SCHEMES = (
    "zorgtoeslag",
    "huurtoeslag",
    "kindgebonden_budget",
    "kinderopvangtoeslag",
    "kinderbijslag",
    "bijstand",
    "aow",
    "aio",
    "ww",
    "kwijtschelding",
)

MANIFEST_KEYS = (
    "source",
    "supplier_oin",
    "reference_date",
    "extracted_at",
    "schema_version",
    "row_count",
    "sha256",
)

STRING, DATE, INT, DECIMAL, ENUM, BSN, ADDRESS_ID, HOUSEHOLD_ID = (
    "string",
    "date",
    "int",
    "decimal",
    "enum",
    "bsn",
    "address_id",
    "household_id",
)
# Identifier kinds: pseudonymisation replaces these, and the pseudonym's HMAC input names the kind.
IDENTIFIER_KINDS = (BSN, ADDRESS_ID, HOUSEHOLD_ID)


@dataclass(frozen=True)
class Column:
    """One column of a source: its kind, whether it may be empty, allowed values."""

    name: str
    kind: str
    nullable: bool = False
    values: tuple[str, ...] = ()
    non_negative: bool = False
    min_value: int | None = None  # an INT column's smallest sensible value

    @property
    def is_identifier(self) -> bool:
        return self.kind in IDENTIFIER_KINDS


@dataclass(frozen=True)
class Source:
    """A source: its name, who supplies it, and its columns in delivery order."""

    name: str
    supplier: str
    columns: tuple[Column, ...]
    # Column whose pseudonym is the subject of the record (for audit and objections).
    # The natural key: a second row with the same key is a duplicate and is quarantined.
    key: tuple[str, ...] = ("bsn",)
    subject: str = "bsn"
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"source {self.name!r} has no column {name!r}")

    @property
    def identifier_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_identifier)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "brp",
            "municipality (Basisregistratie Personen)",
            (
                Column("bsn", BSN),
                Column("birth_date", DATE),
                Column("household_id", HOUSEHOLD_ID),
                Column("role", ENUM, values=("head", "partner", "child", "other")),
                Column("partner_bsn", BSN, nullable=True),
                Column("address_id", ADDRESS_ID),
                Column("municipality_code", STRING),
                Column("district_code", STRING),
                Column("registered_since", DATE),
                Column("deregistered_on", DATE, nullable=True),
            ),
        ),
        Source(
            "tax",
            "Belastingdienst (assessed income and assets)",
            (
                Column("bsn", BSN),
                # No income assessment predates 1900: the bound catches a sign error or a
                # typo (-5, 202), not old data.
                Column("year", INT, min_value=1900),
                Column("assessed_income", DECIMAL),
                Column("assets", DECIMAL, non_negative=True),
                Column(
                    "assessment_status", ENUM, values=("definitive", "provisional", "estimated")
                ),
            ),
            key=("bsn", "year"),
        ),
        Source(
            "benefits",
            "Dienst Toeslagen, UWV, SVB (benefits being paid)",
            (
                Column("bsn", BSN),
                Column("scheme", ENUM, values=BENEFIT_SCHEMES),
                Column("monthly_amount", DECIMAL, non_negative=True),
                Column("start_date", DATE),
                Column("end_date", DATE, nullable=True),
            ),
            key=("bsn", "scheme", "start_date"),
        ),
        Source(
            "housing",
            "housing corporations and registered landlords",
            (
                Column("address_id", ADDRESS_ID),
                Column("tenure", ENUM, values=("social_rent", "private_rent", "owner_occupied")),
                Column("monthly_rent", DECIMAL, nullable=True, non_negative=True),
                Column("service_costs", DECIMAL, nullable=True, non_negative=True),
                Column("landlord_id", STRING, nullable=True),
                Column("contract_start", DATE, nullable=True),
            ),
            key=("address_id",),
            subject="address_id",
        ),
        Source(
            "arrears",
            "creditors (vroegsignalering, Wet gemeentelijke schuldhulpverlening)",
            (
                Column("bsn", BSN),
                Column(
                    "creditor_sector",
                    ENUM,
                    values=("housing", "energy", "water", "health_insurance"),
                ),
                Column("creditor_id", STRING),
                Column("amount_overdue", DECIMAL, non_negative=True),
                Column("months_overdue", INT, non_negative=True),
                Column("reported_on", DATE),
            ),
            key=("bsn", "creditor_id", "reported_on"),
        ),
        Source(
            "health_insurance",
            "health insurers (Zorgverzekeringswet registration)",
            (
                Column("bsn", BSN),
                Column("insurer_id", STRING),
                Column("insured_from", DATE),
                Column("insured_to", DATE, nullable=True),
            ),
            key=("bsn", "insured_from"),
        ),
        Source(
            "objections",
            "municipality (register of objections, opt-out)",
            (
                Column("bsn", BSN),
                Column("objected_on", DATE),
                Column("scope", ENUM, values=("all",) + BENEFIT_SCHEMES),
            ),
            key=("bsn", "scope"),
        ),
    )
}

_OIN = re.compile(r"^\d{20}$")
_ADDRESS_ID = re.compile(r"^\d{16}$")


def bsn_is_valid(value: str) -> bool:
    """True for exactly nine digits passing the 11-proef (weighted sum divisible by 11, not 0)."""
    if len(value) != 9 or not value.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(value[:8], range(9, 1, -1), strict=True))
    total -= int(value[8])
    return total % 11 == 0 and total != 0


def address_id_is_valid(value: str) -> bool:
    """True for a 16-digit BAG nummeraanduiding identifier."""
    return bool(_ADDRESS_ID.match(value))


def oin_is_valid(value: str) -> bool:
    """True for a 20-digit Organisatie-identificatienummer."""
    return bool(_OIN.match(value))
