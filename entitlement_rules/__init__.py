"""Entitlement rules as data (schemes, dated and sourced parameters, truth tables), compiled to
DuckDB SQL and evaluated set-based over the household table of pipelines/household.py."""

from entitlement_rules.cases import CaseResult, run_cases
from entitlement_rules.catalogue import explain, list_rules
from entitlement_rules.compiler import CompiledRule, compile_rule, rules_fields
from entitlement_rules.errors import (
    IdentifyingFieldError,
    MissingParameterError,
    ProtectedAttributeError,
    RuleCompileError,
    RuleError,
    RuleEvaluationError,
    RuleLoadError,
    UnknownFieldError,
)
from entitlement_rules.evaluate import OUTPUT_COLUMNS, evaluate
from entitlement_rules.loader import load_rules
from entitlement_rules.model import Rule

__all__ = [
    "OUTPUT_COLUMNS",
    "CaseResult",
    "CompiledRule",
    "IdentifyingFieldError",
    "MissingParameterError",
    "ProtectedAttributeError",
    "Rule",
    "RuleCompileError",
    "RuleError",
    "RuleEvaluationError",
    "RuleLoadError",
    "UnknownFieldError",
    "compile_rule",
    "evaluate",
    "explain",
    "list_rules",
    "load_rules",
    "rules_fields",
    "run_cases",
]
