"""Statistical disclosure control for the aggregate reports: suppression, rounding, audit.

Policy makers see counts of households per cell of a table (per scheme, per district and
status, ...). This module decides which of those numbers may be published:

* Primary suppression: a count of 1 to `threshold - 1` households (default 10) is hidden.
  Zero is published: it describes no one.
* Carried suppression: a cell hidden in the previous period's report (for its own sake, not
  because it was carried itself) stays hidden in this one, so that a cell does not flip
  from hidden to shown between two consecutive reports of a nearly unchanged population.
* Secondary suppression: more cells are hidden until nobody can work a hidden cell out
  from what is published, across every table of the report at once. Two checks, repeated
  until both hold: (1) no additive relation (a total and its parts) has exactly one hidden
  member, and (2) an LP audit: an attacker who knows every published number, every
  relation, and that counts are not negative, solves for the smallest and largest value
  of each hidden cell (HiGHS, one model per group of linked hidden cells). A hidden cell
  must not be pinned down: its feasible interval must be at least 1 wide, and at least
  `min_interval` (default: the threshold) for a primary cell, so that not even a sum of
  small hidden cells can be computed. When a cell fails, the cheapest unsuppressed cell
  related to it is hidden (detail before totals, small before large) and the audit runs
  again.
* Amounts (estimated EUR per year) follow the pattern of their counts and are rounded to
  `amount_rounding` (default EUR 1,000), each independently: totals may differ from the
  sum of their rounded parts.

Cells are identified by their meaning, not by their table: the set of conditions
(dimension, level, category) they count plus the period (`universe`). The national
number of signals appears in every table of a scheme; it is one cell, with one value
and one suppression status. Tables are additive cubes: every combination of leaf, group
and total levels of their dimensions is a cell, so every total and subtotal a reader
sees is part of the model the audit attacks.

The audit's LP is exact for the linked tables this project publishes, which all share
one common margin (scheme x status) and nothing else: for such a star of tables a joint
table exists for any values consistent on that margin, so nothing more can be derived
from the microdata model than from the tables' own relations. It is a relaxation (an
attacker could know more) if tables are later linked through two different margins.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import highspy
import numpy as np

TOTAL = "Total"
LEAF, GROUP, ALL = "leaf", "group", "total"
STATE_FORMAT = "signals-disclosure-state/1"

Coord = tuple[str, str]  # (level, value)
CellId = tuple[str, str]  # (universe, meaning)


class DisclosureError(Exception):
    """Tables that cannot be protected as given: inconsistent or malformed input."""


@dataclass(frozen=True)
class Rules:
    """The disclosure rules of a report; recorded in the report and its state file."""

    threshold: int = 10
    min_interval: int | None = None  # None: the threshold
    amount_rounding: int = 1000
    carry_forward: bool = True

    @property
    def interval(self) -> int:
        return self.threshold if self.min_interval is None else self.min_interval

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "min_interval": self.interval,
            "amount_rounding": self.amount_rounding,
            "carry_forward": self.carry_forward,
        }


# The policy floor is the default: a report may protect more (a higher threshold, a wider
# interval, coarser rounding), never less. Whoever runs a report must not be able to switch
# the protection off; the floors are the numbers this module was built and tested for.
POLICY = Rules()


class PolicyError(DisclosureError):
    """Report settings that would protect less than the policy floor."""


def check_policy(rules: Rules) -> None:
    """Raise PolicyError naming the first setting below its floor, and why it is a floor."""
    floor = POLICY
    if rules.threshold < floor.threshold:
        raise PolicyError(
            f"threshold {rules.threshold} is below the policy floor {floor.threshold}: cells "
            f"of fewer than {floor.threshold} households are never published"
        )
    if rules.interval < rules.threshold:
        raise PolicyError(
            f"min interval {rules.interval} is below the threshold {rules.threshold} (the "
            "policy floor): a suppressed cell must stay at least that uncertain, or it can "
            "be narrowed down from the published cells"
        )
    if rules.amount_rounding < floor.amount_rounding:
        raise PolicyError(
            f"amount rounding {rules.amount_rounding} is below the policy floor EUR "
            f"{floor.amount_rounding:,}: finer amounts can give a small cell's count away"
        )
    if not rules.carry_forward and floor.carry_forward:
        raise PolicyError(
            "carry-forward is part of the policy floor: a cell suppressed last period stays "
            "suppressed, or comparing the two reports reveals it"
        )


@dataclass(frozen=True)
class Dimension:
    """A classification of a table: leaf categories, optionally one group level, a total."""

    name: str
    categories: tuple[str, ...]
    groups: tuple[tuple[str, str], ...] = ()  # (category, group); others sit under the total
    group_name: str | None = None  # column of the group level, e.g. "municipality"
    has_total: bool = True

    def __post_init__(self):
        if len(set(self.categories)) != len(self.categories):
            raise DisclosureError(f"dimension {self.name}: duplicate categories")
        if TOTAL in self.categories:
            raise DisclosureError(f"dimension {self.name}: {TOTAL!r} is reserved")
        unknown = {c for c, _ in self.groups} - set(self.categories)
        if unknown:
            raise DisclosureError(f"dimension {self.name}: groups name unknown {sorted(unknown)}")
        if self.groups and not self.group_name:
            raise DisclosureError(f"dimension {self.name}: groups need a group_name")

    @property
    def group_of(self) -> dict[str, str]:
        return dict(self.groups)

    def group_names(self) -> list[str]:
        return list(dict.fromkeys(g for _, g in self.groups))

    def coordinates(self) -> list[Coord]:
        coords = [(LEAF, c) for c in self.categories] + [(GROUP, g) for g in self.group_names()]
        return coords + ([(ALL, TOTAL)] if self.has_total else [])

    def children(self, coord: Coord) -> list[Coord]:
        level, value = coord
        if level == GROUP:
            return [(LEAF, c) for c, g in self.groups if g == value]
        if level == ALL:
            ungrouped = [(LEAF, c) for c in self.categories if c not in self.group_of]
            return [(GROUP, g) for g in self.group_names()] + ungrouped
        return []

    def ancestors(self, category: str) -> list[Coord]:
        """The coordinates a leaf category counts towards: itself, its group, the total."""
        out = [(LEAF, category)]
        if category in self.group_of:
            out.append((GROUP, self.group_of[category]))
        return out + ([(ALL, TOTAL)] if self.has_total else [])

    def columns(self, coord: Coord) -> dict[str, str]:
        """How a coordinate is written in a published table: one or two label columns."""
        level, value = coord
        if not self.group_name:
            return {self.name: value}
        if level == LEAF:
            return {self.group_name: self.group_of.get(value, value), self.name: value}
        if level == GROUP:
            return {self.group_name: value, self.name: TOTAL}
        return {self.group_name: TOTAL, self.name: TOTAL}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "categories": list(self.categories),
            "groups": {g: [c for c, gg in self.groups if gg == g] for g in self.group_names()},
            "group_column": self.group_name,
            "has_total": self.has_total,
        }


Key = tuple[Coord, ...]


@dataclass
class CountTable:
    """Counts of households per leaf cell of a set of dimensions, with optional amounts.

    `counts` and `amounts` are keyed by leaf categories, one per dimension; absent counts
    are zero. A cell has an amount when every leaf under it has one. `extra_amounts` gives
    amounts of aggregated cells whose parts are not known (keyed by coordinates). `fixed`
    are conditions that every cell of the table shares (e.g. status = signalled).
    """

    name: str
    title: str
    dims: tuple[Dimension, ...]
    counts: Mapping[tuple[str, ...], int]
    amounts: Mapping[tuple[str, ...], Decimal] = field(default_factory=dict)
    extra_amounts: Mapping[Key, Decimal] = field(default_factory=dict)
    fixed: tuple[tuple[str, str], ...] = ()
    universe: str = ""
    # (a, b): when dimension b is totalled, the count does not depend on dimension a, so the
    # cell is the same for every category of a (every household is evaluated for every
    # scheme: the households of a district are the same number in each scheme's table).
    same_across: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for key in list(self.counts) + list(self.amounts):
            if len(key) != len(self.dims):
                raise DisclosureError(f"table {self.name}: key {key} does not match its dims")
            for dim, cat in zip(self.dims, key, strict=True):
                if cat not in dim.categories:
                    raise DisclosureError(
                        f"table {self.name}: {cat!r} is not a category of {dim.name}"
                    )
        if any(v < 0 for v in self.counts.values()):
            raise DisclosureError(f"table {self.name}: negative count")

    def keys(self) -> list[Key]:
        return list(itertools.product(*(d.coordinates() for d in self.dims)))

    def meaning(self, key: Key) -> str:
        parts = {
            f"{d.name}={v}" if lvl == LEAF else f"{d.name}@{v}"
            for d, (lvl, v) in zip(self.dims, key, strict=True)
            if lvl != ALL
        }
        parts |= {f"{d}={v}" for d, v in self.fixed}
        for a, b in self.same_across:
            if not any(p.split("=")[0].split("@")[0] == b for p in parts):
                parts = {p for p in parts if p.split("=")[0].split("@")[0] != a}
        return "|".join(sorted(parts)) or "*"

    def cell_id(self, key: Key) -> CellId:
        return (self.universe, self.meaning(key))

    def aggregate(self) -> tuple[dict[Key, int], dict[Key, Decimal]]:
        """Counts of every cell, and amounts of every cell whose leaves all have one."""
        counts: dict[Key, int] = dict.fromkeys(self.keys(), 0)
        amounts: dict[Key, Decimal] = defaultdict(Decimal)
        with_amount: dict[Key, int] = defaultdict(int)
        for key, n in self.counts.items():
            for anc in self._ancestors(key):
                counts[anc] += int(n)
        for key, amount in self.amounts.items():
            for anc in self._ancestors(key):
                amounts[anc] += Decimal(amount)
                with_amount[anc] += 1
        leaves = {
            k: math.prod(_leaf_count(d, c) for d, c in zip(self.dims, k, strict=True))
            for k in counts
        }
        complete = {k: amounts[k] for k in amounts if with_amount[k] == leaves[k]}
        complete.update({k: Decimal(v) for k, v in self.extra_amounts.items()})
        return counts, complete

    def _ancestors(self, key: tuple[str, ...]) -> Iterable[Key]:
        return itertools.product(*(d.ancestors(c) for d, c in zip(self.dims, key, strict=True)))

    def relations(self) -> list[tuple[Key, list[Key]]]:
        """Every additive relation: (total, its parts) along each aggregated dimension."""
        out = []
        for key in self.keys():
            for i, (dim, coord) in enumerate(zip(self.dims, key, strict=True)):
                parts = dim.children(coord)
                if parts:
                    out.append((key, [key[:i] + (p,) + key[i + 1 :] for p in parts]))
        return out

    def describe(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "dims": [d.describe() for d in self.dims],
            "fixed": dict(self.fixed),
            "universe": self.universe,
            "same_across": [list(x) for x in self.same_across],
        }


def _leaf_count(dim: Dimension, coord: Coord) -> int:
    level, value = coord
    if level == LEAF:
        return 1
    if level == GROUP:
        return sum(1 for _, g in dim.groups if g == value)
    return len(dim.categories)


@dataclass
class Cell:
    table: str
    key: Key
    id: CellId
    count: int
    amount: Decimal | None
    depth: int  # how aggregated (a group 1, a total 2 per dimension): the cost of hiding it


@dataclass
class Protected:
    """The outcome: every cell of every table, which are hidden, and the audit's intervals."""

    rules: Rules
    tables: dict[str, CountTable]
    cells: dict[str, list[Cell]]
    suppressed: dict[CellId, str]  # id -> primary | secondary | carried
    intervals: dict[CellId, tuple[float, float]]

    def is_suppressed(self, cell_id: CellId) -> bool:
        return cell_id in self.suppressed

    def count(self, table: str, key: Key) -> int | None:
        cell = self._lookup(table, key)
        return None if cell.id in self.suppressed else cell.count

    def amount(self, table: str, key: Key) -> int | None:
        cell = self._lookup(table, key)
        if cell.id in self.suppressed or cell.amount is None:
            return None
        return round_amount(cell.amount, self.rules.amount_rounding)

    def amount_under_unit(self, table: str, key: Key) -> bool:
        """A published amount that rounds to 0 but is not 0: to be shown as "under the
        rounding unit", never as a misleading zero."""
        cell = self._lookup(table, key)
        published = self.amount(table, key)
        return published == 0 and cell.amount is not None and cell.amount > 0

    def _lookup(self, table: str, key: Key) -> Cell:
        index = self.__dict__.setdefault("_index", {})
        if table not in index:
            index[table] = {c.key: c for c in self.cells[table]}
        return index[table][key]

    def rows(self, table: str) -> list[dict]:
        """The published form of a table: label columns, households, amount_eur, suppressed."""
        t = self.tables[table]
        has_amounts = any(c.amount is not None for c in self.cells[table])
        out = []
        for cell in self.cells[table]:
            row: dict = {}
            for dim, coord in zip(t.dims, cell.key, strict=True):
                row.update(dim.columns(coord))
            hidden = cell.id in self.suppressed
            row["households"] = None if hidden else cell.count
            if has_amounts:
                row["amount_eur"] = self.amount(table, cell.key)
            row["suppressed"] = hidden
            out.append(row)
        return out

    def state(self) -> dict:
        """What the next period needs to keep the pattern: hidden cells, and which were carried."""
        return {
            "format": STATE_FORMAT,
            "rules": self.rules.as_dict(),
            "suppressed": [
                {"universe": u, "cell": m, "carried": why == "carried"}
                for (u, m), why in sorted(self.suppressed.items())
            ],
        }

    def summary(self) -> dict:
        reasons = defaultdict(int)
        for why in self.suppressed.values():
            reasons[why] += 1
        cells = {c.id for cs in self.cells.values() for c in cs}
        return {"cells": len(cells), "suppressed": len(self.suppressed), **reasons}


def round_amount(amount: Decimal, unit: int) -> int:
    """Round to a multiple of `unit` (half to even, so that rounding has no bias)."""
    return int((Decimal(amount) / unit).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * unit)


def carried_from(state: Mapping | None) -> set[CellId]:
    """The cells a previous report hid for their own sake: they stay hidden this period."""
    if not state:
        return set()
    if state.get("format") != STATE_FORMAT:
        raise DisclosureError(f"previous disclosure state has format {state.get('format')!r}")
    return {(s["universe"], s["cell"]) for s in state["suppressed"] if not s["carried"]}


# -- the procedure -----------------------------------------------------------------------------


def protect(
    tables: list[CountTable],
    rules: Rules = Rules(),
    forced: Iterable[CellId] = (),
    carried: Iterable[CellId] = (),
    link: bool = True,
    weights: Mapping[str, float] | None = None,
) -> Protected:
    """Apply primary, carried and secondary suppression to all tables of one report at once.

    `forced` cells are hidden as primary (e.g. a past period's own hidden cells in a trend);
    `carried` as carried (from the previous report), when they exist in these tables.
    `link=False` is for noisy (differentially private) tables: their cells are not exact,
    so the same meaning can differ between tables and differencing reveals only noise;
    then only primary and carried suppression apply. `weights` rank cells for secondary
    suppression: a cell whose meaning has a weighted condition (e.g. "status=signalled")
    is hidden only when no cell of a lower weight will do.
    """
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise DisclosureError(f"duplicate table names: {names}")
    cells, values = _cells(tables, link)
    suppressed: dict[CellId, str] = {}
    for cid, n in values.items():
        if 0 < n < rules.threshold:
            suppressed[cid] = "primary"
    for cid in forced:
        if cid in values:
            suppressed.setdefault(cid, "primary")
    if rules.carry_forward:
        for cid in carried:
            if cid in values:
                suppressed.setdefault(cid, "carried")
    # A cell seen in several tables costs what it costs where it is most aggregated: the
    # national count of signals is a leaf of the scheme table but a total everywhere else.
    depth: dict[CellId, int] = {}
    for c in (c for cs in cells.values() for c in cs):
        depth[c.id] = max(depth.get(c.id, 0), c.depth)
    cost = {
        cid: (_weight(cid, weights or {}), depth[cid], values[cid] == 0, values[cid], cid)
        for cid in depth
    }
    intervals = {}
    if link:
        intervals = _secondary(_Model(values, _relations(tables)), suppressed, cost, rules)
    return Protected(rules, {t.name: t for t in tables}, cells, suppressed, intervals)


def _weight(cell_id: CellId, weights: Mapping[str, float]) -> float:
    conditions = cell_id[1].split("|")
    return math.prod(w for k, w in weights.items() if k in conditions)


def _cells(
    tables: list[CountTable], link: bool = True
) -> tuple[dict[str, list[Cell]], dict[CellId, int]]:
    cells: dict[str, list[Cell]] = {}
    values: dict[CellId, int] = {}
    seen_in: dict[CellId, str] = {}
    for t in tables:
        counts, amounts = t.aggregate()
        cells[t.name] = []
        for key in t.keys():
            cid = t.cell_id(key) if link else (t.universe, f"{t.name}:{t.meaning(key)}")
            n = counts[key]
            if cid in values and values[cid] != n:
                raise DisclosureError(
                    f"cell {cid[1]!r} ({cid[0] or 'this period'}) is {values[cid]} in table "
                    f"{seen_in[cid]} but {n} in table {t.name}: the tables are inconsistent"
                )
            values[cid], seen_in[cid] = n, seen_in.get(cid, t.name)
            depth = sum({LEAF: 0, GROUP: 1, ALL: 2}[lvl] for lvl, _ in key)
            cells[t.name].append(Cell(t.name, key, cid, n, amounts.get(key), depth))
    return cells, values


def _relations(tables: list[CountTable]) -> list[tuple[CellId, tuple[CellId, ...]]]:
    out = {}
    for t in tables:
        for total, parts in t.relations():
            rel = (t.cell_id(total), tuple(sorted(t.cell_id(p) for p in parts)))
            out[rel] = None
    return list(out)


class _Model:
    """The linear system an attacker sees: cell values and total = sum(parts) relations."""

    def __init__(self, values: dict[CellId, int], relations):
        self.values = values
        self.relations = relations
        self.members = [(total,) + parts for total, parts in relations]
        self.of_cell: dict[CellId, list[int]] = defaultdict(list)
        for i, members in enumerate(self.members):
            for m in members:
                self.of_cell[m].append(i)

    def intervals(self, hidden: set[CellId]) -> dict[CellId, tuple[float, float]]:
        """The attacker's [min, max] of every hidden cell, per connected component."""
        out = {}
        for component in self._components(hidden):
            out.update(self._solve(component, hidden))
        return out

    def interval_of(self, cell: CellId, hidden: set[CellId]) -> tuple[float, float]:
        """The attacker's [min, max] of one hidden cell."""
        (component,) = [c for c in self._components(hidden, start=cell)]
        return self._solve(component, hidden, only=cell)[cell]

    def _components(self, hidden: set[CellId], start: CellId | None = None) -> list[list[CellId]]:
        seen, comps = set(), []
        for first in [start] if start is not None else sorted(hidden):
            if first in seen:
                continue
            comp, stack = [], [first]
            seen.add(first)
            while stack:
                c = stack.pop()
                comp.append(c)
                for r in self.of_cell.get(c, ()):
                    for m in self.members[r]:
                        if m in hidden and m not in seen:
                            seen.add(m)
                            stack.append(m)
            comps.append(sorted(comp))
        return comps

    def _solve(self, component: list[CellId], hidden: set[CellId], only=None) -> dict:
        index = {c: i for i, c in enumerate(component)}
        columns: list[list[tuple[int, float]]] = [[] for _ in component]
        rhs = []
        rels = sorted({r for c in component for r in self.of_cell.get(c, ())})
        for row, r in enumerate(rels):
            total, parts = self.relations[r]
            known = 0
            for m, sign in [(total, -1)] + [(p, 1) for p in parts]:
                if m in hidden:
                    columns[index[m]].append((row, sign))
                else:
                    known += sign * self.values[m]
            rhs.append(-known)
        if not rels:
            return {c: (0.0, math.inf) for c in component}
        lp = _LinearProgram(columns, rhs)
        return {
            c: (lp.optimum(index[c], 1), lp.optimum(index[c], -1))
            for c in ([only] if only is not None else component)
        }


class _LinearProgram:
    """The attacker's system A x = b, x >= 0, in one HiGHS model, re-solved per objective.

    Only the objective changes between the 2 x cells solves of a component, so each solve
    starts from the previous optimal basis (a call to scipy's linprog set up a new model
    every time: ~3 ms of overhead per solve, 7,204 solves for a 20,000-person report).
    """

    def __init__(self, columns: list[list[tuple[int, float]]], rhs: list[float]):
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(columns), len(rhs)
        lp.col_cost_ = np.zeros(len(columns))
        lp.col_lower_ = np.zeros(len(columns))
        lp.col_upper_ = np.full(len(columns), highspy.kHighsInf)
        lp.row_lower_ = lp.row_upper_ = np.array(rhs, dtype=float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.cumsum([0] + [len(c) for c in columns], dtype=np.int32)
        lp.a_matrix_.index_ = np.array([r for c in columns for r, _ in c], dtype=np.int32)
        lp.a_matrix_.value_ = np.array([v for c in columns for _, v in c], dtype=float)
        self.highs.passModel(lp)

    def optimum(self, j: int, sense: int) -> float:
        """min x_j (sense 1) or max x_j (sense -1); max is inf when x_j is unbounded."""
        self.highs.changeColCost(j, float(sense))
        try:
            self.highs.run()
            status = self.highs.getModelStatus()
            if status == highspy.HighsModelStatus.kUnbounded:
                return math.inf if sense < 0 else 0.0
            if status != highspy.HighsModelStatus.kOptimal:
                raise DisclosureError(
                    f"disclosure audit LP failed: {self.highs.modelStatusToString(status)}"
                )
            return float(self.highs.getInfo().objective_function_value) * sense
        finally:
            self.highs.changeColCost(j, 0.0)


def _secondary(model: _Model, suppressed: dict, cost: dict, rules: Rules) -> dict:
    """Hide more cells until no relation has one hidden member and the LP audit passes."""
    while True:
        _close_singletons(model, suppressed, cost)
        hidden = set(suppressed)
        intervals = model.intervals(hidden)
        weak = [c for c in sorted(hidden) if _too_narrow(intervals[c], suppressed[c], rules)]
        if not weak:
            return intervals
        progressed = False
        for cell in weak:
            need = rules.interval if suppressed[cell] == "primary" else 1
            progressed |= _widen(model, suppressed, cost, cell, need)
        if not progressed:  # every related cell is hidden already: nothing more to hide
            return intervals


def _too_narrow(interval: tuple[float, float], why: str, rules: Rules) -> bool:
    lo, hi = interval
    need = rules.interval if why == "primary" else 1
    return hi - lo < need - 1e-6


def _close_singletons(model: _Model, suppressed: dict, cost: dict) -> None:
    """While a relation has exactly one hidden member, hide its cheapest other member."""
    changed = True
    while changed:
        changed = False
        for members in model.members:
            hidden = [m for m in members if m in suppressed]
            if len(hidden) == 1:
                pick = min((m for m in members if m not in suppressed), key=cost.__getitem__)
                suppressed[pick] = "secondary"
                changed = True


def _widen(
    model: _Model, suppressed: dict, cost: dict, start: CellId, need: int, tries: int = 12
) -> bool:
    """Hide a visible cell related to `start` (through hidden cells) that widens its interval.

    Each of the `tries` cheapest candidates is tried together with the hiding it forces
    (relations left with one hidden member); the cheapest that makes the attacker's interval
    of `start` wide enough is taken, else the one that widens it most (ties: the cheaper).
    Every round hides something, so the procedure ends.
    """
    candidates = sorted(_related_visible(model, suppressed, start), key=cost.__getitem__)
    if not candidates:
        return False
    best, best_width = None, -1.0
    for cand in candidates[:tries]:
        trial = dict(suppressed)
        trial[cand] = "secondary"
        _close_singletons(model, trial, cost)
        lo, hi = model.interval_of(start, set(trial))
        if hi - lo >= need - 1e-6:
            best = trial
            break
        if hi - lo > best_width + 1e-6:
            best, best_width = trial, hi - lo
    suppressed.update({c: why for c, why in best.items() if c not in suppressed})
    return True


def _related_visible(model: _Model, suppressed: dict, start: CellId) -> list[CellId]:
    """Visible cells in the relations of `start`, else of the hidden cells linked to it."""
    frontier, seen_cells, seen_rels = [start], {start}, set()
    while frontier:
        candidates, nxt = set(), []
        for c in frontier:
            for r in model.of_cell.get(c, ()):
                if r in seen_rels:
                    continue
                seen_rels.add(r)
                for m in model.members[r]:
                    if m not in suppressed:
                        candidates.add(m)
                    elif m not in seen_cells:
                        seen_cells.add(m)
                        nxt.append(m)
        if candidates:
            return list(candidates)
        frontier = nxt
    return []
