"""The named errors of the rules package, so callers can tell a bad file from a refused rule.

Every message names the rule (scheme id), the year where one applies, the file or field
and the cause. No message ever contains a person's data: rules are compiled from files,
and evaluation errors name columns, never values.
"""

from __future__ import annotations


class RuleError(Exception):
    """Base class of every error raised by entitlement_rules."""


class RuleLoadError(RuleError):
    """A scheme, parameter or case file is missing, malformed or inconsistent."""


class RuleCompileError(RuleError):
    """A rule cannot be compiled to SQL for the requested year."""


class MissingParameterError(RuleCompileError):
    """A parameter the rule needs for that year is absent, unknown or unverified."""


class ProtectedAttributeError(RuleCompileError):
    """A rule reads a protected attribute or a proxy of one (fairness guard)."""


class IdentifyingFieldError(ProtectedAttributeError):
    """A rule reads who someone is: an identifier, a pseudonym or a BSN-like literal."""


class UnknownFieldError(RuleCompileError):
    """A rule reads a name that is no household column, parameter or value of the rule."""


class RuleEvaluationError(RuleError):
    """The households table given to evaluate() lacks columns the compiled rules read."""
