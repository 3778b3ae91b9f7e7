"""buildml: a make-like build system for machine-learning repositories."""

__version__ = "0.1.0"
