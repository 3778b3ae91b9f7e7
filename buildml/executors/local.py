"""The local executor: a subprocess in its own process group, cwd = the package in the sandbox."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

from buildml.executors import Executor, RunOutcome, RunRequest, mask

_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux


class LocalExecutor(Executor):
    """Runs commands as subprocesses of this machine."""

    name = "local"

    def __init__(self):
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def run(self, request: RunRequest) -> RunOutcome:
        spec = request.action.spec
        cwd = request.sandbox.workdir(spec.workdir)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(list(spec.argv), cwd=cwd, env=request.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            with open(request.log_path, "a") as log:
                log.write(f"buildml: cannot start {spec.argv[0]!r}: {exc.strerror}\n")
            return RunOutcome(127, time.monotonic() - start, self.name, socket.gethostname(), detail=f"cannot start: {exc.strerror}")
        floor = _own_peak_rss()  # read after the fork: at least what the child's peak may have inherited
        with self._lock:
            self._running[proc.pid] = proc
            if self._cancelled:
                _kill_group(proc)
        timed_out = threading.Event()
        timer = None
        if spec.timeout:
            timer = threading.Timer(spec.timeout, lambda: (timed_out.set(), _kill_group(proc)))
            timer.daemon = True
            timer.start()
        try:
            with open(request.log_path, "a", encoding="utf-8", errors="replace") as log:
                for raw in proc.stdout:
                    line = mask(raw.decode("utf-8", errors="replace"), request.masks)
                    log.write(line)
                    request.on_line(line.rstrip("\n"))
            code, cpu_s, peak = _reap(proc)
            peak = peak if peak is not None and peak > floor else None
        finally:
            if timer:
                timer.cancel()
            _kill_group(proc)  # nothing the command started outlives it
            with self._lock:
                self._running.pop(proc.pid, None)
        detail = ""
        if timed_out.is_set():
            detail = f"timed out after {spec.timeout:g}s"
        elif code < 0:
            detail = f"killed by {signal.Signals(-code).name}"
        return RunOutcome(code, time.monotonic() - start, self.name, socket.gethostname(),
                          timed_out=timed_out.is_set(), detail=detail, cpu_s=cpu_s, peak_rss_bytes=peak)

    def shell(self, request: RunRequest, argv: list, tty: bool) -> int:
        """Run argv here in the sandbox, attached to this terminal."""
        return subprocess.call(argv, cwd=request.sandbox.workdir(request.action.spec.workdir), env=request.env)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            procs = list(self._running.values())
        for proc in procs:
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)


def _own_peak_rss() -> int:
    """This process's peak RSS in bytes.

    On Linux a child's ru_maxrss starts at the high-water mark of the memory it was forked (or vforked) from:
    exec keeps the old address space's peak. So a child reporting no more than this process's own peak may
    have used anything up to it; only a larger one is the command's own, and the smaller ones are unknown.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def _reap(proc: subprocess.Popen) -> tuple[int, float | None, int | None]:
    """Wait for proc with wait4: (exit code as Popen gives it, CPU seconds, peak RSS bytes) of that child alone.

    wait4 on the pid is the child's own rusage (with the descendants it waited for), not RUSAGE_CHILDREN, which
    would mix in every other action this process runs at the same time. When something else reaped it first
    (cancel's wait), the code is Popen's and the usage unknown.
    """
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.wait(), None, None
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    return code, round(usage.ru_utime + usage.ru_stime, 3), usage.ru_maxrss * _MAXRSS_UNIT


def _kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
