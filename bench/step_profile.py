"""Where a training step's time goes: each cpu-backend call of one step, timed in place.

Usage, from the repository root::

    python -m bench.step_profile [--arch conv|conv-dropout|...] [--batch 10] [--threads 2]

Builds ``fastmom.models.build_layers(arch, batch)`` on the cpu backend with momentum SGD,
runs warm-up steps, then times ``rounds`` rounds of ``steps`` training steps twice: once
plainly (the step's wall time) and once with every primitive of
:mod:`fastmom.backends.cpu` wrapped by a timer (its time per step, keyed by the primitive
and its first argument's last dimension, which tells the layers apart). The wrapped
total exceeds the plain step by the timers' own cost; what is not inside any primitive
is reported as ``other`` (Python, the optimizer's bookkeeping). Medians over rounds for
the step, per-round means for the primitives.
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np

if __package__:  # python -m bench.step_profile, or imported (the tests)
    from . import common as C
else:  # python bench/step_profile.py
    import common as C

#: The backend primitives a training step calls (fastmom.backends' interface).
PRIMITIVES = ("conv_pool_forward", "conv_pool_backward", "dense_forward", "dense_backward",
              "dropout_mask", "apply_mask", "softmax_nll_forward", "softmax_nll_backward",
              "momentum_step")


def _rounds(step, rounds, steps):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        out.append((time.perf_counter() - t) / steps)
    return float(np.median(out))


def profile(arch, batch, rounds=9, steps=40, warmup=30):
    """``(step seconds, {(primitive, last dim): seconds per step}, wrapped step seconds)``."""
    from fastmom.backends import cpu
    step, _ = C.fastmom_step("cpu", batch, arch=arch)
    for _ in range(warmup):
        step()
    plain = _rounds(step, rounds, steps)
    spent = collections.defaultdict(float)
    originals = {name: getattr(cpu, name) for name in PRIMITIVES}

    def timed(name, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name, getattr(args[0], "shape", ("",))[-1]] += time.perf_counter() - t
        return call
    try:
        for name, fn in originals.items():
            setattr(cpu, name, timed(name, fn))
        wrapped = _rounds(step, rounds, steps)
    finally:
        for name, fn in originals.items():
            setattr(cpu, name, fn)
    return plain, {k: v / (rounds * steps) for k, v in spent.items()}, wrapped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="conv", help="a fastmom.models architecture (default: conv)")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="cpu backend threads (default: its own)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=40, help="steps per round")
    args = ap.parse_args(argv)
    from fastmom.backends import cpu_threads
    if args.threads:
        cpu_threads.set_num_threads(args.threads)
    plain, parts, wrapped = profile(args.arch, args.batch, args.rounds, args.steps)
    print(f"{args.arch}, batch {args.batch}, {cpu_threads.get_num_threads()} threads: "
          f"step {plain * 1e6:.0f} us (with the timers {wrapped * 1e6:.0f} us)")
    for (name, dim), sec in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:22s} {str(dim):>8s} {sec * 1e6:9.1f} us")
    print(f"  {'other':22s} {'':>8s} {(wrapped - sum(parts.values())) * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
