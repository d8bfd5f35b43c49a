"""The cuda backend's dense layers: two regimes chosen by a fixed rule on the batch.

At most :data:`DENSE_SMALL_ROWS` rows (the small-batch regime), the products are our
own kernels (``kernels/cuda/dense.cu``): ``fm_dense_small`` streams each weight once
with the rows' sums resident (forward, and the input gradient through the transposed
weights), ``fm_dense_wgrad_small`` writes dz, the bias gradient and the weight gradient
in one pass; no cuBLAS call, so a small-batch step can be captured into a CUDA graph
(CuPy 14 refuses cuBLAS under stream capture). Above it, ``cupy.matmul`` (cuBLAS) with
the fused epilogue kernels, as before. Every reduction has a fixed order (no atomics):
results are reproducible run to run.

:class:`Dense` is a mixin of :class:`fastmom.backends.cuda.Kernels` (it needs
``launch``, ``workspace``, ``xp``, ``counts`` and ``n_sm``); the plans are pure functions
of the shapes, so tests and ``bench/gpu_model.py`` call them without a device.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import activations as _activations
from . import _checks
from .cuda_plans import _ceil_div, grid

#: the most rows (mini-batch) of the small-batch regime: the fixed rule choosing it
DENSE_SMALL_ROWS = 32
#: the compiled row counts R of the small-batch kernels (the rows are padded to the
#: least R at or above them); the largest is DENSE_SMALL_ROWS
DENSE_ROW_INSTANCES = (8, 16, 32)
# dense.cu's fm:: constants: warps a block, and outputs a block / reduction steps a stage
DS_WARPS, DS_TILE = 4, 32
_THREADS = 256  # the 1-D epilogue's block (cuda.py's)


def dense_regime(rows):
    """``"small"`` (our kernels) for at most :data:`DENSE_SMALL_ROWS` rows, else
    ``"cublas"``."""
    return "small" if rows <= DENSE_SMALL_ROWS else "cublas"


def _rows_instance(rows):
    return next(r for r in DENSE_ROW_INSTANCES if rows <= r)


@functools.lru_cache(maxsize=256)
def small_product_plan(n_sm, rows, nred, nout, itemsize):
    """Launch shape of fm_dense_small: blocks of DS_TILE outputs x a slice of the
    reduction (whole stages of DS_TILE), the slices chosen so that about 2 blocks per SM
    share the weights; the slices' sums go to a (nsplit, rows, nout) workspace added by
    fm_bias_act (one slice: the epilogue is fused, no workspace)."""
    r = _rows_instance(rows)
    tiles, stages = _ceil_div(nout, DS_TILE), _ceil_div(nred, DS_TILE)
    want = max(1, min(stages, _ceil_div(2 * n_sm, tiles)))
    chunk = DS_TILE * _ceil_div(stages, want)
    nsplit = _ceil_div(nred, chunk)
    staging = (DS_TILE * (r + 1) + DS_TILE * (DS_TILE + 1)) * itemsize
    shared = max(staging, DS_WARPS * r * 32 * itemsize)
    g = grid("fm_dense_small", tiles, nsplit, 1, ("output tiles", "reduction slices", ""))
    return dict(r=r, grid=g, block=(32, DS_WARPS), shared=shared, chunk=chunk, nsplit=nsplit)


@functools.lru_cache(maxsize=256)
def small_wgrad_plan(n_sm, rows, k, n, itemsize):
    """Launch shape of fm_dense_wgrad_small: blocks of 32 columns x kb weight rows
    (whole stages of DS_TILE), about 4 blocks per SM."""
    r = _rows_instance(rows)
    tiles, stages = _ceil_div(n, 32), _ceil_div(k, DS_TILE)
    want = max(1, min(stages, _ceil_div(4 * n_sm, tiles)))
    kb = DS_TILE * _ceil_div(stages, want)
    g = grid("fm_dense_wgrad_small", tiles, _ceil_div(k, kb), 1, ("column tiles", "weight-row slices", ""))
    return dict(r=r, grid=g, block=(32, DS_WARPS), shared=DS_TILE * (r + 1) * itemsize, kb=kb)


class Dense:
    """``dense_forward`` / ``dense_backward`` of the cuda backend (a mixin of ``Kernels``)."""

    def _cublas(self, calls):
        # cuBLAS products are library calls too (with the random draws): both counted
        self.counts["cublas"] += calls
        self.counts["library_calls"] += calls

    def _epilogue(self, part, nsplit, y, b, scale, act, has_bias=True):
        n, m = y.shape
        self.launch("fm_bias_act", y.dtype, self._grid_1d("fm_bias_act", n * m), (_THREADS,),
                    (part, np.int32(nsplit), y, b, np.int64(n), np.int32(m), y.dtype.type(scale),
                     np.int32(_activations.code(act)), np.int32(has_bias)))

    def _small_product(self, a, w, b, out, transposed, scale, act, has_bias):
        """``out = act(scale * a @ W + b)`` by fm_dense_small, W = ``w`` or its transpose."""
        rows, nred = a.shape
        nout = out.shape[1]
        p = small_product_plan(self.n_sm, rows, nred, nout, a.itemsize)
        part = out
        if p["nsplit"] > 1:
            part = self.workspace("dense_part", (p["nsplit"], rows, nout), a.dtype)
        self.launch("fm_dense_small", a.dtype, p["grid"], p["block"],
                    (a, w, b, out, part, *(np.int32(v) for v in (rows, nred, nout, transposed, p["chunk"])),
                     a.dtype.type(scale), np.int32(_activations.code(act)), np.int32(has_bias)), p["shared"], p["r"])
        if p["nsplit"] > 1:
            self._epilogue(part, p["nsplit"], out, b, scale, act, has_bias)

    def dense_forward(self, x, w, b, act, y, scale=1.0):
        """``y = act(scale * x @ w + b)``: fm_dense_small (+ fm_bias_act over its
        slices) at small batch, else cuBLAS + fm_bias_act."""
        n, n_in, n_out = _checks.dense_forward(x, w, b, act, y, scale, xp=self.xp)
        if dense_regime(n) == "small":
            self._small_product(x, w, b, y, 0, scale, act, True)
            return
        self._grid_1d("fm_bias_act", n * n_out)  # the launch shape is checked before the product
        self._cublas(1)
        self.xp.matmul(x, w, out=y)
        self._epilogue(y, 1, y, b, scale, act)

    def dense_backward(self, x, w, y, dy, act, dw, db, dx):
        """dz = dy * act'(y), db, dw = x.T @ dz and dx = dz @ w.T: fm_dense_wgrad_small
        then fm_dense_small on the transposed weights at small batch; else
        fm_dense_dz_db and cuBLAS."""
        n, n_in, n_out = _checks.dense_backward(x, w, y, dy, act, dw, db, dx, xp=self.xp)
        dz = self.workspace("dense_dz", (n, n_out), x.dtype)
        code = np.int32(_activations.code(act))
        if dense_regime(n) == "small":
            p = small_wgrad_plan(self.n_sm, n, n_in, n_out, x.itemsize)
            if dx is not None:  # every launch shape first: nothing launches if one is refused
                small_product_plan(self.n_sm, n, n_out, n_in, x.itemsize)
            self.launch("fm_dense_wgrad_small", x.dtype, p["grid"], p["block"],
                        (x, dy, y, dz, dw, db, *(np.int32(v) for v in (n, n_in, n_out, p["kb"])), code),
                        p["shared"], p["r"])
            if dx is not None:
                self._small_product(dz, w, w, dx, 1, 1.0, "linear", False)
            return
        self.launch("fm_dense_dz_db", x.dtype, grid("fm_dense_dz_db", _ceil_div(n_out, 32)), (32, 8),
                    (dy, y, dz, db, np.int32(n), np.int32(n_out), code))
        self._cublas(1 + (dx is not None))
        self.xp.matmul(x.T, dz, out=dw)
        if dx is not None:
            self.xp.matmul(dz, w.T, out=dx)
