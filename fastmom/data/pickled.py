"""network3's ``mnist.pkl.gz``, read with a restricted unpickler (no code runs)."""
from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import pickle
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ._common import _GZIP_MAGIC, DataError, PathLike, Split, _check_labels
from .sample import load_sample

# --------------------------------------------------------------------------
# network3's mnist.pkl.gz
# --------------------------------------------------------------------------


def _numpy_attr(name: str, *modules: str):
    """Find ``name`` in the first of ``modules`` that has it (NumPy 1 or 2)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """Stand-in for ``_codecs.encode``, which Python 3 protocol-2 pickles use
    to rebuild ``bytes`` objects; only the latin-1 case is needed or allowed."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return obj.encode("latin-1", errors)


def _build_allowed_globals():
    reconstruct = _numpy_attr("_reconstruct", "numpy._core.multiarray", "numpy.core.multiarray")
    scalar = _numpy_attr("scalar", "numpy._core.multiarray", "numpy.core.multiarray")
    frombuffer = _numpy_attr("_frombuffer", "numpy._core.numeric", "numpy.core.numeric")
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles written by Python 3 rebuild bytes with these.
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): bytes,
        ("__builtin__", "bytes"): bytes,
    }
    for module in ("numpy.core", "numpy._core"):
        if reconstruct is not None:
            allowed[(module + ".multiarray", "_reconstruct")] = reconstruct
        if scalar is not None:
            allowed[(module + ".multiarray", "scalar")] = scalar
        if frombuffer is not None:  # protocol 5 pickles of arrays
            allowed[(module + ".numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays and nothing else.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused
    before it is looked up, so a crafted file cannot run code.
    """

    _allowed = None

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # network3's file is a Python 2 pickle
        self._source = source
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _build_allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source}: refusing to load forbidden global {module}.{name} "
                "(only NumPy arrays are allowed in a data pickle)"
            ) from None


def _pickled_split(part, source: str, which: str) -> Split:
    """Validate one ``(x, y)`` tuple from a pickle and convert it."""
    if not isinstance(part, (tuple, list)) or len(part) != 2:
        raise DataError(f"{source}: {which} is not an (x, y) pair")
    x, y = part
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{source}: {which} does not hold NumPy arrays")
    if x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x.reshape(len(x), 784)
    if x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"{source}: {which} images have shape {x.shape}, expected (N, 784)")
    if y.ndim != 1:
        raise DataError(f"{source}: {which} labels have shape {y.shape}, expected (N,)")
    if len(x) != len(y):
        raise DataError(f"{source}: {which}: images/labels count mismatch: {len(x)} images, {len(y)} labels")
    if y.dtype.kind not in "iu":
        raise DataError(f"{source}: {which} labels are {y.dtype}, expected integers")
    _check_labels(y, f"{source}: {which}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    elif x.dtype.kind == "f":
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(f"{source}: {which} pixel values are not all within [0, 1]")
    else:
        raise DataError(f"{source}: {which} images are {x.dtype}, expected float or uint8")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def load_data_shared(filename: Optional[PathLike] = "mnist.pkl.gz") -> Tuple[Split, Split, Split]:
    """Load network3's ``mnist.pkl.gz`` (or the bundled sample).

    Same name and file as network3's loader, but returns plain NumPy arrays
    instead of Theano shared variables, and unpickles safely.

    Parameters
    ----------
    filename : str, os.PathLike or None
        A gzipped (or plain) pickle of three ``(x, y)`` tuples, as in
        network3's ``mnist.pkl.gz``.  ``None`` or ``"sample"`` loads the
        bundled sample instead (see `load_sample`).

    Returns
    -------
    training_data, validation_data, test_data : tuple of (x, y)
        ``x`` float32 ``(N, 784)`` C-contiguous, ``y`` int64 ``(N,)``.  Images
        stored as uint8 are divided by 255; float images must already lie in
        ``[0, 1]``.

    Raises
    ------
    DataError
        If the file is missing or corrupt, does not hold three ``(x, y)``
        tuples of arrays, or references any global other than NumPy's array
        reconstruction functions (the unpickler is restricted, so such a file
        cannot execute code).
    """
    if filename is None or (isinstance(filename, str) and filename == "sample"):
        return load_sample()
    path = Path(filename)
    source = str(path)
    try:
        with open(path, "rb") as f:
            is_gzip = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if path.name.endswith(".gz") and not is_gzip:
                raise DataError(
                    f"{source}: not gzip data (the name ends in .gz but the file does not start with 1f 8b)"
                )
            # Stream through the unpickler: the decompressed file is ~220 MB.
            stream = gzip.GzipFile(fileobj=f, mode="rb") if is_gzip else f
            content = _RestrictedUnpickler(stream, source).load()
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(
            f"{source}: file not found (use load_data_shared('sample') for the bundled sample, "
            "or fastmom.data.load_mnist() to download MNIST)"
        ) from exc
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{source}: truncated or corrupt data ({exc})") from exc
    except gzip.BadGzipFile as exc:
        raise DataError(f"{source}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{source}: cannot read ({exc})") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{source}: not a valid data pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, (tuple, list)) or len(content) != 3:
        raise DataError(f"{source}: expected a tuple of three (x, y) tuples")
    names = ("training data", "validation data", "test data")
    return tuple(_pickled_split(part, source, which) for part, which in zip(content, names))
