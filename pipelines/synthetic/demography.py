"""Households and their members: composition, ages, birth dates, BSNs and geography.

Households are drawn first (type, size, age of the head) from CBS shares in `stats`, then
expanded into one row per person with `np.repeat`, so building a million persons costs a
handful of vectorised passes and no Python loop per person.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from . import stats as S
from .arrowutil import years_before
from .bsn import bsn_pool

HEAD, PARTNER, CHILD, OTHER_ROLE = range(4)
ROLES = ("head", "partner", "child", "other")
COUPLE_TYPES = (S.COUPLE, S.COUPLE_KIDS)


@dataclass
class Population:
    """Column arrays for households (prefix h_) and persons (prefix p_), filled by stages.

    Person rows are grouped by household: household i owns persons
    h_start[i] .. h_start[i] + h_size[i] - 1, the head first and the partner (if any) second.
    Dates are datetime64[D]; NaT means "none".
    """

    reference_date: dt.date
    ref: np.datetime64
    h_type: np.ndarray
    h_size: np.ndarray
    h_start: np.ndarray
    h_kids: np.ndarray
    p_hh: np.ndarray
    p_pos: np.ndarray
    p_role: np.ndarray
    p_age: np.ndarray
    p_birth: np.ndarray = field(default=None)
    p_bsn: np.ndarray = field(default=None)
    p_partner: np.ndarray = field(default=None)
    h_id: np.ndarray = field(default=None)
    h_municipality: np.ndarray = field(default=None)
    h_district: np.ndarray = field(default=None)
    h_address: np.ndarray = field(default=None)
    extra: dict = field(default_factory=dict)  # later stages (economy, housing, ...)

    @property
    def n_persons(self) -> int:
        return len(self.p_hh)

    @property
    def n_households(self) -> int:
        return len(self.h_type)

    @property
    def h_partner(self) -> np.ndarray:
        """Person index of the partner of each household's head, -1 if none."""
        has = np.isin(self.h_type, COUPLE_TYPES)
        return np.where(has, self.h_start + 1, -1)


def build_demography(persons: int, reference_date: dt.date, rng: np.random.Generator) -> Population:
    """Exactly `persons` persons in households, with ages, birth dates, BSNs and addresses."""
    if persons < 1:
        raise ValueError(f"persons must be at least 1, got {persons}")
    h_type, h_kids, h_extra = _draw_households(persons, rng)
    h_size = _household_size(h_type, h_kids, h_extra)
    h_type, h_kids, h_extra, h_size = _fit_exactly(persons, h_type, h_kids, h_extra, h_size)
    h_start = np.concatenate([[0], np.cumsum(h_size)[:-1]]).astype(np.int64)
    p_hh = np.repeat(np.arange(len(h_size), dtype=np.int64), h_size)
    p_pos = np.arange(persons, dtype=np.int64) - h_start[p_hh]
    p_role = _roles(h_type[p_hh], h_kids[p_hh], p_pos)
    pop = Population(
        reference_date=reference_date,
        ref=np.datetime64(reference_date, "D"),
        h_type=h_type,
        h_size=h_size,
        h_start=h_start,
        h_kids=h_kids,
        p_hh=p_hh,
        p_pos=p_pos,
        p_role=p_role,
        p_age=_ages(h_type, h_kids, h_start, p_hh, p_pos, p_role, rng),
    )
    pop.p_birth = _birth_dates(reference_date, pop.p_age, rng)
    pop.p_bsn = bsn_pool(persons, rng)
    pop.p_partner = _partners(pop)
    _geography(pop, rng)
    return pop


def _draw_households(persons: int, rng: np.random.Generator):
    """Household types, children and co-residents for somewhat more than enough households."""
    # CBS 2024: average household size ~2.1; draw 10% spare and trim afterwards.
    n = int(persons / 2.1 * 1.10) + 16
    h_type = rng.choice(len(S.HOUSEHOLD_TYPES), size=n, p=S.HOUSEHOLD_TYPE_SHARES).astype(np.int8)
    h_kids = np.zeros(n, dtype=np.int64)
    for htype, table in ((S.COUPLE_KIDS, S.KIDS_COUPLE), (S.SINGLE_PARENT, S.KIDS_SINGLE_PARENT)):
        idx = np.flatnonzero(h_type == htype)
        h_kids[idx] = _draw_counts(table, len(idx), rng)
    h_extra = np.zeros(n, dtype=np.int64)
    other = np.flatnonzero(h_type == S.OTHER)
    h_extra[other] = _draw_counts(S.OTHER_HOUSEHOLD_EXTRA_MEMBERS, len(other), rng)
    family = np.isin(h_type, (S.COUPLE, S.COUPLE_KIDS, S.SINGLE_PARENT))
    h_extra[family & (rng.random(n) < S.EXTRA_OTHER_SHARE)] = 1
    return h_type, h_kids, h_extra


def _draw_counts(table, n: int, rng: np.random.Generator) -> np.ndarray:
    values = np.array([v for v, _ in table])
    probs = np.array([p for _, p in table], dtype=float)
    return values[rng.choice(len(values), size=n, p=probs / probs.sum())]


def _household_size(h_type, h_kids, h_extra) -> np.ndarray:
    adults = np.where(np.isin(h_type, COUPLE_TYPES), 2, 1)
    return (adults + h_kids + h_extra).astype(np.int64)


def _fit_exactly(persons: int, h_type, h_kids, h_extra, h_size):
    """Keep whole households up to `persons`, then top up with single-person households."""
    keep = np.cumsum(h_size) <= persons
    h_type, h_kids, h_extra, h_size = h_type[keep], h_kids[keep], h_extra[keep], h_size[keep]
    missing = persons - int(h_size.sum())
    if missing:
        h_type = np.concatenate([h_type, np.full(missing, S.SINGLE, dtype=np.int8)])
        h_kids = np.concatenate([h_kids, np.zeros(missing, dtype=np.int64)])
        h_extra = np.concatenate([h_extra, np.zeros(missing, dtype=np.int64)])
        h_size = np.concatenate([h_size, np.ones(missing, dtype=np.int64)])
    return h_type, h_kids, h_extra, h_size


def _roles(p_type, p_kids, p_pos) -> np.ndarray:
    couple = np.isin(p_type, COUPLE_TYPES)
    first_child = np.where(couple, 2, 1)
    role = np.full(len(p_pos), OTHER_ROLE, dtype=np.int8)
    role[(p_pos >= first_child) & (p_pos < first_child + p_kids)] = CHILD
    role[couple & (p_pos == 1)] = PARTNER
    role[p_pos == 0] = HEAD
    return role


def _ages(h_type, h_kids, h_start, p_hh, p_pos, p_role, rng) -> np.ndarray:
    """Whole-year ages at the reference date, by role and household."""
    n_h = len(h_type)
    head_age = np.zeros(n_h, dtype=np.int64)
    for htype, bins in S.HEAD_AGE_BINS.items():
        idx = np.flatnonzero(h_type == htype)
        head_age[idx] = _sample_bins(bins, len(idx), rng)
    # Eldest child: head's age minus the parent's age at birth, with at least ~2 years per
    # further child; children who would be older than 17-27 have usually left home.
    mean, sd = S.PARENT_AGE_AT_BIRTH
    room = np.maximum(18, head_age - 2 * np.maximum(h_kids - 1, 0))
    at_birth = np.clip(rng.normal(mean, sd, n_h), 18, room)
    eldest = np.minimum(np.maximum(head_age - np.round(at_birth), 0), rng.integers(17, 28, n_h))
    spacing = rng.uniform(1.5, 4.0, n_h)
    spacing = np.where(h_kids > 1, np.minimum(spacing, eldest / np.maximum(h_kids - 1, 1)), 0)

    p_head_age = head_age[p_hh]
    age = p_head_age.copy()
    partner = p_role == PARTNER
    gap_mean, gap_sd = S.PARTNER_AGE_GAP
    age[partner] = np.clip(
        p_head_age[partner] - np.round(rng.normal(gap_mean, gap_sd, partner.sum())), 18, 100
    )
    child = p_role == CHILD
    first_child = np.where(np.isin(h_type, COUPLE_TYPES), 2, 1)[p_hh]
    k = (p_pos - first_child)[child]
    age[child] = np.maximum(eldest[p_hh][child] - np.round(k * spacing[p_hh][child]), 0)
    other = p_role == OTHER_ROLE
    in_other_hh = other & (h_type[p_hh] == S.OTHER)
    age[in_other_hh] = np.clip(
        p_head_age[in_other_hh] + np.round(rng.normal(0, 4, in_other_hh.sum())), 18, 95
    )
    lodger = other & ~in_other_hh
    age[lodger] = rng.integers(18, 86, lodger.sum())
    return age.astype(np.int64)


def _sample_bins(bins, n: int, rng: np.random.Generator) -> np.ndarray:
    lo = np.array([b[0] for b in bins])
    hi = np.array([b[1] for b in bins])
    p = np.array([b[2] for b in bins], dtype=float)
    k = rng.choice(len(bins), size=n, p=p / p.sum())
    return rng.integers(lo[k], hi[k] + 1)


def _birth_dates(reference_date: dt.date, age: np.ndarray, rng) -> np.ndarray:
    """A birth date giving exactly `age` whole years at the reference date."""
    latest = years_before(reference_date, age)  # birthday on or before the reference date
    earliest = years_before(reference_date, age + 1)  # exclusive
    span = (latest - earliest).astype(np.int64)
    offset = np.floor(rng.random(len(age)) * span).astype(np.int64) + 1
    return earliest + offset.astype("timedelta64[D]")


def _partners(pop: Population) -> np.ndarray:
    """Person index of each person's toeslagpartner (head <-> partner), else -1."""
    partner = np.full(pop.n_persons, -1, dtype=np.int64)
    h_partner = pop.h_partner
    has = h_partner >= 0
    partner[pop.h_start[has]] = h_partner[has]
    partner[h_partner[has]] = pop.h_start[has]
    return partner


def _geography(pop: Population, rng: np.random.Generator) -> None:
    """Municipality, district, BAG address id and household id per household."""
    n = pop.n_households
    weights = np.array([w for _, w, _ in S.MUNICIPALITIES])
    muni = rng.choice(len(weights), size=n, p=weights / weights.sum())
    district = np.zeros(n, dtype=np.int64)
    address = np.zeros(n, dtype=np.int64)
    for m, (code, _, n_districts) in enumerate(S.MUNICIPALITIES):
        idx = np.flatnonzero(muni == m)
        shares = rng.dirichlet(np.full(n_districts, 4.0))
        district[idx] = rng.choice(n_districts, size=len(idx), p=shares) + 1
        # BAG nummeraanduiding: 4-digit municipality, object type 20, 10-digit sequence.
        seq = np.cumsum(rng.integers(1, 40, len(idx))) + rng.integers(10**6, 10**8)
        address[idx] = int(code[2:]) * 10**12 + 20 * 10**10 + rng.permutation(seq)
    pop.h_municipality = muni
    pop.h_district = district
    pop.h_address = address
    ids = np.cumsum(rng.integers(1, 1000, n)) + rng.integers(10**8, 10**9)
    pop.h_id = rng.permutation(ids)
