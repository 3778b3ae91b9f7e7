"""Scripts that read more than their target declares (issue 21 items 6-8), from the real CLI, local executor.

A script written for DVC reads the whole params.yaml and imports the repository's own modules; in buildml's
sandbox it finds only what its target declares. Each failure names what is missing and what to add; opting into
`python_deps: auto` adds imported workspace modules as keyed inputs; `resources.cpus` is the action's thread
budget; `buildml log` answers cleanly when the log's blob is gone.
"""

from __future__ import annotations

import json
import os

PARAMS = "prep: {rows: 3}\ntrain: {lr: 0.5, epochs: 2}\n"

READS_TRAIN = """\
import yaml
p = yaml.safe_load(open("params.yaml"))
open("out.txt", "w").write(str(p["train"]["epochs"]))
"""


def output(proc) -> str:
    return proc.stdout + proc.stderr


def hints(text: str) -> list[str]:
    return [l.split("hint: ", 1)[1] for l in text.splitlines() if "hint: " in l]


def test_params_section_the_subset_lacks_is_named_with_what_to_add(ws):
    ws.write("params.yaml", PARAMS)
    ws.write("train.py", READS_TRAIN)
    ws.write("BUILD.yaml", """
        targets:
          t: {command: python train.py, deps: [train.py], params: [prep.rows], outs: [out.txt]}
    """)
    proc = ws.run("build", "//:t", check=1)
    assert "KeyError: 'train'" in output(proc)
    found = hints(output(proc))
    assert len(found) == 1, found
    assert found[0].startswith("params.yaml has 'train', but //:t selects only prep.rows of it")
    assert "add `params: [train]`" in found[0] and "`params: [{params.yaml: null}]` (DVC's `- params.yaml:`)" in found[0]
    assert "Traceback" not in proc.stderr  # the user's traceback is in the log tail (stdout), never buildml's
    log = ws.run("log", "//:t", check=0).stdout
    assert log.splitlines()[-1] == "buildml: hint: " + found[0]  # `buildml log` keeps the hint
    # a selected section with the key missing under it: the hint names the full key
    ws.write("BUILD.yaml", """
        targets:
          t: {command: python train.py, deps: [train.py], params: [train.lr], outs: [out.txt]}
    """)
    found = hints(output(ws.run("build", "//:t", check=1)))
    assert len(found) == 1 and "has 'train.epochs', but //:t selects only train.lr" in found[0], found
    assert "add `params: [train.epochs]`" in found[0]
    # following the hint builds
    ws.write("BUILD.yaml", """
        targets:
          t: {command: python train.py, deps: [train.py], params: [{params.yaml: null}], outs: [out.txt]}
    """)
    ws.run("build", "//:t", check=0)
    assert ws.read("out.txt") == "2"


def test_a_key_error_for_a_key_no_params_file_has_gets_no_params_hint(ws):
    ws.write("params.yaml", PARAMS)
    ws.write("train.py", "d = {}\nd['nowhere']\n")
    ws.write("BUILD.yaml", "targets: {t: {command: python train.py, deps: [train.py], params: [prep.rows]}}\n")
    proc = ws.run("build", "//:t", check=1)
    assert "KeyError: 'nowhere'" in output(proc) and hints(output(proc)) == []


UTILS_USER = "from src.utils import double\nopen('out.txt', 'w').write(str(double(21)))\n"


def test_a_workspace_module_that_is_not_a_dep_then_not_on_the_path(ws):
    ws.write("src/utils.py", "def double(x):\n    return 2 * x\n")
    ws.write("src/train.py", UTILS_USER)
    ws.write("BUILD.yaml", "targets: {t: {command: python src/train.py, deps: [src/train.py], outs: [out.txt]}}\n")
    proc = ws.run("build", "//:t", check=1)
    assert "ModuleNotFoundError: No module named 'src'" in output(proc)
    found = hints(output(proc))
    assert found == ["module 'src.utils' is src/utils.py in the workspace, but it is not a dep of //:t (the sandbox "
                     "holds only declared inputs): add src/utils.py to deps, or set `python_deps: auto` on the target "
                     "(or in buildml.yaml) to add the workspace modules its scripts import"]
    # declared, but `python src/train.py` puts only src/ on sys.path
    ws.write("BUILD.yaml", "targets: {t: {command: python src/train.py, deps: [src/train.py, src/utils.py], "
                           "outs: [out.txt]}}\n")
    found = hints(output(ws.run("build", "//:t", check=1)))
    assert len(found) == 1 and found[0].startswith("module 'src.utils' (src/utils.py) is in the sandbox, but not on "
                                                   "the module path"), found
    assert "`env: {PYTHONPATH: .}` on //:t" in found[0]
    ws.write("BUILD.yaml", "targets: {t: {command: python src/train.py, deps: [src/train.py, src/utils.py], "
                           "outs: [out.txt], env: {PYTHONPATH: .}}}\n")
    ws.run("build", "//:t", check=0)
    assert ws.read("out.txt") == "42"


def test_the_callers_pythonpath_is_named(ws, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mylib.py").write_text("VALUE = 7\n")
    ws.write("use.py", "import mylib\nopen('out.txt', 'w').write(str(mylib.VALUE))\n")
    ws.write("BUILD.yaml", "targets: {t: {command: python use.py, deps: [use.py], outs: [out.txt]}}\n")
    caller = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(lib)]))
    env = ws.env(PYTHONPATH=caller)
    proc = ws.run("build", "//:t", env=env, check=1)
    found = hints(output(proc))
    assert found == [f"your environment has PYTHONPATH={caller} (where 'mylib' is: {lib}), but actions do not "
                     "inherit the caller's environment: set it on the target with `env: {PYTHONPATH: ...}` (keyed; a "
                     "path relative to the package directory works in the sandbox), declare the modules as deps, or "
                     "install them into the Python environment"]
    # without PYTHONPATH in the caller's environment, nothing is said about it
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    bare["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # buildml itself (this checkout), nothing else
    if not bare["PYTHONPATH"]:
        del bare["PYTHONPATH"]
    assert not any("mylib" in h for h in hints(output(ws.run("build", "//:t", env=bare, check=1))))
    # passing it as the hint says builds
    ws.write("BUILD.yaml", f"targets: {{t: {{command: python use.py, deps: [use.py], outs: [out.txt], "
                           f"env: {{PYTHONPATH: '{lib}'}}}}}}\n")
    ws.run("build", "//:t", env=env, check=0)
    assert ws.read("out.txt") == "7"


def test_a_workspace_file_that_is_not_a_dep(ws):
    ws.write("data/raw.csv", "a\n1\n")
    ws.write("prep.py", "open('data/raw.csv').read()\n")
    ws.write("BUILD.yaml", "targets: {t: {command: python prep.py, deps: [prep.py]}}\n")
    found = hints(output(ws.run("build", "//:t", check=1)))
    assert found == ["data/raw.csv exists in the workspace but is not a dep of //:t (the sandbox holds only declared "
                     "inputs): add data/raw.csv to deps (or to params, if it is a params file)"]


def test_a_path_the_log_names_is_never_looked_at_through_a_symlink(ws, tmp_path):
    """The log is the action's output: a file it names behind a link out of the workspace gets no hint."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.txt").write_text("x\n")
    os.symlink(tmp_path / "outside", ws.root / "link")
    ws.write("prep.py", "open('link/secret.txt').read()\n")
    ws.write("BUILD.yaml", "targets: {t: {command: python prep.py, deps: [prep.py]}}\n")
    text = output(ws.run("build", "//:t", check=1))
    assert "No such file or directory: 'link/secret.txt'" in text and hints(text) == []


AUTO_MAIN = """\
import sys
sys.path.insert(0, ".")
from pkg.core import value
import src.utils as u
if False:
    import outside          # a symlink out of the workspace: never an input
    import not_in_workspace  # no such module anywhere
open("out.txt", "w").write(str(u.double(value())))
"""


def _auto_workspace(ws, tmp_path, attr="    python_deps: auto\n"):
    ws.write("main.py", AUTO_MAIN)
    ws.write("pkg/__init__.py", "")
    ws.write("pkg/core.py", "from .helpers import helper\n\n\ndef value():\n    return helper()\n")
    ws.write("pkg/helpers.py", "def helper():\n    return 3\n")
    ws.write("pkg/unused.py", "X = 1\n")
    ws.write("src/utils.py", "def double(x):\n    return 2 * x\n")
    (tmp_path / "elsewhere.py").write_text("SECRET = 1\n")
    os.symlink(tmp_path / "elsewhere.py", ws.root / "outside.py")
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: python main.py\n    deps: [main.py]\n    outs: [out.txt]\n"
             + attr)


def test_python_deps_auto_adds_keys_and_lists_imported_modules(ws, tmp_path):
    _auto_workspace(ws, tmp_path)
    summary, finished = ws.build_json("//:t")
    assert summary["executed"] == 1 and ws.read("out.txt") == "6"
    info = json.loads(ws.run("explain", "--json", "//:t", check=0).stdout)
    assert info["python_deps"] == [["pkg/__init__.py", "main.py"], ["pkg/core.py", "main.py"],
                                   ["src/utils.py", "main.py"], ["pkg/helpers.py", "pkg/core.py"]]
    assert sorted(info["last_inputs"]) == ["main.py", "pkg/__init__.py", "pkg/core.py", "pkg/helpers.py",
                                           "src/utils.py"]
    text = ws.run("explain", "//:t", check=0).stdout
    assert "  python deps (python_deps: auto):\n    pkg/__init__.py  (imported by main.py)\n" in text
    assert "    pkg/helpers.py  (imported by pkg/core.py)\n" in text
    # a module nothing imports is no input; one imported (transitively, by a relative import) is keyed
    ws.write("pkg/unused.py", "X = 2\n")
    assert ws.build_json("//:t")[0]["executed"] == 0
    ws.write("pkg/helpers.py", "def helper():\n    return 5\n")
    proc = ws.run("build", "//:t", check=0)
    assert "RUN       //:t [local] input pkg/helpers.py changed" in proc.stdout
    assert ws.read("out.txt") == "10"
    key = json.loads(ws.run("explain", "--json", "//:t", check=0).stdout)["key"]
    # declared (the default): the imports are not inputs, so the key differs and the build fails in the sandbox
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: python main.py\n    deps: [main.py]\n    outs: [out.txt]\n")
    proc = ws.run("build", "--json", "//:t", check=1)
    finished = [json.loads(l) for l in proc.stdout.splitlines() if '"finished"' in l]
    assert finished[0]["key"] != key
    assert "hint: module 'pkg.core' is pkg/core.py in the workspace, but it is not a dep of //:t" in finished[0]["error"]


def test_python_deps_from_buildml_yaml_and_a_bad_value(ws, tmp_path):
    _auto_workspace(ws, tmp_path, attr="")
    ws.write("buildml.yaml", "python_deps: auto\n")
    ws.run("build", "//:t", check=0)
    info = json.loads(ws.run("explain", "--json", "//:t", check=0).stdout)
    assert [p for p, _ in info["python_deps"]] == ["pkg/__init__.py", "pkg/core.py", "src/utils.py", "pkg/helpers.py"]
    ws.write("BUILD.yaml", ws.read("BUILD.yaml") + "    python_deps: declared\n")  # the target's own wins
    assert "python_deps" not in json.loads(ws.run("explain", "--json", "//:t", check=0).stdout)
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("python_deps: declared", "python_deps: sometimes"))
    proc = ws.run("build", "//:t", check=2)
    assert "BUILD.yaml:6" in proc.stderr and "'sometimes' is not one of declared, auto" in proc.stderr
    ws.write("buildml.yaml", "python_deps: always\n")
    proc = ws.run("build", "//:t", check=2)
    assert "buildml.yaml:1" in proc.stderr and "python_deps must be auto or declared" in proc.stderr


THREADS = "import os\nopen('threads.txt', 'w').write(' '.join(os.environ.get(n, '-') for n in {names!r}))\n"
NAMES = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"]


def test_cpus_is_the_thread_budget_and_part_of_the_key(ws):
    ws.write("show.py", THREADS.format(names=NAMES))
    build = "targets:\n  t:\n    command: python show.py\n    deps: [show.py]\n    outs: [threads.txt]\n{extra}"
    ws.write("BUILD.yaml", build.format(extra="    resources: {cpus: 2}\n"))
    summary, finished = ws.build_json("//:t")
    assert ws.read("threads.txt") == "2 2 2 2 2"
    key2 = finished[0]["key"]
    ws.write("BUILD.yaml", build.format(extra="    resources: {cpus: 3}\n"))
    proc = ws.run("build", "//:t", check=0)
    assert ws.read("threads.txt") == "3 3 3 3 3"
    assert "RUN       //:t [local] env MKL_NUM_THREADS changed; env NUMEXPR_NUM_THREADS changed; " \
           "env OMP_NUM_THREADS changed (+2 more)" in proc.stdout
    # the target's own env wins; a fraction of a cpu is one thread
    ws.write("BUILD.yaml", build.format(extra="    resources: {cpus: 0.5}\n    env: {OMP_NUM_THREADS: 4}\n"))
    ws.run("build", "//:t", check=0)
    assert ws.read("threads.txt") == "4 1 1 1 1"
    # without cpus nothing is set (the caller's own settings never reach the action)
    ws.write("BUILD.yaml", build.format(extra=""))
    summary, finished = ws.build_json("//:t", check=0)
    assert ws.read("threads.txt") == "- - - - -" and finished[0]["key"] != key2
    ws.write("BUILD.yaml", build.format(extra="    resources: {cpus: 2}\n"))
    summary, finished = ws.build_json("//:t")
    assert finished[0]["key"] == key2 and summary["cached"] == 1  # same budget, same key


def test_log_whose_blob_left_the_cache_is_a_clear_error(ws):
    ws.write("BUILD.yaml", "targets: {t: {command: echo hello from t}}\n")
    ws.run("build", "//:t", check=0)
    assert ws.run("log", "//:t", check=0).stdout == "hello from t\n"
    removed = 0
    for blob in (ws.cache / "cas").glob("*/*"):
        if blob.read_bytes() == b"hello from t\n":
            os.chmod(blob, 0o644)
            blob.unlink()
            removed += 1
    assert removed == 1
    proc = ws.run("log", "//:t", check=1)
    assert proc.stderr.startswith("buildml: error: the log of //:t's last run (") and "is not in the cache" in proc.stderr
    assert "hint: it was removed by `buildml cache gc`" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
