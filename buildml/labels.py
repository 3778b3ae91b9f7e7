"""Labels (`//pkg/path:name`) and target patterns (`//...`, `//pkg/...`, `//pkg:all`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from buildml.errors import LabelError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=,@~-]*$")
_PKG_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=,@~-]*$")


class Label(NamedTuple):
    """A target's identity: its package path (no leading //) and its name.

    A NamedTuple: immutable, ordered, and hashed/compared in C (graphs of 10,000 targets hash
    labels millions of times).
    """

    package: str
    name: str

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"

    def __repr__(self) -> str:
        return f"Label({str(self)!r})"


@dataclass(frozen=True)
class Pattern:
    """A set of targets: one label, every target of a package, or a package subtree."""

    package: str
    name: str | None = None  # one target
    recursive: bool = False  # //pkg/...

    def matches(self, label: Label) -> bool:
        if self.recursive:
            return not self.package or label.package == self.package or label.package.startswith(self.package + "/")
        if self.name is None:
            return label.package == self.package
        return label.package == self.package and label.name == self.name

    def __str__(self) -> str:
        if self.recursive:
            return f"//{self.package}/..." if self.package else "//..."
        return f"//{self.package}:{self.name or 'all'}"


def _check_package(package: str, text: str) -> str:
    if package == "":
        return package
    for part in package.split("/"):
        if part in ("", ".", "..") or not _PKG_PART.match(part):
            raise LabelError(f"invalid package path in label {text!r}", hint="package paths are like //models/vision, relative to the workspace root, without '..'")
    return package


def _check_name(name: str, text: str) -> str:
    if not _NAME.match(name):
        raise LabelError(f"invalid target name in label {text!r}", hint="names use letters, digits and _ . - + = , @ ~")
    return name


def parse_label(text: str, current_package: str | None = None) -> Label:
    """Parse `//pkg:name`, `//pkg` (= `//pkg:pkg`), `//:name`, or `:name` (needs current_package)."""
    if not isinstance(text, str) or not text:
        raise LabelError(f"empty or non-text label {text!r}")
    if text.startswith(":"):
        if current_package is None:
            raise LabelError(f"relative label {text!r} needs a package", hint="write it in full, like //pkg:name")
        return Label(current_package, _check_name(text[1:], text))
    if not text.startswith("//"):
        raise LabelError(f"label {text!r} must start with // or :", hint="e.g. //models:classifier or :prepare")
    body = text[2:]
    package, sep, name = body.partition(":")
    package = package.rstrip("/") if package.endswith("/") and package != "/" else package
    _check_package(package, text)
    if not sep:
        if not package:
            raise LabelError(f"label {text!r} names no target", hint="use //:name for the root package")
        name = package.rsplit("/", 1)[-1]
    return Label(package, _check_name(name, text))


def parse_pattern(text: str, current_package: str = "") -> Pattern:
    """Parse a command-line target pattern; `pkg:name` and `pkg/...` are taken relative to the root."""
    if not isinstance(text, str) or not text:
        raise LabelError("empty target pattern", hint="e.g. //... or //models:classifier")
    if not text.startswith(("//", ":")):
        text = "//" + text
    if text.startswith(":"):
        text = f"//{current_package}{text}"
    if text == "//..." or text.endswith("/..."):
        package = text[2:-4].rstrip("/")
        _check_package(package, text)
        return Pattern(package, recursive=True)
    body = text[2:]
    package, sep, name = body.partition(":")
    if sep and name in ("all", "*"):
        return Pattern(_check_package(package, text))
    label = parse_label(text)
    return Pattern(label.package, label.name)
