"""Resource-aware scheduling: gpus and memory never oversubscribed, impossible requests refused, no deadlock."""

import threading
import time

from buildml.api import Options, Session
from buildml.executors.fake import FakeExecutor
from buildml.engine.resources import Ledger, Pool, machine_capacity

JOBS = """
targets:
  a: {{kind: model, command: a, outs: [a.bin], resources: {res}}}
  b: {{kind: model, command: b, outs: [b.bin], resources: {res}}}
  c: {{kind: model, command: c, outs: [c.bin], resources: {res}}}
"""


class SleepyFake(FakeExecutor):
    """A fake that takes `seconds` per action and records when each ran."""

    def __init__(self, seconds=0.3, capacity=None):
        super().__init__()
        self.seconds, self.spans, self._lock = seconds, {}, threading.Lock()
        if capacity is not None:
            self.capacity = lambda: capacity

    def run(self, request):
        start = time.monotonic()
        time.sleep(self.seconds)
        outcome = super().run(request)
        with self._lock:
            self.spans[str(request.action.spec.label)] = (start, time.monotonic(), dict(request.env))
        return outcome


def most_at_once(spans) -> int:
    """The largest number of actions running at one moment."""
    edges = sorted([(s, 1) for s, _, _ in spans.values()] + [(e, -1) for _, e, _ in spans.values()])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def build(ws, fake, jobs=4):
    return Session(ws.root, Options(cache_dir=str(ws.cache), jobs=jobs), executor=fake).build(["//..."])


def test_gpu_actions_never_overlap_on_a_one_gpu_executor(ws):
    """Three gpus: 1 actions with -j 4 on an executor declaring 1 GPU run one after another."""
    ws.write("buildml.yaml", "executors: {local: {gpus: 1}}\n")
    ws.write("BUILD.yaml", JOBS.format(res="{gpus: 1}"))
    fake = SleepyFake()
    finished = build(ws, fake)
    assert all(r.status == "executed" for r in finished.results)
    assert len(fake.spans) == 3 and most_at_once(fake.spans) == 1


def test_gpu_actions_share_a_two_gpu_executor(ws):
    """With 2 GPUs, two gpus: 1 actions run at once, a third waits."""
    ws.write("buildml.yaml", "executors: {local: {gpus: 2}}\n")
    ws.write("BUILD.yaml", JOBS.format(res="{gpus: 1}"))
    fake = SleepyFake(0.5)
    build(ws, fake)
    assert most_at_once(fake.spans) == 2


def test_memory_is_a_hard_limit(ws):
    """Two 3GB actions on an executor with 4GB never run together; unlimited actions are only bounded by -j."""
    ws.write("buildml.yaml", "executors: {local: {memory: 4GB}}\n")
    ws.write("BUILD.yaml", JOBS.format(res="{memory: 3GB}"))
    fake = SleepyFake()
    build(ws, fake)
    assert most_at_once(fake.spans) == 1
    ws.write("BUILD.yaml", JOBS.format(res="{}").replace("command: ", "command: x"))
    fake = SleepyFake(0.5)
    build(ws, fake)
    assert most_at_once(fake.spans) > 1  # nothing declared: nothing reserved


def test_more_cpus_than_the_machine_runs_alone_never_deadlocks(ws):
    """cpus beyond capacity (and beyond -j) are soft: such an action runs when it is alone on its executor."""
    ws.write("buildml.yaml", "executors: {local: {cpus: 2}}\n")
    ws.write("BUILD.yaml", JOBS.format(res="{cpus: 64}"))
    fake = SleepyFake(0.2)
    finished = build(ws, fake, jobs=1)
    assert [r.status for r in finished.results] == ["executed"] * 3 and most_at_once(fake.spans) == 1


def test_executor_reported_capacity_is_used(ws):
    """An executor exposing capacity() (as Ray's does) is accounted by what it reports."""
    ws.write("BUILD.yaml", JOBS.format(res="{gpus: 1}"))
    fake = SleepyFake(0.5, capacity={"gpus": 3, "cpus": 8, "memory": None})
    build(ws, fake)
    assert most_at_once(fake.spans) == 3  # all three at once: 3 GPUs reported, none declared


def test_gpus_get_distinct_devices(ws, monkeypatch):
    """Local actions holding GPUs see CUDA_VISIBLE_DEVICES naming only their own devices."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ws.write("buildml.yaml", "executors: {local: {gpus: 2}}\n")
    ws.write("BUILD.yaml", JOBS.format(res="{gpus: 1}").replace("  c:", "  # c:"))
    fake = SleepyFake(0.4)
    build(ws, fake)
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for _, _, env in fake.spans.values()) == ["0", "1"]


def test_asking_for_more_gpus_than_the_executor_has_is_refused(ws):
    """gpus: 2 on an executor declaring 1: exit 2 at once, naming target, resource, requested and available."""
    ws.write("buildml.yaml", "executors:\n  trainer: {type: local, gpus: 1}\n")
    ws.write("BUILD.yaml", """
        targets:
          train:
            kind: model
            command: touch model.pkl
            outs: [model.pkl]
            executor: trainer
            resources: {gpus: 2}
        """)
    proc = ws.run("build", check=2)
    assert "FAILED    //:train: //:train asks for gpus: 2, but executor 'trainer' has 1" in proc.stdout
    assert "executors: {trainer: {gpus: N" in proc.stdout and not (ws.root / "model.pkl").exists()
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("{gpus: 2}", "{memory: 100000TB}"))
    assert "asks for memory: " in ws.run("build", check=2).stdout


def test_a_cached_result_needs_no_resources(ws):
    """A result in the cache is restored even where the action could not run (e.g. built on a GPU box)."""
    ws.write("buildml.yaml", "executors: {local: {gpus: 1}}\n")
    ws.write("BUILD.yaml", "targets:\n  t: {kind: model, command: touch m.pkl, outs: [m.pkl], resources: {gpus: 1}}\n")
    ws.run("build", check=0)
    ws.write("buildml.yaml", "executors: {local: {gpus: 0}}\n")
    (ws.root / "m.pkl").unlink()
    assert "CACHED    //:t" in ws.run("build", check=0).stdout


def test_pool_accounting_units():
    """fits/acquire/release keep counts; refusal names what is asked and what there is."""
    pool = Pool("box", {"cpus": 4, "gpus": 2, "memory": 8 << 30}, devices=("0", "1"))
    one = {"cpus": 1, "gpus": 1, "memory": 4 << 30}
    assert pool.fits(one) and pool.acquire(one) == ("0",)
    assert pool.fits(one) and pool.acquire(one) == ("1",)
    assert not pool.fits({"cpus": 0, "gpus": 0, "memory": 1})  # memory full
    assert pool.fits({"cpus": 2, "gpus": 0, "memory": 0})
    pool.release(one, ("0",))
    assert pool.free_devices == ["0"] and pool.used["gpus"] == 1
    assert pool.refusal("//:x", {"cpus": 1, "gpus": 3, "memory": 0}) == "//:x asks for gpus: 3, but executor 'box' has 2"
    assert Ledger().take([("l", (None, None, None))]) == ("l", (None, None, None))  # no pools: only -j limits


def test_machine_capacity_follows_cuda_visible_devices():
    """Undeclared GPUs of this machine are those CUDA_VISIBLE_DEVICES lists; declared ones win."""
    capacity, ids = machine_capacity({}, {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert capacity["gpus"] == 2 and ids == ("2", "3") and capacity["cpus"] >= 1
    capacity, ids = machine_capacity({"gpus": 1}, {})
    assert capacity["gpus"] == 1 and ids == ("0",)
