"""Copy transfer for engines that do not share this machine's disk (ssh:// or tcp:// hosts): tar in, tar out."""

from __future__ import annotations

import os
import posixpath
import tarfile

WORKSPACE = "/workspace"  # where the sandbox's workspace view appears in the container
HOME = "/buildml/home"


UNPRIVILEGED = (65534, 65534)  # nobody:nogroup


def run_user() -> tuple[int, int]:
    """The uid:gid a container runs as: the caller's, so outputs are theirs; never root (then nobody's)."""
    return (os.getuid(), os.getgid()) if os.getuid() != 0 else UNPRIVILEGED


def lend(sandbox, uid: int, gid: int) -> None:
    """Let uid write the sandbox's directories (its input files stay ours and read-only); caller is root."""
    for top in (sandbox.ws, sandbox.home, sandbox.tmp):
        for dirpath, _, _ in os.walk(top):
            os.lchown(dirpath, uid, gid)


def give_back(sandbox) -> None:
    """Everything in the sandbox owned by the caller again (outputs included), after a lend()."""
    for dirpath, dirnames, filenames in os.walk(sandbox.root):
        os.lchown(dirpath, os.getuid(), os.getgid())
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), os.getuid(), os.getgid())


def copy_config() -> dict:
    """Private HOME and /tmp as tmpfs, since nothing of this machine is mounted."""
    return {"mounts": [], "tmpfs": {HOME: "mode=1777", "/tmp": "mode=1777"}}


def send_workspace(container, request) -> None:
    """Put the sandbox's workspace at /workspace, owned by the run user, inputs read-only by mode."""
    uid, gid = run_user()
    inputs = request.action.inputs
    path = request.sandbox.root / "send.tar"

    def own(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        rel = info.name[len("workspace/"):]
        if rel in inputs:
            info.mode = 0o555 if inputs[rel].executable else 0o444
        return info

    with tarfile.open(path, "w") as tar:
        tar.add(request.sandbox.ws, arcname="workspace", filter=own)
    with open(path, "rb") as data:
        container.put_archive("/", data)
    os.unlink(path)


def fetch_outs(container, request) -> None:
    """Copy each declared out that exists in the container back into the sandbox."""
    import docker

    ws = request.sandbox.ws
    for out in request.action.spec.outs:
        try:
            stream, _ = container.get_archive(f"{WORKSPACE}/{out}")
        except docker.errors.NotFound:
            continue  # the sandbox reports it as not produced
        path = request.sandbox.root / "fetch.tar"
        with open(path, "wb") as f:
            for chunk in stream:
                f.write(chunk)
        dest = ws / posixpath.dirname(out)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
        os.unlink(path)
