# cython: language_level=3
"""Compiled kernels of the ``cpu`` backend (float32/float64 through one fused source).

Every entry point takes arrays that :mod:`fastmom.backends._checks` has already
validated (C-contiguous, matching shapes and dtypes, labels in range): the kernels
index raw pointers without bounds checks. Scratch space comes from the caller (the
backend caches it per shape, dtype and thread count), so nothing here allocates.

Threading: all parallel work runs in OpenMP regions (``prange``) whose iterations are
slices of the work; BLAS calls are made *inside* those regions on a single-threaded
BLAS, so only one thread runtime is ever busy (OpenBLAS's own pthreads would otherwise
spin against libgomp's). The slices are a function of the shapes alone, never of
``nthreads``, and float reductions sum per-slice partials in slice order: every result
is bit-identical for any thread count (the ``cpu`` backend may change the count from
one call to the next, see its module doc).
"""
cimport cython
from cython.parallel cimport prange, threadid
from libc.math cimport exp, expf, log
from libc.string cimport memset, memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef fused real:
    float
    double

ctypedef fused label_t:
    int
    long long

# activation codes: fastmom.activations.CODES (tests/backends/test_interface.py checks)
cdef enum:
    SIGMOID = 0
    TANH = 1
    RELU = 2
    LINEAR = 3


# -- scalar helpers -------------------------------------------------------------------

cdef extern from "rows.h" nogil:
    void fastmom_copy_row_f(float* dst, const float* src, int n)
    void fastmom_copy_row_d(double* dst, const double* src, int n)
    void fastmom_add_row_f(float* dst, const float* src, int n)
    void fastmom_add_row_d(double* dst, const double* src, int n)


cdef extern from "pool.h" nogil:
    float fastmom_dact_f(float y, int act)
    double fastmom_dact_d(double y, int act)


# -- the instruction-set level's kernels (isa.h) ------------------------------------------

cdef extern from "isa.h" nogil:
    enum: FM_ISA_COUNT
    const char* fastmom_isa_names[]
    ctypedef struct fastmom_isa_kernels:
        const char* name
        int forward_vector_bytes
        int (*conv_pool_direct_applies)(int K, int ph, int pw) noexcept nogil
        int (*conv_scatter_applies)(int c, int ph, int pw, int lanes) noexcept nogil
        int (*conv_rows_applies)(int c, int ph, int pw, int lanes, int want_dx) noexcept nogil
        int (*conv_rows_forward_applies)(int c, int ph, int pw, int lanes) noexcept nogil
        long (*conv_rows_forward_scratch)(int c, int h, int kw, int PW, int itemsize) noexcept nogil
        long (*conv_scatter_lists)(int f, long nwin, int ws) noexcept nogil
        void (*pack_filters_f)(const float* w, int f, int K, float* wp) noexcept nogil
        void (*pack_filters_d)(const double* w, int f, int K, double* wp) noexcept nogil
        void (*conv_pool_direct_f)(const float* x, int c, int h, int wd, const float* wp, int f,
                                   int kh, int kw, int ph, int pw, int PH, int PW, float* y,
                                   int* argmax, int ties) noexcept nogil
        void (*conv_pool_direct_d)(const double* x, int c, int h, int wd, const double* wp,
                                   int f, int kh, int kw, int ph, int pw, int PH, int PW,
                                   double* y, int* argmax, int ties) noexcept nogil
        void (*conv_pool_forward_rows_f)(const float* x, int c, int h, int wd, const float* w,
                                         int f, int kh, int kw, int PH, int PW, float* y,
                                         int* argmax, int ties, float* scratch) noexcept nogil
        void (*conv_pool_forward_rows_d)(const double* x, int c, int h, int wd, const double* w,
                                         int f, int kh, int kw, int PH, int PW, double* y,
                                         int* argmax, int ties, double* scratch) noexcept nogil
        void (*pack_filters_cl_f)(const float* w, int f, int c, int kh, int kw, int cp,
                                  float* wt) noexcept nogil
        void (*pack_filters_cl_d)(const double* w, int f, int c, int kh, int kw, int cp,
                                  double* wt) noexcept nogil
        void (*conv_pool_backward_scatter_f)(
            const float* x, int c, int h, int wd, const float* wt, int f, int kh, int kw,
            int ph, int pw, int PH, int PW, const float* dy, const float* y, const int* argmax,
            int act, int ties, float* xt, float* dxt, float* lists, float* dwt, float* db,
            float* dx) noexcept nogil
        void (*conv_pool_backward_scatter_d)(
            const double* x, int c, int h, int wd, const double* wt, int f, int kh, int kw,
            int ph, int pw, int PH, int PW, const double* dy, const double* y,
            const int* argmax, int act, int ties, double* xt, double* dxt, double* lists,
            double* dwt, double* db, double* dx) noexcept nogil
        void (*conv_pool_backward_rows_f)(
            const float* x, int c, int h, int wd, int f, int kh, int kw, int ph, int pw, int PH,
            int PW, const float* dy, const float* y, const int* argmax, int act, int ties,
            float* list, float* dwr, float* db) noexcept nogil
        void (*conv_pool_backward_rows_d)(
            const double* x, int c, int h, int wd, int f, int kh, int kw, int ph, int pw,
            int PH, int PW, const double* dy, const double* y, const int* argmax, int act,
            int ties, double* list, double* dwr, double* db) noexcept nogil
        void (*pool2x2_row_f)(const float* r0, const float* r1, int n, float* m,
                              int* best, int ties) noexcept nogil
        void (*pool2x2_row_d)(const double* r0, const double* r1, int n, double* m,
                              int* best, int ties) noexcept nogil
        float (*unpool2x2_row_f)(const float* dy, const float* y, const int* best, int n,
                                 int act, int ties, float* z0, float* z1) noexcept nogil
        double (*unpool2x2_row_d)(const double* dy, const double* y, const int* best, int n,
                                  int act, int ties, double* z0, double* z1) noexcept nogil
        void (*dense_small_forward_f)(const float* x, int m, int nin, const float* w, int nout,
                                      float scale, int j0, int j1, float* y) noexcept nogil
        void (*dense_small_forward_d)(const double* x, int m, int nin, const double* w,
                                      int nout, double scale, int j0, int j1,
                                      double* y) noexcept nogil
        void (*dense_small_backward_f)(const float* x, int m, int nin, const float* w,
                                       int nout, const float* dz, int k0, int k1, float* dw,
                                       float* dx) noexcept nogil
        void (*dense_small_backward_d)(const double* x, int m, int nin, const double* w,
                                       int nout, const double* dz, int k0, int k1, double* dw,
                                       double* dx) noexcept nogil
        void (*momentum_range_f)(float* p, const float* g, float* v, Py_ssize_t lo,
                                 Py_ssize_t hi, Py_ssize_t n_decay, float eta, float mu,
                                 float decay, int mode) noexcept nogil
        void (*momentum_range_d)(double* p, const double* g, double* v, Py_ssize_t lo,
                                 Py_ssize_t hi, Py_ssize_t n_decay, double eta, double mu,
                                 double decay, int mode) noexcept nogil
        void (*bias_act_f)(float* y, int rows, int cols, Py_ssize_t ld, const float* bias,
                           int per_row, int act) noexcept nogil
        void (*bias_act_d)(double* y, int rows, int cols, Py_ssize_t ld, const double* bias,
                           int per_row, int act) noexcept nogil
    const fastmom_isa_kernels* fastmom_isa_table(int level)
    int fastmom_isa_cpu_runs(int level)


# The level every kernel call uses; each call reads it once, so a switch (select_isa)
# never mixes two levels' paths and workspace sizes within one call.
cdef const fastmom_isa_kernels* _isa = NULL


def isa_levels():
    """``{level: runs}``: the instruction-set levels built into this module, lowest first,
    and whether this CPU runs each (isa.h)."""
    cdef int i
    levels = {}
    for i in range(FM_ISA_COUNT):
        if fastmom_isa_table(i) != NULL:
            levels[fastmom_isa_names[i].decode()] = bool(fastmom_isa_cpu_runs(i))
    return levels


def isa():
    """The instruction-set level the kernels run at (``baseline``, ``avx2`` or ``avx512``)."""
    return _isa.name.decode() if _isa != NULL else None


def select_isa(str name):
    """Run the kernels at level ``name`` from now on (not while a kernel runs). Raises
    ValueError for a level that is unknown, not built into this module, or that this CPU
    cannot run: its code would die of an illegal instruction."""
    global _isa
    cdef int i
    levels = isa_levels()
    if name not in levels:
        raise ValueError(f"unknown or unbuilt instruction-set level {name!r}: this build has "
                         f"{', '.join(levels)}")
    if not levels[name]:
        raise ValueError(f"this CPU cannot run the {name!r} kernels; it runs "
                         f"{', '.join(k for k, ok in levels.items() if ok) or 'none of them'}")
    for i in range(FM_ISA_COUNT):
        if fastmom_isa_names[i].decode() == name:
            _isa = fastmom_isa_table(i)


def _select_best():
    """At import: the highest level this CPU runs (ImportError if none: an x86 CPU
    without x86-64-v2, from before 2009)."""
    best = [k for k, ok in isa_levels().items() if ok]
    if not best:
        raise ImportError("this CPU lacks SSE4.2/POPCNT (x86-64-v2), the baseline of the "
                          "compiled kernels; use device='reference'")
    select_isa(best[len(best) - 1])  # no [-1]: this module compiles without wraparound


_select_best()


cdef inline void _bias_act(const fastmom_isa_kernels* kern, real* y, int rows, int cols,
                           Py_ssize_t ld, real* bias, bint per_row, int act) noexcept nogil:
    """``y = act(y + b)`` on ``rows`` x ``cols`` at ``y`` (row stride ``ld``), ``b`` one bias
    per row (``per_row``: filter planes) or per column (dense): bias_act.h, at the level's
    vector width."""
    if real is float:
        kern.bias_act_f(y, rows, cols, ld, bias, per_row, act)
    else:
        kern.bias_act_d(y, rows, cols, ld, bias, per_row, act)


cdef inline real _dact(real y, int act) noexcept nogil:
    """Derivative of the activation expressed through its output ``y`` (fastmom_dact in pool_impl.h)."""
    if real is float:
        return fastmom_dact_f(y, act)
    else:
        return fastmom_dact_d(y, act)


cdef inline void _gemm(bint ta, bint tb, int m, int n, int k, real alpha, real* a, int lda,
                       real* b, int ldb, real beta, real* c, int ldc) noexcept nogil:
    """Row-major ``C = alpha op(A) op(B) + beta C`` on column-major BLAS.

    A row-major matrix is its transpose in column-major order, so compute
    ``C^T = op(B)^T op(A)^T`` with the operands swapped.
    """
    cdef char ca = b'T' if ta else b'N'
    cdef char cb = b'T' if tb else b'N'
    if m <= 0 or n <= 0:
        return
    if real is float:
        sgemm(&cb, &ca, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)
    else:
        dgemm(&cb, &ca, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc)


# -- convolution + max-pool -------------------------------------------------------------

def forward_vector_bytes():
    """Bytes per vector of the direct forward's tiles at the current level: 32 (AVX2),
    64 (AVX-512, or the AVX2 level of a FASTMOM_EMULATE_AVX512 test build), 0 where the
    level has no direct convolution (conv_direct.h)."""
    return _isa.forward_vector_bytes


def direct_conv_applies(int K, int ph, int pw):
    """Whether :func:`conv_pool_forward` can convolve and pool directly with filters as
    the lanes (conv_direct.h) rather than by im2col + GEMM: the current level has the
    direct kernel (AVX2 + FMA), there are enough taps ``K = C*KH*KW`` (64) and ``ph x pw``
    windows of 1, 2 or 4 positions. :func:`conv_forward_path` is the path it takes."""
    return bool(_isa.conv_pool_direct_applies(K, ph, pw))


# conv_pool_forward's paths (conv_forward_path)
cdef enum:
    FWD_ROWS = 0
    FWD_DIRECT = 1
    FWD_IM2COL = 2

_FORWARD_PATHS = ("rows", "direct", "im2col")


cdef int _forward_path(const fastmom_isa_kernels* kern, int c, int kh, int kw, int ph, int pw,
                       int itemsize) noexcept nogil:
    """The one choice of conv_pool_forward's path: lanes along output rows for few input
    channels (fastmom_conv_pool_forward_rows), else filters as lanes where that applies
    (fastmom_conv_pool_direct), else im2col + GEMM."""
    if kern.conv_rows_forward_applies(c, ph, pw, 32 // itemsize):
        return FWD_ROWS
    if kern.conv_pool_direct_applies(c * kh * kw, ph, pw):
        return FWD_DIRECT
    return FWD_IM2COL


def conv_forward_path(int c, int kh, int kw, int ph, int pw, int itemsize):
    """The path :func:`conv_pool_forward` takes at the current level: ``"rows"`` and
    ``"direct"`` convolve image by image (their results do not depend on the chunk
    size), ``"im2col"`` a chunk of images at a time."""
    return _FORWARD_PATHS[_forward_path(_isa, c, kh, kw, ph, pw, itemsize)]


cdef _forward_sizes(const fastmom_isa_kernels* kern, int c, int h, int wd, int f, int kh,
                    int kw, int ph, int pw, int ib, int itemsize):
    cdef int K = c * kh * kw, lanes = kern.forward_vector_bytes // 4
    cdef int path = _forward_path(kern, c, kh, kw, ph, pw, itemsize)
    if path == FWD_ROWS:
        return kern.conv_rows_forward_scratch(c, h, kw, (wd - kw + 1) // pw, itemsize), 1
    if path == FWD_DIRECT:
        # filters in vectors of `lanes` floats (8, or 16 with AVX-512) or half as many doubles
        return 1, (f + lanes - 1) // lanes * lanes * K
    # im2col columns and the pre-pool map, then one row of window argmaxes (as ints: a
    # real is at least as wide) for inference, which stores none
    return (K + f) * ib * (h - kh + 1) * (wd - kw + 1) + (wd - kw + 1), 1


def conv_forward_sizes(int c, int h, int wd, int f, int kh, int kw, int ph, int pw, int ib,
                       int itemsize):
    """``(scratch, packed)``: the lengths of one thread's row of ``scratch`` and of
    ``packed`` that :func:`conv_pool_forward` needs for these shapes and scalars of
    ``itemsize`` bytes, on the path it will take at the current level (each at least
    1)."""
    return _forward_sizes(_isa, c, h, wd, f, kh, kw, ph, pw, ib, itemsize)


cdef int _check_workspace(str kernel, str name, Py_ssize_t have, Py_ssize_t need) except -1:
    """The kernels index raw pointers into the caller's workspaces: refuse short ones."""
    if have < need:
        raise ValueError(f"{kernel}: {name} holds {have} elements per row, needs {need}")
    return 0


cdef _backward_sizes(const fastmom_isa_kernels* kern, int c, int h, int wd, int f, int kh,
                     int kw, int ph, int pw, int ib, int itemsize, bint want_dx):
    cdef int lanes = 32 // itemsize, K = c * kh * kw
    cdef Py_ssize_t cp = (c + lanes - 1) // lanes * lanes
    cdef Py_ssize_t kwp = (kw + lanes - 1) // lanes * lanes
    cdef Py_ssize_t ncols = <Py_ssize_t>ib * (h - kh + 1) * (wd - kw + 1)
    cdef Py_ssize_t windows = <Py_ssize_t>((h - kh + 1) // ph) * ((wd - kw + 1) // pw) * ph * pw
    if kern.conv_scatter_applies(c, ph, pw, lanes):
        # x and dx channel-last, then the lists
        return (2 * h * wd * cp + kern.conv_scatter_lists(f, windows // (ph * pw), ph * pw),
                f * kh * kw * cp + f, f * kh * kw * cp)
    if kern.conv_rows_applies(c, ph, pw, lanes, want_dx):
        return 3 * windows, f * c * kh * kwp + f, 1
    return (K + f) * ncols, f * K + f, 1


def conv_backward_sizes(int c, int h, int wd, int f, int kh, int kw, int ph, int pw, int ib,
                        int itemsize, bint dx=True):
    """``(scratch, partial, packed)``: the lengths of one thread's row of ``scratch``, one
    group's row of ``partial`` and of ``packed`` that :func:`conv_pool_backward` needs
    for these shapes, with or without the input gradient ``dx``, on the path it will
    take at the current level (``packed`` is at least 1)."""
    return _backward_sizes(_isa, c, h, wd, f, kh, kw, ph, pw, ib, itemsize, dx)


cdef inline void _copy_row(real* dst, real* src, int n) noexcept nogil:
    """``dst[:n] = src[:n]`` for im2col's short rows (see rows.h for why not a loop)."""
    if real is float:
        fastmom_copy_row_f(dst, src, n)
    else:
        fastmom_copy_row_d(dst, src, n)


cdef inline void _add_row(real* dst, real* src, int n) noexcept nogil:
    """``dst[:n] += src[:n]`` for col2im's short rows."""
    if real is float:
        fastmom_add_row_f(dst, src, n)
    else:
        fastmom_add_row_d(dst, src, n)


cdef inline void _im2col(real* x, int cnt, int c, int h, int wd, int kh, int kw,
                         int oh, int ow, real* cols) noexcept nogil:
    """``cols[(ci,k,l), j*OH*OW + i*OW + jj] = x[j, ci, i+k, jj+l]`` for ``cnt`` images."""
    cdef int ci, k, l, j, i
    cdef Py_ssize_t ncols = <Py_ssize_t>cnt * oh * ow
    cdef real* row
    cdef real* src
    cdef real* dst
    for ci in range(c):
        for k in range(kh):
            for l in range(kw):
                row = cols + ((ci * kh + k) * kw + l) * ncols
                for j in range(cnt):
                    src = x + ((<Py_ssize_t>j * c + ci) * h + k) * wd + l
                    dst = row + <Py_ssize_t>j * oh * ow
                    for i in range(oh):
                        _copy_row(dst + i * ow, src + i * wd, ow)


cdef inline void _col2im_add(real* dcols, int cnt, int c, int h, int wd, int kh, int kw,
                             int oh, int ow, real* dx) noexcept nogil:
    """Adjoint of :func:`_im2col`: scatter-add the columns back into ``dx``.

    One image plane at a time (``h x wd``, 576 bytes in network3's conv2), so the 25
    passes of a 5x5 kernel over it hit L1 instead of the whole chunk's ``dx``.
    """
    cdef int ci, k, l, j, i
    cdef Py_ssize_t ncols = <Py_ssize_t>cnt * oh * ow
    cdef real* src
    cdef real* plane
    for j in range(cnt):
        for ci in range(c):
            plane = dx + (<Py_ssize_t>j * c + ci) * h * wd
            for k in range(kh):
                for l in range(kw):
                    src = dcols + ((ci * kh + k) * kw + l) * ncols + <Py_ssize_t>j * oh * ow
                    for i in range(oh):
                        _add_row(plane + (k + i) * wd + l, src + i * ow, ow)


cdef inline void _pool_row(real* zrow, int ow, int ph, int pw, int PW, real* m,
                           int* best, bint ties) noexcept nogil:
    """Max and argmax of one row of ``ph x pw`` windows (``m``, ``best`` of length PW).

    Window positions are visited in row-major order with a strict ``>``, so the first
    maximum wins on ties (the reference's rule). Updates are branch-free: on random
    data a branch mispredicts about half of the compares (it made the forward pass
    3x slower). With ``ties`` (``pool_ties="all"``) ``best`` then becomes the bitmask of
    every position equal to the maximum (the first maximum's bit always set).
    """
    cdef int pj, r, s, idx, gt
    cdef real val
    cdef real* zq
    for pj in range(PW):
        m[pj] = zrow[pj * pw]
        best[pj] = 0
    for r in range(ph):
        for s in range(pw):
            idx = r * pw + s
            zq = zrow + r * ow + s
            # windows innermost: independent lanes the compiler can vectorise
            for pj in range(PW):
                val = zq[pj * pw]
                gt = val > m[pj]
                best[pj] = best[pj] + (idx - best[pj]) * gt
                m[pj] = val if val > m[pj] else m[pj]
    if not ties:
        return
    for pj in range(PW):
        best[pj] = 1 << best[pj]
    for r in range(ph):
        for s in range(pw):
            zq = zrow + r * ow + s
            for pj in range(PW):
                best[pj] = best[pj] | ((zq[pj * pw] == m[pj]) << (r * pw + s))


@cython.cdivision(True)  # all operands are non-negative, where C and Python division agree
def conv_pool_forward(real[:, :, :, ::1] x, real[:, :, :, ::1] w, real[::1] b, int ph, int pw,
                      int act, real[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
                      real[:, ::1] scratch, real[::1] packed, int ib, int nthreads,
                      bint ties=False):
    """Fused valid convolution, max-pool with argmax, bias and activation, per chunk of
    ``ib`` images. With ``ties`` (``pool_ties="all"``) ``argmax`` gets each window's tie
    bitmask instead (see fastmom.backends.reference). ``argmax=None`` is inference: the
    maxima only, nothing stored for a backward pass.

    On the path :func:`conv_forward_path` names: ``"rows"``, each image is convolved
    along its output rows and pooled (conv_direct.h) in ``scratch`` (one row per
    thread); ``"direct"``, convolved and pooled with the filters packed into ``packed``;
    ``"im2col"``, each chunk goes through im2col + GEMM into ``scratch``, then pooling.
    Their lengths: :func:`conv_forward_sizes` (shorter ones raise ValueError). Chunks are
    handed out dynamically, so a thread that the OS deschedules does not hold back the
    others; each chunk's result does not depend on which thread ran it.
    """
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int f = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int oh = h - kh + 1, ow = wd - kw + 1
    cdef int PH = y.shape[2], PW = y.shape[3]
    cdef int K = c * kh * kw, ohow = oh * ow
    cdef Py_ssize_t nc = <Py_ssize_t>ib * ohow
    cdef int nchunks = (n + ib - 1) // ib
    cdef real* xp = &x[0, 0, 0, 0]
    cdef real* wp = &w[0, 0, 0, 0]
    cdef real* bp = &b[0]
    cdef real* yp = &y[0, 0, 0, 0]
    cdef int* ap = NULL if argmax is None else &argmax[0, 0, 0, 0]
    cdef int* arow
    cdef real* sp = &scratch[0, 0]
    cdef real* wpk = &packed[0]
    cdef Py_ssize_t sstride = scratch.shape[1]
    cdef Py_ssize_t img = <Py_ssize_t>c * h * wd, plane = <Py_ssize_t>PH * PW
    cdef const fastmom_isa_kernels* kern = _isa
    cdef int path = _forward_path(kern, c, kh, kw, ph, pw, sizeof(real))
    cdef int ch, cnt, ncols, fi, j, pi
    cdef Py_ssize_t n0, o
    cdef real* cols
    cdef real* xi
    cdef real* z
    cdef real* zr
    s_len, k_len = _forward_sizes(kern, c, h, wd, f, kh, kw, ph, pw, ib, sizeof(real))
    _check_workspace("conv_pool_forward", "scratch", sstride, s_len)
    _check_workspace("conv_pool_forward", "packed", packed.shape[0], k_len)
    if scratch.shape[0] < nthreads:
        raise ValueError(f"conv_pool_forward: scratch has {scratch.shape[0]} rows for {nthreads} threads")
    if path == FWD_DIRECT:
        with nogil:
            if real is float:
                kern.pack_filters_f(wp, f, K, wpk)
            else:
                kern.pack_filters_d(wp, f, K, wpk)
    for ch in prange(nchunks, nogil=True, schedule="dynamic", num_threads=nthreads):
        n0 = <Py_ssize_t>ch * ib
        cnt = <int>min(<Py_ssize_t>ib, n - n0)
        if path == FWD_ROWS:
            for j in range(cnt):
                o = (n0 + j) * f * plane
                if real is float:
                    kern.conv_pool_forward_rows_f(xp + (n0 + j) * img, c, h, wd, wp, f, kh, kw,
                                                  PH, PW, yp + o, NULL if ap == NULL else ap + o,
                                                  ties, sp + threadid() * sstride)
                else:
                    kern.conv_pool_forward_rows_d(xp + (n0 + j) * img, c, h, wd, wp, f, kh, kw,
                                                  PH, PW, yp + o, NULL if ap == NULL else ap + o,
                                                  ties, sp + threadid() * sstride)
                _bias_act(kern, yp + o, f, <int>plane, plane, bp, True, act)
        elif path == FWD_DIRECT:
            for j in range(cnt):
                o = (n0 + j) * f * plane
                if real is float:
                    kern.conv_pool_direct_f(xp + (n0 + j) * img, c, h, wd, wpk, f, kh, kw,
                                            ph, pw, PH, PW, yp + o, NULL if ap == NULL else ap + o,
                                            ties)
                else:
                    kern.conv_pool_direct_d(xp + (n0 + j) * img, c, h, wd, wpk, f, kh, kw,
                                            ph, pw, PH, PW, yp + o, NULL if ap == NULL else ap + o,
                                            ties)
                _bias_act(kern, yp + o, f, <int>plane, plane, bp, True, act)
        else:
            cols = sp + threadid() * sstride
            z = cols + K * nc
            arow = <int*>(z + f * nc)  # the argmaxes of one pooled row, when none are kept
            ncols = cnt * ohow
            _im2col(xp + n0 * img, cnt, c, h, wd, kh, kw, oh, ow, cols)
            _gemm(False, False, f, ncols, K, <real>1, wp, K, cols, ncols, <real>0, z, ncols)
            for fi in range(f):
                for j in range(cnt):
                    zr = z + <Py_ssize_t>fi * ncols + j * ohow
                    o = (((n0 + j) * f + fi) * PH) * PW
                    for pi in range(PH):
                        if ap != NULL:
                            arow = ap + o
                        if ph == 2 and pw == 2:
                            if real is float:
                                kern.pool2x2_row_f(zr + 2 * pi * ow, zr + (2 * pi + 1) * ow,
                                                   PW, yp + o, arow, ties)
                            else:
                                kern.pool2x2_row_d(zr + 2 * pi * ow, zr + (2 * pi + 1) * ow,
                                                   PW, yp + o, arow, ties)
                        else:
                            _pool_row(zr + (pi * ph) * ow, ow, ph, pw, PW, yp + o, arow, ties)
                        o = o + PW
            # each image's f pooled planes at once, as on the direct path
            for j in range(cnt):
                _bias_act(kern, yp + (n0 + j) * f * plane, f, <int>plane, plane, bp, True, act)


cdef inline void _unpool_ties(real* win, int ow, int ph, int pw, int mask, real g) noexcept nogil:
    """``g`` to every position of one window (row stride ``ow``) set in its tie ``mask``."""
    cdef int r, s
    for r in range(ph):
        for s in range(pw):
            if (mask >> (r * pw + s)) & 1:
                win[r * ow + s] = g


@cython.cdivision(True)  # all operands are non-negative, where C and Python division agree
def conv_pool_backward(real[:, :, :, ::1] x, real[:, :, :, ::1] w, real[:, :, :, ::1] y,
                       int[:, :, :, ::1] argmax not None, real[:, :, :, ::1] dy, int ph, int pw, int act,
                       real[:, :, :, ::1] dw, real[::1] db, real[:, :, :, ::1] dx,
                       real[:, ::1] scratch, real[:, ::1] partial, real[::1] packed, int ib,
                       int group, int nthreads, bint ties=False):
    """Gradients of :func:`conv_pool_forward`; ``dx`` may be None (first layer). With
    ``ties`` (``pool_ties="all"``) ``argmax`` holds tie bitmasks and each window's
    gradient goes to every position set in its mask.

    Three paths, chosen by the shapes (conv_direct.h's fastmom_conv_scatter_applies and
    fastmom_conv_rows_applies): with pooling windows of 4 to 32 positions and a vector's
    worth of input channels, each image scatters its windows' gradients from their
    argmax, channel-last (fastmom_conv_pool_backward_scatter; ``packed`` gets the filters
    channel-last); with such windows, fewer channels and no ``dx`` (a first layer), each
    image sums the weight gradient along filter rows over its nonzero windows
    (fastmom_conv_pool_backward_rows); otherwise each chunk of ``ib`` images un-pools
    ``dz`` and runs two GEMMs around an im2col and a col2im. :func:`conv_backward_sizes` gives the lengths of a thread's
    ``scratch`` row, a group's ``partial`` row and ``packed``. Chunks go in groups of
    ``group`` consecutive chunks, run in order by one thread; ``partial`` holds each
    group's ``dw`` (``K x F`` on the GEMM path, ``F x KH x KW x Cp`` scattered,
    ``F x C x KH x KWp`` by rows) and ``db``,
    accumulated over its chunks and summed in group order afterwards, so the result is
    the same bit for bit whatever the thread count and whichever thread ran which group.
    Groups keep the serial sum of partials short at large batches.
    """
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int f = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int oh = h - kh + 1, ow = wd - kw + 1
    cdef int PH = y.shape[2], PW = y.shape[3]
    cdef int K = c * kh * kw, ohow = oh * ow
    cdef Py_ssize_t nc = <Py_ssize_t>ib * ohow
    cdef int nchunks = (n + ib - 1) // ib
    cdef int ngroups = (nchunks + group - 1) // group
    cdef bint want_dx = dx is not None
    cdef bint tiled2x2 = ph == 2 and pw == 2 and oh == 2 * PH and ow == 2 * PW
    cdef int lanes = 32 // sizeof(real)
    cdef const fastmom_isa_kernels* kern = _isa
    cdef bint scatter = kern.conv_scatter_applies(c, ph, pw, lanes)
    cdef bint rows = not scatter and kern.conv_rows_applies(c, ph, pw, lanes, want_dx)
    cdef int cp = (c + lanes - 1) // lanes * lanes
    cdef int kwp = (kw + lanes - 1) // lanes * lanes
    # one group's dw partial: K x F (GEMM path), F x KH x KW x Cp (scattered) or
    # F x C x KH x KWp (by rows)
    cdef Py_ssize_t L = (<Py_ssize_t>f * kh * kw * cp if scatter else
                         <Py_ssize_t>f * c * kh * kwp if rows else <Py_ssize_t>f * K)
    cdef Py_ssize_t plane = <Py_ssize_t>PH * PW
    cdef real* wt = &packed[0]
    cdef real* xp = &x[0, 0, 0, 0]
    cdef real* wp = &w[0, 0, 0, 0]
    cdef real* yp = &y[0, 0, 0, 0]
    cdef int* ap = &argmax[0, 0, 0, 0]
    cdef real* dyp = &dy[0, 0, 0, 0]
    cdef real* dwp = &dw[0, 0, 0, 0]
    cdef real* dbp = &db[0]
    cdef real* dxp = NULL
    cdef real* sp = &scratch[0, 0]
    cdef real* pp = &partial[0, 0]
    cdef Py_ssize_t sstride = scratch.shape[1], pstride = partial.shape[1]
    cdef Py_ssize_t img = <Py_ssize_t>c * h * wd
    cdef int gr, ch, cnt, ncols, fi, j, pi, pj, a
    cdef Py_ssize_t n0, o, q
    cdef real* cols
    cdef real* dz
    cdef real* pdw
    cdef real* pdb
    cdef real* dzr
    cdef real g, gb
    cdef int ar
    s_len, p_len, k_len = _backward_sizes(kern, c, h, wd, f, kh, kw, ph, pw, ib, sizeof(real),
                                          want_dx)
    _check_workspace("conv_pool_backward", "scratch", sstride, s_len)
    _check_workspace("conv_pool_backward", "partial", pstride, p_len)
    _check_workspace("conv_pool_backward", "packed", packed.shape[0], k_len)
    if scratch.shape[0] < nthreads or partial.shape[0] < ngroups:
        raise ValueError(f"conv_pool_backward: scratch has {scratch.shape[0]} rows for "
                         f"{nthreads} threads, partial {partial.shape[0]} for {ngroups} groups")
    if want_dx:
        dxp = &dx[0, 0, 0, 0]
    if scatter:
        with nogil:
            if real is float:
                kern.pack_filters_cl_f(wp, f, c, kh, kw, cp, wt)
            else:
                kern.pack_filters_cl_d(wp, f, c, kh, kw, cp, wt)
    for gr in prange(ngroups, nogil=True, schedule="dynamic", num_threads=nthreads):
        cols = sp + threadid() * sstride
        dz = cols + K * nc
        pdw = pp + gr * pstride
        pdb = pdw + L
        memset(pdb, 0, f * sizeof(real))
        if scatter or rows:  # image by image
            memset(pdw, 0, L * sizeof(real))
            for ch in range(gr * group, min(gr * group + group, nchunks)):
                n0 = <Py_ssize_t>ch * ib
                cnt = <int>min(<Py_ssize_t>ib, n - n0)
                for j in range(cnt):
                    o = (n0 + j) * f * plane
                    xi = xp + (n0 + j) * img
                    # cols: this thread's scratch row, here the list of nonzero windows
                    # (rows) or x and dx channel-last (scattered)
                    if real is float:
                        if rows:
                            kern.conv_pool_backward_rows_f(
                                xi, c, h, wd, f, kh, kw, ph, pw, PH, PW, dyp + o, yp + o, ap + o,
                                act, ties, cols, pdw, pdb)
                        else:
                            kern.conv_pool_backward_scatter_f(
                                xi, c, h, wd, wt, f, kh, kw, ph, pw, PH, PW, dyp + o, yp + o,
                                ap + o, act, ties, cols, cols + h * wd * cp, cols + 2 * h * wd * cp,
                                pdw, pdb,
                                dxp + (n0 + j) * img if want_dx else NULL)
                    else:
                        if rows:
                            kern.conv_pool_backward_rows_d(
                                xi, c, h, wd, f, kh, kw, ph, pw, PH, PW, dyp + o, yp + o, ap + o,
                                act, ties, cols, pdw, pdb)
                        else:
                            kern.conv_pool_backward_scatter_d(
                                xi, c, h, wd, wt, f, kh, kw, ph, pw, PH, PW, dyp + o, yp + o,
                                ap + o, act, ties, cols, cols + h * wd * cp, cols + 2 * h * wd * cp,
                                pdw, pdb,
                                dxp + (n0 + j) * img if want_dx else NULL)
            continue
        for ch in range(gr * group, min(gr * group + group, nchunks)):
            n0 = <Py_ssize_t>ch * ib
            cnt = <int>min(<Py_ssize_t>ib, n - n0)
            ncols = cnt * ohow
            _im2col(xp + n0 * img, cnt, c, h, wd, kh, kw, oh, ow, cols)
            # un-pool dz = dy * act'(y) to each window's argmax; zero elsewhere and on the
            # border (2x2 windows tiling the map write every position: no memset)
            if not tiled2x2:
                memset(dz, 0, <Py_ssize_t>f * ncols * sizeof(real))
            # db accumulates in a local (in the same order): pdb[fi] in memory may alias
            # dzr for the compiler, which forced a store and reload per element
            for fi in range(f):
                gb = pdb[fi]
                for j in range(cnt):
                    dzr = dz + <Py_ssize_t>fi * ncols + j * ohow
                    o = (((n0 + j) * f + fi) * PH) * PW
                    for pi in range(PH):
                        if ph == 2 and pw == 2:
                            if real is float:
                                gb = gb + kern.unpool2x2_row_f(
                                    dyp + o, yp + o, ap + o, PW, act, ties, dzr + 2 * pi * ow,
                                    dzr + (2 * pi + 1) * ow)
                            else:
                                gb = gb + kern.unpool2x2_row_d(
                                    dyp + o, yp + o, ap + o, PW, act, ties, dzr + 2 * pi * ow,
                                    dzr + (2 * pi + 1) * ow)
                            o = o + PW
                            continue
                        for pj in range(PW):
                            g = dyp[o] * _dact(yp[o], act)
                            gb = gb + g
                            a = ap[o]
                            if ties:
                                _unpool_ties(dzr + (pi * ph) * ow + pj * pw, ow, ph, pw, a, g)
                                o = o + 1
                                continue
                            # a shift for the common 2-wide window, not an integer division
                            ar = a >> 1 if pw == 2 else a // pw
                            dzr[(pi * ph + ar) * ow + pj * pw + a - ar * pw] = g
                            o = o + 1
                pdb[fi] = gb
            # the group's dw^T += cols @ dz^T (the group's first chunk overwrites): the
            # transposed product runs ~10% faster in OpenBLAS for conv2's shapes
            _gemm(False, True, K, f, ncols, <real>1, cols, ncols, dz, ncols,
                  <real>(0 if ch == gr * group else 1), pdw, f)
            if want_dx:
                # the column gradient overwrites the columns, which the dw product has
                # consumed: one K x ncols buffer less to keep in cache
                _gemm(True, False, K, ncols, f, <real>1, wp, K, dz, ncols, <real>0, cols, ncols)
                memset(dxp + n0 * img, 0, cnt * img * sizeof(real))
                _col2im_add(cols, cnt, c, h, wd, kh, kw, oh, ow, dxp + n0 * img)
    # sum the groups' partials in group order (deterministic) into the first one, then
    # transpose it into dw; serially, since it costs less than another parallel
    # region's fork/join
    with nogil:
        memcpy(dbp, pp + L, f * sizeof(real))
        for gr in range(1, ngroups):
            pdw = pp + gr * pstride
            pdb = pdw + L
            for q in range(L):
                pp[q] += pdw[q]
            for fi in range(f):
                dbp[fi] += pdb[fi]
        for fi in range(f):
            for a in range(K):
                if scatter:  # a = (ci*kh + k)*kw + l  ->  [(fi*kh + k)*kw + l]*cp + ci
                    q = ((<Py_ssize_t>fi * kh + a % (kh * kw) // kw) * kw + a % kw) * cp + a // (kh * kw)
                elif rows:  # a = (ci*kh + k)*kw + l  ->  ((fi*c + ci)*kh + k)*kwp + l
                    q = (<Py_ssize_t>fi * c * kh + a // kw) * kwp + a % kw
                else:
                    q = <Py_ssize_t>a * f + fi
                dwp[<Py_ssize_t>fi * K + a] = pp[q]


# -- dense --------------------------------------------------------------------------

# Column (forward) and weight-row (backward) slices of the small-batch kernels start at
# multiples of this: whole vector strips at every level.
cdef enum:
    _SMALL_UNIT = 64


cdef inline int _unit_bound(int n, int t, int nslices) noexcept nogil:
    """Start of slice ``t`` of ``nslices`` over ``n`` items in whole units of _SMALL_UNIT."""
    cdef int units = (n + _SMALL_UNIT - 1) // _SMALL_UNIT
    return min(n, _SMALL_UNIT * ((units * t) // nslices))


def dense_small_applies():
    """Whether this level has the small-batch dense kernels (dense_small.h): every level
    built with the GCC/Clang vector extension."""
    return _isa.dense_small_forward_f != NULL


def dense_forward(real[:, ::1] x, real[:, ::1] w, real[::1] b, int act, real[:, ::1] y,
                  double scale, int nslices, int nthreads, bint small=False):
    """``y = act(scale * x @ w + b)``, bias and activation in each slice's epilogue.

    BLAS: one GEMM per slice of rows (``nslices`` slices). ``small`` (a few rows, see
    dense_small.h; ignored where the level lacks the kernels): ``nslices`` slices of
    the columns, each a single pass over its weight columns without packing."""
    cdef const fastmom_isa_kernels* kern = _isa
    cdef int n = x.shape[0], nin = x.shape[1], nout = w.shape[1]
    cdef real* xp = &x[0, 0]
    cdef real* wp = &w[0, 0]
    cdef real* bp = &b[0]
    cdef real* yp = &y[0, 0]
    cdef int t
    cdef Py_ssize_t lo, hi
    if small and kern.dense_small_forward_f != NULL:
        for t in prange(nslices, nogil=True, schedule="static",
                        num_threads=min(nthreads, nslices)):
            lo = _unit_bound(nout, t, nslices)
            hi = _unit_bound(nout, t + 1, nslices)
            if lo < hi:
                if real is float:
                    kern.dense_small_forward_f(xp, n, nin, wp, nout, <float>scale, <int>lo,
                                               <int>hi, yp)
                else:
                    kern.dense_small_forward_d(xp, n, nin, wp, nout, scale, <int>lo, <int>hi, yp)
                _bias_act(kern, yp + lo, n, <int>(hi - lo), nout, bp + lo, False, act)
        return
    for t in prange(nslices, nogil=True, schedule="static", num_threads=min(nthreads, nslices)):
        lo = (<Py_ssize_t>n * t) // nslices
        hi = (<Py_ssize_t>n * (t + 1)) // nslices
        if lo < hi:
            _gemm(False, False, <int>(hi - lo), nout, nin, <real>scale, xp + lo * nin, nin,
                  wp, nout, <real>0, yp + lo * nout, nout)
            _bias_act(kern, yp + lo * nout, <int>(hi - lo), nout, nout, bp, False, act)


def dense_backward(real[:, ::1] x, real[:, ::1] w, real[:, ::1] y, real[:, ::1] dy, int act,
                   real[:, ::1] dw, real[::1] db, real[:, ::1] dx, real[::1] scratch,
                   int nslices, int nthreads, bint small=False):
    """``dz = dy*act'(y)`` into ``scratch``; ``db`` summed over rows in order. BLAS: ``dw``
    split by its rows and ``dx`` by the batch rows into ``nslices`` slices each. ``small``
    (see :func:`dense_forward`): ``nslices`` slices of the weight rows, each computing
    those rows of ``dw`` and columns of ``dx``. No reduction across slices either way."""
    cdef const fastmom_isa_kernels* kern = _isa
    cdef int n = x.shape[0], nin = x.shape[1], nout = w.shape[1]
    cdef bint want_dx = dx is not None
    cdef real* xp = &x[0, 0]
    cdef real* wp = &w[0, 0]
    cdef real* yp = &y[0, 0]
    cdef real* dyp = &dy[0, 0]
    cdef real* dwp = &dw[0, 0]
    cdef real* dbp = &db[0]
    cdef real* dz = &scratch[0]
    cdef real* dxp = NULL
    cdef int t, i, jj
    cdef Py_ssize_t lo, hi, q
    if want_dx:
        dxp = &dx[0, 0]
    with nogil:
        if act == LINEAR:
            memcpy(dz, dyp, <Py_ssize_t>n * nout * sizeof(real))
        else:
            for q in range(<Py_ssize_t>n * nout):
                dz[q] = dyp[q] * _dact(yp[q], act)
        memset(dbp, 0, nout * sizeof(real))
        for i in range(n):
            for jj in range(nout):
                dbp[jj] += dz[<Py_ssize_t>i * nout + jj]
    if small and kern.dense_small_backward_f != NULL:
        for t in prange(nslices, nogil=True, schedule="static",
                        num_threads=min(nthreads, nslices)):
            lo = _unit_bound(nin, t, nslices)
            hi = _unit_bound(nin, t + 1, nslices)
            if lo < hi:
                if real is float:
                    kern.dense_small_backward_f(xp, n, nin, wp, nout, dz, <int>lo, <int>hi,
                                                dwp, dxp)
                else:
                    kern.dense_small_backward_d(xp, n, nin, wp, nout, dz, <int>lo, <int>hi,
                                                dwp, dxp)
        return
    for t in prange(nslices, nogil=True, schedule="static", num_threads=min(nthreads, nslices)):
        lo = (<Py_ssize_t>nin * t) // nslices
        hi = (<Py_ssize_t>nin * (t + 1)) // nslices
        # dw[lo:hi] = x[:, lo:hi]^T @ dz
        if lo < hi:
            _gemm(True, False, <int>(hi - lo), nout, n, <real>1, xp + lo, nin, dz, nout,
                  <real>0, dwp + lo * nout, nout)
        if want_dx:
            lo = (<Py_ssize_t>n * t) // nslices
            hi = (<Py_ssize_t>n * (t + 1)) // nslices
            # dx[lo:hi] = dz[lo:hi] @ w^T
            if lo < hi:
                _gemm(False, True, <int>(hi - lo), nin, nout, <real>1, dz + lo * nout, nout, wp,
                      nout, <real>0, dxp + lo * nin, nin)


def apply_mask(real[::1] x, real[::1] mask, real[::1] out, int nthreads):
    """``out = x * mask`` (flat views; ``out`` may alias ``x``)."""
    cdef Py_ssize_t n = x.shape[0], q
    cdef real* xp = &x[0]
    cdef real* mp = &mask[0]
    cdef real* op = &out[0]
    # below ~64k elements a parallel region costs more than it saves
    if n < 65536:
        nthreads = 1
    for q in prange(n, nogil=True, schedule="static", num_threads=nthreads):
        op[q] = xp[q] * mp[q]


# -- softmax + negative log-likelihood ---------------------------------------------------

def softmax_nll_forward(real[:, ::1] z, label_t[::1] labels, real[:, ::1] probs, bint has_labels):
    """Stable softmax into ``probs``; returns ``(sum of -log p[label], correct count)``.

    ``labels`` is ignored (and may be a dummy) unless ``has_labels``.
    """
    cdef int n = z.shape[0], k = z.shape[1], i, jj, best
    cdef real* zp = &z[0, 0]
    cdef real* pp = &probs[0, 0]
    cdef real* zr
    cdef real* pr
    cdef real zmax, e, s, pbest
    cdef double nll = 0
    cdef long correct = 0
    with nogil:
        for i in range(n):
            zr = zp + <Py_ssize_t>i * k
            pr = pp + <Py_ssize_t>i * k
            zmax = zr[0]
            for jj in range(1, k):
                if zr[jj] > zmax:
                    zmax = zr[jj]
            s = 0
            for jj in range(k):
                if real is float:
                    e = expf(zr[jj] - zmax)
                else:
                    e = exp(zr[jj] - zmax)
                pr[jj] = e
                s = s + e
            for jj in range(k):
                pr[jj] = pr[jj] / s
            if has_labels:
                # log-softmax from the shifted logits: finite even when p underflows
                nll -= (<double>zr[labels[i]] - zmax) - log(<double>s)
                best = 0
                pbest = pr[0]
                for jj in range(1, k):
                    if pr[jj] > pbest:
                        pbest = pr[jj]
                        best = jj
                if best == labels[i]:
                    correct += 1
    return nll, correct


def softmax_nll_backward(real[:, ::1] probs, label_t[::1] labels, real[:, ::1] dz):
    """``dz = (probs - onehot(labels)) / N``."""
    cdef int n = probs.shape[0], k = probs.shape[1], i, jj
    cdef real* pp = &probs[0, 0]
    cdef real* dp = &dz[0, 0]
    with nogil:
        for i in range(n):
            for jj in range(k):
                dp[<Py_ssize_t>i * k + jj] = pp[<Py_ssize_t>i * k + jj]
            dp[<Py_ssize_t>i * k + labels[i]] -= 1
            for jj in range(k):
                dp[<Py_ssize_t>i * k + jj] /= n


# -- optimizer ----------------------------------------------------------------------

cdef enum:
    # elements per momentum-step slice: a multiple of 16 (aligned vectors in every slice),
    # small enough that two threads' contiguous runs of slices come out even (the step
    # takes as long as its slowest thread: 16,384 split network3's 85,670 parameters
    # 57/43, 2,048 splits them 50/50), large enough that a slice's call is noise
    MOMENTUM_SLICE = 2048
    # sum_squares' slices: fixed, so the sum's rounding never depends on the threads
    SUM_SLICES = 16


def momentum_step(real[::1] p, real[::1] g, real[::1] v, double eta, double momentum,
                  bint nesterov, double decay, Py_ssize_t n_decay, int nthreads):
    """One fused in-place momentum-SGD pass (see ``reference.momentum_step``; the loop:
    momentum.h, at the current level); ``v`` is not touched, and may be None, when
    ``momentum == 0``. The caller picks ``nthreads`` (1 for buffers too small to repay
    waking a thread)."""
    cdef const fastmom_isa_kernels* kern = _isa
    cdef Py_ssize_t n = p.shape[0], lo, hi, blk
    cdef Py_ssize_t nslices = (n + MOMENTUM_SLICE - 1) // MOMENTUM_SLICE
    cdef real* pp = &p[0]
    cdef real* gp = &g[0]
    cdef real* vp = NULL
    # momentum.h's FM_MOMENTUM_SGD / _CLASSICAL / _NESTEROV
    cdef int mode = 0 if momentum == 0 else (2 if nesterov else 1)
    if mode:
        vp = &v[0]
    # static schedule: each thread gets one contiguous run of slices
    for blk in prange(nslices, nogil=True, schedule="static", num_threads=nthreads):
        lo = blk * MOMENTUM_SLICE
        hi = min(lo + MOMENTUM_SLICE, n)
        if real is float:
            kern.momentum_range_f(pp, gp, vp, lo, hi, n_decay, <float>eta, <float>momentum,
                                  <float>decay, mode)
        else:
            kern.momentum_range_d(pp, gp, vp, lo, hi, n_decay, eta, momentum, decay, mode)


def sum_squares(real[::1] a, int nthreads):
    """``sum(a**2)`` in double: partials over fixed slices, summed in slice order."""
    cdef Py_ssize_t n = a.shape[0], lo, hi, i
    cdef real* ap = &a[0]
    cdef double part[SUM_SLICES]
    cdef double acc, total = 0
    cdef int t
    for t in prange(SUM_SLICES, nogil=True, schedule="static", num_threads=nthreads):
        lo = (<Py_ssize_t>n * t) // SUM_SLICES
        hi = (<Py_ssize_t>n * (t + 1)) // SUM_SLICES
        acc = 0
        for i in range(lo, hi):
            acc = acc + <double>ap[i] * ap[i]
        part[t] = acc
    for t in range(SUM_SLICES):
        total += part[t]
    return total
