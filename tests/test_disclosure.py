"""Disclosure control: small cells are hidden, and no hidden cell can be worked out again.

The attacker here is independent of privacy/disclosure.py: it reads only what a report
publishes (report-tables/*.parquet and tables.json), rebuilds every total = sum(parts)
relation from the table layout, identifies the same cell across tables by its labels,
and solves a linear programme for the smallest and largest value of each hidden cell.
The adversarial population is built so that primary suppression alone gives cells away
by differencing (national total minus the visible districts, a district's row total
minus its visible statuses, two tables sharing a margin).
"""

from __future__ import annotations

import itertools
import json
import math
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_runs import Cohort, write_run
from scipy.optimize import linprog

from flows.report import build_report
from privacy.disclosure import (
    ALL,
    LEAF,
    TOTAL,
    CountTable,
    Dimension,
    DisclosureError,
    Rules,
    protect,
    round_amount,
)

THRESHOLD = 10

# -- the attacker ------------------------------------------------------------------------------


def _coord(dim: dict, row: dict) -> tuple:
    value = row[dim["name"]]
    if dim["group_column"]:
        group = row[dim["group_column"]]
        if value == TOTAL:
            return ("total",) if group == TOTAL else ("group", group)
    elif value == TOTAL:
        return ("total",)
    return ("leaf", value)


def _children(dim: dict, coord: tuple) -> list[tuple]:
    if coord[0] == "group":
        return [("leaf", c) for c in dim["groups"][coord[1]]]
    if coord[0] == "total":
        grouped = {c for members in dim["groups"].values() for c in members}
        return [("group", g) for g in dim["groups"]] + [
            ("leaf", c) for c in dim["categories"] if c not in grouped
        ]
    return []


def _meaning(t: dict, coords: tuple) -> frozenset:
    """What a cell counts: its conditions. Public knowledge: every household is evaluated
    for every scheme, so a count over all statuses does not depend on the scheme."""
    conditions = [
        (d["name"],) + c for d, c in zip(t["dims"], coords, strict=True) if c[0] != "total"
    ] + [(k, "leaf", v) for k, v in t["fixed"].items()]
    for a, b in t.get("same_across", []):
        if not any(c[0] == b for c in conditions):
            conditions = [c for c in conditions if c[0] != a]
    return frozenset(conditions)


def published_system(meta: dict, rows_by_table: dict[str, list[dict]]):
    """Cells (universe, meaning) -> published value or None, and the additive relations."""
    cells: dict = {}
    relations = set()
    for name, t in meta.items():
        index = {}
        for row in rows_by_table[name]:
            coords = tuple(_coord(d, row) for d in t["dims"])
            cid = (t["universe"], _meaning(t, coords))
            value = None if row["suppressed"] else row["households"]
            if cells.get(cid) is None:  # a value published anywhere is known everywhere
                cells[cid] = value
            index[coords] = cid
        for coords, cid in index.items():
            for i, dim in enumerate(t["dims"]):
                kids = [
                    index[coords[:i] + (k,) + coords[i + 1 :]] for k in _children(dim, coords[i])
                ]
                if kids:
                    relations.add((cid, tuple(sorted(kids, key=repr))))
    return cells, relations


def attack(cells: dict, relations) -> dict:
    """The attacker's [min, max] for every hidden cell, by linear programming."""
    hidden = sorted((c for c, v in cells.items() if v is None), key=repr)
    col = {c: i for i, c in enumerate(hidden)}
    rows, rhs = [], []
    for total, parts in relations:
        coef, known = [0.0] * len(hidden), 0
        for cell, sign in [(total, -1)] + [(p, 1) for p in parts]:
            if cells[cell] is None:
                coef[col[cell]] += sign
            else:
                known += sign * cells[cell]
        if any(coef):
            rows.append(coef)
            rhs.append(-known)
        else:
            assert known == 0, "published numbers do not add up"
    out = {}
    for c in hidden:
        ends = []
        for sense in (1, -1):
            objective = [0.0] * len(hidden)
            objective[col[c]] = sense
            res = linprog(
                objective, A_eq=rows or None, b_eq=rhs or None, bounds=(0, None), method="highs"
            )
            ends.append(math.inf if res.status == 3 else sense * res.fun)
        out[c] = tuple(ends)
    return out


def load_published(tables_dir: Path):
    meta = json.loads((tables_dir / "tables.json").read_text())["tables"]
    rows = {}
    for name, t in meta.items():
        if name.startswith("trend@"):
            trend = pq.read_table(tables_dir / "trend.parquet").to_pylist()
            rows[name] = [r for r in trend if r["run_id"] == t["universe"]]
        else:
            rows[name] = pq.read_table(tables_dir / f"{name}.parquet").to_pylist()
    return meta, rows


def exact_values(report) -> dict:
    """Ground truth per cell, from the report's own exact aggregates (never published)."""
    out = {}
    for name, t in report.protected.tables.items():
        rows = report.protected.rows(name)
        for cell, row in zip(report.protected.cells[name], rows, strict=True):
            meta = t.describe()
            coords = tuple(_coord(d, row) for d in meta["dims"])
            out[(t.universe, _meaning(meta, coords))] = cell.count
    return out


# -- the adversarial population --------------------------------------------------------------


def _spread(n: int, status: str, district: str, **kw) -> list[Cohort]:
    """n households of one status, spread over ages, household types and incomes (< 75)."""
    out = []
    for i in range(n):
        out.append(
            Cohort(
                1,
                status,
                district,
                age=(25, 40, 55, 68)[i % 4],
                partner=bool((i // 4) % 2),
                children=(i // 8) % 2,
                income=(12_000.0, 20_000.0, 30_000.0, 42_000.0)[(i // 2) % 4],
                **kw,
            )
        )
    return out


def adversarial_cohorts() -> list[Cohort]:
    """Five districts in two municipalities; small cells placed where differencing finds them."""
    c = []
    for district, sig, rec, wh, ne in (
        ("WK000101", 30, 100, 0, 300),
        ("WK000102", 25, 80, 4, 250),  # 4 entitled, not signalled
        ("WK000103", 3, 60, 0, 200),  # 3 signals: national minus the visible four
        ("WK000201", 20, 70, 12, 220),
        ("WK000202", 12, 50, 0, 150),
    ):
        old = 3 if district == "WK000103" else 1 if district == "WK000202" else 0
        debt = 2 if district == "WK000102" else 0
        c.append(Cohort(old, "signalled", district, age=80))  # 4 over-75s: a small age cell
        c.append(Cohort(debt, "signalled", district, arrears=1))  # 2 with early debt signals
        c += _spread(sig - old - debt, "signalled", district, amount=Decimal("1234.56"))
        c += _spread(rec, "receiving", district) + _spread(wh, "withheld", district)
        c += _spread(ne, "not_entitled", district)
    return [x for x in c if x.n]


def write_feedback(run: Path) -> None:
    """Outcomes for the run's signals: one outcome with only 5 signals."""
    ids = sorted(pq.read_table(run / "signals.parquet").column("signal_id").to_pylist())
    outcomes = ["granted"] * 30 + ["applied"] * 20 + ["not_entitled"] * 5 + ["contacted"] * 15
    rows = [
        {"signal_id": i, "scheme": "zorgtoeslag", "outcome": o}
        for i, o in zip(ids, outcomes, strict=False)
    ]
    (run / "feedback").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), run / "feedback" / "outcomes.parquet")


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    run = write_run(root / "runs", adversarial_cohorts())
    write_feedback(run)
    report = build_report(run, root / "out" / "report.html")
    return report


# -- tests -------------------------------------------------------------------------------------


def test_small_cells_are_hidden_and_zero_is_published():
    dim = Dimension("area", ("a", "b", "c"))
    p = protect([CountTable("t", "t", (dim,), {("a",): 3, ("b",): 40, ("c",): 0})])
    assert p.count("t", ((LEAF, "a"),)) is None
    assert p.count("t", ((LEAF, "c"),)) == 0  # zero describes no one
    assert p.count("t", ((LEAF, "b"),)) is None  # else a = total - b - c
    assert p.count("t", ((ALL, TOTAL),)) == 43


def test_amounts_are_rounded_half_to_even():
    assert round_amount(Decimal("2500.00"), 1000) == 2000
    assert round_amount(Decimal("3500.00"), 1000) == 4000
    assert round_amount(Decimal("1234.56"), 1000) == 1000


def test_inconsistent_tables_are_refused():
    dim = Dimension("area", ("a", "b"))
    t1 = CountTable("t1", "t1", (dim,), {("a",): 30, ("b",): 40})
    t2 = CountTable("t2", "t2", (dim,), {("a",): 31, ("b",): 40})
    with pytest.raises(DisclosureError, match="inconsistent"):
        protect([t1, t2])


def test_the_adversarial_small_cells_are_hidden(adversarial):
    p = adversarial.protected
    c_sig = ((LEAF, "zorgtoeslag"), (LEAF, "WK000103"), (LEAF, "signalled"))
    assert p.count("by_district", c_sig) is None
    assert (
        p.count("by_age_band", ((LEAF, "zorgtoeslag"), (LEAF, "75 and over"), (LEAF, "signalled")))
        is None
    )
    assert p.count("feedback", ((LEAF, "zorgtoeslag"), (LEAF, "not_entitled"))) is None
    # the headline figures survive
    assert p.count("by_scheme", ((LEAF, "zorgtoeslag"), (LEAF, "signalled"))) == 90


def test_no_suppressed_cell_can_be_recovered_from_the_published_report(adversarial):
    meta, rows = load_published(adversarial.tables_dir)
    cells, relations = published_system(meta, rows)
    truth = exact_values(adversarial)
    intervals = attack(cells, relations)
    assert len(intervals) >= 10  # there is something to attack
    for cell, (lo, hi) in intervals.items():
        assert lo - 1e-6 <= truth[cell] <= hi + 1e-6  # the attacker's model is sound
        assert hi - lo >= 1 - 1e-6, f"{sorted(cell[1])} is {truth[cell]}: recovered exactly"
        if 0 < truth[cell] < THRESHOLD:
            assert hi - lo >= THRESHOLD - 1e-6, f"{sorted(cell[1])} narrowed to [{lo}, {hi}]"


def test_primary_suppression_alone_would_give_the_small_cells_away(adversarial):
    """The same report with only the small cells hidden: the attacker recovers them."""
    meta, rows = load_published(adversarial.tables_dir)
    truth = exact_values(adversarial)
    primary_only = {
        name: [dict(r, suppressed=False) for r in table] for name, table in rows.items()
    }
    cells, relations = published_system(meta, primary_only)
    for cid in cells:
        cells[cid] = None if 0 < truth[cid] < THRESHOLD else truth[cid]
    intervals = attack(cells, relations)
    recovered = {cid for cid, (lo, hi) in intervals.items() if hi - lo < 1e-6}
    c_sig = frozenset(
        {
            ("scheme", "leaf", "zorgtoeslag"),
            ("district", "leaf", "WK000103"),
            ("status", "leaf", "signalled"),
        }
    )
    assert any(cid[1] == c_sig for cid in recovered)  # national total minus visible districts
    assert len(recovered) >= 4


def test_two_tables_sharing_a_margin_are_protected_together_not_apart():
    """Protected apart, the second table publishes the margin the first one hid."""
    area = Dimension("area", ("a", "b", "c"))
    status = Dimension("status", ("signalled", "receiving", "withheld"))
    outcome = Dimension("outcome", ("granted", "other"))
    by_area = CountTable(
        "by_area",
        "by area",
        (area, status),
        {
            ("a", "signalled"): 12,
            ("a", "receiving"): 300,
            ("a", "withheld"): 3,
            ("b", "signalled"): 15,
            ("b", "receiving"): 200,
            ("b", "withheld"): 0,
            ("c", "signalled"): 20,
            ("c", "receiving"): 250,
            ("c", "withheld"): 0,
        },
    )
    feedback = CountTable(
        "feedback",
        "feedback",
        (outcome,),
        {("granted",): 30, ("other",): 17},
        fixed=(("status", "signalled"),),
    )
    tables = {"by_area": by_area, "feedback": feedback}
    meta = {n: t.describe() for n, t in tables.items()}
    truth = {}
    for n, t in tables.items():
        truth.update(exact_values(_Wrap(protect([t]), {n: t})))

    apart = {n: protect([t]).rows(n) for n, t in tables.items()}
    cells, relations = published_system(meta, apart)
    leaked = [
        c
        for c, (lo, hi) in attack(cells, relations).items()
        if hi - lo < THRESHOLD and 0 < truth[c] < THRESHOLD
    ]
    assert leaked, "the tables are not adversarial: protecting them apart already works"

    together = protect(list(tables.values()))
    cells, relations = published_system(meta, {n: together.rows(n) for n in tables})
    for c, (lo, hi) in attack(cells, relations).items():
        assert hi - lo >= 1 - 1e-6
        if 0 < truth[c] < THRESHOLD:
            assert hi - lo >= THRESHOLD - 1e-6


class _Wrap:
    def __init__(self, protected, tables):
        self.protected = protected
        protected.tables = tables


def test_the_audit_covers_every_cell_combination_of_a_small_cube():
    """A 3 x 3 x 2 cube with random small counts: every hidden cell keeps its interval."""
    import random

    rnd = random.Random(7)
    dims = (
        Dimension("x", ("p", "q", "r")),
        Dimension("y", ("u", "v", "w")),
        Dimension("z", ("s", "t")),
    )
    for _ in range(5):
        counts = {
            k: rnd.choice([0, 1, 2, 5, 9, 12, 30, 80])
            for k in itertools.product(*(d.categories for d in dims))
        }
        t = CountTable("cube", "cube", dims, counts)
        p = protect([t], Rules(threshold=THRESHOLD))
        truth = exact_values(_Wrap(p, {"cube": t}))
        cells, relations = published_system({"cube": t.describe()}, {"cube": p.rows("cube")})
        for c, (lo, hi) in attack(cells, relations).items():
            assert hi - lo >= 1 - 1e-6
            if 0 < truth[c] < THRESHOLD:
                assert hi - lo >= THRESHOLD - 1e-6


def test_two_schemes_share_their_household_counts_and_stay_protected(tmp_path):
    """A second scheme with its own small cells: the households per district are one number
    for both schemes, hidden or shown alike, and nothing hidden can be recovered."""
    cohorts = []
    for i, c in enumerate(adversarial_cohorts()):
        other = "signalled" if i % 7 == 0 else "receiving" if i % 3 == 0 else "not_entitled"
        cohorts.append(
            Cohort(
                c.n,
                c.status,
                c.district,
                c.age,
                c.partner,
                c.children,
                c.income,
                c.arrears,
                c.amount,
                also=(("huurtoeslag", other),),
            )
        )
    report = build_report(write_run(tmp_path / "runs", cohorts), tmp_path / "r.html")
    p = report.protected
    for d in ("WK000101", "WK000103"):
        a = p.count("by_district", ((LEAF, "zorgtoeslag"), (LEAF, d), (ALL, TOTAL)))
        b = p.count("by_district", ((LEAF, "huurtoeslag"), (LEAF, d), (ALL, TOTAL)))
        assert a == b
    meta, rows = load_published(report.tables_dir)
    cells, relations = published_system(meta, rows)
    truth = exact_values(report)
    intervals = attack(cells, relations)
    assert intervals
    for cell, (lo, hi) in intervals.items():
        assert hi - lo >= 1 - 1e-6, f"{sorted(cell[1])} recovered"
        if 0 < truth[cell] < THRESHOLD:
            assert hi - lo >= THRESHOLD - 1e-6, f"{sorted(cell[1])} narrowed to [{lo}, {hi}]"


@pytest.mark.parametrize("seed", range(6))
def test_the_audit_lp_gives_the_same_bounds_as_an_independent_solve(seed):
    # The audit re-solves one HiGHS model per objective (warm starts); each bound must equal
    # a fresh, independent solve with scipy's linprog. Random sparse systems with a known
    # non-negative solution, some with free directions (unbounded maxima).
    import random

    from privacy.disclosure import _LinearProgram

    rng = random.Random(seed)
    n, m = rng.randint(3, 12), rng.randint(1, 6)
    truth = [rng.randint(0, 20) for _ in range(n)]
    rows = [[rng.choice((-1, 0, 0, 1)) for _ in range(n)] for _ in range(m)]
    rhs = [sum(a * x for a, x in zip(row, truth, strict=True)) for row in rows]
    columns = [[(i, float(rows[i][j])) for i in range(m) if rows[i][j]] for j in range(n)]
    lp = _LinearProgram(columns, rhs)
    for j in range(n):
        for sense in (1, -1):
            objective = [0.0] * n
            objective[j] = sense
            ref = linprog(objective, A_eq=rows, b_eq=rhs, bounds=(0, None), method="highs")
            expected = (math.inf if sense < 0 else 0.0) if ref.status == 3 else ref.fun * sense
            assert lp.optimum(j, sense) == pytest.approx(expected, abs=1e-7), (j, sense)
