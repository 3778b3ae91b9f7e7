"""A recording executor for fast engine tests: it runs nothing, writes declared outs, and logs calls."""

from __future__ import annotations

import socket

from buildml.executors import Executor, RunOutcome, RunRequest


class FakeExecutor(Executor):
    """Writes each declared out as the text given by `outputs` (default: the label), records what ran."""

    name = "fake"
    config_options = ("outputs", "fail")

    @classmethod
    def from_config(cls, config, context) -> "FakeExecutor":
        """A fake named in buildml.yaml: `executors: {rec: {type: fake}}` (options: outputs, fail)."""
        return cls(config.option("outputs"), config.option("fail", ()))

    def __init__(self, outputs=None, fail=()):
        self.ran: list[str] = []
        self.outputs = outputs or {}
        self.fail = set(fail)

    def run(self, request: RunRequest) -> RunOutcome:
        spec = request.action.spec
        label = str(spec.label)
        self.ran.append(label)
        if label in self.fail:
            request.log_path.write_text(f"{label} failed on purpose\n")
            return RunOutcome(1, 0.0, self.name, socket.gethostname())
        for out in spec.outs:
            path = request.sandbox.ws / out
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.outputs.get(label, label))
        return RunOutcome(0, 0.0, self.name, socket.gethostname())

    def cancel(self) -> None:
        pass
