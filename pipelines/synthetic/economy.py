"""Incomes, assets and assessment years per adult, consistent with age and household.

Each adult gets a latent income score (age, role, a household component shared by
partners, noise); ranks of that score are mapped onto the CBS 2022 distribution of
personal income (stats.PERSONAL_INCOME_BRACKETS_2022), so the marginal distribution
follows CBS while young adults, partners and pensioners sit where they plausibly do.
Bijstand households, AOW floors and a few entrepreneurs' losses are then imposed.
"""

from __future__ import annotations

import numpy as np

from . import stats as S
from .demography import HEAD, PARTNER, Population


def build_economy(pop: Population, rng: np.random.Generator) -> None:
    """Fill pop.extra with income (newest year, euro), assets, AOW data, bijstand, tax years."""
    adult = pop.p_age >= 18
    score = _income_score(pop, rng)
    income = np.zeros(pop.n_persons, dtype=np.float64)
    income[adult] = _cbs_quantiles(_ranks(score[adult]))
    aow, aow_partial = _aow(pop, rng)
    bijstand = _bijstand_households(pop, score, rng)
    income = _impose_levels(pop, income, aow, aow_partial, bijstand, rng)
    assets = _assets(pop, score, bijstand, rng)
    assets[aow_partial] = np.round(assets[aow_partial] * 0.1)  # APPROX, see _impose_levels
    pop.extra.update(
        adult=adult,
        income_2022=income,  # euro at 2022 level; scaled per income year in tax records
        assets=assets,
        aow_monthly=aow,
        bijstand=bijstand,
        **_tax_years(pop, rng),
    )


def income_index(year: np.ndarray | int) -> np.ndarray:
    """Nominal income level of `year` relative to 2022 (stats.INCOME_GROWTH, APPROX)."""
    return (1.0 + S.INCOME_GROWTH) ** (np.asarray(year) - S.INCOME_BASE_YEAR)


def _income_score(pop: Population, rng) -> np.ndarray:
    edges = np.array([a for a, _ in S.INCOME_AGE_EFFECT])
    effects = np.array([e for _, e in S.INCOME_AGE_EFFECT])
    age_effect = effects[np.clip(np.searchsorted(edges, pop.p_age, "right") - 1, 0, None)]
    role_effect = np.array(
        [S.INCOME_ROLE_EFFECT[r] for r in ("head", "partner", "child", "other")]
    )[pop.p_role]
    shared = rng.normal(0, 1, pop.n_households)[pop.p_hh]  # partners' incomes correlate
    return age_effect + role_effect + 0.4 * shared + 0.9 * rng.normal(0, 1, pop.n_persons)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Mid-ranks scaled to (0, 1)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    return (ranks + 0.5) / max(len(values), 1)


def _cbs_quantiles(u: np.ndarray) -> np.ndarray:
    """Income at quantile u of CBS 83931NED (2022) plus a mass of zero incomes at the bottom.

    Within a bracket [a, b] with published mean m we use a + (b - a) * v**k with
    k = (b - a) / (m - a) - 1, which reproduces m; the open top bracket is Pareto with
    the published mean.
    """
    brackets = S.PERSONAL_INCOME_BRACKETS_2022
    shares = np.array([b[2] for b in brackets])
    cum = np.concatenate([[0.0], np.cumsum(shares / shares.sum())])
    z0 = S.ZERO_INCOME_SHARE
    v_all = np.clip((u - z0) / (1 - z0), 0, 1 - 1e-12)
    k = np.clip(np.searchsorted(cum, v_all, "right") - 1, 0, len(brackets) - 1)
    v = (v_all - cum[k]) / (cum[k + 1] - cum[k])
    out = np.zeros(len(u))
    for i, (lo, hi, _, mean_k) in enumerate(brackets):
        sel = k == i
        mean = mean_k * 1000.0
        if hi is None:
            alpha = mean / (mean - lo)
            out[sel] = np.minimum(lo * (1 - v[sel]) ** (-1 / alpha), 5_000_000)
        else:
            power = (hi - lo) / (mean - lo) - 1
            out[sel] = lo + (hi - lo) * v[sel] ** power
    out[u < z0] = 0.0
    return np.round(out)


def _aow(pop: Population, rng) -> tuple[np.ndarray, np.ndarray]:
    """Monthly gross AOW per person (0 below AOW age); partial for years lived abroad."""
    eligible = pop.p_age >= S.AOW_AGE
    single, with_partner = S.AOW_MONTHLY
    has_partner = pop.p_partner >= 0
    full = np.where(has_partner, with_partner, single)
    factor = np.ones(pop.n_persons)
    partial = eligible & (rng.random(pop.n_persons) < S.AOW_PARTIAL_SHARE)
    # 2% less per uninsured year: 2..35 missing years.
    factor[partial] = 1 - 0.02 * rng.integers(2, 36, partial.sum())
    return np.where(eligible, np.round(full * factor, 2), 0.0), partial


def _bijstand_households(pop: Population, score: np.ndarray, rng) -> np.ndarray:
    """Households on algemene bijstand: working-age head, low score, single parents likelier."""
    head = pop.h_start
    head_age = pop.p_age[head]
    working = (head_age >= 18) & (head_age < S.AOW_AGE)
    propensity = -score[head] + 0.8 * (pop.h_type == 3) + 0.3 * (pop.h_type == 0)
    propensity = propensity + rng.normal(0, 0.5, pop.n_households)
    n_pick = int(round(S.BIJSTAND_HOUSEHOLD_SHARE * working.sum()))
    candidates = np.flatnonzero(working)
    chosen = candidates[np.argsort(-propensity[candidates], kind="stable")[:n_pick]]
    flag = np.zeros(pop.n_households, dtype=bool)
    flag[chosen] = True
    return flag


def _impose_levels(pop: Population, income, aow, aow_partial, bijstand, rng) -> np.ndarray:
    """Bijstand-level incomes, AOW floors for pensioners, a few entrepreneurs' losses."""
    income = income.copy()
    # AOW plus 8% holiday allowance is the floor of a pensioner's taxable income.
    # Incomes here are at 2022 level, the AOW amounts at stats.AMOUNTS_YEAR level.
    floor = aow * 12 * 1.08 / income_index(S.AMOUNTS_YEAR)
    income = np.maximum(income, np.round(floor))
    # Partial AOW mostly means years lived abroad; such pensioners rarely have a large
    # pension on top (APPROX), which is what makes AIO relevant for them.
    modest = aow_partial & (rng.random(len(aow)) < 0.6)
    income[modest] = np.round(floor[modest] * rng.uniform(1.0, 1.15, modest.sum()))
    on_bijstand = bijstand[pop.p_hh] & np.isin(pop.p_role, (HEAD, PARTNER))
    couple = on_bijstand & (pop.p_partner >= 0)
    single = on_bijstand & ~couple
    income[single] = np.round(rng.uniform(13_000, 17_500, single.sum()))
    income[couple] = np.round(rng.uniform(8_500, 11_500, couple.sum()))
    working_age = (pop.p_age >= 25) & (pop.p_age < S.AOW_AGE) & ~on_bijstand
    loss = working_age & (rng.random(pop.n_persons) < S.NEGATIVE_INCOME_SHARE)
    income[loss] = -np.round(rng.uniform(500, 40_000, loss.sum()))
    return income


def _assets(pop: Population, score, bijstand, rng) -> np.ndarray:
    """Toeslag-vermogen per adult (euro, APPROX): log-normal by age, correlated with income."""
    edges = np.array([a for a, _ in S.ASSET_MEDIAN_BY_AGE])
    medians = np.array([m for _, m in S.ASSET_MEDIAN_BY_AGE], dtype=float)
    median = medians[np.clip(np.searchsorted(edges, pop.p_age, "right") - 1, 0, None)]
    z = (score - score.mean()) / max(score.std(), 1e-9)
    log_assets = np.log(median) + S.ASSET_SIGMA * (0.5 * z + 0.866 * rng.normal(0, 1, len(z)))
    assets = np.round(np.exp(log_assets))
    assets[rng.random(len(z)) < S.ZERO_ASSET_SHARE] = 0
    on_bijstand = bijstand[pop.p_hh]
    assets[on_bijstand] = np.round(rng.uniform(0, 6_000, on_bijstand.sum()))
    assets[pop.p_age < 18] = 0
    return assets


def _tax_years(pop: Population, rng) -> dict:
    """Newest assessed income year, its status, and whether the year before is present."""
    ref_year = pop.reference_date.year
    lags = np.array([lag for lag, _ in S.NEWEST_YEAR_LAG])
    probs = np.array([p for _, p in S.NEWEST_YEAR_LAG])
    # Partners are usually assessed in step: draw per household, re-draw for 10% of adults.
    lag = lags[rng.choice(len(lags), size=pop.n_households, p=probs)][pop.p_hh]
    redraw = rng.random(pop.n_persons) < 0.10
    lag[redraw] = lags[rng.choice(len(lags), size=redraw.sum(), p=probs)]
    status = np.zeros(pop.n_persons, dtype=np.int8)
    u = rng.random(pop.n_persons)
    for value, (p_def, p_prov, _) in S.STATUS_BY_LAG.items():
        sel = lag == value
        status[sel] = np.where(u[sel] < p_def, 0, np.where(u[sel] < p_def + p_prov, 1, 2))
    return {
        "tax_year": ref_year - lag,
        "tax_status": status,  # 0 definitive, 1 provisional, 2 estimated
        "tax_older": rng.random(pop.n_persons) < S.OLDER_YEAR_SHARE,
        "tax_older_status": np.where(rng.random(pop.n_persons) < 0.9, 0, 1).astype(np.int8),
        "tax_record": rng.random(pop.n_persons) >= S.NO_TAX_RECORD_SHARE,
    }
