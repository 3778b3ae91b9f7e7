"""`dataset`: a command that produces data (files or large directories) from sources, with optional checks."""

from buildml.rule import LoadError
from buildml.rule import Attr, Rule, command_argv, validate_checks


class DatasetRule(Rule):
    kind = "dataset"
    version = "1"
    attrs = {
        "command": Attr("command", "the command writing the data: a string run by sh -c, or a list run as argv", required=True),
        "checks": Attr("checks", "row counts, columns, not_empty of the data outs, checked after the command"),
    }

    def validate(self, name, raw, doc, path, package):
        raw = dict(raw)
        checks = raw.pop("checks", None)
        attrs = super().validate(name, raw, doc, path, package)
        outs = tuple(attrs.get("outs", ())) + tuple(attrs.get("metrics", ()))
        if not outs:
            raise LoadError(f"dataset {name!r} needs at least one out", location=doc.where(path), field=name,
                            hint="list the files or directories the command writes, e.g. outs: [out/train.csv]")
        if checks is not None:
            attrs["checks"] = validate_checks(checks, outs, doc, path + ("checks",), f"{name}.checks", package)
        return attrs

    def analyse(self, target):
        return self.base_spec(target, command_argv(target.attrs["command"]), checks=target.attrs.get("checks", ()))
