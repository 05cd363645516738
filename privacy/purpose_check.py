"""The purpose check: may this run, for this purpose, read these sources and fields?

A decision flow over the processing register (privacy/register.py), made before any data
file is opened. For every (source, field) the run reads it decides:

    allowed      the run needs the field and the register allows it for the purpose
    conditional  the same, under conditions that are recorded with the run
    dropped      the run does not need it: minimisation drops it at the supplying body
                 (privacy/minimise.py) and the central run refuses a delivery that has it
    refused      not covered by the register, or needed but not allowed

and the run as a whole is allowed, conditional (the conditions go into the run manifest
and the audit trail) or refused (PurposeNotAllowed, with an explanation a data-protection
officer can act on). `check_rule_fields` does the same for each compiled rule: every
household column the rule reads is traced to its source fields (pipelines/household.py
`derived_from`), and each must be allowed for the purpose and the rule's scheme.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from entitlement_rules.errors import RuleCompileError
from pipelines.audit_records import AUDIT_SCHEMA, canonical_json, operation_span, trace_id
from pipelines.contract import SOURCES
from pipelines.household import COLUMNS as HOUSEHOLD_COLUMNS
from privacy.minimise import SELECTION_FIELDS
from privacy.register import (
    CONDITIONAL,
    CONDITIONS,
    HOUSEHOLD_LINEAGE,
    NOT_ALLOWED,
    Activity,
    LegalBasis,
    Lineage,
    Register,
    column_lineage,
    household_lineage,
)

OPERATION = "purpose_check"
ALLOWED, CONDITIONAL_RUN, REFUSED, DROPPED = "allowed", "conditional", "refused", "dropped"


class PurposeNotAllowed(Exception):
    """A run or a rule is not covered by the processing register for its purpose."""


class RuleFieldNotAllowed(PurposeNotAllowed, RuleCompileError):
    """A rule reads a household column whose source fields its purpose or scheme may not use."""


# Fields the pipeline itself uses beyond the lineage of the household columns: join keys
# and the objections it applies before the join. The dates the join selects rows by are
# minimisation's SELECTION_FIELDS, so that the body and the check agree on what is needed.
OPERATIONAL_FIELDS: dict[str, str] = {
    "brp.address_id": "join key: links a person to the housing record of the address",
    "housing.address_id": "join key: the BRP address",
    "brp.partner_bsn": "an objecting partner is withheld from the household",
    "objections.bsn": "the objector, removed from every source before the join",
    "objections.scope": "objection to all processing or to one scheme",
} | {f: "the join selects rows by it at the reference date" for f in sorted(SELECTION_FIELDS)}


def needed_fields(sources: Iterable[str] = tuple(SOURCES)) -> dict[str, dict[str, str]]:
    """Per source, the fields a run needs and what for (lineage, join, keys, objections)."""
    needed: dict[str, dict[str, list[str]]] = {s: {} for s in sources}

    def need(source_field: str, why: str) -> None:
        source, name = source_field.split(".", 1)
        if source in needed:
            needed[source].setdefault(name, []).append(why)

    for column in HOUSEHOLD_COLUMNS:
        for source_field in column.derived_from:
            need(source_field, f"household column {column.name}")
    for source_field, why in OPERATIONAL_FIELDS.items():
        need(source_field, why)
    for name in needed:
        contract = SOURCES[name]
        need(f"{name}.{contract.subject}", "subject of the record (pseudonym)")
        for key in contract.key:
            need(f"{name}.{key}", "natural key: duplicates are quarantined")
    return {s: {f: "; ".join(dict.fromkeys(w)) for f, w in fs.items()} for s, fs in needed.items()}


# -- the outcome --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDecision:
    """The check's decision for one field of one source."""

    source: str
    field: str
    used_for: str  # why the run needs it; empty if it does not
    decision: str  # allowed, conditional, dropped, refused
    conditions: tuple[str, ...]
    note: str  # the register's reason, or the cause of a refusal

    @property
    def used(self) -> bool:
        return bool(self.used_for)


@dataclass(frozen=True)
class RecordedCondition:
    """A condition that applies to the run, and where (activity, sources or fields)."""

    id: str
    scopes: tuple[str, ...]
    detail: str | None = None

    @property
    def kind(self) -> str:
        return CONDITIONS[self.id].kind

    @property
    def text(self) -> str:
        return CONDITIONS[self.id].text

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "text": self.text, "applies_to": list(self.scopes)}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class Step:
    """One question of the decision flow and its answer, for people to read."""

    question: str
    answer: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """The result of the purpose check for one purpose and one set of sources."""

    purpose: str
    register_version: str
    activity_version: str
    activity_file: str
    decision: str  # allowed, conditional, refused
    steps: tuple[Step, ...]
    fields: tuple[FieldDecision, ...]
    conditions: tuple[RecordedCondition, ...]
    refusals: tuple[str, ...]
    bases: dict[str, tuple[LegalBasis, ...]] = field(default_factory=dict)
    columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # household lineage
    checked_at: str = ""

    @property
    def refused(self) -> bool:
        return self.decision == REFUSED

    def explain(self) -> str:
        """Why a run is refused, with what to do about it: for the data-protection officer."""
        head = (
            f"run refused for purpose {self.purpose!r} by the processing register "
            f"(version {self.register_version[:12]}):"
        )
        lines = [head] + [f"  - {r}" for r in self.refusals]
        lines.append("No data file was opened. `signals register check --purpose ...` shows all.")
        return "\n".join(lines)

    def conditions_for(self, source: str) -> list[str]:
        """Ids of the conditions that bind this source's data (activity-wide ones included)."""
        prefix = f"{source}."
        return [
            c.id
            for c in self.conditions
            if any(s in ("activity", f"source {source}") or s.startswith(prefix) for s in c.scopes)
        ]

    def ingest_bases(self) -> dict[str, dict[str, Any]]:
        """Per source, what each ingest audit record carries: basis, assumption, conditions."""
        return {
            source: {
                "purpose": self.purpose,
                "legal_basis": [b.citation() for b in bases],
                "assumption": any(b.assumption for b in bases),
                "conditions": self.conditions_for(source),
            }
            for source, bases in self.bases.items()
        }

    def to_manifest(self) -> dict[str, Any]:
        """The `purpose_check` section of the run manifest."""
        sources: dict[str, Any] = {}
        for d in self.fields:
            entry = sources.setdefault(
                d.source,
                {"legal_basis": [b.as_dict() for b in self.bases.get(d.source, ())], "fields": {}},
            )
            entry["fields"][d.field] = {
                "decision": d.decision,
                "used_for": d.used_for,
                "conditions": list(d.conditions),
            }
        return {
            "purpose": self.purpose,
            "outcome": self.decision,
            "register_version": self.register_version,
            "activity_version": self.activity_version,
            "activity_file": self.activity_file,
            "checked_at": self.checked_at,
            "conditions": [c.as_dict() for c in self.conditions],
            "refusals": list(self.refusals),
            "sources": sources,
            "columns": self.columns,
            "flow": self.flow_text().splitlines(),
        }

    def audit_attributes(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "outcome": self.decision,
            "register_version": self.register_version,
            "activity_version": self.activity_version,
            "conditions": [{"id": c.id, "applies_to": list(c.scopes)} for c in self.conditions],
            "legal_basis": {s: [b.citation() for b in bs] for s, bs in self.bases.items()},
        } | ({"refusals": list(self.refusals)} if self.refusals else {})

    def table(self) -> str:
        """One line per (source, field): used or not, the decision and its conditions."""
        rows = [("source", "field", "used", "decision", "conditions / note")]
        for d in self.fields:
            note = ", ".join(d.conditions) if d.conditions else d.note
            rows.append((d.source, d.field, "yes" if d.used else "no", d.decision, note))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for i, r in enumerate(rows):
            cells = [c.ljust(w) for c, w in zip(r[:4], widths, strict=True)]
            lines.append("  ".join(cells + [r[4]]))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 17)
        return "\n".join(line.rstrip() for line in lines)

    def flow_text(self) -> str:
        """The decision flow as numbered questions and answers."""
        lines = [f"Purpose check: {self.purpose} (register {self.register_version[:12]})"]
        for i, step in enumerate(self.steps, 1):
            lines.append(f"{i}. {step.question} {step.answer}")
            lines += [f"   - {d}" for d in step.details]
        return "\n".join(lines)


# -- the decision flow ---------------------------------------------------------------------


def check_purpose(
    register: Register,
    purpose: str,
    sources: Iterable[str] = tuple(SOURCES),
    on: dt.date | None = None,
) -> Outcome:
    """Decide whether a run for `purpose` may read `sources`; reads the register only.

    With `on` (the run's reference date), every legal basis it rests on must hold that day
    (`valid_from`, `valid_until` in the register)."""
    sources = tuple(sources)
    base = {
        "purpose": purpose,
        "register_version": register.version,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    activity = register.activity(purpose)
    if activity is None:
        known = ", ".join(sorted(register.activities)) or "none"
        refusal = (
            f"purpose {purpose!r} is not in the processing register (registered: {known}). "
            f"Action: the controller registers this processing activity, with its legal basis, "
            f"in {register.root}/{purpose}.yaml before anything is run for it."
        )
        step = Step("Is the purpose registered?", "NO.", (refusal,))
        return Outcome(
            activity_version="",
            activity_file="",
            decision=REFUSED,
            steps=(step,),
            fields=(),
            conditions=(),
            refusals=(refusal,),
            **base,
        )
    flow = _Flow(activity, sources, on)
    flow.run()
    decision = REFUSED if flow.refusals else CONDITIONAL_RUN if flow.scopes else ALLOWED
    flow.steps.append(Step("Outcome:", _verdict(decision)))
    return Outcome(
        activity_version=activity.digest,
        activity_file=str(activity.path),
        decision=decision,
        steps=tuple(flow.steps),
        fields=tuple(flow.fields),
        conditions=flow.recorded(),
        refusals=tuple(flow.refusals),
        bases={s: activity.sources[s].legal_basis for s in sources if s in activity.sources},
        columns=lineage_manifest(register, purpose),
        **base,
    )


def _verdict(decision: str) -> str:
    return {
        ALLOWED: "ALLOWED: the run may proceed.",
        CONDITIONAL_RUN: (
            "CONDITIONAL: the run may proceed; its conditions are recorded in the run "
            "manifest (purpose_check) and in the audit trail."
        ),
        REFUSED: "REFUSED: nothing is read; see the refusals above.",
    }[decision]


class _Flow:
    """Walks the questions of the check, collecting steps, decisions, conditions, refusals."""

    def __init__(self, activity: Activity, sources: tuple[str, ...], on: dt.date | None = None):
        self.activity, self.sources, self.on = activity, sources, on
        self.steps: list[Step] = []
        self.fields: list[FieldDecision] = []
        self.refusals: list[str] = []
        self.scopes: dict[str, list[str]] = {}
        self.details: dict[str, str] = {}  # what an activity condition was found to be
        self.needed = needed_fields(sources)

    def run(self) -> None:
        a = self.activity
        self.steps.append(
            Step("Is the purpose registered?", f"yes: {a.title} (controller: {a.controller}).")
        )
        self.check_activity_conditions()
        self.check_sources()
        self.check_validity()
        self.check_fields()
        schemes = ", ".join(a.schemes) or "none"
        self.steps.append(
            Step(
                "Which schemes may be evaluated?",
                f"{schemes}; each rule's fields are checked against the register when it is "
                "compiled.",
            )
        )

    def condition(self, cid: str, scope: str, detail: str = "") -> None:
        self.scopes.setdefault(cid, []).append(scope)
        if detail:
            self.details[cid] = detail

    def recorded(self) -> tuple[RecordedCondition, ...]:
        order = list(CONDITIONS)
        return tuple(
            RecordedCondition(cid, tuple(dict.fromkeys(self.scopes[cid])), self.details.get(cid))
            for cid in sorted(self.scopes, key=order.index)
        )

    def check_activity_conditions(self) -> None:
        details, ok = [], True
        for cid in self.activity.conditions:
            holds, detail = _activity_condition(self.activity, cid, self.sources)
            details.append(f"{cid}: {'yes' if holds else 'NO'}: {detail}")
            if holds:
                self.condition(cid, "activity", detail)
            else:
                ok = False
                self.refusals.append(
                    f"condition {cid} does not hold: {detail}. Action: the controller fixes "
                    f"this in {self.activity.path.name}."
                )
        answer = "yes." if ok else "NO."
        if not self.activity.conditions:
            answer = "the activity sets none."
        self.steps.append(Step("Do the activity's conditions hold?", answer, tuple(details)))

    def check_sources(self) -> None:
        details, ok = [], True
        for name in self.sources:
            entry = self.activity.sources.get(name)
            if entry is None:
                ok = False
                details.append(f"{name}: NOT REGISTERED for this purpose")
                self.refusals.append(
                    f"source {name} is not registered for purpose {self.activity.id!r}. "
                    f"Action: add `{name}` with its legal basis and a decision per field to "
                    f"{self.activity.path.name} (the run reads every source of the delivery "
                    "contract: it cannot run without one)."
                )
                continue
            citations = "; ".join(b.citation() for b in entry.legal_basis)
            details.append(f"{name}: {citations}")
            if entry.assumption:
                said = [b.confirmation() for b in entry.legal_basis if b.assumption]
                confirmed = all(said)
                scope = f"source {name}" + (f" ({'; '.join(said)})" if confirmed else "")
                self.condition("assumed_legal_basis", scope)
        self.steps.append(
            Step(
                "Is every source the run reads registered with a legal basis?",
                "yes." if ok else "NO.",
                tuple(details),
            )
        )

    def check_validity(self) -> None:
        """Every basis the run rests on must hold on its reference date (laws change)."""
        if self.on is None:
            return
        bases = [("the activity", b) for b in self.activity.general_basis]
        for name in self.sources:
            entry = self.activity.sources.get(name)
            bases += [(f"source {name}", b) for b in (entry.legal_basis if entry else ())]
        details = []
        for what, basis in bases:
            if basis.valid_from is None and basis.valid_until is None:
                continue
            holds = basis.holds_on(self.on)
            verdict = "holds" if holds else "DOES NOT HOLD"
            details.append(f"{what}: {basis.citation()}: {basis.validity()}: {verdict}")
            if not holds:
                self.refusals.append(
                    f"{what}: legal basis {basis.citation()} holds {basis.validity()}, not on "
                    f"the reference date {self.on.isoformat()}. Action: record the provision "
                    f"that holds then in {self.activity.path.name}, or run for a date it covers."
                )
        answer = "yes." if all("DOES NOT HOLD" not in d for d in details) else "NO."
        if not details:
            answer = "yes: no basis has an end or start date."
        self.steps.append(
            Step(
                f"Does every legal basis hold on the reference date {self.on.isoformat()}?",
                answer,
                tuple(details),
            )
        )

    def check_fields(self) -> None:
        details, ok = [], True
        for name in self.sources:
            entry = self.activity.sources.get(name)
            if entry is None:
                continue
            decisions = [self.decide(name, col) for col in SOURCES[name].column_names]
            self.fields += decisions
            ok &= all(d.decision != REFUSED for d in decisions)
            details.append(f"{name}: {_summary(decisions)}")
        self.steps.append(
            Step(
                "Is every field the run reads allowed for this purpose?",
                "yes, some under conditions." if ok else "NO.",
                tuple(details),
            )
        )

    def decide(self, source: str, column: str) -> FieldDecision:
        rule = self.activity.field(source, column)
        used_for = self.needed.get(source, {}).get(column, "")
        where = f"{source}.{column}"
        if rule is None:
            cause = (
                f"field {where} is not covered by the register for purpose "
                f"{self.activity.id!r}{' (the run needs it: ' + used_for + ')' if used_for else ''}"
                f". Action: add a decision (allowed, conditional or not_allowed, with why) for "
                f"{column} under sources.{source}.fields in {self.activity.path.name}."
            )
            self.refusals.append(cause)
            return FieldDecision(source, column, used_for, REFUSED, (), "not covered")
        if not used_for:
            why = f"not allowed: {rule.why}" if rule.status == NOT_ALLOWED else "not needed"
            return FieldDecision(
                source, column, "", DROPPED, (), f"{why}; dropped at the supplying body"
            )
        if rule.status == NOT_ALLOWED:
            self.refusals.append(
                f"field {where} is needed by the run ({used_for}) but not allowed for purpose "
                f"{self.activity.id!r} ({rule.why}). Action: either allow it in "
                f"{self.activity.path.name} with a legal basis, or change the pipeline so that "
                f"this purpose does not need it."
            )
            return FieldDecision(source, column, used_for, REFUSED, (), f"not allowed: {rule.why}")
        for cid in rule.conditions:
            self.condition(cid, where)
        decision = CONDITIONAL if rule.status == CONDITIONAL else ALLOWED
        return FieldDecision(source, column, used_for, decision, rule.conditions, rule.why)


def _summary(decisions: list[FieldDecision]) -> str:
    counts: dict[str, list[str]] = {}
    for d in decisions:
        counts.setdefault(d.decision, []).append(d.field)
    parts = []
    for decision in (ALLOWED, CONDITIONAL, DROPPED, REFUSED):
        names = counts.get(decision)
        if names:
            shown = f" ({', '.join(names)})" if decision != ALLOWED else ""
            parts.append(f"{len(names)} {decision}{shown}")
    return ", ".join(parts)


def _activity_condition(activity: Activity, cid: str, sources: tuple[str, ...]) -> tuple[bool, str]:
    """Whether an activity-level `check` condition holds, and what was found."""
    if cid == "dpia_recorded":
        d = activity.dpia
        if not d:
            return False, "no DPIA is recorded for this activity"
        placeholder = "; PILOT PLACEHOLDER, not for real personal data" if d["placeholder"] else ""
        found = f"{d['reference'] or 'no reference'} (status {d['status']}{placeholder})"
        return bool(d["reference"]) and d["status"] == "approved", found
    if cid == "retention_set":
        r = activity.retention
        if not r:
            return False, "no retention period is set for this activity"
        flag = " (a policy value marked as assumption)" if r["assumption"] else ""
        return True, f"{r['period']} for {r['applies_to']}{flag}"
    if cid == "objections_honoured":
        entry = activity.sources.get("objections")
        usable = entry is not None and all(
            (rule := entry.fields.get(f)) is not None and rule.usable for f in ("bsn", "scope")
        )
        if "objections" not in sources:
            return False, "the run does not read the objections source"
        if not usable:
            return False, "source objections is not registered with fields bsn and scope allowed"
        return True, "objections are read and applied before the join (pipelines/exclude.py)"
    raise AssertionError(f"no check for activity condition {cid}")  # the loader prevents this


def enforce(outcome: Outcome) -> Outcome:
    """Raise PurposeNotAllowed with the explanation when the outcome is a refusal."""
    if outcome.refused:
        raise PurposeNotAllowed(outcome.explain())
    return outcome


# -- rules: compile-time lineage check -----------------------------------------------------


def check_fields(
    register: Register, purpose: str, rule_id: str, scheme: str, fields: Iterable[str]
) -> list[Lineage]:
    """Refuse a rule that reads anything its purpose and scheme may not use; else its lineage."""
    activity = register.activity(purpose)
    what = f"rule {rule_id} (scheme {scheme})"
    if activity is None:
        raise RuleFieldNotAllowed(
            f"{what} may not be compiled for purpose {purpose!r}: the purpose is not in the "
            f"processing register (version {register.version[:12]})."
        )
    problems, lineage = [], []
    if scheme not in activity.schemes:
        problems.append(
            f"scheme {scheme} is not a scheme of this purpose (its schemes: "
            f"{', '.join(activity.schemes) or 'none'})"
        )
    for column in sorted(fields):
        if column not in HOUSEHOLD_LINEAGE:
            problems.append(f"column {column} is not a household column, so it has no lineage")
            continue
        for item in column_lineage(register, purpose, column):
            lineage.append(item)
            problem = _lineage_problem(item, scheme, purpose)
            if problem:
                problems.append(f"column {column} <- source field {item.source_field}: {problem}")
    if problems:
        raise RuleFieldNotAllowed(
            f"{what} may not be compiled for purpose {purpose!r} (register version "
            f"{register.version[:12]}):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return lineage


def _lineage_problem(item: Lineage, scheme: str, purpose: str) -> str:
    rule = item.rule
    if rule is None:
        return f"not covered by the register for purpose {purpose!r}"
    if not rule.usable:
        return f"not allowed for purpose {purpose!r} ({rule.why})"
    if rule.schemes and scheme not in rule.schemes:
        return (
            f"allowed for purpose {purpose!r} only for scheme(s) {', '.join(rule.schemes)}, "
            f"not for {scheme}"
        )
    if "aggregate_only" in rule.conditions:
        return f"allowed for purpose {purpose!r} in aggregate reports only (aggregate_only)"
    return ""


def check_rule_fields(register: Register, purpose: str, compiled_rule) -> list[Lineage]:
    """check_fields for a CompiledRule (entitlement_rules' public `fields`, `scheme`, `rule_id`)."""
    return check_fields(
        register, purpose, compiled_rule.rule_id, compiled_rule.scheme, compiled_rule.fields
    )


def lineage_manifest(register: Register, purpose: str) -> dict[str, list[dict[str, Any]]]:
    """Every household column with its source fields, their decision and legal basis."""
    return {
        column: [item.as_dict() for item in items]
        for column, items in household_lineage(register, purpose).items()
    }


# -- audit ---------------------------------------------------------------------------------


def purpose_check_record(
    context, outcome: Outcome, withheld: dict[str, str] | None = None
) -> pa.RecordBatch:
    """The run-level audit record of the check: one per run, the root of the run's trace.

    It concerns the run, not a person, so it has no data subject; the per-subject ingest
    records carry the legal basis and condition ids of their source. `withheld`: the
    delivered fields the run blanks on reading, each with why (privacy/minimise.py).
    """
    attributes = outcome.audit_attributes() | ({"fields_withheld": withheld} if withheld else {})
    now = dt.datetime.now(dt.UTC)
    row = {
        "trace_id": trace_id(context.run_id),
        "span_id": operation_span(context.run_id, OPERATION),
        "parent_span_id": None,
        "name": OPERATION,
        "status": outcome.decision,
        "start_time": dt.datetime.fromisoformat(outcome.checked_at) if outcome.checked_at else now,
        "end_time": now,
        "run_id": context.run_id,
        "processing_activity_id": context.processing_activity_id,
        "register_version": context.register_version,
        "data_subject_pid": None,
        "attributes": canonical_json(attributes),
    }
    return pa.RecordBatch.from_pylist([row], schema=AUDIT_SCHEMA)


def write_purpose_check_record(
    folder: Path, context, outcome: Outcome, withheld: dict[str, str] | None = None
) -> Path:
    """Write the run-level record as a part where the run's audit parts are collected."""
    from privacy.audit.parts import write_part

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = pa.Table.from_batches([purpose_check_record(context, outcome, withheld)])
    return write_part(record, folder, OPERATION)
