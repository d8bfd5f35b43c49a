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

import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import Mapping, Optional, Tuple

import platformdirs

from ._common import DataError, PathLike, Split
from .expand import expand
from .idx import load_idx_pair, read_idx, _split_validation
from .pickled import load_data_shared
from .sample import _SAMPLE_FILES, _load_sample_from, load_sample  # noqa: F401 (tests read them)

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


# Where `apt-get install dataset-fashion-mnist` puts the files (Debian names
# them exactly like MNIST: train-images-idx3-ubyte.gz, ...).
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_TRAIN_IMAGES, _TRAIN_LABELS, _TEST_IMAGES, _TEST_LABELS = MNIST_FILES

_DATASET_NAMES = ("sample", "mnist", "fashion-mnist")


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
