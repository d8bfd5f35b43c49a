"""Atomic file writes: the one writer that every saved file (models, checkpoints,
JSON results, reports) goes through, so that no reader ever sees a half-written file.
"""
from __future__ import annotations

import errno
import json
import os
import stat
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


def _umask():
    """The process's umask, read without changing it where Linux shows it (setting it
    to read it back would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_only(path):
    """Whether ``path`` is an existing file its owner may not write (by its mode bits:
    root may write anything, so ``os.access`` would say yes)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and not mode & 0o222


def atomic_write(path, write, text=False, overwrite=False):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is flushed and fsynced before the rename and the directory
    after it, so a crash, ``SIGKILL`` or ``KeyboardInterrupt`` mid-write leaves any
    previous file at ``path`` intact (and at worst a stray ``.*.tmp`` file); on an
    exception the temporary file is removed. The file gets the mode a plain ``open``
    would give it (``0o666`` less the umask). Returns ``path``.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Receives the open file object (binary, or text when ``text``).
    text : bool, default False
    overwrite : bool, default False
        A writable file at ``path`` is always replaced; a read-only one (no write
        bit: someone protected it) only with ``overwrite=True``.

    Raises
    ------
    OSError
        Naming ``path`` (never the temporary file): a read-only target without
        ``overwrite``, a missing or unwritable directory, a full disk...
    """
    path = os.fspath(path)
    if not overwrite and _read_only(path):
        raise PermissionError(errno.EACCES, "Read-only file, not replaced (pass overwrite=True to replace it)",
                              path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        with os.fdopen(fd, "w" if text else "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno is not None:
            # the user knows the target, not our hidden temporary name
            raise OSError(exc.errno, exc.strerror, path) from exc
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
