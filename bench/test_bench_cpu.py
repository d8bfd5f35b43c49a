"""pytest-benchmark cases for the cpu backend's kernels against the reference backend and
PyTorch (no timed assertions; compare with ``--benchmark-group-by=group``).

Run: ``python -m pytest bench/test_bench_cpu.py --benchmark-only``. For one side-by-side
table with ratios, use ``python -m bench.cpu_table``.
"""
import pytest

from bench import common as C

pytest.importorskip("pytest_benchmark")

from fastmom.backends import reference  # noqa: E402

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

BACKENDS = {"cpu": cpu, "reference": reference}
IMPLS = ["cpu", "reference", "torch", "torch_cl"]
CONV = {"conv1": dict(c=1, h=28, w=28, f=20, k=5, pool=2, first=True),
        "conv2": dict(c=20, h=12, w=12, f=40, k=5, pool=2, first=False)}
BATCH = 64


def _torch_or_skip(impl):
    if impl.startswith("torch") and not C.torch_available():
        pytest.skip("torch is not installed")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("layer", sorted(CONV))
def test_conv(benchmark, layer, direction, impl):
    _torch_or_skip(impl)
    benchmark.group = f"{layer} {direction} batch {BATCH}"
    if impl in BACKENDS:
        fns = C.conv_problem(BACKENDS[impl], BATCH, **CONV[layer])
    else:
        fns = C.torch_conv_problem(BATCH, channels_last=impl == "torch_cl", **CONV[layer])
    benchmark(fns[0] if direction == "forward" else fns[1])


@pytest.mark.parametrize("impl", IMPLS[:3])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_dense(benchmark, direction, impl):
    _torch_or_skip(impl)
    benchmark.group = f"dense 640x100 {direction} batch {BATCH}"
    fns = C.dense_problem(BACKENDS[impl], BATCH, 640, 100) if impl in BACKENDS \
        else C.torch_dense_problem(BATCH, 640, 100)
    benchmark(fns[0] if direction == "forward" else fns[1])


@pytest.mark.parametrize("impl", IMPLS[:3])
def test_softmax(benchmark, impl):
    _torch_or_skip(impl)
    benchmark.group = f"softmax+NLL fwd+bwd batch {BATCH}"
    fn = C.softmax_problem(BACKENDS[impl], BATCH) if impl in BACKENDS else C.torch_softmax_problem(BATCH)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["cpu", "reference", "torch_fused", "torch_foreach"])
@pytest.mark.parametrize("n", [10**5, 10**6, 10**7], ids=["1e5", "1e6", "1e7"])
def test_momentum(benchmark, n, impl):
    _torch_or_skip(impl)
    benchmark.group = f"momentum step {n:.0e} params"
    if impl in BACKENDS:
        fn = C.momentum_problem(BACKENDS[impl], n)
    else:
        fn = C.torch_momentum_problem(n, fused=impl == "torch_fused")
    benchmark(fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [10, 64, 256])
def test_train_step(benchmark, batch, impl):
    _torch_or_skip(impl)
    if impl == "reference" and batch == 256:
        pytest.skip("too slow to be useful")
    benchmark.group = f"training step batch {batch}"
    if impl in BACKENDS:
        fn = C.fastmom_step(impl, batch)[0]
    else:
        fn = C.torch_step(batch, impl == "torch_cl", cpu.get_num_threads())[0]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["cpu", "torch", "torch_cl"])
@pytest.mark.parametrize("batch", [10, 64])
def test_chapter6_train_step(benchmark, batch, impl):
    """network3's best chapter-6 net (conv-dropout), one training step."""
    # here, not at the top: importing cpu_table sets libgomp's spin count for the process
    from bench import cpu_table as T
    _torch_or_skip(impl)
    benchmark.group = f"chapter-6 net training step batch {batch}"
    if impl == "cpu":
        fn = T.fastmom_chapter6(batch)[0]
    else:
        fn = T.torch_chapter6(batch, impl == "torch_cl", cpu.get_num_threads())[0]
    benchmark(fn)
