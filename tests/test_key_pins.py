"""The action key of one target of every kind, pinned on a fixed workspace.

A key is what the cache trusts: if one of these literals has to change, every user's cache misses once, so
the change must be deliberate (a rule `version` bump, a new field in `action.py` `key_material`), never the
side effect of a refactor. The workspace is written here; keys are computed in-process with a recording
executor (nothing runs, no Docker), so they do not depend on the host, the user, paths or mtimes.
"""

from buildml.api import Options, Session
from buildml.executors.fake import FakeExecutor

BUILD = """
targets:
  prepare:
    command: python src/prep.py
    deps: [src/prep.py]
    params: [prep.rows]
    outs: [data/prepared.csv]
    env: {SEED: 1}
    resources: {cpus: 2, memory: 4GB}
  digits:
    kind: dataset
    command: python src/export.py
    deps: [src/export.py, data/prepared.csv]
    outs: [data/digits.csv]
    checks:
      - {path: data/digits.csv, min_rows: 10, columns: [label], not_empty: true}
  classifier:
    kind: model
    command: python src/train.py
    deps: [src/train.py, data/digits.csv]
    params: [train.C]
    outs: [models/model.pkl]
    metrics: [models/metrics.json]
    image: "//images:runtime"
    resources: {gpus: 1, memory: 16GB}
  quality:
    kind: test
    deps: [models/metrics.json]
    assert_metrics: {accuracy: ">= 0.9"}
  api:
    kind: endpoint
    models: ["//:classifier"]
    command: python3 app.py
    deps: [app.py]
    port: 8080
    env: {WORKERS: 2}
    image: "//images:runtime"
"""

IMAGES = """
targets:
  runtime:
    kind: image
    dockerfile: Dockerfile
    build_args: {TORCH: "2.3"}
"""

FILES = {
    "BUILD.yaml": BUILD,
    "params.yaml": "prep: {rows: 100}\ntrain: {C: 0.5}\n",
    "src/prep.py": "print('prep')\n",
    "src/export.py": "print('export')\n",
    "src/train.py": "print('train')\n",
    "app.py": "print('serve')\n",
    "images/BUILD.yaml": IMAGES,
    "images/Dockerfile": "FROM scratch\nARG TORCH\nCOPY . /src/\n",
    "images/requirements.txt": "numpy\n",
}

OUTPUTS = {"//:digits": "label\n" + "1\n" * 12, "//:classifier": '{"accuracy": 0.95}'}

PINNED = {
    "//:prepare": "7b34d896e646d7d3e21fb3b77dc662d1",  # resources.cpus: 2 sets the *_NUM_THREADS env (issue 21)
    "//:digits": "26683d19aa4ba0d2105a2a8f46bf8773",
    "//images:runtime": "f135a11b335dd03604fd1a58bf461903",
    "//:classifier": "0af40ec49779286e3fdca5a77fa9b063",
    "//:quality": "129fe9907cce8205ae595fcde79dcb36",
    "//:api": "d70b2b56942de4a456fea034145fa80c",
}


def test_every_kind_keeps_its_key(ws):
    for rel, text in FILES.items():
        ws.write(rel, text)
    session = Session(ws.root, Options(cache_dir=str(ws.cache)), executor=FakeExecutor(OUTPUTS))
    finished = session.build(["//...", "//:quality"])  # a wildcard matches no tests
    keys = {str(r.label): r.key for r in finished.results}
    assert {str(r.label): r.status for r in finished.results if not r.ok} == {}
    kinds = {s.kind for s in session.graph.specs.values()}
    assert kinds == {"command", "dataset", "image", "model", "test", "endpoint"}
    assert keys == PINNED
