"""Data-parallel training: measured throughput on this machine and a scaling model.

Measured (``python bench/distributed.py``): training images/s of network3's conv net
(float32, global mini-batch ``--batch``) for 1 rank x 2 threads against 2 ranks x 1
thread (``mpirun``), the latter with the gradient all-reduce overlapped with the backward
pass (the default: one ``Iallreduce`` per layer segment) and without
(``FASTMOM_MPI_OVERLAP=0``: one ``Allreduce`` of the whole gradient after it), each
configuration ``--repeat`` times interleaved, medians. Per training step of the last
epoch: the gradient communication left on the critical path (without overlap, the whole
all-reduce; with it, the time spent starting and testing the per-layer all-reduces
inside the backward pass plus the wait after it). After training, the time of a
blocking gradient all-reduce (343 KB) and of the cost/Ctrl-C all-reduce (2 doubles).
Both ranks share one machine: this measures shared-memory MPI, not a network.

Modeled (labelled as such in every output): a ring all-reduce of ``b`` bytes over ``N``
nodes takes ``2(N-1)/N * b / bandwidth + 2(N-1) * latency`` (Patarasuk and Yuan,
"Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 2009;
the form NCCL's documentation uses). Against it stands the measured single-process step
time divided by ``N`` (the global batch split N ways, compute assumed to scale
perfectly): efficiency = compute / (compute + all-reduce), no overlap assumed. Link
figures and their sources: :data:`LINKS`.

``--model-only`` skips the measurements (and uses ``--step-ms``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

#: (name, bytes/s per direction, latency s, source). Bandwidths are the links' nominal
#: data rates; the latencies are typical MPI small-message figures, assumptions of the
#: model rather than measurements.
LINKS = [
    ("10 GbE (TCP)", 10e9 / 8, 25e-6,
     "IEEE 802.3ae 10 Gb/s; ~25 us: typical kernel-TCP MPI latency (assumed)"),
    ("25 GbE (RoCE)", 25e9 / 8, 3e-6,
     "IEEE 802.3by 25 Gb/s; ~3 us: typical RDMA-over-Ethernet latency (assumed)"),
    ("100 Gb/s InfiniBand EDR", 100e9 / 8, 1.5e-6,
     "InfiniBand EDR 100 Gb/s; ~1.5 us MPI latency (assumed, vendor class figure)"),
    ("NVLink 4 (H100)", 450e9, 3e-6,
     "NVIDIA H100 datasheet: 900 GB/s NVLink, i.e. 450 GB/s per direction; ~3 us NCCL "
     "launch-bound latency (assumed)"),
]
#: Gradient bytes (float32) of the two nets the issue names.
NETS = {"network3 conv net": 85_670 * 4, "chapter-6 best net (conv-dropout)": 1_672_570 * 4}
NODES = [2, 4, 8, 16, 32, 64, 128, 256]
#: Seconds of gradient communication in one step beyond which the step counts as stalled:
#: a 343 KB all-reduce in shared memory takes ~0.1-0.2 ms, so a longer wait is for a peer
#: that the operating system had descheduled.
STALL = 2e-3


def ring_allreduce_seconds(n, nbytes, bandwidth, latency):
    """The model: ``2(N-1)/N * bytes / bandwidth + 2(N-1) * latency``."""
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


# -- measurements (one process of a configuration) -----------------------------------------

def worker(args):
    """Train, then time all-reduces; rank 0 prints one JSON line."""
    from fastmom import Network, distributed
    from fastmom.backends import get_backend
    from fastmom.data import load_sample
    from fastmom.models import build_layers
    from fastmom.train import Trainer
    get_backend("cpu").set_num_threads(args.threads)
    (x, y), _, _ = load_sample()
    n = (args.images // args.batch) * args.batch
    net = Network(build_layers(args.net, args.batch), args.batch, device="cpu", seed=0)
    trainer = Trainer(net, eta=0.01, momentum=0.9, progress=False, seed=1)
    comm = _time_communication(trainer)
    hist = trainer.fit((x[:n], y[:n]), args.epochs)
    world = distributed.init()
    grad, scalars = net.flat.grad, np.zeros(2)
    times = {"gradient": [], "cost": []}
    for _ in range(args.reduces):
        for name, buf in (("gradient", grad), ("cost", scalars)):
            world.barrier()
            t0 = time.perf_counter()
            world.allreduce_sum(buf)
            times[name].append(time.perf_counter() - t0)
    if world.rank == 0:
        last = n // args.batch  # the steps of the last epoch (the first pays for warm-up)
        step_us = {k: 1e6 * float(np.median(v[-last:])) for k, v in comm.items()} if comm else None
        if comm:  # steps that waited for a descheduled peer (a loaded machine), not for bytes
            step_us["stalled_fraction"] = float(np.mean(np.array(comm["total"][-last:]) > STALL))
        print(json.dumps({"world_size": world.size, "threads": args.threads,
                          "overlap": distributed.overlap_enabled() and world.size > 1,
                          "images_per_second": [r["images_per_second"] for r in hist],
                          "allreduce_us": {k: 1e6 * float(np.median(v)) for k, v in times.items()},
                          "step_comm_us": step_us, "grad_bytes": int(grad.nbytes)}))


def _time_communication(trainer):
    """Record, per training step, the seconds the gradient all-reduce takes after the
    backward pass (``wait``) and, with overlap, the seconds spent in the per-layer hook
    during it (``hook``: starting and testing the ``Iallreduce``); None on one process.
    Wraps the trainer's strategy: a benchmark's instrument, not the library's."""
    from fastmom.train.parallel import DataParallel
    dp = trainer._dp
    if not isinstance(dp, DataParallel):
        return None
    record, hook = {"wait": [], "hook": [], "total": []}, [0.0]
    reduce = dp.reduce

    def timed_reduce(cost, sigint):
        before = dp.gradient_wait
        out = reduce(cost, sigint)
        record["wait"].append(dp.gradient_wait - before)
        record["hook"].append(hook[0])
        record["total"].append(hook[0] + record["wait"][-1])
        hook[0] = 0.0
        return out

    dp.reduce = timed_reduce
    if dp.overlap is not None:
        dp.overlap = _TimedOverlap(dp.overlap, hook)
    return record


class _TimedOverlap:
    """An :class:`~fastmom.train.parallel.Overlap` whose hook calls add their seconds to
    ``hook[0]``."""

    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook
        self.layout = inner.layout

    def __call__(self, i):
        t0 = time.perf_counter()
        self.inner(i)
        self.hook[0] += time.perf_counter() - t0

    def arm(self):
        self.inner.net.gradient_ready = self  # the inner hook disarms itself after layer 0

    def disarm(self):
        self.inner.disarm()

    def finish(self):
        self.inner.finish()


def run_config(ranks, threads, args, overlap=True):
    base = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads),
            "--batch", str(args.batch), "--images", str(args.images), "--epochs", str(args.epochs),
            "--net", args.net]
    env = dict(os.environ, FASTMOM_MPI_OVERLAP="1" if overlap else "0")
    if ranks == 1:
        env["FASTMOM_DISTRIBUTED"] = "0"
        cmd = base
    else:
        cmd = [shutil.which("mpirun"), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
               "-np", str(ranks), *base]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


#: The measured configurations: key -> (ranks, threads, overlap).
CONFIGS = {"1x2": (1, 2, False), "2x1": (2, 1, True), "2x1 no overlap": (2, 1, False)}


def measure(args):
    results = {key: [] for key in CONFIGS}
    for _ in range(args.repeat):  # interleaved: a burst of load hits all alike
        for key, (ranks, threads, overlap) in CONFIGS.items():
            results[key].append(run_config(ranks, threads, args, overlap))
    summary = {}
    for key, runs in results.items():
        # the last epoch of each run (the first pays for warm-up), median over runs
        ips = [r["images_per_second"][-1] for r in runs]
        summary[key] = {"images_per_second": float(np.median(ips)), "runs": ips,
                        "allreduce_us": {k: float(np.median([r["allreduce_us"][k] for r in runs]))
                                         for k in runs[0]["allreduce_us"]}}
        if runs[0]["step_comm_us"]:
            summary[key]["step_comm_us"] = {k: float(np.median([r["step_comm_us"][k] for r in runs]))
                                            for k in runs[0]["step_comm_us"]}
            summary[key]["step_comm_runs_us"] = [r["step_comm_us"]["total"] for r in runs]
    return summary


def print_measured(measured):
    for key, r in measured.items():
        ranks, threads, _ = CONFIGS[key]
        comm = r.get("step_comm_us")
        per_step = (f"; per step, gradient communication on the critical path {comm['total']:.0f} us "
                    f"(in the backward pass {comm['hook']:.0f} us + wait after it {comm['wait']:.0f} us; "
                    f"{100 * comm['stalled_fraction']:.0f}% of steps over {1e3 * STALL:g} ms)" if comm else "")
        print(f"MEASURED {key}: {ranks} rank(s) x {threads} thread(s): {r['images_per_second']:.0f} images/s "
              f"(runs {', '.join(f'{v:.0f}' for v in r['runs'])}); blocking all-reduce: gradient "
              f"{r['allreduce_us']['gradient']:.0f} us, cost {r['allreduce_us']['cost']:.0f} us{per_step}")


# -- the model ---------------------------------------------------------------------------

def model_rows(step_seconds):
    """Rows ``(net, link, N, all-reduce ms, efficiency)`` for ``step_seconds`` per net."""
    rows = []
    for net, nbytes in NETS.items():
        for link, bw, lat, _ in LINKS:
            for n in NODES:
                t = ring_allreduce_seconds(n, nbytes, bw, lat)
                compute = step_seconds[net] / n
                rows.append((net, link, n, 1e3 * t, compute / (compute + t)))
    return rows


def model_table(rows):
    head = "| net | link | " + " | ".join(f"N={n}" for n in NODES) + " |"
    lines = ["MODEL (not measured): all-reduce ms per step / parallel efficiency", head,
             "|---|---|" + "---|" * len(NODES)]
    for net in NETS:
        for link, *_ in LINKS:
            cells = [f"{ms:.3g} / {100 * eff:.0f}%" for (nt, lk, n, ms, eff) in rows if nt == net and lk == link]
            lines.append(f"| {net} | {link} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, net in zip(axes, NETS):
        for link, *_ in LINKS:
            pts = [(n, eff) for (nt, lk, n, _, eff) in rows if nt == net and lk == link]
            ax.plot(*zip(*pts), marker="o", label=link)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes N")
        ax.set_title(f"{net} (MODEL)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("parallel efficiency (modeled)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--net", default="conv")
    ap.add_argument("--batch", type=int, default=10, help="global mini-batch (default: network3's 10)")
    ap.add_argument("--images", type=int, default=2000, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reduces", type=int, default=200, help="all-reduces timed per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--step-ms", type=float, nargs=2, default=None, metavar=("CONV", "BEST"),
                    help="single-process step times (ms) of the two nets for the model")
    ap.add_argument("--plot", default="bench/results/distributed-model.png")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.model_only and args.step_ms is None:
        ap.error("--model-only needs --step-ms CONV BEST (the step times it would otherwise measure)")
    out = {}
    if not args.model_only:
        out["measured"] = measure(args)
        print_measured(out["measured"])
    if args.step_ms is None:
        best = run_config(1, 2, argparse.Namespace(**dict(vars(args), net="conv-dropout", images=500)))
        out["measured"]["conv-dropout 1x2"] = {"images_per_second": best["images_per_second"][-1]}
        print(f"MEASURED conv-dropout, 1 rank x 2 threads: {best['images_per_second'][-1]:.0f} images/s")
        args.step_ms = [1e3 * args.batch / out["measured"][k]["images_per_second"] for k in ("1x2", "conv-dropout 1x2")]
    step_ms = args.step_ms
    step = dict(zip(NETS, (1e-3 * s for s in step_ms)))
    rows = model_rows(step)
    print(f"\nstep time used by the model: {', '.join(f'{k} {1e3 * v:.2f} ms' for k, v in step.items())}")
    print(model_table(rows))
    for link, bw, lat, source in LINKS:
        print(f"- {link}: {bw * 8 / 1e9:g} Gb/s per direction, {1e6 * lat:g} us: {source}")
    out["model"] = {"rows": rows, "links": LINKS, "step_seconds": step}
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
