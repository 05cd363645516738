"""Rule expressions: a small, safe subset of Python expression syntax, compiled to DuckDB SQL.

Rule files state conditions and formulas as expressions such as

    standaardpremie * premium_count - normpremie
    max(0, toetsingsinkomen - drempelinkomen)
    2 if has_partner else 1
    combined_assets <= asset_limit

Parsing them (instead of pasting SQL from a YAML file) gives three things: every name a
rule reads is known (lineage, the fairness guard), nothing but arithmetic, comparisons and
the helpers below can reach the database, and the SQL is generated in one consistent style.

Numbers of law belong in the parameter files, with their source. An expression may only
contain small integer literals (at most INTEGER_LITERAL_LIMIT in size: zero, counts of
persons, months), never a decimal literal.

To add a formula helper, add an entry to HELPERS: a name, its arity, how it renders to SQL
and one line saying what it means. That is the only code change a new scheme may need.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from entitlement_rules.errors import RuleLoadError

INTEGER_LITERAL_LIMIT = 12
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
INTEGER_SQL = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Helper:
    """A function rule expressions may call, and the SQL it becomes."""

    name: str
    min_args: int
    max_args: int | None
    render: Callable[[list[str]], str]
    meaning: str


def _known(function: str) -> Callable[[list[str]], str]:
    """GREATEST/LEAST that stay NULL when an argument is unknown (SQL's skip NULLs)."""

    def render(args: list[str]) -> str:
        checks = [
            f"({a}) IS NOT NULL" if " " in a else f"{a} IS NOT NULL"
            for a in args
            if not INTEGER_SQL.match(a)
        ]
        call = f"{function}({', '.join(args)})"
        return f"CASE WHEN {' AND '.join(checks)} THEN {call} END" if checks else call

    return render


def _count_where(op: str) -> Callable[[list[str]], str]:
    return lambda a: (
        f"CAST(COALESCE(LEN(LIST_FILTER({a[0]}, LAMBDA item: item {op} {a[1]})), 0) AS INTEGER)"
    )


HELPERS: dict[str, Helper] = {
    h.name: h
    for h in (
        Helper("max", 2, None, _known("GREATEST"), "the largest argument; unknown if any is"),
        Helper("min", 2, None, _known("LEAST"), "the smallest argument; unknown if any is"),
        Helper(
            "coalesce",
            2,
            None,
            lambda a: f"COALESCE({', '.join(a)})",
            "the first argument that is known",
        ),
        Helper(
            "contains",
            2,
            2,
            lambda a: f"COALESCE(LIST_CONTAINS({a[0]}, {a[1]}), FALSE)",
            "the list (first argument) holds the value (second argument)",
        ),
        Helper(
            "length",
            1,
            1,
            lambda a: f"CAST(COALESCE(LEN({a[0]}), 0) AS INTEGER)",
            "the number of elements of a list (0 when unknown)",
        ),
        Helper(
            "count_at_least",
            2,
            2,
            _count_where(">="),
            "how many elements of a list are >= the second argument (e.g. children aged 12+)",
        ),
        Helper(
            "count_below",
            2,
            2,
            _count_where("<"),
            "how many elements of a list are < the second argument",
        ),
    )
}

# SQL precedence, low to high: decides where parentheses are needed.
_OR, _AND, _NOT, _COMPARE, _ADD, _MUL, _UNARY, _ATOM = range(1, 9)

_BINARY = {ast.Add: ("+", _ADD), ast.Sub: ("-", _ADD), ast.Mult: ("*", _MUL)}
_COMPARE_OPS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "=",
    ast.NotEq: "<>",
}


@dataclass(frozen=True)
class Expression:
    """A parsed rule expression: its source text, syntax tree and the names it reads."""

    source: str
    tree: ast.AST
    names: frozenset[str]
    helpers: frozenset[str]

    def to_sql(self) -> str:
        """The expression as DuckDB SQL; names stay unqualified column references."""
        return _Sql().render(self.tree)[0]


def parse_expression(source: object, where: str) -> Expression:
    """Parse and check one expression; `where` names the file and field for errors."""
    if not isinstance(source, str) or not source.strip():
        raise RuleLoadError(f"{where}: must be a non-empty expression, not {source!r}.")
    text = " ".join(source.split())
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise RuleLoadError(f"{where}: {text!r} is not a valid expression ({exc.msg}).") from None
    checker = _Checker(where, text)
    checker.visit(tree)
    return Expression(text, tree, frozenset(checker.names), frozenset(checker.helpers))


class _Checker(ast.NodeVisitor):
    """Refuses every construct outside the rule language; collects names and helpers."""

    def __init__(self, where: str, text: str) -> None:
        self.where, self.text = where, text
        self.names: set[str] = set()
        self.helpers: set[str] = set()

    def fail(self, why: str) -> None:
        raise RuleLoadError(f"{self.where}: {self.text!r}: {why}.")

    def generic_visit(self, node: ast.AST) -> None:
        allowed = (
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.BinOp,
            ast.Add,
            ast.Sub,
            ast.Mult,
            ast.Compare,
            ast.IfExp,
            ast.Load,
            ast.List,
            *_COMPARE_OPS,
            ast.Is,
            ast.IsNot,
            ast.In,
            ast.NotIn,
        )
        if not isinstance(node, allowed):
            self.fail(f"{type(node).__name__} is not allowed in a rule expression")
        super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if not IDENTIFIER.match(node.id):
            self.fail(f"name {node.id!r} must be lower_snake_case")
        self.names.add(node.id)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if value is None or isinstance(value, (bool, str)):
            return
        if isinstance(value, int) and abs(value) <= INTEGER_LITERAL_LIMIT:
            return
        self.fail(
            f"the number {value!r} must be a parameter with a source, not a literal "
            f"(only integers up to {INTEGER_LITERAL_LIMIT} may be written inline)"
        )

    def visit_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in HELPERS:
            known = ", ".join(sorted(HELPERS))
            self.fail(f"only these helpers may be called: {known}")
        helper = HELPERS[node.func.id]
        if node.keywords or not helper.min_args <= len(node.args) <= (helper.max_args or 99):
            self.fail(
                f"{helper.name}() takes {helper.min_args}..{helper.max_args or 'n'} "
                "positional arguments"
            )
        self.helpers.add(helper.name)
        for arg in node.args:
            self.visit(arg)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.Is, ast.IsNot)) and not _is_none(right):
                self.fail("'is' / 'is not' may only compare with None")
            if isinstance(op, (ast.In, ast.NotIn)) and not isinstance(right, ast.List):
                self.fail("'in' needs a literal list on the right, e.g. x in ['a', 'b']")
        self.generic_visit(node)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


class _Sql:
    """Renders a checked tree to SQL, adding parentheses only where precedence needs them."""

    def render(self, node: ast.AST) -> tuple[str, int]:
        method = getattr(self, f"_{type(node).__name__}")
        return method(node)

    def wrap(self, node: ast.AST, minimum: int) -> str:
        sql, precedence = self.render(node)
        return sql if precedence >= minimum else f"({sql})"

    def _Name(self, node: ast.Name) -> tuple[str, int]:
        return node.id, _ATOM

    def _Constant(self, node: ast.Constant) -> tuple[str, int]:
        value = node.value
        if value is None:
            return "NULL", _ATOM
        if isinstance(value, bool):
            return ("TRUE" if value else "FALSE"), _ATOM
        if isinstance(value, int):
            return str(value), _ATOM
        return "'" + str(value).replace("'", "''") + "'", _ATOM

    def _List(self, node: ast.List) -> tuple[str, int]:
        return "[" + ", ".join(self.render(e)[0] for e in node.elts) + "]", _ATOM

    def _BoolOp(self, node: ast.BoolOp) -> tuple[str, int]:
        keyword, precedence = ("AND", _AND) if isinstance(node.op, ast.And) else ("OR", _OR)
        parts = [self.wrap(v, precedence + 1) for v in node.values]
        return f" {keyword} ".join(parts), precedence

    def _UnaryOp(self, node: ast.UnaryOp) -> tuple[str, int]:
        if isinstance(node.op, ast.Not):
            return f"NOT {self.wrap(node.operand, _NOT)}", _NOT
        return f"-{self.wrap(node.operand, _UNARY)}", _UNARY

    def _BinOp(self, node: ast.BinOp) -> tuple[str, int]:
        symbol, precedence = _BINARY[type(node.op)]
        left = self.wrap(node.left, precedence)
        # a - (b - c) and a - (b + c) need their parentheses; a + (b - c) does not.
        right = self.wrap(node.right, precedence + (0 if symbol != "-" else 1))
        return f"{left} {symbol} {right}", precedence

    def _Compare(self, node: ast.Compare) -> tuple[str, int]:
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(self._comparison(left, op, right))
            left = right
        if len(parts) == 1:
            return parts[0], _COMPARE
        return " AND ".join(f"({p})" for p in parts), _AND

    def _comparison(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> str:
        lhs = self.wrap(left, _COMPARE + 1)
        if isinstance(op, ast.Is):
            return f"{lhs} IS NULL"
        if isinstance(op, ast.IsNot):
            return f"{lhs} IS NOT NULL"
        if isinstance(op, (ast.In, ast.NotIn)):
            items = ", ".join(self.render(e)[0] for e in right.elts)
            return f"{lhs} {'NOT IN' if isinstance(op, ast.NotIn) else 'IN'} ({items})"
        return f"{lhs} {_COMPARE_OPS[type(op)]} {self.wrap(right, _COMPARE + 1)}"

    def _IfExp(self, node: ast.IfExp) -> tuple[str, int]:
        # Unknown condition, unknown result: `a if c else b` is NULL when c is NULL.
        test, body, orelse = (self.render(n)[0] for n in (node.test, node.body, node.orelse))
        negated = self.wrap(node.test, _NOT)
        return f"CASE WHEN {test} THEN {body} WHEN NOT {negated} THEN {orelse} END", _ATOM

    def _Call(self, node: ast.Call) -> tuple[str, int]:
        helper = HELPERS[node.func.id]
        return helper.render([self.render(a)[0] for a in node.args]), _ATOM


TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


def template_names(template: str, where: str) -> frozenset[str]:
    """The {name} placeholders of an explanation template; anything else in braces is refused."""
    names = set()
    for match in TEMPLATE_FIELD.finditer(template):
        if not IDENTIFIER.match(match.group(1)):
            raise RuleLoadError(f"{where}: placeholder {{{match.group(1)}}} must be a name.")
        names.add(match.group(1))
    if TEMPLATE_FIELD.sub("", template).count("{") or TEMPLATE_FIELD.sub("", template).count("}"):
        raise RuleLoadError(f"{where}: unbalanced braces in {template!r}.")
    return frozenset(names)
