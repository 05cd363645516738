"""The processing register (register van verwerkingsactiviteiten): loading, validation, lineage.

The register is data: one YAML file per processing activity under `privacy/register/`,
written to be read by a policy officer or data-protection officer (see its README). Each
activity names its controller, purpose, the schemes it may evaluate, its retention period,
its DPIA, its conditions and, per source, the legal basis and a decision for every field.

This module reads and validates those files (errors name file, field and cause), gives the
register a version id (SHA-256 of its canonical content: any change in content is a new
version, a change in comments or layout is not), answers "which fields of a source may this
purpose use" (`allowed_fields`, used for minimisation) and resolves the lineage of every
household column to its source fields and their legal basis (`column_lineage`). The
decision whether a run may go ahead is made in privacy/purpose_check.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entitlement_rules.loader import read_yaml
from pipelines.contract import BENEFIT_SCHEMES, SOURCES
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS

DEFAULT_ROOT = Path(__file__).resolve().parent / "register"

ALLOWED, CONDITIONAL, NOT_ALLOWED = "allowed", "conditional", "not_allowed"
FIELD_STATUSES = (ALLOWED, CONDITIONAL, NOT_ALLOWED)
DPIA_STATUSES = ("approved", "in_progress", "not_started")

BWB_ID = re.compile(r"^BWBR\d{7}$")
CELEX = re.compile(r"^3\d{4}[A-Z]\d{4}$")
ACTIVITY_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# ISO 8601 durations in years, months, weeks or days (P1Y, P13M, P6W, P30D, P1Y6M).
ISO_PERIOD = re.compile(r"^P(?=\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?$")


@dataclass(frozen=True)
class Condition:
    """A condition the register can attach: where it may stand and whether the check verifies it.

    `check` conditions are verified by the purpose check before any data is read (a failing
    one refuses the run); `obligation` conditions are recorded with the run and enforced
    elsewhere (aggregate_only at rule compile time) or by the controller's organisation.
    """

    id: str
    kind: str  # "check" or "obligation"
    scope: str  # "activity", "field" or "automatic" (added by the check, never written)
    text: str


CONDITIONS: dict[str, Condition] = {
    c.id: c
    for c in (
        Condition(
            "dpia_recorded",
            "check",
            "activity",
            "a DPIA of this processing activity is recorded with status approved",
        ),
        Condition(
            "retention_set",
            "check",
            "activity",
            "a retention period (ISO 8601) is set for what the run keeps",
        ),
        Condition(
            "objections_honoured",
            "check",
            "activity",
            "objections (opt-out) are read and applied before the join: source `objections` "
            "is registered with fields bsn and scope allowed",
        ),
        Condition(
            "aggregate_only",
            "obligation",
            "field",
            "may feed aggregate reports only: no entitlement rule may read it, so it never "
            "decides an individual signal (enforced when rules are compiled)",
        ),
        Condition(
            "compatibility_assessed",
            "obligation",
            "field",
            "collected for another purpose: further use needs a compatibility assessment "
            "(AVG art. 6 lid 4) recorded in the DPIA",
        ),
        Condition(
            "assumed_legal_basis",
            "obligation",
            "automatic",
            "the legal basis of this source for this purpose is an assumption (see its note): "
            "the DPO must confirm it or stop the processing",
        ),
    )
}


class RegisterError(Exception):
    """A register file is missing, malformed or inconsistent; the message names file and field."""


@dataclass(frozen=True)
class LegalBasis:
    """One legal provision a processing rests on, and whether it really covers this purpose.

    `assumption` is true where no provision explicitly covers this purpose and the register
    assumes one does (the note says why); `checked` is true where the cited article was read
    against the text of the law.
    """

    law: str
    article: str
    url: str
    assumption: bool
    checked: bool
    note: str = ""
    bwb_id: str = ""
    celex: str = ""
    publication: str = ""
    # The period the provision holds (a law repealed or not yet in force): a run for a
    # reference date outside it is refused. None: open-ended.
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None
    # The DPO's record that an assumed basis was weighed and accepted: who, when, where the
    # decision is written down. The basis stays an assumption (no law says it explicitly).
    confirmed: dict[str, str] | None = None

    def confirmation(self) -> str:
        c = self.confirmed
        if not c:
            return ""
        reference = f" ({c['reference']})" if c.get("reference") else ""
        return f"confirmed by {c['by']} on {c['on']}{reference}"

    def holds_on(self, day: dt.date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_until is None or day <= self.valid_until
        )

    def validity(self) -> str:
        since = f"from {self.valid_from}" if self.valid_from else ""
        until = f"until {self.valid_until}" if self.valid_until else ""
        return " ".join(x for x in (since, until) if x) or "open-ended"

    def citation(self) -> str:
        ids = ", ".join(i for i in (self.bwb_id, self.celex, self.publication) if i)
        where = f" ({ids})" if ids else ""
        prefix = "art. " if self.article[:1].isdigit() else ""
        article = f", {prefix}{self.article}" if self.article else ""
        flag = ""
        if self.assumption:
            flag = f" [ASSUMPTION, {self.confirmation()}]" if self.confirmed else " [ASSUMPTION]"
        return f"{self.law}{where}{article}{flag}"

    def as_dict(self) -> dict[str, Any]:
        out = {
            "law": self.law,
            "article": self.article,
            "url": self.url,
            "assumption": self.assumption,
            "checked": self.checked,
        }
        out.update({k: v for k, v in self._ids().items() if v})
        for key in ("valid_from", "valid_until"):
            if getattr(self, key):
                out[key] = getattr(self, key).isoformat()
        if self.confirmed:
            out["confirmed"] = dict(self.confirmed)
        return out

    def _ids(self) -> dict[str, str]:
        return {"bwb_id": self.bwb_id, "celex": self.celex, "publication": self.publication}


@dataclass(frozen=True)
class FieldRule:
    """The register's decision for one field of one source under one activity."""

    name: str
    status: str
    why: str
    conditions: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()  # empty: every scheme of the activity

    @property
    def usable(self) -> bool:
        return self.status in (ALLOWED, CONDITIONAL)


@dataclass(frozen=True)
class SourceEntry:
    """A source registered for an activity: its legal basis and a decision per field."""

    name: str
    legal_basis: tuple[LegalBasis, ...]
    fields: dict[str, FieldRule]

    @property
    def assumption(self) -> bool:
        return any(b.assumption for b in self.legal_basis)


@dataclass(frozen=True)
class Activity:
    """One processing activity of the register, as read from `<id>.yaml`."""

    id: str
    title: str
    controller: str
    purpose: str
    schemes: tuple[str, ...]
    retention: dict[str, Any]
    dpia: dict[str, Any]
    conditions: tuple[str, ...]
    general_basis: tuple[LegalBasis, ...]
    sources: dict[str, SourceEntry]
    path: Path
    digest: str

    def field(self, source: str, name: str) -> FieldRule | None:
        entry = self.sources.get(source)
        return entry.fields.get(name) if entry else None


@dataclass(frozen=True)
class Register:
    """Every processing activity and the version id of the register they were read from."""

    activities: dict[str, Activity]
    version: str
    root: Path

    def activity(self, purpose: str) -> Activity | None:
        return self.activities.get(purpose)


# -- loading ------------------------------------------------------------------------------


def canonical_digest(obj: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, fixed separators, dates as ISO strings)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def load_register(root: Path | str | None = None) -> Register:
    """Read and validate every `<activity>.yaml` under root (default privacy/register/)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise RegisterError(f"{root}: register folder not found.")
    paths = sorted(root.glob("*.yaml"))
    if not paths:
        raise RegisterError(f"{root}: no processing activity files (*.yaml) in the register.")
    raw = {p.stem: read_yaml(p, RegisterError) for p in paths}
    activities = {p.stem: _activity(p, raw[p.stem]) for p in paths}
    return Register(activities=activities, version=canonical_digest(raw), root=root)


class _Map:
    """Typed access to a YAML mapping; errors read '<file>: <field> must be ..., not <value>.'"""

    def __init__(self, path: Path, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise RegisterError(f"{path}: {prefix or 'top level'} must be a mapping, not {data!r}.")
        self.path, self.data, self.prefix = path, data, prefix

    def where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def fail(self, key: str, expected: str, value: Any = ...) -> RegisterError:
        value = self.data.get(key) if value is ... else value
        return RegisterError(f"{self.where(key)} must be {expected}, not {value!r}.")

    def get(self, key: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise RegisterError(f"{self.where(key)} is required.")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = ...) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or (not value.strip() and default is ...):
            raise self.fail(key, "a non-empty string", value)
        return " ".join(value.split())

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def date(self, key: str) -> dt.date | None:
        """An optional ISO date (YAML reads an unquoted one as a date already)."""
        value = self.get(key, None)
        if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(key, "a date (YYYY-MM-DD)", value)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def sub(self, key: str) -> _Map:
        return _Map(self.path, self.get(key), f"{self.prefix}{key}.")

    def items(self, key: str) -> list[_Map]:
        value = self.get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, "a non-empty list", value)
        return [_Map(self.path, v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def check_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            raise RegisterError(
                f"{self.path}: {self.prefix or 'top level'} has unknown field(s) "
                f"{', '.join(map(str, extra))} (allowed: {', '.join(sorted(allowed))})."
            )


ACTIVITY_KEYS = {
    "id",
    "title",
    "controller",
    "purpose",
    "schemes",
    "retention",
    "dpia",
    "conditions",
    "general_basis",
    "sources",
}


def _activity(path: Path, data: dict[str, Any]) -> Activity:
    m = _Map(path, data)
    m.check_keys(ACTIVITY_KEYS)
    activity_id = m.string("id")
    if not ACTIVITY_ID.match(activity_id):
        raise m.fail("id", "lower-case words joined by hyphens")
    if activity_id != path.stem:
        raise RegisterError(f"{m.where('id')} must equal the file name {path.stem!r}.")
    schemes = m.strings("schemes")
    unknown = sorted(set(schemes) - set(BENEFIT_SCHEMES))
    if unknown:
        raise RegisterError(
            f"{m.where('schemes')}: unknown scheme(s) {', '.join(unknown)} "
            f"(known: {', '.join(BENEFIT_SCHEMES)})."
        )
    conditions = _conditions(m, "conditions", "activity")
    return Activity(
        id=activity_id,
        title=m.string("title"),
        controller=_controller(m.sub("controller")),
        purpose=m.string("purpose"),
        schemes=schemes,
        # Both may be absent: the purpose check's conditions then refuse the run, saying why.
        retention=_retention(m.sub("retention")) if "retention" in m.data else {},
        dpia=_dpia(m.sub("dpia")) if "dpia" in m.data else {},
        conditions=conditions,
        general_basis=tuple(_basis(b) for b in m.items("general_basis")),
        sources=_sources(m, schemes),
        path=path,
        digest=canonical_digest(data),
    )


def _controller(m: _Map) -> str:
    m.check_keys({"name", "note"})
    return m.string("name")


def _retention(m: _Map) -> dict[str, Any]:
    m.check_keys({"period", "applies_to", "basis", "assumption"})
    period = m.string("period")
    if not ISO_PERIOD.match(period):
        raise m.fail("period", "an ISO 8601 duration such as P1Y or P13M")
    return {
        "period": period,
        "applies_to": m.string("applies_to"),
        "basis": m.string("basis"),
        "assumption": m.boolean("assumption"),
    }


def _dpia(m: _Map) -> dict[str, Any]:
    m.check_keys({"reference", "status", "placeholder", "note"})
    status = m.string("status")
    if status not in DPIA_STATUSES:
        raise m.fail("status", f"one of {', '.join(DPIA_STATUSES)}")
    return {
        "reference": m.string("reference", ""),
        "status": status,
        "placeholder": m.boolean("placeholder"),
        "note": m.string("note", ""),
    }


def _conditions(m: _Map, key: str, scope: str) -> tuple[str, ...]:
    ids = m.strings(key, [])
    for cid in ids:
        condition = CONDITIONS.get(cid)
        writable = sorted(c.id for c in CONDITIONS.values() if c.scope == scope)
        if condition is None or condition.scope != scope:
            raise RegisterError(
                f"{m.where(key)}: {cid!r} is no condition for the {scope} level "
                f"(allowed here: {', '.join(writable)})."
            )
    if len(set(ids)) != len(ids):
        raise m.fail(key, "a list without repeats", ids)
    return ids


BASIS_KEYS = {
    "law",
    "article",
    "url",
    "assumption",
    "checked",
    "note",
    "bwb_id",
    "celex",
    "publication",
    "valid_from",
    "valid_until",
    "confirmed",
}
CONFIRMED_KEYS = {"by", "on", "reference"}


def _confirmed(m: _Map) -> dict[str, str]:
    c = m.sub("confirmed")
    c.check_keys(CONFIRMED_KEYS)
    on = c.date("on")
    if on is None:
        raise RegisterError(f"{c.where('on')} is required: the day the DPO confirmed it.")
    out = {"by": c.string("by"), "on": on.isoformat()}
    if "reference" in c.data:
        out["reference"] = c.string("reference")
    return out


def _basis(m: _Map) -> LegalBasis:
    m.check_keys(BASIS_KEYS)
    assumption = m.boolean("assumption")
    basis = LegalBasis(
        law=m.string("law"),
        article=m.string("article", ""),
        url=m.string("url", ""),
        assumption=assumption,
        checked=m.boolean("checked"),
        note=m.string("note", ""),
        bwb_id=m.string("bwb_id", ""),
        celex=m.string("celex", ""),
        publication=m.string("publication", ""),
        valid_from=m.date("valid_from"),
        valid_until=m.date("valid_until"),
        confirmed=_confirmed(m) if "confirmed" in m.data else None,
    )
    if basis.confirmed and not assumption:
        raise RegisterError(
            f"{m.where('confirmed')}: only an assumed basis (assumption: true) is confirmed by "
            "the DPO; an established one rests on the law itself."
        )
    if basis.valid_from and basis.valid_until and basis.valid_until < basis.valid_from:
        raise m.fail("valid_until", f"on or after valid_from ({basis.valid_from})")
    if basis.bwb_id and not BWB_ID.match(basis.bwb_id):
        raise m.fail("bwb_id", "a BWB id such as BWBR0031331")
    if basis.celex and not CELEX.match(basis.celex):
        raise m.fail("celex", "a CELEX number such as 32016R0679")
    if basis.url and not basis.url.startswith("https://"):
        raise m.fail("url", "an https:// link to the official text")
    if assumption and not basis.note:
        raise RegisterError(f"{m.where('note')} is required: say why the basis is an assumption.")
    if not assumption:
        # An established basis must be citable and must have been read against the text.
        if not (basis.bwb_id or basis.celex or basis.publication):
            raise RegisterError(f"{m.where('bwb_id')} (or celex or publication) is required.")
        for key in ("article", "url"):
            if not getattr(basis, key):
                raise RegisterError(f"{m.where(key)} is required for an established basis.")
        if not basis.checked:
            raise RegisterError(
                f"{m.where('checked')}: an established basis (assumption: false) must have "
                "been checked against the text of the law."
            )
    return basis


def _sources(m: _Map, schemes: tuple[str, ...]) -> dict[str, SourceEntry]:
    sources = m.sub("sources")
    out = {}
    for name in sources.data:
        if name not in SOURCES:
            raise RegisterError(
                f"{m.where('sources')}: unknown source {name!r} "
                f"(the delivery contract has: {', '.join(SOURCES)})."
            )
        entry = sources.sub(name)
        entry.check_keys({"legal_basis", "fields"})
        out[name] = SourceEntry(
            name=name,
            legal_basis=tuple(_basis(b) for b in entry.items("legal_basis")),
            fields=_fields(entry.sub("fields"), name, schemes),
        )
    return out


def _fields(m: _Map, source: str, schemes: tuple[str, ...]) -> dict[str, FieldRule]:
    columns = SOURCES[source].column_names
    out = {}
    for name in m.data:
        if name not in columns:
            raise RegisterError(
                f"{m.where(str(name))}: source {source} has no field {name!r} "
                f"(contract fields: {', '.join(columns)})."
            )
        out[name] = _field(m.sub(name), name, schemes)
    return out


def _field(m: _Map, name: str, schemes: tuple[str, ...]) -> FieldRule:
    m.check_keys({"status", "why", "conditions", "schemes"})
    status = m.string("status")
    if status not in FIELD_STATUSES:
        raise m.fail("status", f"one of {', '.join(FIELD_STATUSES)}")
    conditions = _conditions(m, "conditions", "field")
    if (status == CONDITIONAL) != bool(conditions):
        raise RegisterError(
            f"{m.where('conditions')}: a field has conditions exactly when its status is "
            f"conditional (status {status}, conditions {list(conditions)})."
        )
    restricted = m.strings("schemes", [])
    outside = sorted(set(restricted) - set(schemes))
    if outside:
        raise RegisterError(
            f"{m.where('schemes')}: scheme(s) {', '.join(outside)} are not schemes of this "
            f"activity ({', '.join(schemes) or 'none'})."
        )
    if status == NOT_ALLOWED and restricted:
        raise RegisterError(f"{m.where('schemes')}: a field that is not allowed has no schemes.")
    return FieldRule(name, status, m.string("why"), conditions, restricted)


# -- questions the rest of the code asks --------------------------------------------------


def allowed_fields(register: Register, purpose: str, source: str) -> set[str]:
    """The fields of `source` that `purpose` may use (allowed or conditional).

    For minimisation: anything else can be dropped before the data leaves the body. An
    unregistered purpose or source allows nothing.
    """
    activity = register.activity(purpose)
    entry = activity.sources.get(source) if activity else None
    if entry is None:
        return set()
    return {name for name, rule in entry.fields.items() if rule.usable}


@dataclass(frozen=True)
class Lineage:
    """One source field behind a household column, and what the register says about it."""

    column: str
    source: str
    field: str
    rule: FieldRule | None  # None: not covered by the register
    basis: tuple[LegalBasis, ...]  # the source's legal basis; empty if unregistered

    @property
    def source_field(self) -> str:
        return f"{self.source}.{self.field}"

    def as_dict(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "field": self.source_field,
            "status": rule.status if rule else "not_covered",
            "conditions": list(rule.conditions) if rule else [],
            "schemes": list(rule.schemes) if rule else [],
            "legal_basis": [b.citation() for b in self.basis],
        }


HOUSEHOLD_LINEAGE: dict[str, tuple[str, ...]] = {c.name: c.derived_from for c in HOUSEHOLD_COLUMNS}


def column_lineage(register: Register, purpose: str, column: str) -> list[Lineage]:
    """The source fields of one household column (pipelines/household.py `derived_from`)."""
    if column not in HOUSEHOLD_LINEAGE:
        raise KeyError(f"{column!r} is not a column of the household table")
    activity = register.activity(purpose)
    out = []
    for source_field in HOUSEHOLD_LINEAGE[column]:
        source, field_name = source_field.split(".", 1)
        entry = activity.sources.get(source) if activity else None
        out.append(
            Lineage(
                column=column,
                source=source,
                field=field_name,
                rule=entry.fields.get(field_name) if entry else None,
                basis=entry.legal_basis if entry else (),
            )
        )
    return out


def household_lineage(register: Register, purpose: str) -> dict[str, list[Lineage]]:
    """Every household column with its source fields and their legal basis for `purpose`."""
    return {name: column_lineage(register, purpose, name) for name in HOUSEHOLD_LINEAGE}
