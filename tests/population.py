"""A small hand-made population whose every household tests one condition.

Written as raw CSV deliveries exactly as the bodies deliver them. Reference date
2025-01-01, benefit year 2025. The expected outcome of each household is stated
next to it and derived by hand in the tests that use it.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path

from conftest import write_delivery

from pipelines.contract import SOURCES, bsn_is_valid

REFERENCE_DATE = "2025-01-01"


def valid_bsns(n: int, start: int = 100_000_000) -> list[str]:
    out = []
    for i in count(start):
        if bsn_is_valid(str(i)):
            out.append(str(i))
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


B = valid_bsns(40)

# household -> members (bsn, birth date, role); partners are linked both ways.
HOUSEHOLDS = {
    "H1": [(B[0], "1994-06-01", "head")],  # single, 30, income 20,000: signal
    "H2": [
        (B[1], "1984-03-01", "head"),
        (B[2], "1986-03-01", "partner"),
        (B[3], "2019-09-01", "child"),
    ],  # couple + child, already receiving zorgtoeslag
    "H3": [(B[4], "1970-01-01", "head"), (B[5], "1972-01-01", "partner")],  # partner objected
    "H4": [(B[6], "2007-06-01", "head")],  # 17 at the reference date
    "H5": [(B[7], "1990-01-01", "head")],  # not insured
    "H6": [(B[8], "1950-01-01", "head")],  # deregistered (died 2024-11-03)
    "H7": [(B[9], "1992-01-01", "head")],  # objected to zorgtoeslag only
    "H8": [(B[10], "1980-01-01", "head")],  # income above the limit
    "H9": [(B[11], "1980-01-01", "head")],  # assets above the limit
    "H10": [
        (B[12], "1960-01-01", "head")
    ],  # only an estimated 2023 income: signal, lower confidence
    "H11": [(B[13], "1985-01-01", "head"), (B[14], "1985-01-01", "partner")],  # couple: signal
}
PARTNERS = {B[1]: B[2], B[2]: B[1], B[4]: B[5], B[5]: B[4], B[13]: B[14], B[14]: B[13]}
# bsn -> (year, income, assets, status)
TAX = {
    B[0]: (2024, "20000.00", "1000.00", "definitive"),
    B[1]: (2024, "15000.00", "0.00", "definitive"),
    B[2]: (2024, "10000.00", "0.00", "definitive"),
    B[4]: (2024, "12000.00", "0.00", "definitive"),
    B[5]: (2024, "9000.00", "0.00", "definitive"),
    B[6]: (2024, "3000.00", "0.00", "definitive"),
    B[7]: (2024, "15000.00", "0.00", "definitive"),
    B[8]: (2024, "14000.00", "0.00", "definitive"),
    B[9]: (2024, "16000.00", "0.00", "definitive"),
    B[10]: (2024, "45000.00", "0.00", "definitive"),
    B[11]: (2024, "15000.00", "200000.00", "definitive"),
    B[12]: (2023, "31000.00", "5000.00", "estimated"),
    B[13]: (2024, "30000.00", "2000.00", "definitive"),
    B[14]: (2024, "12000.00", "3000.00", "definitive"),
}
UNINSURED = {B[7]}
DEREGISTERED = {B[8]: "2024-11-03"}
OBJECTIONS = [(B[5], "2024-05-01", "all"), (B[9], "2024-05-01", "zorgtoeslag")]
BENEFITS = [(B[1], "zorgtoeslag", "150.00", "2024-01-01", "")]
ARREARS = [(B[0], "energy", "ENECO", "420.00", "3", "2024-12-01")]

# Households expected to get a zorgtoeslag signal; amounts (and the signals of the other
# schemes) are computed by hand in tests/test_end_to_end.py from the statutory formulas.
SIGNALLED = {"H1", "H10", "H11"}


def address_of(household: str) -> str:
    return f"03440100{int(household[1:]):08d}"


def write_population(root: Path) -> Path:
    """Write all seven raw deliveries under root; returns root."""
    brp, hi, tax = [], [], []
    for hh, members in HOUSEHOLDS.items():
        for bsn, born, role in members:
            brp.append(
                [
                    bsn,
                    born,
                    hh,
                    role,
                    PARTNERS.get(bsn, ""),
                    address_of(hh),
                    "GM0344",
                    "WK034401",
                    "2000-01-01",
                    DEREGISTERED.get(bsn, ""),
                ]
            )
            if bsn not in UNINSURED:
                hi.append([bsn, "ZK01", "2010-01-01", ""])
    for bsn, (year, income, assets, status) in TAX.items():
        tax.append([bsn, str(year), income, assets, status])
    housing = [
        [address_of(hh), "social_rent", "650.00", "40.00", "L1", "2015-01-01"] for hh in HOUSEHOLDS
    ]
    rows = {
        "brp": brp,
        "tax": tax,
        "health_insurance": hi,
        "housing": housing,
        "benefits": [list(b) for b in BENEFITS],
        "arrears": [list(a) for a in ARREARS],
        "objections": [list(o) for o in OBJECTIONS],
    }
    for source, data in rows.items():
        write_delivery(root, source, list(SOURCES[source].column_names), data, REFERENCE_DATE)
    return root
