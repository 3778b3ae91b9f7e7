"""File-system helpers shared by every layer: removing trees buildml made, unlinking quietly."""

from __future__ import annotations

import os
import shutil


def silent_unlink(path) -> None:
    """Remove a file if it is there; no error if it is not (or cannot be)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path) -> None:
    """Remove a directory tree even if it holds read-only files. No symlink is followed: a link at path is left
    alone (it is not buildml's tree), links inside are removed as links, and no mode is changed through one."""
    if os.path.islink(path) or not os.path.isdir(path):
        return

    def onerror(func, p, exc):
        if isinstance(exc[1], FileNotFoundError):
            return
        try:
            for d in (os.path.dirname(p), p):
                if not os.path.islink(d):
                    os.chmod(d, 0o755)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)
