"""Published Dutch statistics that shape the synthetic population, each with its source.

The generator only needs plausible data, but every share below is taken from (or, where
marked APPROX, roughly in line with) a published figure so that signal volumes in demos
are of a believable order. Where no figure was available to us the value is marked
APPROX and chosen by judgement; such values must never be read as official numbers.
Scheme amounts and thresholds here are for generating data only: the entitlement rules
carry their own, officially sourced parameters.
"""

from __future__ import annotations

# --- Households -------------------------------------------------------------------------
# CBS StatLine 37975 "Particuliere huishoudens naar samenstelling en grootte, 1 januari",
# 2024: 8,374,404 households, of which 3,340,560 single-person (39.9%), 2,385,910
# multi-person without children (28.5%) and 2,647,934 with children (31.6%).
# The split of "with children" into couples and single parents (~7.5% of all households
# are eenouderhuishoudens) and of "without children" into couples and other multi-person
# households (~1.3%) is APPROX.
HOUSEHOLD_TYPES = ("single", "couple", "couple_kids", "single_parent", "other")
HOUSEHOLD_TYPE_SHARES = (0.399, 0.272, 0.241, 0.075, 0.013)
SINGLE, COUPLE, COUPLE_KIDS, SINGLE_PARENT, OTHER = range(5)

# Number of children living at home, derived APPROX from the same table's size classes
# (2p/3p/4p/5+p: 2,706,372 / 968,419 / 953,582 / 405,471) for households with children.
KIDS_COUPLE = ((1, 0.36), (2, 0.45), (3, 0.14), (4, 0.04), (5, 0.01))
KIDS_SINGLE_PARENT = ((1, 0.58), (2, 0.32), (3, 0.08), (4, 0.02))
# Co-residents ("overig lid huishouden"): CBS 81066ned counts ~220k of them (about 1.2% of
# persons in households); we add one to this APPROX share of family households.
EXTRA_OTHER_SHARE = 0.02
OTHER_HOUSEHOLD_EXTRA_MEMBERS = ((1, 0.70), (2, 0.22), (3, 0.08))  # APPROX (student houses)

# Age of the head (reference person) by household type: (age_from, age_to_inclusive, share).
# APPROX, shaped after CBS 37975 by age of the reference person and tuned so that the
# resulting population has ~19-20% under 18 and ~20% aged 65+ (CBS population
# 1 January 2024: about one in five is 65 or older; 0-19 about 21%).
HEAD_AGE_BINS = {
    SINGLE: (
        (18, 24, 0.10),
        (25, 34, 0.17),
        (35, 44, 0.09),
        (45, 54, 0.11),
        (55, 64, 0.15),
        (65, 74, 0.16),
        (75, 84, 0.15),
        (85, 89, 0.05),
        (90, 99, 0.02),
    ),
    COUPLE: (
        (19, 24, 0.03),
        (25, 34, 0.16),
        (35, 44, 0.05),
        (45, 54, 0.08),
        (55, 64, 0.22),
        (65, 74, 0.28),
        (75, 84, 0.15),
        (85, 94, 0.03),
    ),
    COUPLE_KIDS: ((22, 34, 0.12), (35, 44, 0.33), (45, 54, 0.38), (55, 64, 0.16), (65, 72, 0.01)),
    SINGLE_PARENT: ((20, 34, 0.15), (35, 44, 0.32), (45, 54, 0.34), (55, 64, 0.15), (65, 80, 0.04)),
    OTHER: ((18, 24, 0.40), (25, 34, 0.35), (35, 64, 0.20), (65, 85, 0.05)),
}
# Mother's age at birth: CBS reports an average of about 30 at the first and about 32 over
# all births; we use mean 31, sd 4.5 (APPROX) for the gap between head and eldest child.
PARENT_AGE_AT_BIRTH = (31.0, 4.5)
# Partner's age relative to the head: head older by ~2 years on average (APPROX).
PARTNER_AGE_GAP = (2.0, 3.5)

# --- Geography --------------------------------------------------------------------------
# Municipalities (CBS gemeentecode) weighted by their approximate population
# (Utrecht ~370k, Amersfoort ~160k, Nieuwegein ~65k). The number of districts per
# municipality is illustrative, not CBS's wijk list.
MUNICIPALITIES = (("GM0344", 0.62, 10), ("GM0307", 0.27, 8), ("GM0356", 0.11, 5))

# --- Income -----------------------------------------------------------------------------
# CBS StatLine 83931NED "Inkomen van personen; inkomensklassen", persoonlijk inkomen 2022*:
# 14,162.4 thousand persons with income, mean 37.4k, median 29.7k. Brackets (euro, lower,
# upper, persons x 1000, mean in the bracket x 1000):
PERSONAL_INCOME_BRACKETS_2022 = (
    (0, 10_000, 1803.8, 4.1),
    (10_000, 20_000, 2849.0, 15.4),
    (20_000, 30_000, 2495.3, 24.8),
    (30_000, 40_000, 2053.0, 34.9),
    (40_000, 50_000, 1632.2, 44.7),
    (50_000, 100_000, 2778.1, 66.7),
    (100_000, 200_000, 473.3, 129.3),
    (200_000, None, 77.7, 338.0),
)
INCOME_BASE_YEAR = 2022
# Nominal income growth per year after 2022, APPROX (CBS reports collective wage rises of
# roughly 6% in 2023 and 2024; we use a flat 4% to stay conservative).
INCOME_GROWTH = 0.04
# Adults without personal income: CBS counts 14.16M persons with income against ~14.5M
# adults, so a few percent have none (APPROX 4%).
ZERO_INCOME_SHARE = 0.04
# Entrepreneurs with a loss (negative verzamelinkomen): APPROX, kept small.
NEGATIVE_INCOME_SHARE = 0.003
# Latent income score by age (APPROX, tuned to CBS 84494NED age pattern: low under 25,
# peak 35-55, pension level after AOW age).
INCOME_AGE_EFFECT = (
    (18, -1.6),
    (22, -0.9),
    (25, -0.1),
    (30, 0.25),
    (35, 0.45),
    (55, 0.3),
    (67, -0.35),
    (75, -0.6),
)
INCOME_ROLE_EFFECT = {"head": 0.0, "partner": -0.25, "child": -0.8, "other": -0.3}

# Box-3-like assets per adult (toeslagen "vermogen", own home excluded): APPROX. CBS
# "Vermogen van huishoudens" shows most households with modest savings and a long tail;
# no published per-person distribution of toeslag-vermogen was available to us.
ASSET_MEDIAN_BY_AGE = ((18, 1_500), (25, 6_000), (35, 12_000), (55, 30_000), (67, 40_000))
ASSET_SIGMA = 1.5
ZERO_ASSET_SHARE = 0.12

# --- Tax assessments --------------------------------------------------------------------
# Newest income year relative to the reference year and its status: APPROX. Assessments
# lag: the definitive aanslag usually arrives 1-3 years after the income year.
NEWEST_YEAR_LAG = ((0, 0.05), (1, 0.55), (2, 0.35), (3, 0.05))
STATUS_BY_LAG = {  # (definitive, provisional, estimated)
    0: (0.00, 0.80, 0.20),
    1: (0.30, 0.55, 0.15),
    2: (0.85, 0.12, 0.03),
    3: (1.00, 0.00, 0.00),
}
OLDER_YEAR_SHARE = 0.65  # adults that also have the year before the newest (APPROX)
NO_TAX_RECORD_SHARE = 0.015  # e.g. recently arrived (APPROX)

# --- Housing ----------------------------------------------------------------------------
# CBS StatLine 82900NED, 1 January 2023: 8,125,229 dwellings, 4,634,411 owner-occupied
# (57.0%), 2,312,981 owned by housing corporations (28.5%), 1,166,607 by other landlords
# (14.4%). We map corporation to social_rent and other landlords to private_rent.
TENURE_SHARES = {"owner_occupied": 0.57, "social_rent": 0.29, "private_rent": 0.14}
# Rents (kale huur, euro/month): APPROX. Corporation rents average roughly 600-650;
# private rents roughly 1,000-1,100 with a tail.
SOCIAL_RENT = (640.0, 110.0, 300.0, 900.0)  # mean, sd, min, max
PRIVATE_RENT = (1050.0, 0.30, 550.0, 3000.0)  # median, log-sd, min, max
# Years at the current address, mean of an exponential: APPROX.
YEARS_AT_ADDRESS = {"owner_occupied": 13.0, "social_rent": 10.0, "private_rent": 4.0}

# --- Deregistration ---------------------------------------------------------------------
# Deaths (~170k/yr, ~1%) and emigration: CBS bevolkingsdynamiek. We deregister about 1% of
# persons in the year before the reference date, by age (APPROX).
DEREGISTRATION_BY_AGE = ((0, 0.004), (20, 0.012), (40, 0.004), (65, 0.012), (80, 0.08))

# --- Health insurance -------------------------------------------------------------------
# Uninsured: CBS 71433ned counted 1.1% formally uninsured in 2010; after the Wet opsporing
# en verzekering onverzekerden the share is far lower. We use 0.2% of adults (APPROX,
# within the 0.1-0.3% commonly cited), concentrated at ages 20-44 as in CBS 71433ned.
UNINSURED_SHARE = 0.002
# Synthetic insurer ids and APPROX market shares (four concerns hold the large majority).
INSURERS = (
    ("ZV0101", 0.27),
    ("ZV0202", 0.25),
    ("ZV0303", 0.21),
    ("ZV0404", 0.12),
    ("ZV0505", 0.08),
    ("ZV0606", 0.07),
)
INSURER_SWITCH_RATE = 0.07  # per year, APPROX (Vektis reports ~6-8% switching)

# --- Benefits ---------------------------------------------------------------------------
# Non-take-up: CPB (2025, over 2021): zorgtoeslag ~12%, huurtoeslag ~12%, kindgebonden
# budget 8.5%; higher for small amounts, only 1-2% among bijstand recipients.
NON_TAKE_UP = {"zorgtoeslag": 0.12, "huurtoeslag": 0.12, "kindgebonden_budget": 0.085}
NON_TAKE_UP_BIJSTAND = 0.02
# Households receiving although not (or no longer) entitled, e.g. on an outdated income
# estimate; APPROX, among households up to 15% above the income limit.
OVERPAID_SHARE = 0.05
# Non-take-up households that received the scheme earlier and stopped (ended row): APPROX.
STOPPED_SHARE = 0.25

# Benefit amounts and thresholds below are at roughly this year's level (APPROX).
AMOUNTS_YEAR = 2025
# Generation thresholds (euro): roughly the 2025 Belastingdienst figures; APPROX.
ZT_INCOME_LIMIT = (39_719, 50_206)  # single, with toeslagpartner
ZT_ASSET_LIMIT = (141_896, 179_429)
ZT_MAX_MONTHLY = (131.0, 250.0)  # APPROX
HT_MAX_RENT = 900.07
HT_INCOME_LIMIT = (34_000, 46_000)  # APPROX: huurtoeslag phases out, no hard limit
HT_ASSET_LIMIT = (37_395, 74_790)
KGB_PER_CHILD_YEAR = 2_500.0  # APPROX
KGB_SINGLE_PARENT_YEAR = 3_400.0  # APPROX (alleenstaande-ouderkop)
KGB_THRESHOLD = (28_000, 38_000)  # APPROX: phase-out starts (single, partner)
KGB_PHASE_OUT = 0.0675  # APPROX
# Kinderbijslag per child per month by age band 0-5 / 6-11 / 12-17: APPROX (quarterly
# SVB amounts of roughly 280 / 340 / 400 divided by three).
KINDERBIJSLAG_MONTHLY = ((0, 94.0), (6, 114.0), (12, 134.0))
# AOW gross per month (APPROX 2025): single, each partner. AOW age 67 from 2024 to 2027.
AOW_MONTHLY = (1580.0, 1085.0)
AOW_AGE = 67
AOW_PARTIAL_SHARE = 0.12  # APPROX: years lived abroad reduce AOW by 2% per year
# Bijstand: CBS counted 406,000 persons with algemene bijstand at the end of 2024 (~2.3% of
# the population); we select ~4.5% of working-age households (APPROX). Net norms APPROX.
BIJSTAND_HOUSEHOLD_SHARE = 0.045
BIJSTAND_MONTHLY = (1400.0, 2000.0)  # single (parent), couple
AIO_INCOME_LIMIT = (19_500, 27_000)  # APPROX social minimum for pensioners, euro/year
BIJSTAND_ASSET_LIMIT = (7_900, 15_800)  # APPROX Participatiewet vermogensgrens 2025
AIO_TAKE_UP = 0.55  # APPROX: non-take-up of AIO is widely reported to be high
WW_SHARE = 0.015  # of working-age adults with income (APPROX, UWV ~250k WW benefits)
KINDEROPVANG_TAKE_UP = (0.55, 0.25)  # youngest child < 4, 4-12 (APPROX)
KWIJTSCHELDING_TAKE_UP = 0.6  # among bijstand households (APPROX)

# --- Arrears (vroegsignalering) ---------------------------------------------------------
# Divosa Monitor Vroegsignalering Schulden 2023: municipalities received on average 4 early
# signals per 1,000 inhabitants per month; health insurers deliver the most (45%). A
# delivery covering the last three months therefore holds ~12 signals per 1,000 persons.
ARREARS_SIGNALS_PER_PERSON = 0.012
ARREARS_SECTOR_SHARES = (
    ("health_insurance", 0.45),
    ("energy", 0.22),
    ("housing", 0.18),
    ("water", 0.15),
)  # split of the non-insurer 55% is APPROX
ARREARS_SIGNALS_PER_HOUSEHOLD = ((1, 0.80), (2, 0.15), (3, 0.05))  # APPROX (Divosa: half
# of the reports are single, 11% have two or more signals in the same month)

# --- Objections -------------------------------------------------------------------------
OBJECTION_SHARE = 0.005  # of adults (APPROX; no published figure for this register)
OBJECTION_ALL_SHARE = 0.5  # scope 'all' versus one scheme (APPROX)
