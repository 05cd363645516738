"""Benefit payments: who plausibly is entitled, who receives, who does not take up.

Entitlement is decided per household with rough 2025-level thresholds from `stats`
(generation only: the entitlement rules carry the official parameters). Among entitled
households a share does not receive the scheme (CPB non-take-up, higher for small
amounts, 1-2% for bijstand households); a few non-entitled households just above the
limit still receive it (outdated income estimate). The result is one row per payment:
person index, scheme, monthly amount, start date and end date (NaT = open).
"""

from __future__ import annotations

import numpy as np

from pipelines.contract import BENEFIT_SCHEMES

from . import stats as S
from .arrowutil import add_years, jan_first
from .demography import CHILD, Population
from .economy import income_index
from .living import OWNER

NAT = np.datetime64("NaT", "D")
SCHEME = {name: i for i, name in enumerate(BENEFIT_SCHEMES)}


class _Rows:
    """Accumulates benefit rows as array blocks."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, ...]] = []

    def add(self, person, scheme: str, amount, start, end=None) -> None:
        person = np.asarray(person, dtype=np.int64)
        n = len(person)
        end = np.full(n, NAT) if end is None else np.asarray(end, dtype="datetime64[D]")
        self.blocks.append(
            (
                person,
                np.full(n, SCHEME[scheme], dtype=np.int8),
                np.round(np.broadcast_to(amount, (n,)).astype(float), 2),
                np.asarray(start, dtype="datetime64[D]"),
                end,
            )
        )

    def arrays(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.blocks, strict=True))
        return {
            name: np.concatenate(c)
            for name, c in zip(("person", "scheme", "amount", "start", "end"), cols, strict=True)
        }


def build_benefits(pop: Population, rng: np.random.Generator) -> None:
    """Fill pop.extra['benefits'] (row arrays) and pop.extra['benefit_truth'] (counts)."""
    hh = _household_view(pop)
    rows = _Rows()
    truth: dict[str, dict[str, int]] = {}
    truth["zorgtoeslag"] = _zorgtoeslag(pop, hh, rows, rng)
    truth["zorgtoeslag_coresidents"] = _zorgtoeslag_coresidents(pop, rows, rng)
    truth["huurtoeslag"] = _huurtoeslag(pop, hh, rows, rng)
    truth["kindgebonden_budget"] = _kindgebonden_budget(pop, hh, rows, rng)
    _kinderbijslag(pop, hh, rows, rng)
    _kinderopvangtoeslag(pop, hh, rows, rng)
    _aow(pop, rows)
    truth["aio"] = _aio(pop, hh, rows, rng)
    _bijstand(pop, hh, rows, rng)
    _ww(pop, rows, rng)
    _kwijtschelding(pop, hh, rows, rng)
    data = rows.arrays()
    _end_at_deregistration(pop, data)
    pop.extra["benefits"] = data
    pop.extra["benefit_truth"] = truth


def _household_view(pop: Population) -> dict[str, np.ndarray]:
    """Per-household inputs for entitlement: incomes at the reference year, assets, children."""
    head = pop.h_start
    partner = pop.h_partner
    has_partner = partner >= 0
    p2 = np.maximum(partner, 0)
    income = pop.extra["income_2022"] * income_index(pop.reference_date.year)
    assets = pop.extra["assets"]
    insured = pop.extra["insured_at_ref"]
    minor = (pop.p_role == CHILD) & (pop.p_age < 18)
    n_minor = np.bincount(pop.p_hh[minor], minlength=pop.n_households)
    youngest = np.full(pop.n_households, 99)
    np.minimum.at(youngest, pop.p_hh[minor], pop.p_age[minor])
    return {
        "head": head,
        "partner": partner,
        "has_partner": has_partner,
        "income": income[head] + np.where(has_partner, income[p2], 0.0),
        "head_income": income[head],
        "partner_income": np.where(has_partner, income[p2], np.nan),
        "assets": assets[head] + np.where(has_partner, assets[p2], 0.0),
        "head_age": pop.p_age[head],
        "insured": insured[head] & (~has_partner | insured[p2]),
        "n_minor": n_minor,
        "youngest": youngest,
        "minor": minor,
        "bijstand": pop.extra["bijstand"],
        "renter": pop.extra["tenure"] != OWNER,
        "single_parent": (pop.h_type == S.SINGLE_PARENT),
    }


def _pair(values: tuple[float, float], has_partner: np.ndarray) -> np.ndarray:
    return np.where(has_partner, values[1], values[0])


def _toeslag_start(pop: Population, hh_idx: np.ndarray, rng, not_before=None) -> np.ndarray:
    """1 January of a recent year, not before the head turned 18 (or `not_before`)."""
    years_ago = np.minimum(rng.geometric(0.3, len(hh_idx)) - 1, 15)
    start = jan_first(pop.reference_date.year - years_ago)
    earliest = add_years(pop.p_birth[pop.h_start[hh_idx]], 18)
    if not_before is not None:
        earliest = np.maximum(earliest, not_before)
    return np.minimum(np.maximum(start, earliest), pop.ref)


def _take_up(eligible, ratio, base: float, bijstand, rng) -> np.ndarray:
    """Receiving among the eligible: non-take-up `base` on average, higher for small amounts."""
    weight = 1.6 - 1.2 * np.clip(ratio, 0, 1)
    norm = weight[eligible & ~bijstand].mean() if (eligible & ~bijstand).any() else 1.0
    p_miss = np.where(bijstand, S.NON_TAKE_UP_BIJSTAND, base * weight / norm)
    return eligible & (rng.random(len(eligible)) >= p_miss)


def _grant(
    pop, hh, rows, rng, scheme, eligible, near_miss, amount, max_amount, not_before=None
) -> dict[str, int]:
    """Rows for receivers (incl. a few overpaid near misses) and ended rows for some stoppers."""
    receiving = _take_up(eligible, amount / max_amount, S.NON_TAKE_UP[scheme], hh["bijstand"], rng)
    overpaid = near_miss & ~eligible & (rng.random(len(eligible)) < S.OVERPAID_SHARE)
    paid = np.flatnonzero(receiving | overpaid)
    start = _toeslag_start(pop, paid, rng, None if not_before is None else not_before[paid])
    rows.add(hh["head"][paid], scheme, np.maximum(amount[paid], 1.0), start)
    stopped = np.flatnonzero(eligible & ~receiving & (rng.random(len(eligible)) < S.STOPPED_SHARE))
    end = jan_first(pop.reference_date.year - rng.integers(0, 3, len(stopped))) - np.timedelta64(
        1, "D"
    )
    begin = jan_first(pop.reference_date.year - 3 - rng.integers(0, 4, len(stopped)))
    begin = np.minimum(np.maximum(begin, add_years(pop.p_birth[hh["head"][stopped]], 18)), end)
    rows.add(hh["head"][stopped], scheme, np.maximum(amount[stopped], 1.0), begin, end)
    return {
        "eligible": int(eligible.sum()),
        "receiving": int(receiving.sum()),
        "eligible_not_receiving": int((eligible & ~receiving).sum()),
        "receiving_not_eligible": int(overpaid.sum()),
    }


def _zorgtoeslag(pop, hh, rows, rng) -> dict[str, int]:
    limit = _pair(S.ZT_INCOME_LIMIT, hh["has_partner"])
    asset_limit = _pair(S.ZT_ASSET_LIMIT, hh["has_partner"])
    maximum = _pair(S.ZT_MAX_MONTHLY, hh["has_partner"])
    base_ok = (hh["head_age"] >= 18) & hh["insured"] & (hh["assets"] <= asset_limit)
    eligible = base_ok & (hh["income"] <= limit)
    near_miss = base_ok & (hh["income"] > limit) & (hh["income"] <= 1.15 * limit)
    # Full amount up to roughly the minimum wage, then falling to ~0 at the limit (APPROX).
    ratio = np.clip(1 - np.maximum(hh["income"] - 28_000, 0) / (limit - 28_000), 0.06, 1)
    return _grant(pop, hh, rows, rng, "zorgtoeslag", eligible, near_miss, maximum * ratio, maximum)


def _zorgtoeslag_coresidents(pop, rows, rng) -> dict[str, int]:
    """Adult children and other co-residents claim zorgtoeslag in their own right.

    CBS (2013) noted that 3 in 10 households in the highest income classes received
    zorgtoeslag because of adult children at home with little income of their own.
    """
    person = np.flatnonzero((pop.p_age >= 18) & (pop.p_pos > 0) & (pop.p_partner < 0))
    income = pop.extra["income_2022"][person] * income_index(pop.reference_date.year)
    eligible = (
        (income <= S.ZT_INCOME_LIMIT[0])
        & (pop.extra["assets"][person] <= S.ZT_ASSET_LIMIT[0])
        & pop.extra["insured_at_ref"][person]
    )
    maximum = S.ZT_MAX_MONTHLY[0]
    amount = maximum * np.clip(
        1 - np.maximum(income - 28_000, 0) / (S.ZT_INCOME_LIMIT[0] - 28_000), 0.06, 1
    )
    receiving = _take_up(
        eligible,
        amount / maximum,
        S.NON_TAKE_UP["zorgtoeslag"],
        np.zeros(len(person), dtype=bool),
        rng,
    )
    paid = person[receiving]
    years_ago = np.minimum(rng.geometric(0.3, len(paid)) - 1, 15)
    start = np.maximum(
        jan_first(pop.reference_date.year - years_ago), add_years(pop.p_birth[paid], 18)
    )
    rows.add(paid, "zorgtoeslag", amount[receiving], np.minimum(start, pop.ref))
    return {
        "eligible": int(eligible.sum()),
        "receiving": int(receiving.sum()),
        "eligible_not_receiving": int((eligible & ~receiving).sum()),
        "receiving_not_eligible": 0,
    }


def _huurtoeslag(pop, hh, rows, rng) -> dict[str, int]:
    rent = np.nan_to_num(pop.extra["rent"])
    service = np.minimum(np.nan_to_num(pop.extra["service"]), 48.0)
    limit = _pair(S.HT_INCOME_LIMIT, hh["has_partner"])
    asset_limit = _pair(S.HT_ASSET_LIMIT, hh["has_partner"])
    base_ok = (
        hh["renter"]
        & (rent <= S.HT_MAX_RENT)
        & (hh["head_age"] >= 18)
        & (hh["assets"] <= asset_limit)
    )
    eligible = base_ok & (hh["income"] <= limit)
    near_miss = base_ok & (hh["income"] > limit) & (hh["income"] <= 1.15 * limit)
    share = 0.9 - 0.5 * np.clip(hh["income"] / limit, 0, 1)  # APPROX
    amount = np.clip((rent + service - 230.0) * share, 10.0, 520.0)
    return _grant(
        pop,
        hh,
        rows,
        rng,
        "huurtoeslag",
        eligible,
        near_miss,
        amount,
        np.full(len(amount), 520.0),
        not_before=pop.extra["move_in"],
    )


def _kindgebonden_budget(pop, hh, rows, rng) -> dict[str, int]:
    full = hh["n_minor"] * S.KGB_PER_CHILD_YEAR + hh["single_parent"] * S.KGB_SINGLE_PARENT_YEAR
    threshold = _pair(S.KGB_THRESHOLD, hh["has_partner"])
    yearly = full - S.KGB_PHASE_OUT * np.maximum(hh["income"] - threshold, 0)
    asset_ok = hh["assets"] <= _pair(S.ZT_ASSET_LIMIT, hh["has_partner"])
    eligible = (hh["n_minor"] > 0) & asset_ok & (yearly >= 12)
    near_miss = (hh["n_minor"] > 0) & asset_ok & (yearly < 12) & (yearly > -0.15 * full)
    return _grant(
        pop,
        hh,
        rows,
        rng,
        "kindgebonden_budget",
        eligible,
        near_miss,
        np.maximum(yearly, 12) / 12,
        np.maximum(full, 1) / 12,
    )


def _kinderbijslag(pop, hh, rows, rng) -> None:
    """Paid per household to the head for children under 18, from the quarter after birth."""
    edges = np.array([a for a, _ in S.KINDERBIJSLAG_MONTHLY])
    amounts = np.array([m for _, m in S.KINDERBIJSLAG_MONTHLY])
    minor = hh["minor"]
    per_child = np.where(minor, amounts[np.searchsorted(edges, pop.p_age, "right") - 1], 0.0)
    total = np.bincount(pop.p_hh, weights=per_child, minlength=pop.n_households)
    births = pop.p_birth.astype(np.int64)
    oldest = np.full(pop.n_households, np.iinfo(np.int64).max)
    np.minimum.at(oldest, pop.p_hh[minor], births[minor])
    paid = np.flatnonzero((hh["n_minor"] > 0) & (rng.random(pop.n_households) < 0.995))
    month = oldest[paid].astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    quarter_after = ((month // 3 + 1) * 3).astype("datetime64[M]").astype("datetime64[D]")
    rows.add(hh["head"][paid], "kinderbijslag", total[paid], quarter_after)


def _kinderopvangtoeslag(pop, hh, rows, rng) -> None:
    working = (hh["head_income"] > 8_000) & (~hh["has_partner"] | (hh["partner_income"] > 8_000))
    under4, under13 = S.KINDEROPVANG_TAKE_UP
    p = np.where(hh["youngest"] < 4, under4, np.where(hh["youngest"] < 13, under13, 0.0))
    paid = np.flatnonzero(working & (rng.random(pop.n_households) < p))
    births = pop.p_birth.astype(np.int64)
    youngest_birth = np.full(pop.n_households, np.iinfo(np.int64).min)
    np.maximum.at(youngest_birth, pop.p_hh[hh["minor"]], births[hh["minor"]])
    start = _toeslag_start(pop, paid, rng, youngest_birth[paid].astype("datetime64[D]"))
    rows.add(hh["head"][paid], "kinderopvangtoeslag", rng.uniform(250, 1400, len(paid)), start)


def _aow(pop, rows) -> None:
    person = np.flatnonzero(pop.extra["aow_monthly"] > 0)
    start = add_years(pop.p_birth[person], S.AOW_AGE)
    rows.add(person, "aow", pop.extra["aow_monthly"][person], start)


def _aio(pop, hh, rows, rng) -> dict[str, int]:
    """Supplement for pensioners with partial AOW and income below the social minimum."""
    aow = pop.extra["aow_monthly"]
    full = _pair(S.AOW_MONTHLY, hh["has_partner"])
    p2 = np.maximum(hh["partner"], 0)
    gap = (full - aow[hh["head"]]) + np.where(hh["has_partner"], full - aow[p2], 0.0)
    minimum = _pair(S.AIO_INCOME_LIMIT, hh["has_partner"])
    eligible = (
        (hh["head_age"] >= S.AOW_AGE)
        & (gap > 25)
        & (hh["income"] < minimum)
        & (hh["assets"] <= _pair(S.BIJSTAND_ASSET_LIMIT, hh["has_partner"]))
    )
    receiving = eligible & (rng.random(pop.n_households) < S.AIO_TAKE_UP)
    paid = np.flatnonzero(receiving)
    start = np.maximum(
        add_years(pop.p_birth[hh["head"][paid]], S.AOW_AGE), _toeslag_start(pop, paid, rng)
    )
    rows.add(hh["head"][paid], "aio", gap[paid], np.minimum(start, pop.ref))
    return {
        "eligible": int(eligible.sum()),
        "receiving": int(receiving.sum()),
        "eligible_not_receiving": int((eligible & ~receiving).sum()),
        "receiving_not_eligible": 0,
    }


def _bijstand(pop, hh, rows, rng) -> None:
    paid = np.flatnonzero(hh["bijstand"])
    amount = _pair(S.BIJSTAND_MONTHLY, hh["has_partner"][paid])
    adult = add_years(pop.p_birth[hh["head"][paid]], 18)
    days = np.round(rng.exponential(4.0, len(paid)) * 365.25).astype("timedelta64[D]")
    rows.add(hh["head"][paid], "bijstand", amount, np.maximum(pop.ref - days, adult))
    # Some other low-income working-age households left bijstand in recent years.
    working = (hh["head_age"] >= 21) & (hh["head_age"] < S.AOW_AGE) & ~hh["bijstand"]
    left = np.flatnonzero(working & (hh["income"] < 35_000) & (rng.random(len(working)) < 0.02))
    end = pop.ref - rng.integers(30, 1500, len(left)).astype("timedelta64[D]")
    begin = end - np.round(rng.exponential(1.5, len(left)) * 365.25 + 30).astype("timedelta64[D]")
    begin = np.minimum(np.maximum(begin, add_years(pop.p_birth[hh["head"][left]], 18)), end)
    rows.add(
        hh["head"][left], "bijstand", _pair(S.BIJSTAND_MONTHLY, hh["has_partner"][left]), begin, end
    )


def _ww(pop, rows, rng) -> None:
    """Unemployment benefit for some employed working-age adults; some already ended."""
    income = pop.extra["income_2022"] * income_index(pop.reference_date.year)
    on_bijstand = pop.extra["bijstand"][pop.p_hh]
    candidate = (pop.p_age >= 18) & (pop.p_age < S.AOW_AGE) & (income > 15_000) & ~on_bijstand
    person = np.flatnonzero(candidate & (rng.random(pop.n_persons) < S.WW_SHARE))
    amount = np.minimum(0.7 * income[person] / 12, 4_300.0) * rng.uniform(0.9, 1.0, len(person))
    start = pop.ref - rng.integers(0, 720, len(person)).astype("timedelta64[D]")
    start = np.minimum(np.maximum(start, add_years(pop.p_birth[person], 18)), pop.ref)
    months = rng.integers(3, 25, len(person))
    end = start + np.round(months * 30.44).astype("timedelta64[D]")
    rows.add(person, "ww", amount, start, end)


def _kwijtschelding(pop, hh, rows, rng) -> None:
    """Remission of municipal taxes for the reference year, mostly bijstand households."""
    p = np.where(hh["bijstand"], S.KWIJTSCHELDING_TAKE_UP, 0.0)
    paid = np.flatnonzero(rng.random(pop.n_households) < p)
    year = pop.reference_date.year
    start = np.full(len(paid), jan_first(year))
    end = np.full(len(paid), jan_first(year + 1) - np.timedelta64(1, "D"))
    rows.add(hh["head"][paid], "kwijtschelding", rng.uniform(30, 65, len(paid)), start, end)


def _end_at_deregistration(pop: Population, data: dict[str, np.ndarray]) -> None:
    """Payments stop when the recipient dies or emigrates."""
    dereg = pop.extra["deregistered_on"][data["person"]]
    gone = ~np.isnat(dereg)
    end = data["end"]
    open_or_later = np.isnat(end) | (end > dereg)
    end[gone & open_or_later] = dereg[gone & open_or_later]
    data["start"][gone] = np.minimum(data["start"][gone], end[gone])
