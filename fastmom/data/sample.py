"""The bundled sample: 5,000 real MNIST digits shipped inside the package."""
from __future__ import annotations

import importlib.resources
import importlib.util
from typing import Tuple


from ._common import DataError, Split
from .idx import _decompress, _parse_idx, _sha256, _to_split

# The bundled sample (see fastmom/_data/README.md for provenance).
_SAMPLE_FILES = {
    "images-idx3-ubyte.gz": "e1b9ad0f33e70df03fd2f5b52b235723a464badfaa4b3b55c16021f6e6fe6711",
    "labels-idx1-ubyte.gz": "e3fa6db2d3ef21a32119c3569d6d322691ce0f6bdeb43e6da6e9328a4e1486ea",
}

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
