"""Built-in target kinds (installed as `buildml.rules`)."""

from .command import CommandRule
from .dataset import DatasetRule
from .endpoint import EndpointRule
from .image import ImageRule
from .model import ModelRule
from .test import TestRule


def builtin_rules():
    """One instance of each built-in kind."""
    return [CommandRule(), ImageRule(), TestRule(), DatasetRule(), ModelRule(), EndpointRule()]
