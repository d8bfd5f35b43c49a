"""Argument checks shared by every backend's kernel wrappers.

Compiled kernels index raw memory without bounds checks, so each backend's wrapper of a
primitive first calls the function of the same name here (``_checks.conv_pool_forward``
for ``conv_pool_forward``, ...): it raises ``TypeError`` for a wrong dtype and
``ValueError`` for a wrong shape, a non-contiguous array or a bad value, naming the
argument, before any ``nogil`` or CUDA code runs. This is the one place where the
kernels' shape contracts are written down.
"""
from __future__ import annotations

import math
import numbers

from ..activations import CODES as _ACTIVATION_CODES

# the kernels index with C ints: anything this large would wrap around
MAX_ELEMENTS = 2**31 - 1

ACTIVATION_NAMES = tuple(sorted(_ACTIVATION_CODES, key=_ACTIVATION_CODES.get))
FLOAT_DTYPES = ("float32", "float64")


def array(name, a, ndim, dtype=None, shape=None, xp=None):
    """Check one array argument and return its dtype name.

    This runs before every kernel call, so it sticks to cheap attribute reads
    (``flags.c_contiguous``, a cached dtype name): well under a microsecond per array.
    """
    if xp is not None and not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__}.ndarray, got {type(a).__name__}")
    try:
        a_ndim, a_shape, dt, contiguous = a.ndim, a.shape, _dtype_name(a.dtype), a.flags.c_contiguous
    except AttributeError:
        raise TypeError(f"{name} must be an array, got {type(a).__name__}") from None
    if a_ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a_shape)}")
    if dtype is not None and dt != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {dt}")
    if shape is not None and tuple(a_shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a_shape)}")
    if not contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    size = a.size
    if size == 0 and name != "labels":
        raise ValueError(f"{name} must not be empty, got shape {tuple(a_shape)}")
    if size > MAX_ELEMENTS:
        raise ValueError(f"{name} has {size} elements, more than the kernels' limit of {MAX_ELEMENTS}")
    return dt


_DTYPE_NAMES = {}


def _dtype_name(dt):
    """``dt.name``, cached: NumPy 2 computes ``dtype.name`` in Python (about 2 us, as
    much as a small kernel), and every kernel call checks several arrays. A dtype in
    non-native byte order gets a name no kernel accepts (the kernels read native floats)."""
    try:
        name = _DTYPE_NAMES.get(dt)
    except TypeError:  # an unhashable stand-in for a dtype: not an array we can take
        raise AttributeError("dtype") from None
    if name is None:
        name = dt.name if dt.isnative else f"{dt.name} in non-native byte order ({dt.str!r})"
        if len(_DTYPE_NAMES) < 64:  # hostile input could otherwise grow it without bound
            _DTYPE_NAMES[dt] = name
    return name


def float_array(name, a, ndim, dtype=None, shape=None, xp=None):
    dt = array(name, a, ndim, dtype, shape, xp)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def activation(act):
    if act not in ACTIVATION_NAMES:
        raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got {act!r}")


def keep_probability(keep):
    if not (0 < keep <= 1):
        raise ValueError(f"keep probability must be in (0, 1], got {keep!r}")


def pool(poolsize):
    # the layers pass a tuple of two ints on every call: checked without the numbers ABC
    # (its isinstance checks made this 1.7 us, ten calls a training step)
    if type(poolsize) is tuple and len(poolsize) == 2:
        ph, pw = poolsize
        if type(ph) is int and type(pw) is int and ph >= 1 and pw >= 1:
            return ph, pw
    try:
        ph, pw = poolsize
    except (TypeError, ValueError):
        raise ValueError(f"poolsize must be a pair of positive ints, got {poolsize!r}") from None
    if not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in (ph, pw)):
        raise ValueError(f"poolsize must be a pair of positive ints, got {poolsize!r}")
    ph, pw = int(ph), int(pw)
    if ph < 1 or pw < 1:
        raise ValueError(f"poolsize must be positive, got {poolsize!r}")
    return ph, pw


def conv_pool_geometry(x_shape, w_shape, poolsize):
    """Return ``(N, C, H, W, F, KH, KW, OH, OW, PH, PW)`` for a valid conv + max-pool."""
    n, c, h, wd = x_shape
    f, cw, kh, kw = w_shape
    if cw != c:
        raise ValueError(f"w has {cw} input channels but x has {c}")
    if kh > h or kw > wd:
        raise ValueError(f"filter {kh}x{kw} is larger than the {h}x{wd} image")
    ph, pw = pool(poolsize)
    oh, ow = h - kh + 1, wd - kw + 1
    if oh // ph < 1 or ow // pw < 1:
        raise ValueError(f"poolsize {ph}x{pw} is larger than the {oh}x{ow} convolution output")
    return n, c, h, wd, f, kh, kw, oh, ow, oh // ph, ow // pw


#: The max-pool tie rules (see reference.conv_pool_backward).
POOL_TIES = ("first", "all")
#: With ``pool_ties="all"`` the argmax array holds a bitmask of the window's positions in
#: an int32: windows of at most 31 positions (network3 pools 2x2)
TIE_MASK_POSITIONS = 31


def tie_rule(rule, poolsize):
    """Check a max-pool tie rule for ``poolsize`` windows; return True for ``"all"``."""
    if rule not in POOL_TIES:
        raise ValueError(f"pool_ties must be one of {POOL_TIES}, got {rule!r}")
    if rule == "all" and _checked_pool_size(poolsize) > TIE_MASK_POSITIONS:
        raise ValueError(f"pool_ties='all' records ties as an int32 bitmask: windows of at most "
                         f"{TIE_MASK_POSITIONS} positions, got {poolsize!r}")
    return rule == "all"


def conv_pool_forward(x, w, b, poolsize, act, y, argmax, pool_ties="first", xp=None):
    dt = float_array("x", x, 4, xp=xp)
    float_array("w", w, 4, dt, xp=xp)
    n, c, h, wd, f, kh, kw, oh, ow, ph, pw = conv_pool_geometry(x.shape, w.shape, poolsize)
    float_array("b", b, 1, dt, (f,), xp=xp)
    activation(act)
    float_array("y", y, 4, dt, (n, f, ph, pw), xp=xp)
    if argmax is not None:  # None: inference, no record for a backward pass
        array("argmax", argmax, 4, "int32", (n, f, ph, pw), xp=xp)
    tie_rule(pool_ties, poolsize)
    return n, c, h, wd, f, kh, kw, oh, ow, ph, pw


def conv_pool_backward(x, w, y, argmax, dy, poolsize, act, dw, db, dx, pool_ties="first",
                       xp=None):
    dt = float_array("x", x, 4, xp=xp)
    float_array("w", w, 4, dt, xp=xp)
    n, c, h, wd, f, kh, kw, oh, ow, ph, pw = conv_pool_geometry(x.shape, w.shape, poolsize)
    activation(act)
    float_array("y", y, 4, dt, (n, f, ph, pw), xp=xp)
    array("argmax", argmax, 4, "int32", (n, f, ph, pw), xp=xp)
    float_array("dy", dy, 4, dt, (n, f, ph, pw), xp=xp)
    float_array("dw", dw, 4, dt, w.shape, xp=xp)
    float_array("db", db, 1, dt, (f,), xp=xp)
    if dx is not None:
        float_array("dx", dx, 4, dt, x.shape, xp=xp)
    window = _checked_pool_size(poolsize)
    ties_all = tie_rule(pool_ties, poolsize)
    if _on_host(argmax):  # device arrays: the kernel guards itself (a check here would sync)
        lo, hi = int(argmax.min()), int(argmax.max())
        if ties_all and (lo < 1 or hi >= 1 << window):
            raise ValueError(f"with pool_ties='all' argmax must hold bitmasks in [1, {1 << window}) "
                             f"(tied positions of a {poolsize} window), got values in [{lo}, {hi}]")
        if not ties_all and (lo < 0 or hi >= window):
            raise ValueError(f"argmax must be in [0, {window}) (positions in a {poolsize} window), "
                             f"got values in [{lo}, {hi}]")
    return n, c, h, wd, f, kh, kw, oh, ow, ph, pw


def _checked_pool_size(poolsize):
    ph, pw = pool(poolsize)
    return ph * pw


def _on_host(a):
    return type(a).__module__.split(".")[0] == "numpy"


def finite(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def dense_forward(x, w, b, act, y, scale=1.0, xp=None):
    finite("scale", scale)
    dt = float_array("x", x, 2, xp=xp)
    n, n_in = x.shape
    float_array("w", w, 2, dt, xp=xp)
    if w.shape[0] != n_in:
        raise ValueError(f"w has {w.shape[0]} rows but x has {n_in} columns")
    n_out = w.shape[1]
    float_array("b", b, 1, dt, (n_out,), xp=xp)
    activation(act)
    float_array("y", y, 2, dt, (n, n_out), xp=xp)
    return n, n_in, n_out


def dense_backward(x, w, y, dy, act, dw, db, dx, xp=None):
    n, n_in, n_out = dense_forward(x, w, db, act, y, xp=xp)
    dt = _dtype_name(x.dtype)  # cached: str(dtype) costs microseconds on NumPy 2
    float_array("dy", dy, 2, dt, (n, n_out), xp=xp)
    float_array("dw", dw, 2, dt, (n_in, n_out), xp=xp)
    if dx is not None:
        float_array("dx", dx, 2, dt, (n, n_in), xp=xp)
    return n, n_in, n_out


def apply_mask(x, mask, out, xp=None):
    dt = float_array("x", x, x.ndim if hasattr(x, "ndim") else 1, xp=xp)
    float_array("mask", mask, x.ndim, dt, x.shape, xp=xp)
    float_array("out", out, x.ndim, dt, x.shape, xp=xp)


def softmax_nll_forward(z, labels, probs, xp=None):
    dt = float_array("z", z, 2, xp=xp)
    n, k = z.shape
    float_array("probs", probs, 2, dt, (n, k), xp=xp)
    if labels is not None:
        labels_array(labels, n, xp=xp)
    return n, k


def softmax_nll_backward(probs, labels, dz, xp=None):
    dt = float_array("probs", probs, 2, xp=xp)
    n, k = probs.shape
    labels_array(labels, n, xp=xp)
    float_array("dz", dz, 2, dt, (n, k), xp=xp)
    return n, k


def labels_array(labels, n, xp=None):
    dt = array("labels", labels, 1, xp=xp)
    if dt not in ("int32", "int64"):
        raise TypeError(f"labels must be int32 or int64, got {dt}")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")


def momentum_step(p, g, v, eta, momentum, nesterov, decay, n_decay, xp=None):
    dt = float_array("p", p, 1, xp=xp)
    float_array("g", g, 1, dt, p.shape, xp=xp)
    if momentum != 0:
        if v is None:
            raise ValueError("v (velocity) is required when momentum != 0")
        float_array("v", v, 1, dt, p.shape, xp=xp)
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be > 0 and finite, got {eta!r}")
    if not (0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (decay >= 0 and math.isfinite(decay)):
        raise ValueError(f"decay must be >= 0 and finite, got {decay!r}")
    if not (0 <= n_decay <= p.shape[0]):
        raise ValueError(f"n_decay must be in [0, {p.shape[0]}], got {n_decay!r}")


def labels_range(labels, k):
    """Labels index the class axis: out of range would read outside ``probs``."""
    # one reduction: viewed as unsigned, a negative label is larger than any k
    unsigned = labels.view(f"u{labels.dtype.itemsize}")
    if labels.shape[0] and int(unsigned.max()) >= k:
        raise ValueError(
            f"labels must be in [0, {k}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
