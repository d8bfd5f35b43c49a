"""GPU benchmarks of the cuda backend next to PyTorch, measured in one run.

Run ``python -m bench.gpu_table --out DIR`` (from the repository root): writes ``gpu_table.md`` and
``gpu_table.json`` (medians of device-event timings, ratios, GPU name, date).

* each layer pass and the full training step of network3's two-conv ReLU net
  (Conv 20x1x5x5 on 28x28 pool 2, Conv 40x20x5x5 on 12x12 pool 2, FC 640->100,
  Softmax 100->10) at batch 10, 64, 256, 1024: fastmom ``cuda`` (eager and, when it
  captures, a CUDA graph of the step) vs PyTorch eager (cuDNN) and ``torch.compile``;
  images/s;
* the momentum step on 1e7 and 1e8 float32 parameters in GB/s (20 bytes per
  parameter: read p, g, v; write p, v) next to the device-to-device ``cudaMemcpy``
  bandwidth (bytes read + written) and ``torch.optim.SGD(momentum=0.9, fused=True)``.

The backward rows time the backward pass alone (PyTorch: ``autograd.grad`` over a graph
built once and retained). TF32 is reported, never changed: CuPy's cuBLAS uses it for
float32 products only with ``CUPY_TF32=1``; PyTorch's switches are read from
``torch.backends`` (cuDNN convolutions allow TF32 by default).
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import traceback

import numpy as np

BATCHES = (10, 64, 256, 1024)


def timed(fn, reps, warmup=3):
    """Median milliseconds of ``fn()`` by CUDA events (CuPy's current stream)."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    out = []
    for _ in range(reps):
        a, b = cupy.cuda.Event(), cupy.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(cupy.cuda.get_elapsed_time(a, b))
    return statistics.median(out)


def timed_torch(fn, reps, warmup=3):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


# -- fastmom ----------------------------------------------------------------------------

def fastmom_net(batch):
    from fastmom import Network
    from fastmom.models import conv_layers

    return Network(conv_layers(batch), batch, device="cuda", dtype=np.float32, seed=0)


def fastmom_cases(batch, reps):
    import cupy

    from fastmom import MomentumSGD

    net = fastmom_net(batch)
    opt = MomentumSGD(net, 0.03, 0.9)
    r = np.random.default_rng(0)
    x = cupy.asarray(r.random((batch, 784), dtype=np.float32))
    y = cupy.asarray(r.integers(0, 10, batch))
    c1, c2, fc, sm = net.layers
    x4 = x.reshape(batch, 1, 28, 28)
    a1 = c1.forward(x4, True)
    a2 = c2.forward(a1, True)
    a3 = fc.forward(a2, True)
    sm.forward(a3, True, y)
    d3 = sm.backward()
    d2 = fc.backward(d3)
    dy2 = cupy.asarray(r.standard_normal(a2.shape, dtype=np.float32))
    dy1 = cupy.asarray(r.standard_normal(a1.shape, dtype=np.float32))
    res = {
        "conv1 forward": timed(lambda: c1.forward(x4, True), reps),
        "conv1 backward": timed(lambda: c1.backward(dy1), reps),
        "conv2 forward": timed(lambda: c2.forward(a1, True), reps),
        "conv2 backward": timed(lambda: c2.backward(dy2), reps),
        "fc forward+backward": timed(lambda: (fc.forward(a2, True), fc.backward(d3)), reps),
        "softmax forward+backward": timed(lambda: (sm.forward(a3, True, y), sm.backward()), reps),
        "momentum step": timed(opt.step, reps),
    }
    del d2

    def step():
        net.train_step(x, y)
        opt.step()

    res["training step"] = timed(step, reps)
    res["training step (CUDA graph)"] = _graph_time(step, reps)
    return res


def _graph_time(step, reps):
    """The step captured once as a CUDA graph and replayed; None if it cannot be captured.

    CuPy refuses some calls under capture (cuBLAS among them), so a failed capture is
    expected: the capture is then always ended (a stream left capturing would break
    every later launch on it) and the row reported as not capturable.
    """
    import cupy

    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        step()  # warm: workspaces exist before capture
        s.synchronize()
        s.begin_capture()
        graph, error = None, None
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report, do not stop the table
            error = exc
        finally:
            try:
                graph = s.end_capture()
            except Exception as exc:  # noqa: BLE001 - an invalidated capture ends with an error
                error = error or exc
        if error is not None or graph is None:
            print(f"training step not capturable as a CUDA graph: {error!r}", file=sys.stderr)
            return None
        return timed(lambda: graph.launch(s), reps)


def tf32_settings():
    """Whether TF32 may be used, per library: reported with every table, never changed."""
    out = {"cupy CUPY_TF32": os.environ.get("CUPY_TF32", "0") == "1"}
    try:
        import torch

        out["torch matmul allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        out["torch cudnn allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    except ImportError:
        pass
    return out


# -- PyTorch --------------------------------------------------------------------------

def torch_cases(batch, reps, compiled=False):
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    w1 = (torch.randn(20, 1, 5, 5, generator=g) * 0.1).to(dev).requires_grad_()
    b1 = torch.zeros(20, device=dev, requires_grad=True)
    w2 = (torch.randn(40, 20, 5, 5, generator=g) * 0.1).to(dev).requires_grad_()
    b2 = torch.zeros(40, device=dev, requires_grad=True)
    w3 = (torch.randn(640, 100, generator=g) * 0.05).to(dev).requires_grad_()
    b3 = torch.zeros(100, device=dev, requires_grad=True)
    w4 = torch.zeros(100, 10, device=dev, requires_grad=True)
    b4 = torch.zeros(10, device=dev, requires_grad=True)
    params = [w1, b1, w2, b2, w3, b3, w4, b4]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, fused=True)
    x = torch.rand(batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    def conv1(x):
        return F.relu(F.max_pool2d(F.conv2d(x, w1), 2) + b1[:, None, None])

    def conv2(a):
        return F.relu(F.max_pool2d(F.conv2d(a, w2), 2) + b2[:, None, None])

    def loss_fn(x, y):
        a = conv2(conv1(x)).flatten(1)
        a = F.relu(a @ w3 + b3)
        return F.cross_entropy(a @ w4 + b4, y)

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(x, y).backward()
        opt.step()

    if compiled:
        loss_c = torch.compile(loss_fn)

        def step():  # noqa: F811
            opt.zero_grad(set_to_none=False)
            loss_c(x, y).backward()
            opt.step()

        return {"training step": timed_torch(step, reps, warmup=5)}
    a1 = conv1(x).detach().requires_grad_()
    o1 = conv1(x)
    o2 = conv2(a1)
    g1, g2 = torch.randn_like(o1), torch.randn_like(o2)
    with torch.no_grad():
        return_ = {
            "conv1 forward": timed_torch(lambda: conv1(x), reps),
            "conv2 forward": timed_torch(lambda: conv2(a1), reps),
        }
    # backward only: the graphs o1, o2 are built once above and retained across the reps
    return_["conv1 backward"] = timed_torch(
        lambda: torch.autograd.grad(o1, [w1, b1], g1, retain_graph=True), reps)
    return_["conv2 backward"] = timed_torch(
        lambda: torch.autograd.grad(o2, [w2, b2, a1], g2, retain_graph=True), reps)
    return_["training step"] = timed_torch(step, reps)
    return return_


# -- momentum step bandwidth -------------------------------------------------------------

def momentum_bandwidth(n, reps):
    import cupy
    import torch

    from fastmom.backends import cuda

    p, g, v = (cupy.random.standard_normal(n, dtype=cupy.float32) for _ in range(3))
    ms = timed(lambda: cuda.momentum_step(p, g, v, 0.01, 0.9, False, 1e-4, n // 2), reps)
    src, dst = cupy.empty(5 * n, cupy.float32), cupy.empty(5 * n, cupy.float32)
    src[...] = 1
    rt = cupy.cuda.runtime

    def copy():  # cudaMemcpy device to device (20n bytes read + written), on the timed stream
        rt.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes, rt.memcpyDeviceToDevice,
                       cupy.cuda.get_current_stream().ptr)

    copy_ms = timed(copy, reps)
    tp = torch.randn(n, device="cuda", requires_grad=True)
    tp.grad = torch.randn(n, device="cuda")
    topt = torch.optim.SGD([tp], lr=0.01, momentum=0.9, fused=True)
    t_ms = timed_torch(topt.step, reps)
    gbs = lambda t: 20 * n / (t * 1e-3) / 1e9  # noqa: E731
    return {"n": n, "fastmom GB/s": gbs(ms), "copy GB/s": 2 * 20 * n / (copy_ms * 1e-3) / 1e9,
            "torch fused SGD GB/s": gbs(t_ms), "fastmom ms": ms, "torch ms": t_ms, "copy ms": copy_ms}


# -- report ------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-results")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--batches", type=int, nargs="*", default=list(BATCHES))
    ap.add_argument("--sizes", type=float, nargs="*", default=[1e7, 1e8])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args(argv)
    import cupy

    from fastmom._io import atomic_write, write_json

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    report = {"gpu": gpu, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "tf32": tf32_settings(), "batches": {}, "momentum": []}
    lines = [f"# fastmom cuda vs PyTorch on {gpu}, {report['date']}", "",
             "Medians of CUDA-event timings; images/s = batch / time.",
             "TF32: " + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in report["tf32"].items()), ""]
    for batch in args.batches:
        row = {"fastmom": fastmom_cases(batch, args.reps), "torch": torch_cases(batch, args.reps)}
        if not args.no_compile:
            try:
                row["torch.compile"] = torch_cases(batch, args.reps, compiled=True)
            except Exception:  # noqa: BLE001 - torch.compile may be unavailable (no Triton, ...)
                traceback.print_exc()
                row["torch.compile"] = None
        report["batches"][batch] = row
        lines += [f"## batch {batch}", "", "| case | fastmom ms | torch ms | speed-up | fastmom img/s | torch img/s |",
                  "|---|---|---|---|---|---|"]
        for case, ms in row["fastmom"].items():
            tms = row["torch"].get(case.replace(" (CUDA graph)", ""))
            if ms is None:
                lines.append(f"| {case} | not capturable | | | | |")
                continue
            ratio = f"{tms / ms:.2f}x" if tms else ""
            lines.append(f"| {case} | {ms:.4f} | {tms:.4f} | {ratio} | {batch / ms * 1e3:,.0f} | "
                         f"{batch / tms * 1e3:,.0f} |" if tms else f"| {case} | {ms:.4f} | | | {batch / ms * 1e3:,.0f} | |")
        if row.get("torch.compile"):
            tc = row["torch.compile"]["training step"]
            lines.append(f"| training step, torch.compile | | {tc:.4f} | "
                         f"{tc / row['fastmom']['training step']:.2f}x | | {batch / tc * 1e3:,.0f} |")
        lines.append("")
    lines += ["## momentum step (float32, 20 B/param)", "",
              "| params | fastmom GB/s | memcpy D2D GB/s | % of copy | torch fused SGD GB/s | vs torch |", "|---|---|---|---|---|---|"]
    for n in args.sizes:
        m = momentum_bandwidth(int(n), args.reps)
        report["momentum"].append(m)
        lines.append(f"| {int(n):.0e} | {m['fastmom GB/s']:.0f} | {m['copy GB/s']:.0f} | "
                     f"{100 * m['fastmom GB/s'] / m['copy GB/s']:.0f}% | {m['torch fused SGD GB/s']:.0f} | "
                     f"{m['torch ms'] / m['fastmom ms']:.2f}x |")
    atomic_write(out / "gpu_table.md", lambda f: f.write("\n".join(lines) + "\n"), text=True)
    write_json(out / "gpu_table.json", report, default=str, newline=False)
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
