"""Early debt signals (vroegsignalering) and the objection register of the population.

Arrears follow the Divosa monitor's volume (about 4 signals per 1,000 inhabitants per
month, so ~12 per 1,000 in a three-month delivery) and sector mix (health insurers 45%),
concentrated on low-income, renting, single-parent and bijstand households.
"""

from __future__ import annotations

import numpy as np

from pipelines.contract import BENEFIT_SCHEMES

from . import stats as S
from .demography import PARTNER, Population
from .living import OWNER, household_income

SECTORS = tuple(name for name, _ in S.ARREARS_SECTOR_SHARES)
HEALTH, ENERGY, HOUSING, WATER = (
    SECTORS.index(s) for s in ("health_insurance", "energy", "housing", "water")
)
SCOPES = ("all",) + BENEFIT_SCHEMES


def build_arrears(pop: Population, rng: np.random.Generator) -> None:
    """Fill pop.extra['arrears']: person, sector, creditor code, amount, months, reported_on."""
    hh = _flagged_households(pop, rng)
    counts = np.array([c for c, _ in S.ARREARS_SIGNALS_PER_HOUSEHOLD])
    probs = np.array([p for _, p in S.ARREARS_SIGNALS_PER_HOUSEHOLD])
    n_signals = counts[rng.choice(len(counts), size=len(hh), p=probs)]
    hh = np.repeat(hh, n_signals)
    shares = np.array([p for _, p in S.ARREARS_SECTOR_SHARES])
    sector = rng.choice(len(shares), size=len(hh), p=shares / shares.sum())
    owner = pop.extra["tenure"][hh] == OWNER
    sector[owner & (sector == HOUSING)] = ENERGY  # owners have no landlord to report them
    partner = pop.h_partner[hh]
    use_partner = (sector == HEALTH) & (partner >= 0) & (rng.random(len(hh)) < 0.4)
    person = np.where(use_partner, partner, pop.h_start[hh])
    months, amount = _size(pop, hh, sector, rng)
    pop.extra["arrears"] = {
        "household": hh,
        "person": person,
        "sector": sector,
        "amount": amount,
        "months": months,
        "reported_on": pop.ref - rng.integers(0, 91, len(hh)).astype("timedelta64[D]"),
        # creditor: the landlord for housing, the person's insurer for health insurance,
        # one of eight energy suppliers, the municipality's drinking-water company.
        "energy_supplier": rng.integers(1, 9, len(hh)),
    }


def _flagged_households(pop: Population, rng) -> np.ndarray:
    n = pop.n_households
    income = household_income(pop)
    pct = np.argsort(np.argsort(income)) / max(n - 1, 1)
    head_age = pop.p_age[pop.h_start]
    risk = (
        1.0
        + 3.0 * (pct < 0.2)
        + 1.0 * (pct < 0.4)
        + 1.5 * (pop.extra["tenure"] != OWNER)
        + 1.0 * (pop.h_type == S.SINGLE_PARENT)
        + 2.0 * pop.extra["bijstand"]
        + 0.5 * (head_age < 35)
    ) * np.where(head_age >= 75, 0.3, 1.0)
    per_household = sum(c * p for c, p in S.ARREARS_SIGNALS_PER_HOUSEHOLD)
    share = S.ARREARS_SIGNALS_PER_PERSON * pop.n_persons / per_household / n
    p = np.clip(share * risk / risk.mean(), 0, 0.9)
    return np.flatnonzero(rng.random(n) < p)


def _size(pop: Population, hh, sector, rng):
    """Months overdue and amount overdue per signal (APPROX ranges per sector)."""
    n = len(hh)
    lo = np.array([2, 1, 1, 1])[sector]
    hi = np.array([6, 4, 4, 5])[sector]
    months = rng.integers(lo, hi + 1)
    monthly = np.select(
        [sector == HEALTH, sector == ENERGY, sector == WATER],
        [rng.uniform(140, 170, n), rng.uniform(120, 260, n), rng.uniform(20, 45, n)],
        default=np.nan_to_num(pop.extra["rent"][hh]) + np.nan_to_num(pop.extra["service"][hh]),
    )
    return months, np.round(months * monthly, 2)


def build_objections(pop: Population, rng: np.random.Generator) -> None:
    """Fill pop.extra['objections']: adults (head/partner) who objected, scope, date."""
    adult = (pop.p_age >= 18) & ((pop.p_pos == 0) | (pop.p_role == PARTNER))
    person = np.flatnonzero(adult & (rng.random(pop.n_persons) < S.OBJECTION_SHARE))
    all_scope = rng.random(len(person)) < S.OBJECTION_ALL_SHARE
    scope = np.where(all_scope, 0, rng.integers(1, len(SCOPES), len(person)))
    days = rng.integers(0, 3 * 365, len(person)).astype("timedelta64[D]")
    objected = np.maximum(pop.ref - days, pop.extra["registered_since"][person])
    pop.extra["objections"] = {"person": person, "scope": scope, "objected_on": objected}
