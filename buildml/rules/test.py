"""`test`: a command (pytest, a script) or a declarative metrics gate; passes when it exits 0."""

import re

from buildml.rule import LoadError
from buildml.rule import Attr, Rule, command_argv

_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?[0-9.eE+-]+)\s*$")


class TestRule(Rule):
    kind = "test"
    version = "1"
    attrs = {
        "command": Attr("command", "the test command; optional when assert_metrics is given"),
        "retries": Attr("number", "re-run a failing test up to N times; a later pass is reported flaky"),
        "assert_metrics": Attr("mapping", "metric thresholds over the metrics files in deps, e.g. {accuracy: '>= 0.9'}"),
    }

    def validate(self, name, raw, doc, path, package):
        attrs = super().validate(name, raw, doc, path, package)
        gate = attrs.get("assert_metrics")
        if "command" not in attrs and not gate:
            raise LoadError(f"test {name!r} needs a command or assert_metrics", location=doc.where(path), field=name,
                            hint="e.g. command: pytest tests/   or   assert_metrics: {accuracy: '>= 0.9'}")
        for metric, condition in (gate or {}).items():
            if not isinstance(condition, str) or not _CONDITION.match(condition):
                raise LoadError(f"invalid condition {condition!r} for metric {metric!r}",
                                location=doc.where(path + ("assert_metrics", metric)), field=f"{name}.assert_metrics",
                                hint="write an operator and a number, e.g. '>= 0.9' or '< 0.2'")
        return attrs

    def analyse(self, target):
        a = target.attrs
        if "command" in a:
            argv = command_argv(a["command"])
        else:
            conditions = [f"{m}{c.replace(' ', '')}" for m, c in sorted(a["assert_metrics"].items())]
            argv = ("python", "-m", "buildml.gate", *conditions)
        return self.base_spec(target, argv, is_test=True, retries=int(a.get("retries", 0)))
