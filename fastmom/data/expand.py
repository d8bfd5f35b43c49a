"""network3's expanded training set: each image plus its four one-pixel shifts.

Memory: :func:`expand` allocates its output once and writes each block with slicing
straight into its shuffled rows (``out[perm[k*N:(k+1)*N], ...] = shifted view``), so
the peak beyond the input is the output plus the ``5 * N`` permutation indices: no
float64 copy and no second full-size array. Expanding network3's 50,000 MNIST
training images (float32) gives 250,000 images, about 784 MB.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from ._common import DataError, Split

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


def _validated(training_data):
    """``(images, labels, grid)`` of an expandable pair, or DataError naming the shapes."""
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
    return images, labels, grid


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

    """
    images, labels, grid = _validated(training_data)
    n = len(images)
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
