"""Checkpoints: a network (and optionally its trainer's state) in one pickle-free ``.npz``.

File format (``FORMAT_VERSION`` 1)
----------------------------------
A NumPy ``.npz`` (a zip of ``.npy`` members) that ``np.load(path, allow_pickle=False)``
reads, so loading a checkpoint never executes code:

``meta``
    uint8 array: UTF-8 JSON with ``format`` (``"fastmom-checkpoint"``), ``version``,
    ``network`` (architecture, ``mini_batch_size``, dtype, device, seed entropy,
    ``weight_init``, dropout RNG state) and, for a trainer checkpoint, ``trainer``
    (epoch/step counters, the position inside a partly trained epoch, optimizer
    hyper-parameters, data-order RNG state, callback state and the history).
``params``
    The flat parameter buffer (``net.flat.data``: every weight, then every bias).
``velocity``
    The optimizer's velocity, when it has one.

Writes are atomic: the archive goes to a temporary file in the destination directory,
is flushed and fsynced, then ``os.replace``-d over the destination and the directory
is fsynced; a crash, ``SIGKILL`` or ``KeyboardInterrupt`` mid-write leaves the
previous file intact (and at worst a stray ``.*.tmp`` file).
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib

import numpy as np

from ._io import atomic_write

__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "save_network", "load_network",
           "read_checkpoint", "write_checkpoint", "list_checkpoints", "latest_checkpoint"]

FORMAT = "fastmom-checkpoint"
FORMAT_VERSION = 1
# trainer checkpoints in a checkpoint_dir: ckpt-e<epoch>-s<step>.npz
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.npz$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated, of another format version, or
    does not fit the network it is loaded into. The message names the file."""


# -- RNG state ----------------------------------------------------------------------------

def rng_state(rng):
    """The JSON-able state of a NumPy ``Generator`` (PCG64's 128-bit ints are plain
    JSON integers), or of any generator with ``get_state()``."""
    bg = getattr(rng, "bit_generator", None)
    if bg is not None:
        return bg.state
    if hasattr(rng, "get_state"):
        return rng.get_state()
    raise TypeError(f"cannot read the state of random generator {type(rng).__name__}")


def set_rng_state(rng, state):
    """Restore :func:`rng_state` output *in place* (layers share the generator object)."""
    bg = getattr(rng, "bit_generator", None)
    if bg is not None:
        bg.state = state
    elif hasattr(rng, "set_state"):
        rng.set_state(state)
    else:
        raise TypeError(f"cannot set the state of random generator {type(rng).__name__}")


# -- file I/O ------------------------------------------------------------------------------

def source_name(path):
    """How messages name ``path``: the path, or ``<in-memory>`` for a file object."""
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.fsdecode(path)
    return getattr(path, "name", None) or "<in-memory fastmom file>"


def write_checkpoint(path, meta, arrays, overwrite=False):
    """Atomically write ``meta`` (JSON) and host ``arrays`` (name -> ndarray) to ``path``.

    The data go to a temporary file next to ``path`` that is fsynced and then renamed
    over ``path``; on any exception (``KeyboardInterrupt`` included) the temporary file
    is removed and ``path`` keeps its previous content. A read-only file at ``path``
    is replaced only with ``overwrite=True`` (see :func:`fastmom._io.atomic_write`).
    ``path`` may also be a binary file object (``io.BytesIO``: how a network is
    pickled), written directly.
    """
    meta = dict(meta, format=FORMAT, version=FORMAT_VERSION)
    # allow_nan: an inf images_per_second in the history is legal (Python's JSON dialect)
    blob = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    members = {"meta": blob}
    for name, a in arrays.items():
        if a is not None:
            members[name] = np.ascontiguousarray(a)
    if hasattr(path, "write"):
        np.savez(path, **members)
        return path
    return atomic_write(path, lambda f: np.savez(f, **members), overwrite=overwrite)


def read_checkpoint(path):
    """Read and validate a checkpoint; return ``(meta, arrays)`` with host arrays.

    Raises
    ------
    CheckpointError
        Naming ``path``: missing, not an npz, truncated or corrupt (CRC), no or invalid
        metadata, another format or version, or members of the wrong type.
    """
    source = source_name(path)
    if not hasattr(path, "read"):
        path = os.fspath(path)
    try:
        with _open_npz(path, source) as z:
            names = set(z.files)
            if "meta" not in names:
                raise CheckpointError(f"{source}: not a fastmom checkpoint (no 'meta' member)")
            arrays = {name: _member(z, name, source) for name in names}
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"{source}: file not found") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"{source}: is a directory, not a checkpoint file") from exc
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, zlib.error) as exc:
        # BadZipFile for a cut or damaged zip (CRC included), EOFError for an empty file
        raise CheckpointError(f"{source}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})") from exc
    path = source
    blob = arrays.pop("meta")
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise CheckpointError(f"{path}: invalid metadata member (dtype {blob.dtype}, shape {blob.shape})")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastmom checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported (this fastmom reads "
            f"version {FORMAT_VERSION})")
    if "network" not in meta or "params" not in arrays:
        raise CheckpointError(f"{path}: incomplete checkpoint (no network description or params)")
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise CheckpointError(f"{path}: member {name!r} has dtype {a.dtype}, expected floats")
    return meta, arrays


_NOT_OURS = ("not a fastmom file: fastmom saves pickle-free .npz archives and never loads pickled "
             "Python objects (loading them can run arbitrary code)")


def _open_npz(path, source):
    """``np.load`` without pickles; CheckpointError for anything but an ``.npz``
    (a pickle, a lone ``.npy``) in our words, not NumPy's advice to allow pickles."""
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):  # neither a zip nor an .npy: NumPy took it for a pickle
            raise CheckpointError(f"{source}: {_NOT_OURS}") from None
        raise
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{source}: a single NumPy array (.npy), not a fastmom file (fastmom saves "
                              f".npz archives)")
    return z


def _member(z, name, source):
    try:
        return z[name]
    except ValueError as exc:
        if "bject arrays" in str(exc):  # a member of Python objects is a pickle
            raise CheckpointError(f"{source}: member {name!r} holds Python objects; {_NOT_OURS}") from None
        raise


def save_network(net, path):
    """Write ``net``'s architecture, parameters and dropout RNG state to ``path``
    (``net.save(path)``)."""
    return net.save(path)


#: The class :func:`load_network` builds when none is given: ``fastmom.Network``, set by
#: the package root (this module is below the model and never imports it).
default_network_type = None


def load_network(path, device=None, dtype=None, network_type=None, mini_batch_size=None):
    """Rebuild the network stored in ``path`` (a network or trainer checkpoint) as a
    ``network_type`` (default :class:`fastmom.Network`), optionally with another
    ``mini_batch_size``."""
    network_type = network_type or default_network_type
    meta, arrays = read_checkpoint(path)
    try:
        return network_type.from_spec(meta["network"], arrays["params"], device, dtype,
                                      source=source_name(path), mini_batch_size=mini_batch_size)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def check_fits(net, meta, source):
    """Raise CheckpointError unless the stored network description fits ``net``."""
    if not net.same_architecture(meta):
        raise CheckpointError(
            f"{source}: the checkpoint's architecture does not match this network "
            f"(stored {meta.get('layers')} with mini_batch_size={meta.get('mini_batch_size')}; "
            f"network {[layer.spec() for layer in net.layers]} with "
            f"mini_batch_size={net.mini_batch_size})")


def load_state_into(net, meta, params, source):
    """Copy stored parameters and the dropout RNG state into ``net`` (CheckpointError)."""
    try:
        net.load_state(meta, params, source)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


# -- checkpoint directories ------------------------------------------------------------

def checkpoint_name(epoch, step):
    return f"ckpt-e{epoch:05d}-s{step:09d}.npz"


def list_checkpoints(directory):
    """Trainer checkpoints in ``directory``, oldest first (by step, then epoch)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), os.path.join(directory, name)))
    return [p for _, _, p in sorted(found)]


def latest_checkpoint(directory):
    """The newest trainer checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune(directory, keep_last):
    """Delete all but the newest ``keep_last`` trainer checkpoints in ``directory``."""
    for path in list_checkpoints(directory)[:-keep_last]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

