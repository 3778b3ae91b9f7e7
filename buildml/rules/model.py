"""`model`: a training command with selected params, metrics files and the resources it needs."""

from buildml.rule import LoadError
from buildml.rule import Attr, Rule, command_argv


class ModelRule(Rule):
    kind = "model"
    version = "1"
    attrs = {"command": Attr("command", "the training command: a string run by sh -c, or a list run as argv", required=True)}

    def validate(self, name, raw, doc, path, package):
        attrs = super().validate(name, raw, doc, path, package)
        if not attrs.get("outs"):
            raise LoadError(f"model {name!r} needs at least one out", location=doc.where(path), field=name,
                            hint="list what training writes, e.g. outs: [out/model.pkl]")
        return attrs

    def analyse(self, target):
        return self.base_spec(target, command_argv(target.attrs["command"]))
