"""Run one action for real: stage a sandbox, execute, store outputs and the log, write the manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

from filelock import FileLock

from buildml import __version__
from buildml.load.checks import checked_outcome
from buildml.errors import LoadError
from buildml.executors import RunRequest
from buildml.hashing import digest_file
from buildml.executors.masking import mask_data
from buildml.load.plain import to_plain
from buildml.engine.failure_hints import failure_hints, read_log_end
from buildml.executors.action_env import action_env, params_by_file, screened
from buildml.executors.sandbox import Sandbox
from buildml.load.workspace import MAX_FILES_PER_FOLDER
from buildml.store.progress import files_progress, folders
from buildml.store.local import disk_error
from buildml.trust import undecodable
from buildml.load.yamlsrc import load_yaml

LOG_TAIL_LINES = 30
BASE_ENV_NAMES = ("LANG", "LC_ALL", "TZ")


def tail(path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_metrics(path, name: str) -> object:
    """A metrics file's data as plain JSON data (dates as ISO text, see plain.to_plain), or None when unreadable.
    name (the out's path) picks the parser: JSON for .json, else YAML.

    The file is an action's output, so it is read as untrusted YAML: aliases capped, no tags beyond plain data.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
        data = json.loads(text) if name.endswith(".json") else load_yaml(text, os.path.basename(name)).data
    except (OSError, ValueError, RecursionError, LoadError):
        return None
    return to_plain(data)


def misnamed(outputs: dict) -> str:
    """Why the outputs cannot be recorded (a file name that is not UTF-8, shown with backslash escapes), or ''."""
    for path in outputs:
        shown = undecodable(path)
        if shown:
            return (f"output {shown} has a file name that is not valid UTF-8: buildml records output paths as "
                    "UTF-8 text; rename it in the command")
    return ""


class Runner:
    """Executes RUN decisions on an executor and records the results in the store."""

    def __init__(self, store, executor_for, provenance, caller_env: dict | None = None, devices=None, overrides=None,
                 unusable=None, root=None, transfer=None, warn=None, max_files_per_folder: int = MAX_FILES_PER_FOLDER):
        self.store = store
        self.transfer = transfer  # (what, total, label, **counting) -> store/progress.Progress: large directories
        self.warn = warn or (lambda message: None)
        self.max_files_per_folder = max_files_per_folder  # more in one folder of a directory out warns, once a build
        self._crowded: set = set()  # folders already warned of in this build
        self.root = root  # the workspace root: failure hints compare what the action had with what is there
        self.devices = devices or (lambda action: {})  # action -> {"CUDA_VISIBLE_DEVICES": ...} of the GPUs it holds
        self.overrides = overrides or (lambda action: {})  # action -> the --param overrides it was built with
        self.executor_for = executor_for  # spec -> Executor
        self.provenance = provenance  # () -> build-wide facts: git commit, dirty
        self.unusable = unusable or (lambda action, manifest: "" if manifest is not None else "not in the cache")
        self.caller_env = dict(os.environ if caller_env is None else caller_env)

    def run(self, action, staged, on_line) -> tuple[dict | None, object, str, str]:
        """Execute under a per-key lock; return (manifest or None, outcome, log digest, log tail).

        Under the lock the cache is asked again (the rebuilder's `unusable`): another process may have built the
        same key meanwhile; its result is then returned with outcome None.
        """
        with FileLock(str(self.store.lock_path(action.key))):
            if action.spec.cacheable:
                done = self.store.get_action(action.key)
                if not self.unusable(action, done):
                    return done, None, done.get("log"), ""  # another process built it meanwhile
            return self._run_unlocked(action, staged, on_line)

    def rerun(self, action, staged, on_line) -> tuple[dict | None, object, str, str]:
        """Execute again ignoring the cache, as run() does, but record nothing: the manifest is only returned
        (`buildml verify` compares it with the recorded one). Blobs still enter the CAS."""
        return self._run_unlocked(action, staged, on_line, record=False)

    def _run_unlocked(self, action, staged, on_line, record: bool = True):
        spec = action.spec
        sandbox = Sandbox(self.store.tempdir("sandbox-"))
        try:
            sizes = [item.size for item in staged]
            progress = files_progress(self.transfer, f"stage {folders(item.path for item in staged) or 'inputs'}",
                                      spec.label, None if None in sizes else sum(sizes), len(staged))
            sandbox.stage(self.store, staged, params_by_file(action), spec.workdir, spec.outs, progress=progress)
            if sandbox.copied and self.store.can_link:
                on_line(f"buildml: {sandbox.copied} of {len(staged)} inputs staged by copy (executables, persist: true outs, "
                        "or blobs that could not be hard-linked here)")
            env, masks = action_env(spec, sandbox, self.caller_env)
            env.update(self.devices(action))
            log_path = sandbox.root / "action.log"
            log_path.touch()
            executor = self.executor_for(spec)
            started = time.time()
            outcome = executor.run(RunRequest(action, sandbox, env, log_path, on_line, masks))
            sandbox.check_inputs(self.store)  # before anything is stored: no command may change a cached blob
            outcome = checked_outcome(outcome, spec.checks, sandbox.ws, log_path)  # dataset checks, on this host
            outcome = screened(outcome, sandbox, spec, {n: self.caller_env[n] for n in spec.secrets}, log_path)
            log_tail = tail(log_path)
            if outcome.exit_code != 0:
                outcome = self._hinted(action, outcome, log_path)
            log_digest = digest_file(log_path)
            self.store.put_file(log_path, log_digest)
            if outcome.exit_code != 0:
                return None, outcome, log_digest, log_tail
            outputs, metrics = self._store_outputs(sandbox, spec)
            bad_name = misnamed(outputs)
            if bad_name:
                return None, dataclasses.replace(outcome, exit_code=1, detail=bad_name), log_digest, log_tail
            metrics = mask_data(metrics, masks)  # where secrets_in_outputs allowed them
            manifest = self._manifest(action, outcome, outputs, metrics, log_digest, started)
            if spec.cacheable and record:
                self.store.put_action(action.key, manifest)
            return manifest, outcome, log_digest, log_tail
        except OSError as exc:  # a full disk, a vanished directory: say so, never a traceback
            raise disk_error(exc, f"running {spec.label}") from None
        finally:
            sandbox.remove()

    def _hinted(self, action, outcome, log_path):
        """The failed outcome with the hints of engine/failure_hints in its detail, appended to the log too."""
        hints = failure_hints(action, read_log_end(log_path), self.root, self.caller_env)
        if not hints:
            return outcome
        with open(log_path, "a", encoding="utf-8") as log:
            log.writelines(f"buildml: hint: {h}\n" for h in hints)
        return dataclasses.replace(outcome, detail=failure_message(outcome) + "".join(f"\n  hint: {h}" for h in hints))

    def _store_outputs(self, sandbox: Sandbox, spec) -> tuple[dict, dict]:
        """Store every output, collected without following links; metrics are read from the stored blobs.

        Outputs are copied in (cloned where the file system can), digested in the same pass: a process the
        command left behind may still hold one open, and a file renamed in would be the very blob it rewrites.
        Only the Docker executor's are renamed in: run() returns after removing the container, which kills
        every process of the action, so nothing can hold, rewrite or relink what collect() checked.
        """
        from buildml.executors.docker.run import DockerExecutor

        rename = isinstance(self.executor_for(spec), DockerExecutor)
        outputs = {}
        collected = sandbox.collect(spec.outs)
        self._warn_crowded(spec, collected)
        dirs = [o for o in spec.outs if o not in collected]
        progress = files_progress(self.transfer, "store " + ", ".join(f"{d}/" for d in dirs[:3]), spec.label,
                                  total_files=len(collected)) if dirs else None
        for path, (full, executable) in sorted(collected.items()):
            if rename:
                digest = self.store.put_file(full, digest_file(full), move=True)
            else:
                fd = sandbox.open_output(path)
                try:
                    digest = self.store.put_file(fd)
                finally:
                    os.close(fd)
            size = os.path.getsize(self.store.blob_path(digest))  # of the bytes stored
            outputs[path] = {"digest": digest, "size": size, "exec": executable}
            if progress is not None:
                progress.add(size, 1)
        if progress is not None:
            progress.finish()
        metrics = {p: read_metrics(self.store.blob_path(outputs[p]["digest"]), p) for p in spec.metrics if p in outputs}
        return outputs, metrics

    def _warn_crowded(self, spec, collected: dict) -> None:
        """Warn, once a build for each, of a folder of a directory out holding more than max_files_per_folder files."""
        per_folder: dict = {}
        for path in collected:
            if path not in spec.outs:  # a file of a directory out
                folder = path.rpartition("/")[0]
                per_folder[folder] = per_folder.get(folder, 0) + 1
        limit = self.max_files_per_folder
        for folder, count in sorted(per_folder.items()):
            if count > limit and folder not in self._crowded:
                self._crowded.add(folder)
                self.warn(f"{spec.label}: out {folder}/ holds {count:,} files in one folder (max_files_per_folder: "
                          f"{limit}); file systems and tools slow down past this: shard it into subfolders")

    def _manifest(self, action, outcome, outputs, metrics, log_digest, started) -> dict:
        spec = action.spec
        out_dirs = [o for o in spec.outs if o not in outputs]
        return {
            "schema": 1,
            "key": action.key,
            "label": str(spec.label),
            "kind": spec.kind,
            "exit_code": outcome.exit_code,
            "outputs": outputs,
            "out_dirs": out_dirs,
            **({"local_only": sorted(spec.local_only)} if spec.local_only else {}),
            "metrics": metrics,
            "log": log_digest,
            "provenance": {
                "command": list(spec.argv),
                "env": dict(spec.env),
                "secrets": list(spec.secrets),
                "inputs": {p: f.digest for p, f in sorted(action.inputs.items())},
                "params": action.param_values,
                **({"param_overrides": self.overrides(action)} if self.overrides(action) else {}),
                "image_key": action.image_key,
                "executor": outcome.executor,
                "host": outcome.host or socket.gethostname(),
                "started": started,
                "duration": round(outcome.duration, 3),
                **outcome.extra,
                **self.provenance(),
                "buildml_version": __version__,
            },
            "cost": cost_of(outcome, spec, outputs),
        }


def cost_of(outcome, spec, outputs: dict) -> dict:
    """What producing the result cost (manifest["cost"]; not part of the key): wall and CPU seconds, peak memory,
    the executor with the resources the action declared (and held), the bytes of its outputs. What the executor
    could not measure is None, never a guess."""
    return {
        "wall_s": round(outcome.duration, 3),
        "cpu_s": outcome.cpu_s,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "executor": outcome.executor,
        "resources": dict(spec.resources),
        "output_bytes": sum(meta["size"] for meta in outputs.values()),
    }


def failure_message(outcome) -> str:
    if outcome.detail:
        return outcome.detail
    return f"exit code {outcome.exit_code}"

