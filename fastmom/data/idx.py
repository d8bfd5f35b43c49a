"""IDX files (the MNIST format): reading, validating and splitting them."""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np

from ._common import _GZIP_MAGIC, DataError, PathLike, Split, _check_labels

# IDX type code -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

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
