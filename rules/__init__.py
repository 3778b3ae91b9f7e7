"""Built-in target kinds (installed as `buildml.rules`)."""

from .command import CommandRule
from .image import ImageRule
from .test import TestRule


def builtin_rules():
    """One instance of each built-in kind."""
    return [CommandRule(), ImageRule(), TestRule()]
