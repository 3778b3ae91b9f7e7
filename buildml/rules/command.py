"""`command`: run a command that reads deps and params and writes outs."""

from buildml.rule import Attr, Rule, command_argv


class CommandRule(Rule):
    kind = "command"
    version = "1"
    attrs = {"command": Attr("command", "a string run by sh -c, or a list run as argv", required=True)}

    def analyse(self, target):
        return self.base_spec(target, command_argv(target.attrs["command"]))
