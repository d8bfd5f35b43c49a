"""The ``cpu`` backend's instruction-set levels (kernels/cpu/isa.h): dispatch picks the
highest level the CPU runs, ``FASTMOM_ISA`` / :func:`cpu.set_isa` choose a lower one and
refuse one the CPU lacks with an error (never an illegal instruction), every level
agrees with the others to rounding, and an install without a C compiler still works.

``.ci/isa.sh`` runs the kernel tests once per level this CPU runs; ``.ci/qemu.sh`` runs a
wheel under an emulated AVX2-only CPU.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend_cases import DTYPES, assert_close, randn

from fastmom.backends import reference

cpu = pytest.importorskip("fastmom.backends.cpu")
if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def level():
    """Restore the level after a test that changes it."""
    before = cpu.isa()
    yield
    cpu.set_isa(before)


def test_dispatch_picks_the_highest_level_this_cpu_runs():
    levels = cpu._k.isa_levels()
    assert list(levels) == [k for k in cpu.ISA_LEVELS if k in levels]  # lowest first
    assert levels["baseline"]  # import refuses a CPU below it
    supported = cpu.supported_isas()
    assert supported == tuple(k for k, ok in levels.items() if ok)
    if not os.environ.get("FASTMOM_ISA"):
        assert cpu.isa() == supported[-1]
    assert cpu.thread_policy()["isa"] == cpu.isa()


def test_only_the_vector_levels_have_the_direct_convolution(level):
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        assert cpu.isa() == name
        assert cpu._k.direct_conv_applies(500, 2, 2) == (name != "baseline")


def test_the_forward_packs_filters_in_the_levels_vectors(level):
    """The packed filters' length follows the level's forward vector (16 floats with
    AVX-512): a workspace sized for another level is refused, never overrun."""
    expected = {"baseline": 0, "avx2": 64 if os.environ.get("FASTMOM_EMULATE_AVX512") else 32,
                "avx512": 64}
    c, h, wd, f, kh, kw = 8, 13, 11, 37, 5, 3  # 120 taps: direct at every vector level
    for name in cpu.supported_isas():
        cpu.set_isa(name)
        nbytes = cpu._k.forward_vector_bytes()
        assert nbytes == expected[name]
        _, packed = cpu._k.conv_forward_sizes(c, h, wd, f, kh, kw, 2, 2, 4, 4)
        if name == "baseline":
            assert packed == 1
            continue
        lanes = nbytes // 4
        assert packed == -(-f // lanes) * lanes * c * kh * kw
        rng = np.random.default_rng(11)
        x, w, b = (randn(rng, s, np.float32) for s in [(4, c, h, wd), (f, c, kh, kw), (f,)])
        y, scratch = np.empty((4, f, 4, 4), np.float32), np.empty((1, 1), np.float32)
        with pytest.raises(ValueError, match="packed holds"):
            cpu._k.conv_pool_forward(x, w, b, 2, 2, 0, y, None, scratch,
                                     np.empty(packed - 1, np.float32), 4, 1, False)
        cpu.conv_pool_forward(x, w, b, (2, 2), "relu", y, None)
        want = np.empty_like(y)
        reference.conv_pool_forward(x, w, b, (2, 2), "relu", want, None)
        assert_close(y, want, np.float32, name)


def test_unknown_or_unsupported_levels_are_errors(level):
    before = cpu.isa()
    for bad in ("sse2", "AVX2", "", None):
        with pytest.raises(ValueError, match="level must be one of"):
            cpu.set_isa(bad)
    missing = [k for k in cpu.ISA_LEVELS if k not in cpu.supported_isas()]
    for name in missing:  # e.g. avx512 on an AVX2 machine
        with pytest.raises(ValueError, match="cannot run|unbuilt"):
            cpu.set_isa(name)
    assert cpu.isa() == before


def test_fastmom_isa_environment_errors_clearly():
    """A bad FASTMOM_ISA makes the backend unavailable with the reason, not a crash."""
    code = ("import fastmom\nfrom fastmom.backends import get_backend, DeviceError\n"
            "try:\n    get_backend('cpu')\nexcept DeviceError as e:\n    print('ERR', e)\n"
            "print(fastmom.available_devices())")
    env = dict(os.environ, FASTMOM_ISA="avx1024")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "FASTMOM_ISA='avx1024'" in out.stdout, out.stdout
    assert "'cpu'" not in out.stdout.splitlines()[-1]


def _run_kernels(dtype):
    """conv (direct and im2col shapes, both passes), dense and momentum on fixed inputs."""
    rng = np.random.default_rng(3)
    out = []
    for n, c, h, w, f, k in [(9, 20, 12, 12, 40, 5), (9, 1, 28, 28, 20, 5)]:  # conv2, conv1
        x, wt, b = randn(rng, (n, c, h, w), dtype), randn(rng, (f, c, k, k), dtype), randn(rng, (f,), dtype)
        shape = (n, f, (h - k + 1) // 2, (w - k + 1) // 2)
        y, am = np.empty(shape, dtype), np.empty(shape, np.int32)
        cpu.conv_pool_forward(x, wt, b, (2, 2), "relu", y, am)
        dw, db, dx = np.empty_like(wt), np.empty_like(b), np.empty_like(x)
        cpu.conv_pool_backward(x, wt, y, am, randn(rng, shape, dtype), (2, 2), "relu", dw, db, dx)
        out += [y, am, dw, db, dx]
    xd, wd, bd = randn(rng, (64, 640), dtype), randn(rng, (640, 100), dtype), randn(rng, (100,), dtype)
    yd = np.empty((64, 100), dtype)
    cpu.dense_forward(xd, wd, bd, "sigmoid", yd)
    p, g, v = (randn(rng, (40_001,), dtype) for _ in range(3))
    cpu.momentum_step(p, g, v, 0.01, 0.9, True, 1e-3, 30_000)
    return out + [yd, p, v]


@pytest.mark.parametrize("dtype", DTYPES)
def test_levels_agree(level, dtype):
    """Each level's results against the lowest's: to rounding (the summation orders of
    the direct kernel and im2col + GEMM differ), argmax on all but near-ties."""
    levels = cpu.supported_isas()
    cpu.set_isa(levels[0])
    base = _run_kernels(dtype)
    for name in levels[1:]:
        cpu.set_isa(name)
        for a, b in zip(_run_kernels(dtype), base):
            if a.dtype == np.int32:
                assert np.mean(a == b) > 0.999, name
            else:
                assert_close(a, b, dtype)


def test_install_without_a_c_compiler(tmp_path):
    """CC=false: pip installs fastmom without the compiled kernels, and importing it warns
    how to get them and runs on the reference backend."""
    src, target = tmp_path / "src", tmp_path / "site"
    files = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        rel = name.decode()
        if not (ROOT / rel).exists():  # tracked but deleted in the working tree
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    if (ROOT / "build" / "cython").is_dir():  # up-to-date C from Cython: no re-translation
        shutil.copytree(ROOT / "build" / "cython", src / "build" / "cython")
    env = dict(os.environ, CC="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                          "--no-deps", "--no-compile", "--target", str(target), str(src)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list(target.glob("fastmom/_kernels/_cpu*")), "a compiled module without a compiler?"
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n    import fastmom\n"
            "    print(fastmom.available_devices())\n"
            "    fastmom.available_devices()\nprint(len(w), w[0].message if w else '')")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(target)), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    devices, warned = run.stdout.splitlines()[:2]
    assert "'cpu'" not in devices and "'reference'" in devices
    assert warned.startswith("1 ") and "pip install" in warned and "C compiler" in warned, warned
