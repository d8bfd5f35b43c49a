/* The type-generic source of momentum.h, instantiated per type by instantiate.h. */

/* One update of p[lo:hi] with the rule `mode` and, where `decayed`, the L2 term
 * decay * p in the gradient; both are literals at every call, so each call compiles to
 * its own branch-free vector loop. */
static inline __attribute__((always_inline)) void FM_NAME(fm_momentum_loop)(
    FM_T *p, const FM_T *g, FM_T *v, ptrdiff_t lo, ptrdiff_t hi, FM_T eta, FM_T mu,
    FM_T decay, const int mode, const int decayed)
{
    for (ptrdiff_t i = lo; i < hi; i++) {
        FM_T ge = decayed ? g[i] + decay * p[i] : g[i];
        if (mode == FM_MOMENTUM_SGD) {
            p[i] = p[i] - eta * ge;
            continue;
        }
        FM_T vi = mu * v[i] - eta * ge;
        v[i] = vi;
        p[i] = p[i] + (mode == FM_MOMENTUM_NESTEROV ? mu * vi - eta * ge : vi);
    }
}

/* The rule `mode` over [lo, hi) with a literal decay flag: the decayed part is
 * [lo, mid), mid = n_decay clamped to the range. */
static inline __attribute__((always_inline)) void FM_NAME(fm_momentum_rule)(
    FM_T *p, const FM_T *g, FM_T *v, ptrdiff_t lo, ptrdiff_t mid, ptrdiff_t hi, FM_T eta,
    FM_T mu, FM_T decay, const int mode)
{
    if (decay != 0)
        FM_NAME(fm_momentum_loop)(p, g, v, lo, mid, eta, mu, decay, mode, 1);
    else
        mid = lo;
    FM_NAME(fm_momentum_loop)(p, g, v, mid, hi, eta, mu, decay, mode, 0);
}

/* One momentum-SGD update of p[lo:hi] (and v[lo:hi] unless mode is FM_MOMENTUM_SGD, where
 * v is not read and may be NULL); the weight decay applies to p[:n_decay]. */
static void FM_NAME(fastmom_momentum_range)(FM_T *p, const FM_T *g, FM_T *v, ptrdiff_t lo,
                                            ptrdiff_t hi, ptrdiff_t n_decay, FM_T eta,
                                            FM_T mu, FM_T decay, int mode)
{
    ptrdiff_t mid = n_decay < lo ? lo : (n_decay > hi ? hi : n_decay);
    if (mode == FM_MOMENTUM_SGD)
        FM_NAME(fm_momentum_rule)(p, g, v, lo, mid, hi, eta, mu, decay, FM_MOMENTUM_SGD);
    else if (mode == FM_MOMENTUM_CLASSICAL)
        FM_NAME(fm_momentum_rule)(p, g, v, lo, mid, hi, eta, mu, decay, FM_MOMENTUM_CLASSICAL);
    else
        FM_NAME(fm_momentum_rule)(p, g, v, lo, mid, hi, eta, mu, decay, FM_MOMENTUM_NESTEROV);
}
