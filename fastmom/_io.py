"""Atomic file writes: the one writer that every saved file (models, checkpoints,
JSON results, reports) goes through, so that no reader ever sees a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile

__all__ = ["atomic_write", "write_json"]


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, text=False):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is flushed and fsynced before the rename and the directory
    after it, so a crash, ``SIGKILL`` or ``KeyboardInterrupt`` mid-write leaves any
    previous file at ``path`` intact (and at worst a stray ``.*.tmp`` file); on an
    exception the temporary file is removed. Returns ``path``.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Receives the open file object (binary, or text when ``text``).
    text : bool, default False
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


def write_json(path, payload, default=None, indent=2, newline=True):
    """Write ``payload`` as indented JSON (plus a final newline unless ``newline`` is
    False) atomically; a ``path`` of ``"-"`` prints it to standard output instead."""
    text = json.dumps(payload, indent=indent, default=default) + ("\n" if newline else "")
    if os.fspath(path) == "-":
        print(text, end="")
        return path
    return atomic_write(path, lambda f: f.write(text), text=True)
