"""Loading MNIST-style image data sets.

Every loader returns ``(training_data, validation_data, test_data)``, three
``(x, y)`` tuples in which ``x`` is a C-contiguous ``numpy.float32`` array of
shape ``(N, 784)`` with pixel values scaled to ``[0, 1]`` and ``y`` is a
``numpy.int64`` array of shape ``(N,)`` holding labels ``0..9``.  This is the
layout of network3's ``load_data_shared``, minus the Theano shared variables.

Data sets
---------
``load_sample``
    5,000 real MNIST digits shipped inside the package (no download).
``load_data_shared``
    network3's ``mnist.pkl.gz``, read with a restricted unpickler.
``load_mnist``
    The full MNIST database, downloaded once into a cache directory and
    verified against SHA-256 checksums.
``load_fashion_mnist``
    Fashion-MNIST from a local directory (for example Debian's
    ``dataset-fashion-mnist`` package).
``load_dataset``
    Any of the above by name, a directory of IDX files, or a pickle path.

``expand`` turns a training split into network3's expanded training set
(each image plus its four one-pixel shifts, shuffled).

Validation split
----------------
Where a data set comes with only a training and a test file, the last
``N // 6`` images of the training file are the validation set and the rest
the training set.  For the official 60,000-image training files this is
exactly network3's split: first 50,000 for training, last 10,000 for
validation.  The official test file is the test set.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

import numpy as np
import platformdirs

__all__ = [
    "DataError",
    "MNIST_FILES",
    "data_dir",
    "expand",
    "load_data_shared",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx_pair",
    "load_mnist",
    "load_sample",
    "read_idx",
]

Split = Tuple[np.ndarray, np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """A data file is missing, corrupt, or does not hold what it should.

    The message always names the file (or URL) and the problem.
    """


# SHA-256 of the four canonical gzipped MNIST files.  Confirmed against
# ankane/torchvision-ruby lib/torchvision/datasets/mnist.rb (RESOURCES) and
# several other independent public projects that pin the same four values
# together with the canonical sizes (9,912,422 / 28,881 / 1,648,877 / 4,542
# bytes).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# PyTorch's mirror: yann.lecun.com no longer serves the files reliably.
DEFAULT_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# The bundled sample (see fastmom/_data/README.md for provenance).
_SAMPLE_FILES = {
    "images-idx3-ubyte.gz": "e1b9ad0f33e70df03fd2f5b52b235723a464badfaa4b3b55c16021f6e6fe6711",
    "labels-idx1-ubyte.gz": "e3fa6db2d3ef21a32119c3569d6d322691ce0f6bdeb43e6da6e9328a4e1486ea",
}

# Where `apt-get install dataset-fashion-mnist` puts the files (Debian names
# them exactly like MNIST: train-images-idx3-ubyte.gz, ...).
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_TRAIN_IMAGES, _TRAIN_LABELS, _TEST_IMAGES, _TEST_LABELS = MNIST_FILES

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_DATASET_NAMES = ("sample", "mnist", "fashion-mnist")


# --------------------------------------------------------------------------
# Low-level readers
# --------------------------------------------------------------------------


def _decompress(raw: bytes, source: str, expect_gzip: bool) -> bytes:
    """Gunzip ``raw`` if it is gzip data (or is meant to be)."""
    if raw[:2] != _GZIP_MAGIC:
        if expect_gzip:
            raise DataError(f"{source}: not gzip data (the name ends in .gz but the file does not start with 1f 8b)")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # EOFError: stream cut short; BadGzipFile (an OSError): CRC/length
        # mismatch; zlib.error: damaged deflate data.
        raise DataError(f"{source}: corrupt gzip data ({exc})") from exc


def _parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the (already decompressed) bytes of an IDX file."""
    if len(data) < 4:
        raise DataError(f"{source}: truncated: expected at least 4 header bytes got {len(data)}")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: bad magic {data[:4].hex()} (an IDX file starts with two zero bytes)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise DataError(f"{source}: bad magic {data[:4].hex()}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: wrong dimension count 0 in the IDX header")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated: expected {header} header bytes got {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    count = 1
    for d in shape:
        count *= d
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{source}: truncated: expected {expected} bytes got {len(data)}")
    if len(data) > expected:
        raise DataError(f"{source}: trailing data: expected {expected} bytes got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    # astype copies: gives a writable array in native byte order.
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file, gzipped or plain.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  It is gunzipped when its name ends in ``.gz`` or it starts
        with the gzip magic bytes ``1f 8b``.

    Returns
    -------
    numpy.ndarray
        Array with the header's dimensions as its shape and the header's
        element type (uint8, int8, int16, int32, float32 or float64) in
        native byte order.

    Raises
    ------
    DataError
        If the file is not valid gzip, has a bad magic number, an unknown
        type code, zero dimensions, or a payload shorter or longer than the
        dimensions say.  The message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    source = str(path)
    data = _decompress(raw, source, expect_gzip=path.name.endswith(".gz"))
    return _parse_idx(data, source)


def _to_split(images: np.ndarray, labels: np.ndarray, images_src: str, labels_src: str) -> Split:
    """Validate an IDX image/label pair and convert it to ``(x, y)``."""
    if images.ndim != 3:
        raise DataError(f"{images_src}: wrong dimension count: expected 3 (N, 28, 28) got {images.ndim}")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_src}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.dtype != np.uint8:
        raise DataError(f"{images_src}: image pixels are {images.dtype}, expected uint8")
    if labels.ndim != 1:
        raise DataError(f"{labels_src}: wrong dimension count: expected 1 (N,) got {labels.ndim}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_src}: labels are {labels.dtype}, expected integers")
    if len(images) != len(labels):
        raise DataError(
            f"{images_src} / {labels_src}: images/labels count mismatch: {len(images)} images, {len(labels)} labels"
        )
    _check_labels(labels, labels_src)
    x = images.reshape(len(images), 28 * 28).astype(np.float32)
    x /= np.float32(255.0)  # in place: no second full-size temporary
    return x, labels.astype(np.int64)


def _check_labels(labels: np.ndarray, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise DataError(f"{source}: label out of range 0..9 (found {bad})")


def load_idx_pair(images_path: PathLike, labels_path: PathLike) -> Split:
    """Load an IDX images file and its labels file as one ``(x, y)`` split.

    Parameters
    ----------
    images_path : str or os.PathLike
        IDX file of uint8 images, shape ``(N, 28, 28)``.
    labels_path : str or os.PathLike
        IDX file of integer labels, shape ``(N,)``, values ``0..9``.

    Returns
    -------
    x : numpy.ndarray
        float32, shape ``(N, 784)``, C-contiguous, pixels divided by 255.
    y : numpy.ndarray
        int64, shape ``(N,)``.

    Raises
    ------
    DataError
        On any problem reading either file, on wrong shapes or types, if the
        counts differ, or if a label is outside ``0..9``.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    return _to_split(images, labels, str(images_path), str(labels_path))


def _split_validation(train: Split, source: str) -> Tuple[Split, Split]:
    """Split off the last ``N // 6`` training images as validation data.

    For 60,000 images that is network3's 50,000 / 10,000 split.
    """
    x, y = train
    n_val = len(x) // 6
    if n_val == 0:
        raise DataError(f"{source}: too few training images ({len(x)}) to split off a validation set (need 6)")
    cut = len(x) - n_val
    # Copies keep each part C-contiguous and independent of the others.
    return (x[:cut].copy(), y[:cut].copy()), (x[cut:].copy(), y[cut:].copy())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Bundled sample
# --------------------------------------------------------------------------


def _load_sample_from(directory) -> Tuple[Split, Split, Split]:
    """Load and verify the 5k sample from ``directory`` (Path or Traversable)."""
    arrays = []
    for name, expected in _SAMPLE_FILES.items():
        item = directory / name
        source = str(item)
        try:
            raw = item.read_bytes()
        except OSError as exc:
            raise DataError(f"{source}: cannot read bundled sample file ({exc})") from exc
        got = _sha256(raw)
        if got != expected:
            raise DataError(f"{source}: checksum mismatch: expected sha256 {expected} got {got}")
        arrays.append((_parse_idx(_decompress(raw, source, expect_gzip=True), source), source))
    (images, images_src), (labels, labels_src) = arrays
    x, y = _to_split(images, labels, images_src, labels_src)
    if len(x) != 5000:
        raise DataError(f"{images_src}: expected 5000 sample images got {len(x)}")
    # The file is ordered so that these contiguous parts are stratified
    # (400 / 50 / 50 images of every digit).
    return (
        (x[:4000].copy(), y[:4000].copy()),
        (x[4000:4500].copy(), y[4000:4500].copy()),
        (x[4500:].copy(), y[4500:].copy()),
    )


def load_sample() -> Tuple[Split, Split, Split]:
    """Load the 5,000-digit MNIST sample bundled with fastmom.

    The files (``fastmom/_data/mnist-5k/``) are checked against their
    SHA-256 before use.  They hold 500 images of each digit, ordered so that
    the split below is stratified.

    Returns
    -------
    training_data, validation_data, test_data : tuple of (x, y)
        The first 4,000, next 500 and last 500 images: 400, 50 and 50 of
        every digit.

    Raises
    ------
    DataError
        If a bundled file is missing, altered or unreadable.
    """
    directory = importlib.resources.files("fastmom") / "_data" / "mnist-5k"
    return _load_sample_from(directory)


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


# --------------------------------------------------------------------------
# Full MNIST (download) and Fashion-MNIST (local)
# --------------------------------------------------------------------------


def data_dir() -> Path:
    """Directory where downloaded data sets are kept.

    Returns
    -------
    pathlib.Path
        ``$FASTMOM_DATA_DIR`` if that environment variable is set and
        non-empty, else the per-user cache directory
        ``platformdirs.user_cache_dir("fastmom")``.
    """
    env = os.environ.get("FASTMOM_DATA_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("fastmom"))


_default_data_dir = data_dir  # parameters named data_dir shadow the function


def _load_four(paths: Mapping[str, Path]) -> Tuple[Split, Split, Split]:
    """Load train/t10k IDX files (keyed by canonical .gz name) and split."""
    train = load_idx_pair(paths[_TRAIN_IMAGES], paths[_TRAIN_LABELS])
    test = load_idx_pair(paths[_TEST_IMAGES], paths[_TEST_LABELS])
    training, validation = _split_validation(train, str(paths[_TRAIN_IMAGES]))
    return training, validation, test


def load_mnist(
    data_dir: Optional[PathLike] = None,
    mirror: Optional[str] = None,
    progress: bool = False,
    files: Optional[Mapping[str, str]] = None,
) -> Tuple[Split, Split, Split]:
    """Load the full MNIST database, downloading it on first use.

    The four gzipped IDX files are fetched with pooch into
    ``<data_dir>/mnist/``.  pooch writes each download to a temporary file in
    that directory and moves it into place only once its SHA-256 matches, so
    an interrupted or corrupted download leaves nothing behind.  Files that
    are already present with the right checksum are not downloaded again.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Base directory; default `data_dir()` (``$FASTMOM_DATA_DIR`` or the
        user cache directory).
    mirror : str, optional
        Base URL the file names are appended to.  Default
        ``$FASTMOM_MNIST_MIRROR`` if set, else `DEFAULT_MNIST_MIRROR`.
    progress : bool, default False
        Show a download progress bar (needs ``tqdm``).
    files : mapping of str to str, optional
        File name -> SHA-256 for the four files; default `MNIST_FILES`.  Meant
        for serving other (e.g. small test) files under the canonical names.

    Returns
    -------
    training_data, validation_data, test_data : tuple of (x, y)
        50,000 training and 10,000 validation images (network3's split of
        the official training file; in general its last ``N // 6`` images
        are the validation set) and the 10,000 official test images.

    Raises
    ------
    DataError
        If a download fails (the message names the URL) or its checksum
        does not match (the message says "checksum mismatch"), or a file is
        corrupt.
    """
    files = dict(MNIST_FILES if files is None else files)
    missing = set(MNIST_FILES) - set(files)
    if missing:
        raise ValueError(f"files must give a SHA-256 for each of {sorted(MNIST_FILES)}; missing {sorted(missing)}")
    if progress and importlib.util.find_spec("tqdm") is None:
        raise ImportError("load_mnist(progress=True) needs the 'tqdm' package")
    import pooch  # deferred: only downloads need it (and requests)

    base = _default_data_dir() if data_dir is None else Path(data_dir)
    target = base / "mnist"
    mirror = mirror or os.environ.get("FASTMOM_MNIST_MIRROR") or DEFAULT_MNIST_MIRROR
    if not mirror.endswith("/"):
        mirror += "/"

    paths = {}
    for name in MNIST_FILES:
        url = mirror + name
        try:
            local = pooch.retrieve(
                url,
                known_hash="sha256:" + files[name],
                fname=name,
                path=target,
                progressbar=progress,
            )
        except ValueError as exc:
            # pooch raises ValueError for a hash mismatch (its message
            # mentions "hash") and for URLs it cannot handle.
            if "hash" in str(exc).lower():
                raise DataError(
                    f"{url}: checksum mismatch for {target / name}: expected sha256 {files[name]} ({exc})"
                ) from exc
            raise DataError(f"{url}: cannot download to {target / name} ({exc})") from exc
        except OSError as exc:  # requests' exceptions derive from OSError
            raise DataError(f"{url}: download to {target / name} failed ({type(exc).__name__}: {exc})") from exc
        paths[name] = Path(local)
    return _load_four(paths)


def _find_idx_files(directory: Path):
    """Map the four canonical names to files in ``directory``, or None.

    Each file may be gzipped (``name.gz``) or not (``name``).
    """
    found = {}
    for name in MNIST_FILES:
        plain = name[: -len(".gz")]
        for candidate in (directory / name, directory / plain):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _fashion_candidates(data_dir: Optional[PathLike]):
    places = []
    if data_dir is not None:
        places.append(Path(data_dir))
    env = os.environ.get("FASTMOM_DATA_DIR")
    if env:
        places.append(Path(env) / "fashion-mnist")
    places.append(Path(platformdirs.user_cache_dir("fastmom")) / "fashion-mnist")
    places.append(_DEBIAN_FASHION_DIR)
    unique = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def load_fashion_mnist(data_dir: Optional[PathLike] = None) -> Tuple[Split, Split, Split]:
    """Load Fashion-MNIST from local IDX files.

    The four files carry the MNIST names (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``), each gzipped (``.gz``) or not.  The first
    directory holding all four is used, searched in this order:

    1. ``data_dir``, if given (and then only there);
    2. ``$FASTMOM_DATA_DIR/fashion-mnist``, if the variable is set;
    3. ``platformdirs.user_cache_dir("fastmom")/fashion-mnist``;
    4. ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu:
       ``apt-get install dataset-fashion-mnist``).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory to look in first.

    Returns
    -------
    training_data, validation_data, test_data : tuple of (x, y)
        50,000 training and 10,000 validation images (the last 10,000 of the
        official training set; in general its last ``N // 6``) and the
        official 10,000 test images.

    Raises
    ------
    DataError
        If no directory holds the four files (the message lists the places
        searched and how to install the data), or a file is corrupt.
    """
    if data_dir is not None:
        # an explicit directory is what the caller wants: never fall back to another copy
        paths = _find_idx_files(Path(data_dir))
        if paths is None:
            raise DataError(
                f"{data_dir}: no Fashion-MNIST here: the four IDX files ({', '.join(MNIST_FILES)}, "
                "gzipped or not) are not all present")
        return _load_four(paths)
    places = _fashion_candidates(None)
    for place in places:
        paths = _find_idx_files(place)
        if paths is not None:
            return _load_four(paths)
    listing = "\n".join(f"  - {p}" for p in places)
    raise DataError(
        "Fashion-MNIST not found: none of these directories holds the four IDX files "
        f"({', '.join(MNIST_FILES)}, gzipped or not):\n{listing}\n"
        "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) "
        "or put the files from https://github.com/zalandoresearch/fashion-mnist in one of them."
    )


def load_dataset(name: PathLike) -> Tuple[Split, Split, Split]:
    """Load a data set by name or path.

    Parameters
    ----------
    name : str or os.PathLike
        ``"sample"`` (`load_sample`), ``"mnist"`` (`load_mnist`),
        ``"fashion-mnist"`` (`load_fashion_mnist`); or a directory holding
        the four MNIST-named IDX files (validation = last ``N // 6`` images
        of the training file, i.e. 50,000 / 10,000 for 60,000 images, and
        the t10k files are the test set); or a ``.pkl.gz`` / ``.pkl`` file
        (`load_data_shared`).

    Returns
    -------
    training_data, validation_data, test_data : tuple of (x, y)

    Raises
    ------
    ValueError
        If ``name`` is neither a known name nor such a path (the message lists
        the valid names).
    DataError
        If the data files are missing or corrupt.
    """
    if isinstance(name, str):
        if name == "sample":
            return load_sample()
        if name == "mnist":
            return load_mnist()
        if name == "fashion-mnist":
            return load_fashion_mnist()
    path = Path(name)
    if path.is_dir():
        paths = _find_idx_files(path)
        if paths is None:
            raise DataError(
                f"{path}: directory does not hold the four IDX files {', '.join(MNIST_FILES)} (gzipped or not)"
            )
        return _load_four(paths)
    if path.name.endswith((".pkl.gz", ".pkl")):
        return load_data_shared(path)
    raise ValueError(
        f"unknown data set {str(name)!r}: expected one of {', '.join(repr(n) for n in _DATASET_NAMES)}, "
        "a directory of MNIST-format IDX files, or a .pkl.gz file"
    )


# --------------------------------------------------------------------------
# network3's expanded training set
# --------------------------------------------------------------------------

# (name, image axis, roll direction): block k of the expansion, in this order,
# after block 0 (the originals).  Axis -2 is the row (height) axis, -1 the
# column (width) axis; direction +1 moves content towards higher indices.
_SHIFTS = (
    ("down", -2, +1),
    ("up", -2, -1),
    ("right", -1, +1),
    ("left", -1, -1),
)


def _image_grid(images: np.ndarray) -> Tuple[int, ...]:
    """The per-image shape ``expand`` shifts in: ``(H, W)`` or ``(C, H, W)``.

    Flat ``(N, D)`` images are read as ``s x s`` with ``s * s == D``.
    """
    if images.ndim < 2:
        raise DataError(
            f"expand: images have shape {images.shape}: each image is a scalar, expected "
            "(N, H*W), (N, H, W) or (N, C, H, W)"
        )
    if images.ndim > 4:
        raise DataError(
            f"expand: images have shape {images.shape} ({images.ndim} dimensions), expected "
            "(N, H*W), (N, H, W) or (N, C, H, W)"
        )
    if images.ndim == 2:
        size = images.shape[1]
        side = math.isqrt(size)
        if side * side != size:
            raise DataError(
                f"expand: flat images of shape {images.shape}: {size} pixels is not a square "
                "(H*W with H == W), so the image height and width are unknown; pass "
                "(N, H, W) or (N, C, H, W) images instead"
            )
        grid: Tuple[int, ...] = (side, side)
    else:
        grid = images.shape[1:]
    height, width = grid[-2:]
    if height < 2 or width < 2:
        raise DataError(
            f"expand: images of shape {images.shape} are {height}x{width}: a one-pixel shift "
            "needs height and width of at least 2"
        )
    return grid


def _shifted_index(axis: int, sl: slice) -> tuple:
    """Index selecting ``sl`` along image ``axis`` (-2 or -1) of an ``(..., H, W)`` array."""
    return (Ellipsis, sl, slice(None)) if axis == -2 else (Ellipsis, sl)


def _scatter_shift(out: np.ndarray, rows: np.ndarray, images: np.ndarray, axis: int, direction: int) -> None:
    """Write ``images`` shifted by one pixel into ``out[rows]``, wrapped-in edge zeroed.

    Slicing only: no rolled copy of ``images`` and no temporary block.
    """
    if direction > 0:  # content moves to higher indices: edge 0 is vacated
        dst, src, edge = slice(1, None), slice(None, -1), 0
    else:
        dst, src, edge = slice(None, -1), slice(1, None), -1
    out[(rows,) + _shifted_index(axis, dst)] = images[_shifted_index(axis, src)]
    out[(rows,) + _shifted_index(axis, edge)] = 0


def expand(training_data: Split, seed=None) -> Split:
    """network3's expanded training set: each image and its four one-pixel shifts, shuffled.

    This is what network3's ``expand_mnist.py`` writes to
    ``mnist_expanded.pkl.gz`` (for the training split only; validation and
    test data are not expanded), with a NumPy generator instead of Python's
    ``random.shuffle``, so the content is the same and the order differs.

    Definition
    ----------
    For an ``H x W`` image ``x`` (rows ``i``, columns ``j``), the five
    images produced are, in this block order:

    0. ``original``: ``x``;
    1. ``down``:  ``np.roll(x, 1, axis=rows)`` with row ``0`` set to zero,
       i.e. ``out[i, j] = x[i - 1, j]`` for ``i >= 1``, ``out[0, :] = 0``;
    2. ``up``:    ``np.roll(x, -1, axis=rows)`` with row ``H - 1`` zeroed:
       ``out[i, j] = x[i + 1, j]`` for ``i <= H - 2``;
    3. ``right``: ``np.roll(x, 1, axis=columns)`` with column ``0`` zeroed:
       ``out[i, j] = x[i, j - 1]`` for ``j >= 1``;
    4. ``left``:  ``np.roll(x, -1, axis=columns)`` with column ``W - 1``
       zeroed: ``out[i, j] = x[i, j + 1]`` for ``j <= W - 2``.

    (These are network3's four ``(d, axis)`` pairs ``(1, 0)``, ``(-1, 0)``,
    ``(1, 1)``, ``(-1, 1)``.)  Channels of a ``(C, H, W)`` image are shifted
    alike.  With ``N`` input images, let
    ``perm = np.random.default_rng(seed).permutation(5 * N)``; block ``k``'s
    image made from input image ``i`` is output row ``perm[k * N + i]``, and
    its label is ``labels[i]``.  So the output is the ``5 * N`` images of
    blocks 0-4 concatenated and then shuffled by ``perm``.

    Parameters
    ----------
    training_data : (images, labels)
        ``images`` of shape ``(N, H*W)`` with ``H == W`` (MNIST's
        ``(N, 784)`` is ``28 x 28``), ``(N, H, W)`` or ``(N, C, H, W)``, any
        boolean, integer or float dtype; ``labels`` a 1-D integer array of
        length ``N``.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Passed to `numpy.random.default_rng`.  The same seed gives the same
        output; ``None`` a fresh random order.

    Returns
    -------
    images : numpy.ndarray
        Shape ``(5 * N,) + images.shape[1:]`` (same layout as given), same
        dtype, C-contiguous, a new array.
    labels : numpy.ndarray
        Shape ``(5 * N,)``, same dtype as given.

    Raises
    ------
    DataError
        If ``training_data`` is not an ``(images, labels)`` pair; the images
        are not 2-D to 4-D per the shapes above, or are flat with a
        non-square pixel count, or smaller than 2 pixels in height or width;
        the pixels are not numbers; the labels are not a 1-D integer array;
        or the counts of images and labels differ.  The message names the
        shapes.

    Notes
    -----
    Memory: the output is allocated once and each block is written with
    slicing straight into its shuffled rows (``out[perm[k*N:(k+1)*N], ...] =
    shifted view``), so the peak beyond the input is the output plus the
    ``5 * N`` permutation indices; there is no float64 copy and no second
    full-size array.  Expanding network3's 50,000 MNIST training images
    (float32) gives 250,000 images, about 784 MB.
    """
    if not isinstance(training_data, (tuple, list)) or len(training_data) != 2:
        raise DataError(f"expand: training_data must be an (images, labels) pair, got {type(training_data).__name__}")
    images, labels = (np.asarray(a) for a in training_data)
    if images.dtype.kind not in "biuf":
        raise DataError(f"expand: images of shape {images.shape} are {images.dtype}, expected numbers")
    grid = _image_grid(images)
    if labels.ndim != 1:
        raise DataError(f"expand: labels have shape {labels.shape}, expected 1-D (N,) with N = {len(images)}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"expand: labels of shape {labels.shape} are {labels.dtype}, expected integers")
    n = len(images)
    if len(labels) != n:
        raise DataError(
            f"expand: images/labels count mismatch: images {images.shape}, labels {labels.shape}"
        )
    perm = np.random.default_rng(seed).permutation(5 * n)
    out = np.empty((5 * n,) + images.shape[1:], dtype=images.dtype)
    out_labels = np.empty(5 * n, dtype=labels.dtype)
    grid_out = out.reshape((5 * n,) + grid)  # a view: out is new and contiguous
    grid_in = images.reshape((n,) + grid)  # a view unless images is non-contiguous
    rows = perm[:n]
    grid_out[rows] = grid_in
    out_labels[rows] = labels
    for k, (_, axis, direction) in enumerate(_SHIFTS, start=1):
        rows = perm[k * n:(k + 1) * n]
        _scatter_shift(grid_out, rows, grid_in, axis, direction)
        out_labels[rows] = labels
    return out, out_labels
