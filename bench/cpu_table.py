"""One-command CPU benchmark: fastmom ``cpu`` vs ``reference`` vs PyTorch, side by side.

Usage, from the repository root (``python bench/cpu_table.py ...`` works too)::

    python -m bench.cpu_table [--quick] [--threads N] [--isa LEVEL] [--only SECTIONS]
                              [--json out.json] [--markdown out.md]

The header names the instruction-set level the kernels dispatched to (``--isa`` forces a
lower one, as ``FASTMOM_ISA`` does) and the measured sgemm ceiling of this machine on one
core and on all the threads (NumPy's BLAS, float32), the yardstick for the GFLOP/s
columns. Besides network3's two-conv net, the table has network3's best chapter-6 net
(two conv-pool layers, FC 640-1000 and 1000-1000 with dropout 0.5, softmax with dropout)
at batch 10 and 64, and the two-conv net with network3's other activations (sigmoid, its
default, and tanh; against PyTorch in the same process only).

Everything is measured in one process and one run, in interleaved rounds, and reported
as medians with ratios ``cpu / other`` expressed as a speed-up (> 1: cpu is faster).
PyTorch runs with ``torch.set_num_threads`` equal to fastmom's thread count, in NCHW
and channels_last layouts; without torch those columns are skipped with a message.

PyTorch and fastmom share libgomp in that process, and libgomp reads its wait policy
once. Unless the user set one, this script sets ``GOMP_SPINCOUNT=300000``, libgomp's own
default, which is what PyTorch runs with on its own (fastmom's default, 10,000 spins,
exists for shared machines and measures the same on an idle one). As a cross-check
the training step, inference and the momentum step are measured again with PyTorch
alone, in a fresh process that never imports fastmom, and the ratios against that are
reported too (a separate process runs minutes apart, so it sees a different machine:
more noise, no interleaving).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

if __package__:  # python -m bench.cpu_table, or imported (the tests)
    from . import common as C
else:  # python bench/cpu_table.py: Python itself puts bench/ first on the path
    import common as C

#: How this run was started, for the report.
_COMMAND = ["python", "-m", "bench.cpu_table"] if __package__ else ["python", "bench/cpu_table.py"]
#: The directory that holds ``bench/``: ``python -m bench.cpu_table`` runs from there.
ROOT = Path(__file__).resolve().parent.parent

# before fastmom's cpu backend sets its own default at import
_USER_OMP_ENV = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
if not any(_USER_OMP_ENV.values()):
    # libgomp's documented default spin count: PyTorch's policy when it runs alone
    os.environ["GOMP_SPINCOUNT"] = "300000"


#: The table's sections, in order (``--only`` picks some).
SECTIONS = ("kernels", "steps", "chapter6", "activations", "momentum")


def torch_alone(threads, rounds, min_time, sections=SECTIONS):
    """Train/infer medians of PyTorch in a fresh process with its own threading defaults."""
    import subprocess
    env = dict(os.environ)
    for key, value in _USER_OMP_ENV.items():
        if value is None:
            env.pop(key, None)
    cmd = [sys.executable, "-m", "bench.cpu_table", "--torch-alone", "--threads", str(threads),
           "--rounds", str(rounds), "--min-time", str(min_time), "--only", ",".join(sections)]
    return json.loads(subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True,
                                     text=True).stdout)


def _torch_alone_main(threads, rounds, min_time, sections):
    res = {}
    for batch in (10, 64, 256) if "steps" in sections else ():
        train, infer = {}, {}
        for key, cl in (("torch", False), ("torch_cl", True)):
            train[key], infer[key] = C.torch_step(batch, cl, threads)
        res[str(batch)] = {"train": C.measure(train, min_time=min_time * 3, rounds=rounds),
                           "infer": C.measure(infer, min_time=min_time * 3, rounds=rounds)}
    for batch in CHAPTER6_BATCHES if "chapter6" in sections else ():
        train, infer = {}, {}
        for key, cl in (("torch", False), ("torch_cl", True)):
            train[key], infer[key] = torch_chapter6(batch, cl, threads)
        res[f"chapter6 {batch}"] = {"train": C.measure(train, min_time=min_time * 3, rounds=rounds),
                                    "infer": C.measure(infer, min_time=min_time * 3, rounds=rounds)}
    for label, src, _ in _momentum_sizes() if "momentum" in sections else ():
        res[label] = C.measure({"torch_fused": C.torch_momentum_problem(src, fused=True)},
                               min_time=min_time, rounds=rounds)["torch_fused"]
    print(json.dumps(res))


def _momentum_sizes():
    """``(label, shapes or count, parameter count)`` of the momentum-step cases."""
    import math
    shapes = C.network3_param_shapes()
    n3 = sum(math.prod(s) for s in shapes)
    return [(f"{n3:,} (network3 list)", shapes, n3)] + [(lbl, n, n) for lbl, n in
                                                       (("1e5", 10**5), ("1e6", 10**6), ("1e7", 10**7))]


#: the chapter-6 net's batches: network3's 10, and 64
CHAPTER6_BATCHES = (10, 64)
#: network3's best chapter-6 net after its two conv-pool layers (fastmom.models'
#: ``conv-dropout``): the fully connected layers, each dropping its input with p = 0.5
CHAPTER6_DENSE = ((640, 1000), (1000, 1000), (1000, 10))


def chapter6_flops_per_image():
    """``(forward, forward+backward)`` FLOPs per image of the chapter-6 net, counted as
    :func:`bench.common.net_flops_per_image` counts network3's (the first layer has no
    input gradient)."""
    fwd = bwd = 0
    for i, (kind, s) in enumerate(C.ARCH[:2] + [("dense", dict(n_in=a, n_out=b))
                                                for a, b in CHAPTER6_DENSE]):
        f = (C.conv_flops(s["c"], s["h"], s["w"], s["f"], s["k"])[0] if kind == "conv"
             else 2 * s["n_in"] * s["n_out"])
        fwd += f
        bwd += f * (2 if i > 0 else 1)
    return fwd, fwd + bwd


def fastmom_chapter6(batch, seed=0):
    """``(train_step, inference)`` closures of the chapter-6 net on the cpu backend."""
    return C.fastmom_step("cpu", batch, seed, arch="conv-dropout")


def torch_chapter6(batch, channels_last, threads, seed=0):
    """The chapter-6 net in ``torch.nn`` (dropout before each linear layer, as network3's
    layers drop their input), trained with ``torch.optim.SGD``; inference in eval mode."""
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dense = []
    for i, (a, b) in enumerate(CHAPTER6_DENSE):
        dense += [nn.Dropout(0.5), nn.Linear(a, b)] + ([nn.ReLU()] if i < 2 else [])
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), *dense)
    return C.torch_closures(model, batch, channels_last)


def sgemm_ceiling(threads, quick):
    """``{threads: GFLOP/s}`` of NumPy's float32 matrix product (n^3, n = 4096, 2048 with
    ``quick``; median of 3) on one thread and on ``threads``: the most a float32 kernel
    can expect of these cores."""
    import time
    from threadpoolctl import threadpool_limits
    n = 2048 if quick else 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    out = {}
    for nt in sorted({1, threads}):
        with threadpool_limits(limits=nt, user_api="blas"):
            a @ a  # warm-up: threads started, pages touched
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                a @ a
                ts.append(time.perf_counter() - t)
        out[nt] = 2 * n ** 3 / float(np.median(ts)) / 1e9
    return out


def fmt_time(s):
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def speedup(rows, base, other):
    if base not in rows or other not in rows:
        return ""
    return f"{rows[other] / rows[base]:.2f}x"


def best_ratio(r):
    """Speed-up of cpu over the faster PyTorch layout, or '-' without torch."""
    tb = min([r[k] for k in ("torch", "torch_cl") if k in r], default=None)
    return f"{tb / r['cpu']:.2f}x" if tb else "-"


def _sections(text):
    """``--only``'s value: known section names, in the table's order."""
    names = {x.strip() for x in text.split(",") if x.strip()}
    if not names or names - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return tuple(x for x in SECTIONS if x in names)


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and no batch-256 reference")
    ap.add_argument("--threads", type=int, default=None, help="threads for cpu and torch")
    ap.add_argument("--isa", choices=("baseline", "avx2", "avx512"), default=None,
                    help="run the kernels at this instruction-set level (default: the "
                         "highest this CPU runs; FASTMOM_ISA does the same)")
    ap.add_argument("--only", type=_sections, default=SECTIONS, metavar="SECTIONS",
                    help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--torch-alone", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--min-time", type=float, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


class _Table:
    """One benchmark run: its settings, its Markdown lines and its JSON document."""

    def __init__(self, args, argv, threads):
        from fastmom.backends import cpu, reference
        self.cpu, self.reference = cpu, reference
        self.quick, self.threads = args.quick, threads
        self.have_torch = C.torch_available()
        self.rounds = 3 if args.quick else 7
        self.min_time = 0.01 if args.quick else 0.03
        self.out = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "isa": cpu.isa(), "sgemm_ceiling_gflops": sgemm_ceiling(threads, args.quick),
                    "command": " ".join(_COMMAND
                                        + (argv if argv is not None else sys.argv[1:])),
                    "machine": C.machine_description(threads), "kernels": [], "steps": [],
                    "chapter6": [], "activations": [], "momentum": []}
        self.lines = []
        self.p = self.lines.append


def _header(t):
    p, m = t.p, t.out["machine"]
    p(f"# fastmom cpu benchmark ({t.out['date']})\n")
    p(f"- machine: {m['cpu']}, {m['cores_available']} cores available, {t.threads} threads; "
      f"1-min load average at start {m['load_average_1min']}")
    p("- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    p("- thread pools: " + "; ".join(m["threadpools"]))
    p(f"- kernels: instruction-set level **{t.out['isa']}** (this CPU runs "
      f"{', '.join(t.cpu.supported_isas())})")
    ceiling = t.out["sgemm_ceiling_gflops"]
    p(f"- sgemm ceiling (NumPy's float32 matmul, n^3 with n = {2048 if t.quick else 4096}, "
      "median of 3): " + ", ".join(f"**{g:.0f} GFLOP/s** on {nt} thread{'s' if nt > 1 else ''}"
                                   for nt, g in ceiling.items()))
    if m["env"]:
        p(f"- environment: {m['env']}")
    p(f"- command: `{t.out['command']}`")
    if not t.have_torch:
        p("- **torch is not installed: PyTorch columns skipped** (`pip install torch`)")
    p("")


def _kernel_problems(t, batch):
    """``[(name, {impl: fn})]`` of the per-layer kernels at ``batch``."""
    cpu, reference = t.cpu, t.reference
    conv_cfgs = [("conv1", dict(c=1, h=28, w=28, f=20, k=5, pool=2, first=True)),
                 ("conv2", dict(c=20, h=12, w=12, f=40, k=5, pool=2, first=False))]
    problems = []
    for name, cfg in conv_cfgs:
        fc, bc = C.conv_problem(cpu, batch, **cfg)
        fr, br = C.conv_problem(reference, batch, **cfg)
        fwd = {"cpu": fc, "reference": fr}
        bwd = {"cpu": bc, "reference": br}
        if t.have_torch:
            ft, bt = C.torch_conv_problem(batch, **cfg)
            fl, bl = C.torch_conv_problem(batch, channels_last=True, **cfg)
            fwd.update(torch=ft, torch_cl=fl)
            bwd.update(torch=bt, torch_cl=bl)
        problems += [(f"{name} forward", fwd), (f"{name} backward", bwd)]
    fc, bc = C.dense_problem(cpu, batch, 640, 100)
    fr, br = C.dense_problem(reference, batch, 640, 100)
    df, db = {"cpu": fc, "reference": fr}, {"cpu": bc, "reference": br}
    if t.have_torch:
        ft, bt = C.torch_dense_problem(batch, 640, 100)
        df["torch"], db["torch"] = ft, bt
    problems += [("dense 640x100 forward", df), ("dense 640x100 backward", db)]
    sm = {"cpu": C.softmax_problem(cpu, batch), "reference": C.softmax_problem(reference, batch)}
    if t.have_torch:
        sm["torch"] = C.torch_softmax_problem(batch)
    problems.append(("softmax+NLL fwd+bwd (10 classes)", sm))
    return problems


def _kernels(t):
    batch = 64
    p = t.p
    p(f"## Kernels (float32, batch {batch}; median per call; speed-up = other / cpu)\n")
    p("| kernel | cpu | reference | torch NCHW | torch CL | vs reference | vs torch best |")
    p("|---|---|---|---|---|---|---|")
    for name, fns in _kernel_problems(t, batch):
        r = C.measure(fns, min_time=t.min_time, rounds=t.rounds)
        p(f"| {name} | {fmt_time(r['cpu'])} | {fmt_time(r['reference'])} | "
          f"{fmt_time(r['torch']) if 'torch' in r else '-'} | "
          f"{fmt_time(r['torch_cl']) if 'torch_cl' in r else '-'} | "
          f"{r['reference'] / r['cpu']:.2f}x | {best_ratio(r)} |")
        t.out["kernels"].append({"kernel": name, "batch": batch, "seconds": r})


def _steps(t):
    """The full training step and inference at batch 10, 64 and 256."""
    p = t.p
    fwd_flops, step_flops = C.net_flops_per_image()
    p("\n## network3's two-conv ReLU net: training step (forward + backward + momentum update) "
      "and inference\n")
    p(f"FLOPs per image: {fwd_flops / 1e6:.2f} M forward, {step_flops / 1e6:.2f} M forward+backward.\n")
    p("| batch | pass | cpu | reference | torch NCHW | torch CL | cpu img/s | cpu GFLOP/s | "
      "vs reference | vs torch NCHW | vs torch CL | vs torch best |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for batch in (10, 64, 256):
        steps = {"train": {}, "infer": {}}
        for dev in ("cpu", "reference"):
            if dev == "reference" and t.quick and batch == 256:
                continue
            tr, inf = C.fastmom_step(dev, batch)
            steps["train"][dev], steps["infer"][dev] = tr, inf
        if t.have_torch:
            for key, cl in (("torch", False), ("torch_cl", True)):
                tr, inf = C.torch_step(batch, cl, t.threads)
                steps["train"][key], steps["infer"][key] = tr, inf
        for kind, fns in steps.items():
            r = C.measure(fns, min_time=t.min_time * 3, rounds=t.rounds)
            fl = step_flops if kind == "train" else fwd_flops
            cells = [fmt_time(r[k]) if k in r else "-" for k in ("cpu", "reference", "torch", "torch_cl")]
            p(f"| {batch} | {kind} | " + " | ".join(cells) +
              f" | {batch / r['cpu']:.0f} | {batch * fl / r['cpu'] / 1e9:.1f} | "
              f"{speedup(r, 'cpu', 'reference')} | {speedup(r, 'cpu', 'torch')} | "
              f"{speedup(r, 'cpu', 'torch_cl')} | {best_ratio(r)} |")
            t.out["steps"].append({"batch": batch, "pass": kind, "seconds": r,
                                   "images_per_second": {k: batch / v for k, v in r.items()},
                                   "cpu_gflops": batch * fl / r["cpu"] / 1e9})


def _chapter6(t):
    """network3's best chapter-6 net: training step and inference, images/s."""
    p = t.p
    fwd_flops, step_flops = chapter6_flops_per_image()
    top = max(t.out["sgemm_ceiling_gflops"].values())
    p("\n## network3's best chapter-6 net (conv-pool 20, conv-pool 40, FC 640-1000 and "
      "1000-1000 ReLU with dropout 0.5, softmax with dropout)\n")
    p(f"FLOPs per image: {fwd_flops / 1e6:.2f} M forward, {step_flops / 1e6:.2f} M "
      f"forward+backward; '% sgemm': cpu GFLOP/s over the {top:.0f} GFLOP/s ceiling.\n")
    p("| batch | pass | cpu | torch NCHW | torch CL | cpu img/s | torch best img/s | "
      "cpu GFLOP/s | % sgemm | vs torch best |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for batch in CHAPTER6_BATCHES:
        steps = {"train": {}, "infer": {}}
        steps["train"]["cpu"], steps["infer"]["cpu"] = fastmom_chapter6(batch)
        if t.have_torch:
            for key, cl in (("torch", False), ("torch_cl", True)):
                steps["train"][key], steps["infer"][key] = torch_chapter6(batch, cl, t.threads)
        for kind, fns in steps.items():
            r = C.measure(fns, min_time=t.min_time * 3, rounds=t.rounds)
            gflops = batch * (step_flops if kind == "train" else fwd_flops) / r["cpu"] / 1e9
            tb = min([r[k] for k in ("torch", "torch_cl") if k in r], default=None)
            cells = [fmt_time(r[k]) if k in r else "-" for k in ("cpu", "torch", "torch_cl")]
            p(f"| {batch} | {kind} | " + " | ".join(cells) + f" | {batch / r['cpu']:.0f} | "
              f"{f'{batch / tb:.0f}' if tb else '-'} | {gflops:.1f} | {100 * gflops / top:.0f}% | "
              f"{best_ratio(r)} |")
            t.out["chapter6"].append({"batch": batch, "pass": kind, "seconds": r,
                                      "images_per_second": {k: batch / v for k, v in r.items()},
                                      "cpu_gflops": gflops})


#: the activations of the two-conv net's third table, and its batches
SMOOTH_ACTIVATIONS = ("sigmoid", "tanh")
ACTIVATION_BATCHES = (10, 64)


def _activations(t):
    """The two-conv net with sigmoid and tanh instead of ReLU (their cost is the vector
    exponential of kernels/cpu/bias_act.h against PyTorch's own)."""
    p = t.p
    p("\n## network3's two-conv net with its other activations (the three hidden layers)\n")
    p("| activation | batch | pass | cpu | torch NCHW | torch CL | cpu img/s | vs torch best |")
    p("|---|---|---|---|---|---|---|---|")
    for act in SMOOTH_ACTIVATIONS:
        for batch in ACTIVATION_BATCHES:
            steps = {"train": {}, "infer": {}}
            steps["train"]["cpu"], steps["infer"]["cpu"] = C.fastmom_step("cpu", batch, activation=act)
            if t.have_torch:
                for key, cl in (("torch", False), ("torch_cl", True)):
                    steps["train"][key], steps["infer"][key] = C.torch_step(
                        batch, cl, t.threads, activation=act)
            for kind, fns in steps.items():
                r = C.measure(fns, min_time=t.min_time * 3, rounds=t.rounds)
                cells = [fmt_time(r[k]) if k in r else "-" for k in ("cpu", "torch", "torch_cl")]
                p(f"| {act} | {batch} | {kind} | " + " | ".join(cells) +
                  f" | {batch / r['cpu']:.0f} | {best_ratio(r)} |")
                t.out["activations"].append({"activation": act, "batch": batch, "pass": kind,
                                             "seconds": r})


def _against_torch_alone(t, alone):
    p = t.p
    t.out["torch_alone"] = alone
    p("\n### The same, against PyTorch alone (fresh process, libgomp's default spinning)\n")
    p("| net | batch | pass | cpu | torch NCHW alone | torch CL alone | vs torch NCHW | "
      "vs torch CL | vs torch best |")
    p("|---|---|---|---|---|---|---|---|---|")
    rows = [("two-conv", str(st["batch"]), st) for st in t.out["steps"]]
    rows += [("chapter-6", f"chapter6 {st['batch']}", st) for st in t.out["chapter6"]]
    for net, key, st in rows:
        a = alone[key][st["pass"]]
        c = st["seconds"]["cpu"]
        best = min(a.values())
        p(f"| {net} | {st['batch']} | {st['pass']} | {fmt_time(c)} | {fmt_time(a['torch'])} | "
          f"{fmt_time(a['torch_cl'])} | {a['torch'] / c:.2f}x | {a['torch_cl'] / c:.2f}x | "
          f"{best / c:.2f}x |")


def _momentum(t, alone):
    p = t.p
    bw = C.copy_bandwidth()
    t.out["copy_bandwidth_GBps"] = bw
    p("\n## Momentum step (momentum 0.9, weights-only L2; float32; 20 bytes/parameter)\n")
    p(f"Measured copy bandwidth (NumPy copy of 512 MiB, read + write): **{bw:.1f} GB/s**.\n")
    p("| parameters | cpu | reference | torch fused | torch foreach | torch fused alone | cpu GB/s | "
      "torch fused GB/s (alone) | vs reference | vs torch fused | vs torch foreach | vs torch fused alone |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, src, n in _momentum_sizes():
        fns = {"cpu": C.momentum_problem(t.cpu, n), "reference": C.momentum_problem(t.reference, n)}
        if t.have_torch:
            fns["torch_fused"] = C.torch_momentum_problem(src, fused=True)
            fns["torch_foreach"] = C.torch_momentum_problem(src, fused=False)
        r = C.measure(fns, min_time=t.min_time, rounds=t.rounds)
        if alone is not None:
            r["torch_fused_alone"] = alone[label]
        gbs = {k: 20 * n / v / 1e9 for k, v in r.items()}
        p(f"| {label} | {fmt_time(r['cpu'])} | {fmt_time(r['reference'])} | "
          f"{fmt_time(r['torch_fused']) if 'torch_fused' in r else '-'} | "
          f"{fmt_time(r['torch_foreach']) if 'torch_foreach' in r else '-'} | "
          f"{fmt_time(r['torch_fused_alone']) if 'torch_fused_alone' in r else '-'} | {gbs['cpu']:.1f} | "
          f"{gbs.get('torch_fused_alone', float('nan')):.1f} | "
          f"{speedup(r, 'cpu', 'reference')} | {speedup(r, 'cpu', 'torch_fused')} | "
          f"{speedup(r, 'cpu', 'torch_foreach')} | {speedup(r, 'cpu', 'torch_fused_alone')} |")
        t.out["momentum"].append({"params": n, "seconds": r, "GBps": gbs})


def main(argv=None):
    args = _parse(argv)
    if args.torch_alone:  # the child of torch_alone(): no fastmom in this process
        return _torch_alone_main(args.threads, args.rounds, args.min_time, args.only)

    from fastmom.backends import cpu
    if cpu.is_available() is not True:
        sys.exit(f"cpu backend not available: {cpu.is_available()}")
    threads = args.threads or cpu.get_num_threads()
    cpu.set_num_threads(threads)
    if args.isa:
        try:
            cpu.set_isa(args.isa)
        except ValueError as e:
            sys.exit(f"--isa {args.isa}: {e}")
    t = _Table(args, argv, threads)
    _header(t)
    for name, section in (("kernels", _kernels), ("steps", _steps), ("chapter6", _chapter6),
                          ("activations", _activations)):
        if name in args.only:
            section(t)
    alone = torch_alone(threads, t.rounds, t.min_time, args.only) if t.have_torch else None
    if t.have_torch and {"steps", "chapter6"} & set(args.only):
        _against_torch_alone(t, alone)
    if "momentum" in args.only:
        _momentum(t, alone)
    text = "\n".join(t.lines) + "\n"
    C.write_outputs(text, t.out, args.markdown, args.json)


if __name__ == "__main__":
    main()
