"""The plugin API for rules, stable for user rules: `from buildml.rule import Attr, Rule, ...`.

The only buildml module that rules (built-in ones in buildml/rules/ and the user's own) import. The schema
itself lives in buildml/load/schema.py; this module names what a rule may use.
"""

from buildml.action import IMAGE_EXECUTOR, ActionSpec
from buildml.errors import LabelError, LoadError
from buildml.labels import Label, parse_label
from buildml.load.checks import validate_checks
from buildml.load.schema import (
    COMMON_ATTRS,
    Attr,
    Rule,
    RuleRegistry,
    Target,
    command_argv,
    params_files,
    parse_size,
)
from buildml.load.workspace import normalize_relpath

__all__ = [
    "COMMON_ATTRS", "IMAGE_EXECUTOR", "ActionSpec", "Attr", "Label", "LabelError", "LoadError", "Rule", "RuleRegistry",
    "Target", "command_argv", "normalize_relpath", "params_files", "parse_label", "parse_size", "validate_checks",
]
