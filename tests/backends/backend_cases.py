"""What every backend test shares: the backends under test, the shapes, the tolerances.

One table of problem shapes and one tolerance per dtype, used by the parity tests
(``test_parity.py``) for every compiled backend and by the backend-specific files.
"""
import zlib

import numpy as np
import pytest

from fastmom.activations import CODES
from fastmom.backends import reference as ref

ACTS = tuple(sorted(CODES))
DTYPES = (np.float64, np.float32)
#: relative to the largest reference magnitude (cancellation makes entries near zero)
RTOL = {np.float64: 1e-10, np.float32: 1e-4}
#: the property tests' arrays span magnitudes 1e-12 to 1e12 and integer-valued sums that
#: cancel: there the error is measured against a larger scale than the result (as since
#: the fuzz tests were written; not a loosening of RTOL)
FUZZ_RTOL = {np.float64: 1e-9, np.float32: 2e-4}

# (N, C, H, W, F, KH, KW, poolsize): odd channel counts, non-square images, ragged
# pooling borders, poolsize (1, 1), batch 1, network3's two layers, and the shapes
# that steer the cpu backend onto each of its paths
CONV_SHAPES = [
    (1, 1, 8, 8, 3, 3, 3, (2, 2)),          # batch 1, 6x6 map
    (3, 3, 13, 11, 5, 4, 3, (2, 3)),        # odd channels, non-square, ragged border both ways
    (2, 5, 9, 12, 7, 2, 5, (3, 2)),         # pool 3 rows on an 8-row map (ragged)
    (4, 2, 7, 6, 3, 3, 2, (1, 1)),          # no pooling
    (2, 1, 9, 11, 3, 3, 4, (2, 2)),         # ragged both ways, 3 filters
    (3, 2, 10, 7, 9, 3, 3, (3, 2)),         # filters not a multiple of 8
    (2, 2, 13, 12, 4, 2, 3, (4, 3)),        # 4x3 windows
    (1, 2, 22, 21, 9, 3, 3, (2, 2)),        # CUDA: two 16x16-thread tiles each way, ragged
    (5, 1, 28, 28, 20, 5, 5, (2, 2)),       # network3 conv1, batch below 10
    (10, 1, 28, 28, 20, 5, 5, (2, 2)),      # and at batch 10
    (7, 20, 12, 12, 40, 5, 5, (2, 2)),      # network3 conv2, batch below 10
    (16, 20, 12, 12, 40, 5, 5, (2, 2)),     # and at batch 16
    (3, 7, 11, 10, 6, 3, 4, (2, 3)),        # 84 taps per output, ragged border both ways
    (2, 9, 8, 9, 5, 3, 3, (3, 2)),          # 81 taps, 3-row windows, ragged columns
    (3, 8, 9, 9, 4, 3, 3, (1, 1)),          # 72 taps, no pooling
    # the cpu direct path (>= 64 taps, windows of 1, 2 or 4 positions) with filter
    # counts that leave partial vectors and blocks (8 floats / 4 doubles a vector)
    (3, 5, 13, 12, 9, 4, 4, (2, 2)),        # 80 taps, 9 filters, ragged columns
    (2, 4, 11, 9, 17, 5, 4, (1, 2)),        # 80 taps, 17 filters, 1x2 windows
    (2, 13, 7, 8, 3, 3, 2, (2, 1)),         # 78 taps, 3 filters, 2x1 windows, ragged rows
    (2, 8, 9, 10, 41, 3, 3, (2, 2)),        # 72 taps, 41 filters, ragged rows
    (1, 9, 10, 11, 10, 3, 3, (2, 2)),       # batch 1, 9 channels on the scattered backward
    (2, 8, 13, 14, 3, 2, 2, (6, 6)),        # 36-position windows: argmax past 31 (the
                                            # scattered backward shifted 1 << argmax: wrong)
    (1, 3, 14, 15, 3, 5, 11, (2, 2)),       # filter rows of 11 taps: two vectors, the last
                                            # masked, on the first layer's row backward
]
DENSE_SHAPES = [(1, 7, 3), (3, 13, 5), (7, 13, 5), (5, 33, 37), (3, 10, 70), (10, 640, 100),
                (33, 100, 10), (64, 640, 100),
                # the cpu backend's small-batch kernels (M <= 32): every row-group size,
                # odd widths (masked vector tails), network3's chapter-6 layers, and 33 (BLAS)
                (1, 1000, 1000), (7, 13, 37), (10, 640, 1000), (10, 1000, 1000), (10, 1000, 10),
                (32, 1000, 1000), (32, 13, 37), (33, 1000, 1000), (33, 13, 37), (25, 999, 1001)]
SOFTMAX_SHAPES = [(1, 2), (1, 10), (3, 4), (10, 10), (13, 10), (37, 7), (300, 7), (1024, 10),
                  (3000, 7)]  # the last two: several blocks on a GPU
MOMENTUM_CASES = [  # (momentum, nesterov, decay)
    (0.9, False, 0.0), (0.9, True, 0.0), (0.9, False, 1e-3), (0.5, True, 2e-2),
    (0.0, False, 0.0), (0.0, False, 1e-3),
]
MOMENTUM_SIZES = [1, 37, 1037, 85_670, 200_003, 1_000_003]

# the emulated CUDA backend runs every thread of every block on the CPU: it takes the
# problems up to this many multiply-adds (the rest are covered by the cpu and gpu runs)
EMULATION_MAX_FMAS = 100_000


def conv_shape_id(s):
    return "x".join(map(str, s[:7])) + f"p{s[7][0]}{s[7][1]}"


def conv_fmas(shape):
    n, c, h, w, f, kh, kw, _ = shape
    return n * f * (h - kh + 1) * (w - kw + 1) * c * kh * kw


def rng_for(*key):
    """A reproducible stream per problem: fresh random values, never zeros."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, desired, dtype, what=""):
    """``actual`` (host) within ``RTOL[dtype]`` of ``desired``, relative to its largest value."""
    desired = np.asarray(desired)
    scale = max(float(np.max(np.abs(desired))), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=what)


class Under:
    """A backend under test: its primitives, plus moving test arrays to and from it."""

    def __init__(self, name, impl, xp=np, max_fmas=None):
        self.name, self.impl, self.xp, self.max_fmas = name, impl, xp, max_fmas

    def __getattr__(self, attr):
        return getattr(self.impl, attr)

    def dev(self, a):
        return a if a is None or self.xp is np or not isinstance(a, np.ndarray) else self.xp.asarray(a)

    def host(self, a):
        return a if self.xp is np else self.xp.asnumpy(a)

    def skip_if_too_big(self, fmas):
        if self.max_fmas is not None and fmas > self.max_fmas:
            pytest.skip(f"{self.name}: {fmas} multiply-adds is beyond its limit of {self.max_fmas}")

    def __repr__(self):
        return self.name


def make_backend(name):
    """The :class:`Under` for ``name``, or skip when it cannot run here."""
    if name == "reference":
        return Under(name, ref)
    if name == "cpu":
        from fastmom.backends import cpu
        if cpu.is_available() is not True:
            pytest.skip(f"cpu backend not built: {cpu.is_available()}")
        return Under(name, cpu)
    if name == "emulated-cuda":
        from fastmom.backends import cuda_emulation as ce
        if ce.compiler() is None:
            pytest.skip("no C++ compiler for the CUDA emulation")
        return Under(name, ce.kernels(n_sm=2), max_fmas=EMULATION_MAX_FMAS)
    if name == "gpu":
        from fastmom.backends import cuda
        if cuda.is_available() is not True:
            pytest.skip(f"cuda backend unavailable: {cuda.is_available()}")
        return Under(name, cuda, xp=cuda.xp)
    raise ValueError(name)


#: pytest parameters of the backends: every one, and those compared with the reference
ALL = [pytest.param("reference"), pytest.param("cpu"),
       pytest.param("emulated-cuda"),  # -k "not emulated" deselects it (the sanitizer job)
       pytest.param("gpu", marks=pytest.mark.gpu)]
COMPILED = ALL[1:]
