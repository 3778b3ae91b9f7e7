"""A recording executor for fast engine tests: it runs nothing, writes declared outs, and logs calls."""

from __future__ import annotations

import socket

from buildml.executors import Executor, RunOutcome, RunRequest


class FakeExecutor(Executor):
    """Writes each declared out as the text given by `outputs` (default: the label), records what ran."""

    name = "fake"
    config_options = ("outputs", "fail", "duration")

    @classmethod
    def from_config(cls, config, context) -> "FakeExecutor":
        """A fake named in buildml.yaml: `executors: {rec: {type: fake}}` (options: outputs, fail, duration)."""
        duration = config.option("duration", 0.0)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
            from buildml.errors import UserError

            raise UserError(f"executor {config.name!r}: duration {duration!r} is not a number of seconds",
                            hint="e.g. duration: 1.5")
        return cls(config.option("outputs"), config.option("fail", ()), float(duration))

    def __init__(self, outputs=None, fail=(), duration: float = 0.0):
        self.ran: list[str] = []
        self.outputs = outputs or {}
        self.fail = set(fail)
        self.duration = duration  # the wall time each run reports (it runs nothing; CPU and memory stay unknown)

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
        return RunOutcome(0, self.duration, self.name, socket.gethostname())

    def cancel(self) -> None:
        pass
