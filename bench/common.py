"""Shared benchmark helpers: network3's net for fastmom and PyTorch, per-kernel problems,
FLOP counts, interleaved median timing and a machine description.

Every benchmark builds callables ``fn()`` that run one operation on preallocated inputs;
:func:`measure` times several of them in interleaved rounds (so a burst of load from
another process hits all of them alike) and reports per-call medians.
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np

IMPLS = ("cpu", "reference", "torch", "torch_cl")
ARCH = [  # network3's chapter-6 conv net: (kind, shape info)
    ("conv", dict(c=1, h=28, w=28, f=20, k=5, pool=2)),
    ("conv", dict(c=20, h=12, w=12, f=40, k=5, pool=2)),
    ("dense", dict(n_in=640, n_out=100)),
    ("dense", dict(n_in=100, n_out=10)),
]


# -- FLOPs ------------------------------------------------------------------------------

def net_flops_per_image():
    """``(forward, forward+backward)`` FLOPs per image of network3's conv net.

    A multiply-add is 2 FLOPs; the backward pass costs the weight gradient plus, except
    for the first layer, the input gradient, each as much as the forward product.
    Pooling, activations and the optimizer are not counted (they are O(size), not
    O(size * fan-in)).
    """
    fwd = bwd = 0
    for i, (kind, s) in enumerate(ARCH):
        if kind == "conv":
            oh, ow = s["h"] - s["k"] + 1, s["w"] - s["k"] + 1
            f = 2 * s["f"] * s["c"] * s["k"] * s["k"] * oh * ow
        else:
            f = 2 * s["n_in"] * s["n_out"]
        fwd += f
        bwd += f * (2 if i > 0 else 1)
    return fwd, fwd + bwd


def conv_flops(c, h, w, f, k, first=False):
    oh, ow = h - k + 1, w - k + 1
    f1 = 2 * f * c * k * k * oh * ow
    return f1, f1 * (1 if first else 2)


# -- fastmom networks -------------------------------------------------------------------

def fastmom_step(device, batch, seed=0, arch="conv", activation="relu"):
    """``(train_step, inference)`` closures of network3's net (or another of
    :data:`fastmom.models.ARCHITECTURES`) on ``device``, trained with momentum SGD;
    ``activation`` (a name) replaces the two-conv net's ReLU."""
    from fastmom import MomentumSGD, Network
    from fastmom.activations import resolve
    from fastmom.models import build_layers, conv_layers
    if activation == "relu":
        layers = build_layers(arch, batch)
    elif arch == "conv":
        layers = conv_layers(batch, activation_fn=resolve(activation))
    else:
        raise ValueError(f"activation {activation!r} is for the two-conv net only, not {arch!r}")
    net = Network(layers, batch, device=device, seed=seed)
    opt = MomentumSGD(net, eta=0.01, momentum=0.9)
    rng = np.random.default_rng(seed)
    x = net.prepare_inputs(rng.random((batch, 784), dtype=np.float32))
    y = net.prepare_labels(rng.integers(0, 10, batch), batch)

    def train():
        net.train_step(x, y)
        opt.step()

    def infer():
        net._forward(x, False)

    return train, infer


def torch_step(batch, channels_last, threads, seed=0, activation="relu"):
    """``(train_step, inference)`` closures of the same net in ``torch.nn``."""
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), act(),
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), act(),
        nn.Flatten(), nn.Linear(640, 100), act(), nn.Linear(100, 10))
    return torch_closures(model, batch, channels_last)


def torch_closures(model, batch, channels_last):
    """``(train_step, inference)`` of a ``torch.nn`` model on random MNIST-shaped data:
    ``torch.optim.SGD`` with momentum 0.9 in train mode, softmax in eval mode."""
    import torch
    from torch import nn
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train():
        model.train()
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # the cost reaches the host, as fastmom's float cost does

    def infer():
        model.eval()
        with torch.no_grad():
            torch.softmax(model(x), dim=1)

    return train, infer


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# -- per-kernel problems ------------------------------------------------------------------

def conv_problem(backend, batch, c, h, w, f, k, pool, first, seed=0):
    """``(forward, backward)`` closures of one conv+pool+ReLU layer on a fastmom backend."""
    rng = np.random.default_rng(seed)
    dt = np.float32
    x = rng.standard_normal((batch, c, h, w)).astype(dt)
    wt = rng.standard_normal((f, c, k, k)).astype(dt) * 0.1
    b = rng.standard_normal(f).astype(dt)
    out = (batch, f, (h - k + 1) // pool, (w - k + 1) // pool)
    y, am = np.empty(out, dt), np.empty(out, np.int32)
    dy = rng.standard_normal(out).astype(dt)
    dw, db = np.empty_like(wt), np.empty_like(b)
    dx = None if first else np.empty_like(x)
    backend.conv_pool_forward(x, wt, b, (pool, pool), "relu", y, am)
    return (lambda: backend.conv_pool_forward(x, wt, b, (pool, pool), "relu", y, am),
            lambda: backend.conv_pool_backward(x, wt, y, am, dy, (pool, pool), "relu", dw, db, dx))


def torch_conv_problem(batch, c, h, w, f, k, pool, first, channels_last=False, seed=0):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    x = torch.randn(batch, c, h, w, requires_grad=not first)
    wt = (torch.randn(f, c, k, k) * 0.1).requires_grad_()
    b = torch.randn(f, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(not first)
        wt = wt.detach().contiguous(memory_format=torch.channels_last).requires_grad_()

    def fwd():
        with torch.no_grad():
            F.relu(F.max_pool2d(F.conv2d(x, wt, b), pool))

    out = F.relu(F.max_pool2d(F.conv2d(x, wt, b), pool))
    dy = torch.randn_like(out)

    def bwd():
        out.backward(dy, retain_graph=True)

    return fwd, bwd


def dense_problem(backend, batch, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.float32
    x = rng.standard_normal((batch, n_in)).astype(dt)
    w = rng.standard_normal((n_in, n_out)).astype(dt)
    b = rng.standard_normal(n_out).astype(dt)
    y = np.empty((batch, n_out), dt)
    dy = rng.standard_normal((batch, n_out)).astype(dt)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    backend.dense_forward(x, w, b, "relu", y)
    return (lambda: backend.dense_forward(x, w, b, "relu", y),
            lambda: backend.dense_backward(x, w, y, dy, "relu", dw, db, dx))


def torch_dense_problem(batch, n_in, n_out, seed=0):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    x = torch.randn(batch, n_in, requires_grad=True)
    w = torch.randn(n_out, n_in, requires_grad=True)
    b = torch.randn(n_out, requires_grad=True)

    def fwd():
        with torch.no_grad():
            F.relu(F.linear(x, w, b))

    out = F.relu(F.linear(x, w, b))
    dy = torch.randn_like(out)
    return fwd, lambda: out.backward(dy, retain_graph=True)


def softmax_problem(backend, batch, k=10, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, k)).astype(np.float32)
    labels = rng.integers(0, k, batch)
    probs, dz = np.empty_like(z), np.empty_like(z)

    def fn():
        backend.softmax_nll_forward(z, labels, probs)
        backend.softmax_nll_backward(probs, labels, dz)

    return fn


def torch_softmax_problem(batch, k=10, seed=0):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    z = torch.randn(batch, k, requires_grad=True)
    labels = torch.randint(0, k, (batch,))

    def fn():
        loss = F.cross_entropy(z, labels)
        loss.backward()
        loss.item()

    return fn


def network3_param_shapes():
    return [(20, 1, 5, 5), (20,), (40, 20, 5, 5), (40,), (640, 100), (100,), (100, 10), (10,)]


def momentum_problem(backend, n_params, seed=0):
    """Classical momentum (0.9) with network3's weights-only L2 on a flat float32 buffer."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n_params).astype(np.float32)
    g = (rng.standard_normal(n_params) * 1e-3).astype(np.float32)
    v = np.zeros(n_params, np.float32)
    n_decay = int(n_params * 0.99)
    return lambda: backend.momentum_step(p, g, v, 0.01, 0.9, False, 2e-5, n_decay)


def torch_momentum_problem(shapes_or_n, fused, seed=0):
    """``torch.optim.SGD(momentum=0.9)`` over a parameter list (``fused`` or foreach)."""
    import torch
    torch.manual_seed(seed)
    shapes = [(shapes_or_n,)] if isinstance(shapes_or_n, int) else shapes_or_n
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    kw = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=2e-5, **kw)
    opt.step()  # creates the momentum buffers
    return opt.step


def copy_bandwidth(n_bytes=512 << 20, repeat=7):
    """Measured memory bandwidth of a large NumPy copy (read + write), GB/s."""
    src = np.ones(n_bytes // 4, np.float32)
    dst = np.empty_like(src)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(dst, src)
        ts.append(time.perf_counter() - t)
    return 2 * n_bytes / np.median(ts) / 1e9


# -- timing ----------------------------------------------------------------------------

# OpenBLAS's worker threads (NumPy's BLAS, used by the reference backend) spin for
# about 0.1 s after each call (measured here: 0.104 s of CPU burnt during a 1 s sleep);
# fastmom's kernels timed inside that window ran 3-12x slower. So every function is
# timed only after the previous one's threads have gone idle, and after a warm-up of
# its own (a vCPU that has just been idle is slow for its first milliseconds).
SETTLE_SECONDS = 0.12
WARMUP_SECONDS = 0.005


def measure(fns, min_time=0.02, rounds=7, warmup=2):
    """Median seconds per call of each ``fns[name]``, timed in interleaved rounds.

    Each round runs every function for about ``min_time`` seconds (at least one call);
    the result is the median over rounds of the per-call mean. Before each timing: a
    pause of :data:`SETTLE_SECONDS` (the previous runtime's spinning threads go idle),
    then untimed calls for :data:`WARMUP_SECONDS` (at least one).
    """
    reps = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t, 1e-7)
        reps[name] = max(1, int(min_time / one))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(SETTLE_SECONDS)
            t_end = time.perf_counter() + WARMUP_SECONDS
            fn()
            while time.perf_counter() < t_end:
                fn()
            t = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - t) / reps[name])
    return {name: float(np.median(s)) for name, s in samples.items()}


def write_outputs(text, doc, markdown=None, json_path=None):
    """Print a benchmark's Markdown and write it and its JSON document where asked
    (atomically: fastmom's one writer)."""
    from fastmom._io import atomic_write, write_json
    print(text)
    if markdown:
        atomic_write(markdown, lambda fh: fh.write(text), text=True)
    if json_path:
        write_json(json_path, doc, indent=1, newline=False)


# -- machine -------------------------------------------------------------------------

def machine_description(threads):
    """This machine, in the benchmark tables' format (read by :mod:`fastmom._machine`,
    imported here, not at the top: ``cpu_table`` sets libgomp's environment before
    fastmom is first imported)."""
    from fastmom import _machine as M
    pools = M.threadpools() or []
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '')}, "
            f"{i.get('num_threads')} threads, {os.path.basename(i['filepath'])})" for i in pools]
    load = M.load_average()
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions.update(M.versions(("scipy", "torch", "threadpoolctl")))
    return {"cpu": M.cpu_model(), "cores_logical": os.cpu_count(), "cores_available": M.available_cores(),
            "threads": threads, "platform": platform.platform(), "versions": versions,
            "threadpools": blas, "load_average_1min": None if load is None else load[0],
            "env": M.environment(("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY",
                                  "GOMP_SPINCOUNT", "FASTMOM_NUM_THREADS"))}
