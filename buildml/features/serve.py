"""`buildml run`: build an endpoint, start its server (a container or a local process), wait until healthy, stop it."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

from buildml.errors import ExecutionError, UserError
from buildml.features.endpoint_drift import KEY_ENV  # the server's endpoint key, for its health route to report

POLL_S = 0.2
STOP_GRACE_S = 5
TAIL_LINES = 30


@dataclass(frozen=True)
class Hooks:
    """What `serve` reports, for the CLI to print (the engine never prints)."""

    on_line: Callable[[str], None] = lambda line: None  # one line of the server's log
    on_ready: Callable[[str], None] = lambda url: None  # the server answered its health check at url
    say: Callable[[str], None] = lambda message: None  # a note (e.g. the port was taken)


def serve(session, pattern: str, host_port: int | None = None, ready_timeout: float = 60.0, hooks: Hooks = Hooks()):
    """Build the endpoint and what it needs, serve it until the server exits (an error) or Ctrl-C (KeyboardInterrupt).

    An endpoint that a `buildml run` already serves is left alone when it serves this build (False is returned),
    and is stopped first when it serves an older one (features/endpoint_drift.py)."""
    from buildml.executors.serving_image import endpoint_of
    from buildml.features import endpoint_drift

    label = endpoint_label(session, pattern)
    action, staged = _built_action(session, label)
    settings = endpoint_of(action.spec)
    before = endpoint_drift.running(session, label)
    if before is not None:
        if before["key"] == action.key:
            hooks.say(f"{label} already serves this build at {before['url']} (key {action.key[:12]}): "
                      f"nothing to restart")
            return False
        hooks.say(f"{label} at {before['url']} serves an older build ({before['key'][:12]}): stopping it")
        endpoint_drift.stop_owner(before)
    port = choose_port(host_port, settings["port"], hooks.say)
    server = _server(session, action, staged, settings, port, hooks.on_line)
    url = f"http://127.0.0.1:{port}"
    try:
        server.start()
        wait_healthy(server, label, url + settings["health"], ready_timeout)
        endpoint_drift.remember(session, label, url, settings["health"], action.key)
        hooks.on_ready(url)
        code = server.wait()
        raise ExecutionError(f"the server of {label} exited with code {code}\n{_tail_text(server)}",
                             hint=f"its full output is above; try it with `buildml shell {label} -c '...'`")
    finally:
        _shielded(lambda: endpoint_drift.forget(session, label))
        _shielded(server.stop)


def endpoint_label(session, pattern: str):
    """The one endpoint target pattern names."""
    labels = session.select([pattern])
    if len(labels) != 1:
        raise UserError(f"{pattern!r} matches {len(labels)} targets", hint="name exactly one endpoint target")
    label = labels[0]
    kind = session.graph.specs[label].kind
    if kind != "endpoint":
        raise UserError(f"{label} is a {kind} target, not an endpoint", hint="`buildml run` serves targets of kind endpoint")
    return label


def _built_action(session, label):
    """Build label and its deps; return its action and staged inputs (code and model files)."""
    finished = session.build([str(label)])
    bad = [r for r in finished.results if not r.ok]
    if bad:
        raise ExecutionError(f"cannot serve {label}: {bad[0].label} did not build", hint="see the build output above")
    results = {r.label: r for r in finished.results}
    return session.action_for(label, results)


def _server(session, action, staged, settings: dict, port: int, on_line):
    from buildml.executors.serving_image import ServingImageBuilder

    executor = session.executor_for(action.spec)  # the executor resolution decides: container or process
    if isinstance(executor, ServingImageBuilder):
        return ContainerServer(executor.engine, executor.ref(action), settings["port"], port, str(action.spec.label),
                               on_line, env={KEY_ENV: action.key})
    return _process_server(session, action, staged, settings, port, on_line)


def _process_server(session, action, staged, settings: dict, port: int, on_line):
    """A process in a fresh sandbox laid out like the workspace, holding the endpoint's inputs; declared env + PORT."""
    from buildml.executors.action_env import action_env, params_by_file
    from buildml.executors.sandbox import Sandbox

    spec = action.spec
    sandbox = Sandbox(session.store.tempdir("serve-"))
    try:
        sandbox.stage(session.store, staged, params_by_file(action), spec.workdir, (), link=False)  # copies: a server runs until stopped, never checked after
        env, _ = action_env(spec, sandbox, dict(os.environ))
    except BaseException:
        sandbox.remove()
        raise
    env.update(PORT=str(port), PYTHONUNBUFFERED="1", **{KEY_ENV: action.key})
    return ProcessServer(settings["command"], sandbox.workdir(spec.workdir), env, on_line, cleanup=sandbox.remove)


# -- ports and health ---------------------------------------------------------------------
def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_port(asked: int | None, default: int, say) -> int:
    """--port when given (it must be free), else the endpoint's port, else a free one (and say so)."""
    if asked is not None:
        if not port_free(asked):
            raise UserError(f"port {asked} on 127.0.0.1 is in use", hint="pick another with --port, or stop what holds it")
        return asked
    if port_free(default):
        return default
    port = free_port()
    say(f"port {default} is in use; serving on port {port} instead (choose one with --port)")
    return port


def healthy(url: str) -> bool:
    """True when GET url answers 200 (no proxy: it is this machine)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
    except Exception:  # http.client.RemoteDisconnected, BadStatusLine while a proxy port is up but the app is not
        return False


def wait_healthy(server, label, url: str, timeout: float) -> None:
    """Poll url until 200; a server that exits or stays unhealthy past timeout is an error naming its log tail."""
    deadline = time.monotonic() + timeout
    while True:
        code = server.poll()
        if code is not None:
            raise ExecutionError(f"the server of {label} exited with code {code} before it was healthy\n{_tail_text(server)}",
                                 hint="fix the server command or its code; it must listen on $PORT")
        if healthy(url):
            return
        if time.monotonic() > deadline:
            raise ExecutionError(f"the server of {label} did not answer 200 at {url} within {timeout:g}s\n"
                                 f"{_tail_text(server)}", hint="check the health path and that it listens on 0.0.0.0:$PORT, "
                                                               "or wait longer with --ready-timeout")
        time.sleep(POLL_S)


def _tail_text(server) -> str:
    lines = list(server.tail)
    return "its log ends with:\n" + "\n".join("  " + l for l in lines) if lines else "it printed nothing"


def _shielded(stop) -> None:
    """Run stop() with SIGINT/SIGTERM held back, so a second Ctrl-C cannot leave the server behind."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (ValueError, OSError):
        held = set()
    try:
        stop()
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


# -- the two kinds of server -------------------------------------------------------------------
class _Logged:
    """Log lines go to on_line and into a tail kept for error messages."""

    def __init__(self, on_line):
        self.on_line = on_line
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self._reader: threading.Thread | None = None

    def _line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        self.tail.append(line)
        self.on_line(line)

    def _follow(self, lines) -> None:
        self._reader = threading.Thread(target=lambda: [self._line(l) for l in lines], daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def wait(self) -> int:
        """Block until the server exits by itself (its log ends first); its exit code."""
        while self._reader is not None and self._reader.is_alive():
            self._reader.join(0.5)
        while True:
            code = self.poll()
            if code is not None:
                self._drain()
                return code
            time.sleep(POLL_S)


class ProcessServer(_Logged):
    """The server as a process group on this machine."""

    def __init__(self, argv, cwd, env: dict, on_line, cleanup=lambda: None):
        super().__init__(on_line)
        self.argv, self.cwd, self.env, self.cleanup = list(argv), cwd, env, cleanup
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ExecutionError(f"cannot start the server {self.argv[0]!r}: {exc.strerror}",
                                 hint="check the endpoint's command") from None
        self._follow(_decoded(self.proc.stdout))

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after a grace period; remove the sandbox."""
        try:
            if self.proc is not None:
                _killpg(self.proc, signal.SIGTERM)
                try:
                    self.proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                _killpg(self.proc, signal.SIGKILL)
                self.proc.wait()
                self._drain()
        finally:
            self.cleanup()


class ContainerServer(_Logged):
    """The server as a container of the serving image, its port published on 127.0.0.1, removed on stop."""

    def __init__(self, engine, ref: str, inner_port: int, host_port: int, label: str, on_line, env=None):
        super().__init__(on_line)
        self.engine, self.ref, self.inner_port, self.host_port, self.label = engine, ref, inner_port, host_port, label
        self.env = env or {}
        self.container = None

    def start(self) -> None:
        from buildml.executors.docker.server import start_server_container

        self.container = start_server_container(self.engine, self.ref, self.inner_port, self.host_port, self.label,
                                                self.env)
        self._follow(_chunks_to_lines(self.container.logs(stream=True, follow=True, stdout=True, stderr=True)))

    def poll(self) -> int | None:
        try:
            self.container.reload()
        except Exception:  # removed under us
            return -1
        if self.container.status in ("exited", "dead"):
            return self.container.attrs.get("State", {}).get("ExitCode", -1)
        return None

    def stop(self) -> None:
        """Stop (SIGTERM, then SIGKILL after the grace period) and remove the container."""
        if self.container is None:
            return
        try:
            self.container.stop(timeout=STOP_GRACE_S)
        except Exception:  # already stopped or gone
            pass
        try:
            self.container.remove(force=True)
        except Exception:
            pass
        self._drain()


def _decoded(stream):
    for raw in stream:
        yield raw.decode("utf-8", errors="replace")


def _chunks_to_lines(chunks):
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", errors="replace")
        *lines, pending = pending.split("\n")
        yield from lines
    if pending:
        yield pending


def _killpg(proc, sig) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
