"""Housing, registration history and health insurance of the synthetic population.

Tenure follows the CBS 2023 split (57% owner-occupied, 29% corporation, 14% other
landlords) and is assigned by household income rank, age and a district effect, so that
low-income and elderly single households rent more often, as they do in WoON.
"""

from __future__ import annotations

import numpy as np

from . import stats as S
from .arrowutil import add_years, jan_first, year_of
from .demography import CHILD, HEAD, OTHER_ROLE, PARTNER, Population

OWNER, SOCIAL, PRIVATE = range(3)
TENURES = ("owner_occupied", "social_rent", "private_rent")
NAT = np.datetime64("NaT", "D")


def build_living(pop: Population, rng: np.random.Generator) -> None:
    """Fill pop.extra with tenure, rent, landlord, registration, deregistration, insurance."""
    _tenure(pop, rng)
    _rents(pop, rng)
    _registration(pop, rng)
    _deregistration(pop, rng)
    _insurance(pop, rng)


def household_income(pop: Population) -> np.ndarray:
    """Head + partner income (2022 level) per household."""
    income = pop.extra["income_2022"]
    partner = pop.h_partner
    return income[pop.h_start] + np.where(partner >= 0, income[np.maximum(partner, 0)], 0.0)


def _tenure(pop: Population, rng) -> None:
    n = pop.n_households
    inc_rank = np.argsort(np.argsort(household_income(pop) + rng.normal(0, 1, n)))
    inc_pct = inc_rank / max(n - 1, 1)
    head_age = pop.p_age[pop.h_start]
    district_bias = rng.normal(0, 0.35, 64)[(pop.h_municipality * 16 + pop.h_district) % 64]
    young = head_age < 30
    own_score = (
        2.2 * inc_pct
        - 0.9 * young
        - 0.4 * (pop.h_size == 1)
        - district_bias
        + 0.2 * ((head_age >= 45) & (head_age < 75))
        + rng.normal(0, 0.55, n)
    )
    owner = _top_share(own_score, S.TENURE_SHARES["owner_occupied"])
    social_share = S.TENURE_SHARES["social_rent"] / (1 - S.TENURE_SHARES["owner_occupied"])
    social_score = -1.5 * inc_pct - 0.8 * young + district_bias + rng.normal(0, 0.5, n)
    social_score[owner] = -np.inf
    social = _top_share(social_score, social_share * (~owner).mean())
    social |= pop.extra["bijstand"] & ~owner & (rng.random(n) < 0.85)
    tenure = np.full(n, PRIVATE, dtype=np.int8)
    tenure[owner] = OWNER
    tenure[social] = SOCIAL
    pop.extra["tenure"] = tenure


def _top_share(score: np.ndarray, share: float) -> np.ndarray:
    k = int(round(share * len(score)))
    flag = np.zeros(len(score), dtype=bool)
    if k:
        flag[np.argsort(-score, kind="stable")[:k]] = True
    return flag


def _rents(pop: Population, rng) -> None:
    n = pop.n_households
    tenure = pop.extra["tenure"]
    mean, sd, lo, hi = S.SOCIAL_RENT
    social_rent = np.clip(rng.normal(mean, sd, n), lo, hi)
    median, log_sd, lo_p, hi_p = S.PRIVATE_RENT
    private_rent = np.clip(median * np.exp(rng.normal(0, log_sd, n)), lo_p, hi_p)
    rent = np.where(tenure == SOCIAL, social_rent, private_rent)
    has_service = rng.random(n) < np.where(tenure == SOCIAL, 0.7, 0.5)
    service = np.where(has_service, rng.uniform(8, 70, n), 0.0)
    renter = tenure != OWNER
    pop.extra["rent"] = np.where(renter, np.round(rent, 2), np.nan)
    pop.extra["service"] = np.where(renter, np.round(service, 2), np.nan)
    # Landlords: a few corporations per municipality ("L" + 4 digits, like the
    # Autoriteit woningcorporaties L-number), many small private landlords. Synthetic ids.
    corp = pop.h_municipality * 10 + rng.integers(1, 5, n)
    private = rng.integers(0, 4000, n)
    pop.extra["landlord"] = np.where(tenure == SOCIAL, corp, np.where(renter, 10_000 + private, -1))


def _registration(pop: Population, rng) -> None:
    """Move-in date per household (>= head's 18th birthday); registered_since per person."""
    tenure = pop.extra["tenure"]
    mean_years = np.array([S.YEARS_AT_ADDRESS[t] for t in TENURES])[tenure]
    adult_since = add_years(pop.p_birth[pop.h_start], 18)
    years = rng.exponential(mean_years)
    move_in = pop.ref - np.round(years * 365.25).astype("timedelta64[D]")
    move_in = np.maximum(move_in, adult_since)
    move_in = np.minimum(move_in, pop.ref)
    pop.extra["move_in"] = move_in
    registered = np.maximum(move_in[pop.p_hh], pop.p_birth)
    # One in five partners and all co-residents joined later than the head.
    later = ((pop.p_role == PARTNER) & (rng.random(pop.n_persons) < 0.2)) | (
        pop.p_role == OTHER_ROLE
    )
    gap = (pop.ref - registered).astype(np.int64)
    joined = registered + np.floor(rng.random(pop.n_persons) * gap).astype("timedelta64[D]")
    pop.extra["registered_since"] = np.where(later, joined, registered)


def _deregistration(pop: Population, rng) -> None:
    """Deaths and emigration in the year before the reference date (~1%, by age)."""
    edges = np.array([a for a, _ in S.DEREGISTRATION_BY_AGE])
    rates = np.array([r for _, r in S.DEREGISTRATION_BY_AGE])
    rate = rates[np.searchsorted(edges, pop.p_age, "right") - 1]
    gone = rng.random(pop.n_persons) < rate
    days_ago = rng.integers(0, 365, pop.n_persons).astype("timedelta64[D]")
    on = np.maximum(pop.ref - days_ago, pop.extra["registered_since"])
    pop.extra["deregistered_on"] = np.where(gone, on, NAT)


def _insurance(pop: Population, rng) -> None:
    """Current and (sometimes) previous Zvw policy per person; a few uninsured."""
    n = pop.n_persons
    ref_year = pop.reference_date.year
    weights = np.array([w for _, w in S.INSURERS])
    h_insurer = rng.choice(len(weights), size=pop.n_households, p=weights / weights.sum())
    insurer = h_insurer[pop.p_hh]
    own = (pop.p_role != CHILD) & (pop.p_role != HEAD) & (rng.random(n) < 0.2)
    insurer[own] = rng.choice(len(weights), size=own.sum(), p=weights / weights.sum())
    # Years since the last switch (people switch on 1 January).
    since = np.minimum(rng.geometric(S.INSURER_SWITCH_RATE, n) - 1, 40)
    start = np.maximum(jan_first(ref_year - since), pop.p_birth)
    switched = (since <= 5) & (start > pop.p_birth) & (year_of(pop.p_birth) < ref_year - since)
    prev_insurer = (insurer + rng.integers(1, len(weights), n)) % len(weights)
    prev_start = np.maximum(jan_first(ref_year - since - rng.integers(1, 8, n)), pop.p_birth)
    end = np.full(n, NAT)
    adult = pop.p_age >= 18
    uninsured = adult & (
        rng.random(n) < S.UNINSURED_SHARE * np.where((pop.p_age >= 20) & (pop.p_age < 45), 2.0, 0.5)
    )
    no_row = uninsured & (rng.random(n) < 0.5)
    lapsed = uninsured & ~no_row
    lapse_days = rng.integers(30, 700, n).astype("timedelta64[D]")
    end[lapsed] = np.maximum(pop.ref - lapse_days, start + np.timedelta64(1, "D"))[lapsed]
    dereg = pop.extra["deregistered_on"]
    gone = ~np.isnat(dereg)
    end[gone] = np.where(np.isnat(end[gone]), dereg[gone], np.minimum(end[gone], dereg[gone]))
    start = np.minimum(start, np.where(np.isnat(end), start, end))
    # The previous policy ends the day before the current one starts; for a few (APPROX 5%)
    # there was an uninsured gap of one to ten months in between.
    gap = np.where(rng.random(n) < 0.05, rng.integers(30, 300, n), 1).astype("timedelta64[D]")
    gap = np.where(start - gap > prev_start, gap, np.timedelta64(1, "D"))
    prev_to = start - gap
    prev_start = np.minimum(prev_start, prev_to)
    pop.extra.update(
        insurer=insurer,
        insured_from=start,
        insured_to=end,
        has_policy=~no_row,
        prev_policy=switched & ~no_row,
        prev_insurer=prev_insurer,
        prev_from=prev_start,
        prev_to=prev_to,
        insured_at_ref=~no_row & (np.isnat(end) | (end > pop.ref)),
    )
