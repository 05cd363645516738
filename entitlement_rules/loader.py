"""Reads rule files (schemes, dated parameters, the uncertainty policy) into validated Rules.

Layout under the rules root (by default this package's directory):

    schemes/<scheme>.yaml             one rule per file; the file name is the rule id
    parameters/<scheme>/<year>.yaml   the values for one benefit year, each with its source
    cases/<scheme>.yaml               truth tables (read by cases.py)
    uncertainty.yaml                  how income uncertainty lowers confidence (project policy)

Everything is checked up front and every error names the file and the field. Whether a
rule may be compiled (fairness guard, missing parameters) is decided later, by compile_rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from entitlement_rules.errors import RuleLoadError
from entitlement_rules.expressions import IDENTIFIER, parse_expression
from entitlement_rules.model import (
    DECIMAL_PLACES,
    PARAMETER_TYPES,
    RESERVED_NAMES,
    ROUNDING_METHODS,
    STATUSES,
    VALUE_TYPES,
    AmountDef,
    ConditionDef,
    LegalBasis,
    ParameterSet,
    ParameterSpec,
    ParameterValue,
    Rule,
    TableRow,
    TableSpec,
    Text,
    UncertaintyPolicy,
    ValueDef,
)
from pipelines.contract import SOURCES

DEFAULT_ROOT = Path(__file__).resolve().parent
BWB_ID = re.compile(r"^BWBR\d{7}$")
VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def load_rules(
    years: list[int] | None = None,
    schemes: list[str] | None = None,
    root: Path | None = None,
) -> list[Rule]:
    """Load every scheme under `root` (or only `schemes`), with parameters for `years` (or all)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    paths = sorted((root / "schemes").glob("*.yaml"))
    available = {p.stem for p in paths}
    unknown = sorted(set(schemes or ()) - available)
    if unknown:
        raise RuleLoadError(
            f"{root / 'schemes'}: no scheme file for {', '.join(unknown)} "
            f"(available: {', '.join(sorted(available)) or 'none'})."
        )
    uncertainty = load_uncertainty(root)
    rules = []
    for path in paths:
        if schemes is not None and path.stem not in schemes:
            continue
        rule = load_scheme(path, uncertainty)
        sets = _load_parameter_sets(root / "parameters" / rule.id, rule, years)
        cases = root / "cases" / f"{rule.id}.yaml"
        cases_path = cases if cases.exists() else None
        rules.append(replace(rule, parameter_sets=sets, cases_path=cases_path))
    return rules


def digest(obj: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, fixed separators): stable across runs."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


# libyaml's safe loader when PyYAML has it: the same documents, ~10x faster (the rules,
# parameters and register are ~0.25 s of every run's start in pure Python).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, error: type[Exception] = RuleLoadError) -> dict[str, Any]:
    """A YAML file that must hold a mapping; syntax errors name the file and line.

    Problems raise `error` (the caller's own exception type) with a message naming the file.
    """
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc}).") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror}).") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a mapping at the top, not {type(data).__name__}.")
    return data


class _Fields:
    """Typed access to a YAML mapping with errors of the form '<file>: <field> must be ...'."""

    def __init__(self, path: Path, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise RuleLoadError(f"{path}: {prefix or 'top level'} must be a mapping, not {data!r}.")
        self.path, self.data, self.prefix = path, data, prefix

    def where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def fail(self, key: str, expected: str, value: Any) -> RuleLoadError:
        return RuleLoadError(f"{self.where(key)} must be {expected}, not {value!r}.")

    def get(self, key: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise RuleLoadError(f"{self.where(key)} is required.")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = ...) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value.strip()

    def identifier(self, key: str) -> str:
        value = self.string(key)
        if not IDENTIFIER.match(value):
            raise self.fail(key, "lower_snake_case", value)
        return value

    def text(self, key: str) -> Text:
        sub = self.sub(key)
        return Text(en=sub.string("en"), nl=sub.string("nl"))

    def sub(self, key: str, default: Any = ...) -> _Fields:
        return _Fields(self.path, self.get(key, default), f"{self.prefix}{key}.")

    def items(self, key: str, default: Any = ...) -> list[_Fields]:
        value = self.get(key, default)
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return [_Fields(self.path, v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def check_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise RuleLoadError(
                f"{self.path}: {self.prefix or 'top level'} has unknown field(s) "
                f"{', '.join(extra)} (allowed: {', '.join(sorted(allowed))})."
            )


def load_scheme(path: Path, uncertainty: UncertaintyPolicy) -> Rule:
    """Parse and validate one `schemes/<id>.yaml`."""
    raw = read_yaml(path)
    f = _Fields(path, raw)
    f.check_keys(
        {
            "id",
            "version",
            "label",
            "description",
            "legal_basis",
            "references",
            "inputs",
            "parameters",
            "parameter_tables",
            "values",
            "conditions",
            "amount",
            "income_uncertainty",
            "notes",
        }
    )
    rule_id = f.identifier("id")
    if rule_id != path.stem:
        raise RuleLoadError(f"{path}: id {rule_id!r} must equal the file name {path.stem!r}.")
    version = f.string("version")
    if not VERSION.match(version):
        raise f.fail("version", "a version like '1.0.0'", version)
    income_uncertainty = f.get("income_uncertainty", True)
    if not isinstance(income_uncertainty, bool):
        raise f.fail("income_uncertainty", "true or false", income_uncertainty)
    rule = Rule(
        id=rule_id,
        version=version,
        digest=digest(raw),
        label=f.text("label"),
        description=f.text("description"),
        legal_basis=_legal_basis(f.sub("legal_basis")),
        references=tuple(_reference(r) for r in f.items("references", [])),
        inputs=tuple(f.strings("inputs")),
        parameters=_parameter_specs(f.sub("parameters")),
        tables=_table_specs(f.sub("parameter_tables", {})),
        values=tuple(_value(v) for v in f.items("values", [])),
        conditions=tuple(_condition(c) for c in f.items("conditions")),
        amount=_amount(f.sub("amount")),
        income_uncertainty=income_uncertainty,
        notes=f.strings("notes", []),
        path=path,
        uncertainty=uncertainty,
    )
    _check_names(rule)
    return rule


def _legal_basis(f: _Fields) -> LegalBasis:
    f.check_keys({"law", "bwb_id", "articles", "url"})
    bwb_id = f.string("bwb_id")
    if not BWB_ID.match(bwb_id):
        raise f.fail("bwb_id", "a BWB id like 'BWBR0018451'", bwb_id)
    url = f.string("url")
    if not url.startswith("https://wetten.overheid.nl/"):
        raise f.fail("url", "a link to https://wetten.overheid.nl/", url)
    articles = f.strings("articles")
    if not articles:
        raise f.fail("articles", "a non-empty list", articles)
    return LegalBasis(law=f.string("law"), bwb_id=bwb_id, articles=articles, url=url)


def _reference(f: _Fields) -> dict[str, str]:
    f.check_keys({"law", "bwb_id", "article", "url", "about"})
    return {k: f.string(k) for k in ("law", "article", "about")} | {
        k: f.string(k) for k in ("bwb_id", "url") if k in f.data
    }


def _parameter_spec(name: str, f: _Fields) -> ParameterSpec:
    f.check_keys({"type", "label", "legal"})
    kind = f.string("type")
    if kind not in PARAMETER_TYPES:
        raise f.fail("type", f"one of {', '.join(PARAMETER_TYPES)}", kind)
    return ParameterSpec(name=name, type=kind, label=f.text("label"), legal=f.string("legal"))


def _parameter_specs(f: _Fields) -> dict[str, ParameterSpec]:
    specs = {}
    for name in f.data:
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            raise f.fail(str(name), "a lower_snake_case parameter name", name)
        specs[name] = _parameter_spec(name, f.sub(name))
    return specs


def _table_specs(f: _Fields) -> dict[str, TableSpec]:
    tables = {}
    for name in f.data:
        t = f.sub(name)
        t.check_keys({"key", "columns"})
        tables[name] = TableSpec(
            name=name, key=t.identifier("key"), columns=_parameter_specs(t.sub("columns"))
        )
    return tables


def _value(f: _Fields) -> ValueDef:
    f.check_keys({"id", "type", "expr", "label", "legal"})
    kind = f.string("type")
    if kind not in VALUE_TYPES:
        raise f.fail("type", f"one of {', '.join(VALUE_TYPES)}", kind)
    return ValueDef(
        id=f.identifier("id"),
        type=kind,
        expr=parse_expression(f.get("expr"), f.where("expr")),
        label=f.text("label"),
        legal=f.string("legal"),
    )


def _condition(f: _Fields) -> ConditionDef:
    f.check_keys({"id", "expr", "legal", "explain"})
    return ConditionDef(
        id=f.identifier("id"),
        expr=parse_expression(f.get("expr"), f.where("expr")),
        legal=f.string("legal"),
        explain=f.text("explain"),
    )


def _amount(f: _Fields) -> AmountDef:
    f.check_keys({"value", "rounding", "legal", "explain"})
    rounding = f.string("rounding")
    if rounding not in ROUNDING_METHODS:
        raise f.fail("rounding", f"one of {', '.join(ROUNDING_METHODS)}", rounding)
    return AmountDef(
        value=f.identifier("value"),
        rounding=rounding,
        legal=f.string("legal"),
        explain=f.text("explain"),
    )


def _check_names(rule: Rule) -> None:
    """Names must be unique: the SQL refers to all of them unqualified, side by side."""
    seen: dict[str, str] = {}
    declared = [(n, "parameter") for n in rule.parameters]
    for table in rule.tables.values():
        declared += [(n, f"column of table {table.name}") for n in table.columns]
    declared += [(v.id, "value") for v in rule.values]
    declared += [(f"{t}_key", f"key of table {t}") for t in rule.tables]
    declared += [(t, "parameter table") for t in rule.tables]
    for name, kind in declared:
        if name in RESERVED_NAMES or name.startswith(("cond_", "shown_")):
            raise RuleLoadError(f"{rule.path}: {kind} name {name!r} is reserved by the compiler.")
        if name in seen:
            raise RuleLoadError(f"{rule.path}: {name!r} is defined twice ({seen[name]}, {kind}).")
        seen[name] = kind
    ids = [c.id for c in rule.conditions]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuleLoadError(f"{rule.path}: condition id(s) {', '.join(duplicates)} repeated.")
    if rule.amount.value not in {v.id for v in rule.values}:
        raise RuleLoadError(
            f"{rule.path}: amount.value {rule.amount.value!r} must name one of the values."
        )


def _load_parameter_sets(
    folder: Path, rule: Rule, years: list[int] | None
) -> dict[int, ParameterSet]:
    sets = {}
    for path in sorted(folder.glob("*.yaml")):
        if not path.stem.isdigit():
            raise RuleLoadError(f"{path}: parameter files must be named <year>.yaml.")
        if years is None or int(path.stem) in years:
            sets[int(path.stem)] = load_parameter_set(path, rule)
    return sets


def load_parameter_set(path: Path, rule: Rule) -> ParameterSet:
    """Parse one `parameters/<scheme>/<year>.yaml` against the rule's parameter specs."""
    raw = read_yaml(path)
    f = _Fields(path, raw)
    f.check_keys({"scheme", "year", "version", "valid_from", "valid_to", "values", "tables"})
    if f.get("scheme") != rule.id:
        raise f.fail("scheme", repr(rule.id), f.get("scheme"))
    year = f.get("year")
    if year != int(path.stem):
        raise f.fail("year", f"{path.stem} (the file name)", year)
    version = f.get("version")
    if not isinstance(version, int) or version < 1:
        raise f.fail("version", "a positive integer", version)
    valid_from, valid_to = _date(f, "valid_from"), _date(f, "valid_to")
    if not valid_from <= valid_to or valid_from.year != year:
        raise RuleLoadError(f"{path}: valid_from..valid_to must lie in {year}.")
    values_f = f.sub("values")
    undeclared = sorted(set(values_f.data) - set(rule.parameters))
    if undeclared:
        raise RuleLoadError(
            f"{path}: values {', '.join(undeclared)} are not parameters of {rule.id} "
            f"(declare them in {rule.path.name} first)."
        )
    values = {
        name: _parameter_value(values_f.sub(name), rule.parameters[name]) for name in values_f.data
    }
    tables_f = f.sub("tables", {})
    tables = {
        name: tuple(_table_row(r, rule.tables[name]) for r in tables_f.items(name))
        for name in _table_names(tables_f, rule)
    }
    row_digests = []
    for name, spec in rule.tables.items():
        files = sorted((path.parent / name / str(year)).glob("*.yaml"))
        rows = [_table_row_file(p, spec, rule, year) for p in files]
        row_digests += [digest(read_yaml(p)) for p in files]
        tables[name] = _unique_rows(path, name, tables.get(name, ()) + tuple(rows))
    return ParameterSet(
        scheme=rule.id,
        year=year,
        version=version,
        valid_from=valid_from,
        valid_to=valid_to,
        values=values,
        tables=tables,
        path=path,
        # Row files are part of the year: editing one changes the parameter_version too.
        digest=digest([raw, row_digests]) if row_digests else digest(raw),
    )


def _table_row_file(path: Path, spec: TableSpec, rule: Rule, year: int) -> TableRow:
    """One row of a parameter table in its own file:
    `parameters/<scheme>/<table>/<year>/<key>.yaml`, each value with its own source, so that
    a new municipality is a new file."""
    f = _Fields(path, read_yaml(path))
    f.check_keys({"scheme", "table", "key", "year", "version", "values"})
    expected = {"scheme": rule.id, "table": spec.name, "key": path.stem, "year": year}
    for field, value in expected.items():
        if f.get(field) != value:
            raise f.fail(field, f"{value!r} (from the file's place)", f.get(field))
    version = f.get("version")
    if not isinstance(version, int) or version < 1:
        raise f.fail("version", "a positive integer", version)
    values_f = f.sub("values")
    values_f.check_keys(set(spec.columns))
    values = {n: _parameter_value(values_f.sub(n), c) for n, c in spec.columns.items()}
    usable = all(v.usable for v in values.values())
    weakest = (
        "verified"
        if all(v.status == "verified" for v in values.values())
        else ("corroborated" if usable else "unverified")
    )
    return TableRow(
        key=path.stem,
        values=values,
        status=weakest,
        source=f"{spec.name}/{year}/{path.name} (each value with its own source)",
        path=path,
    )


def _unique_rows(path: Path, table: str, rows: tuple[TableRow, ...]) -> tuple[TableRow, ...]:
    keys = [r.key for r in rows]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise RuleLoadError(
            f"{path}: table {table} has more than one row for {', '.join(repeated)} "
            "(inline and in a row file, or twice)."
        )
    return tuple(sorted(rows, key=lambda r: r.key))


def _table_names(f: _Fields, rule: Rule) -> list[str]:
    unknown = sorted(set(f.data) - set(rule.tables))
    if unknown:
        raise RuleLoadError(
            f"{f.path}: tables {', '.join(unknown)} are not declared in "
            f"{rule.path.name} parameter_tables."
        )
    return list(f.data)


def _date(f: _Fields, key: str) -> dt.date:
    value = f.get(key)
    if not isinstance(value, dt.date):
        raise f.fail(key, "an ISO date (YYYY-MM-DD)", value)
    return value


def _source_fields(f: _Fields) -> tuple[str, str, str]:
    status = f.string("status")
    if status not in STATUSES:
        raise f.fail("status", f"one of {', '.join(STATUSES)}", status)
    return status, f.string("source"), f.get("url", "")


def _parameter_value(f: _Fields, spec: ParameterSpec) -> ParameterValue:
    f.check_keys({"value", "unit", "status", "source", "url", "note"})
    status, source, url = _source_fields(f)
    note = f.get("note", "")
    raw = f.get("value")
    if raw is None and status != "unverified":
        raise RuleLoadError(f"{f.where('value')} is unknown (null): status must be unverified.")
    if status == "unverified" and not note:
        raise RuleLoadError(f"{f.where('note')} is required: say why the value is unverified.")
    value = None if raw is None else _typed(f, "value", raw, spec.type)
    return ParameterValue(
        name=spec.name,
        type=spec.type,
        value=value,
        unit=f.string("unit"),
        status=status,
        source=source,
        url=url,
        note=note,
    )


def _typed(f: _Fields, key: str, raw: Any, kind: str) -> Decimal | int | bool | str:
    """Convert a YAML value to its parameter type; percentages become fractions."""
    if kind == "boolean":
        if not isinstance(raw, bool):
            raise f.fail(key, "true or false", raw)
        return raw
    if kind == "string":
        if not isinstance(raw, str):
            raise f.fail(key, "a string", raw)
        return raw
    if isinstance(raw, float) or isinstance(raw, bool):
        raise f.fail(key, "a quoted decimal string such as '1.896' (no float rounding)", raw)
    if kind == "integer":
        if not isinstance(raw, int):
            raise f.fail(key, "an integer", raw)
        return raw
    try:
        number = Decimal(str(raw))
    except InvalidOperation:
        raise f.fail(key, f"a {kind} number", raw) from None
    if not number.is_finite() or -number.as_tuple().exponent > DECIMAL_PLACES[kind]:
        raise f.fail(key, f"a {kind} with at most {DECIMAL_PLACES[kind]} decimals", raw)
    return number / 100 if kind == "percent" else number


def _table_row(f: _Fields, spec: TableSpec) -> TableRow:
    f.check_keys({"key", "values", "status", "source", "url"})
    status, source, url = _source_fields(f)
    values_f = f.sub("values")
    values_f.check_keys(set(spec.columns))
    values = {}
    for name, column in spec.columns.items():
        raw = values_f.get(name)
        values[name] = ParameterValue(
            name=name,
            type=column.type,
            value=_typed(values_f, name, raw, column.type),
            unit=column.type,
            status=status,
            source=source,
            url=url,
        )
    return TableRow(key=f.string("key"), values=values, status=status, source=source, url=url)


def load_uncertainty(root: Path) -> UncertaintyPolicy:
    """Read `uncertainty.yaml` from `root`, or the package's own if `root` has none."""
    path = root / "uncertainty.yaml"
    if not path.exists():
        path = DEFAULT_ROOT / "uncertainty.yaml"
    f = _Fields(path, read_yaml(path))
    f.check_keys({"status_factors", "year_gap_factors", "older_factor", "unknown_income_factor"})
    statuses = f.sub("status_factors")
    expected = set(SOURCES["tax"].column("assessment_status").values)
    if set(statuses.data) != expected:
        raise f.fail(
            "status_factors",
            f"a factor for each of {', '.join(sorted(expected))}",
            sorted(statuses.data),
        )
    gaps = f.get("year_gap_factors")
    if not isinstance(gaps, list) or not gaps:
        raise f.fail("year_gap_factors", "a non-empty list", gaps)
    return UncertaintyPolicy(
        status_factors={k: _factor(statuses, k) for k in statuses.data},
        year_gap_factors=tuple(_factor(f, "year_gap_factors", v) for v in gaps),
        older_factor=_factor(f, "older_factor"),
        unknown_income_factor=_factor(f, "unknown_income_factor"),
        path=path,
    )


def _factor(f: _Fields, key: str, raw: Any = ...) -> Decimal:
    value = _typed(f, key, f.get(key) if raw is ... else raw, "decimal")
    if not Decimal(0) <= value <= Decimal(1):
        raise f.fail(key, "a factor between 0 and 1", value)
    return value
