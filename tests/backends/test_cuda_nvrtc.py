"""The CUDA module compiled exactly as CuPy compiles it at run time: NVRTC, CuPy's flags.

Needs the ``cupy-cuda13x``, ``nvidia-cuda-nvrtc`` and ``nvidia-cuda-runtime`` wheels,
not a GPU (CI installs them; skipped with the reason where they are absent).
``cupy.RawModule(code, options, name_expressions)`` compiles through
``cupy._core.core.compile_with_cache``, which assembles CuPy's options around ours
(its CCCL and header include paths, ``--std=c++17`` unless we give a ``-std``),
then ``cupy.cuda.compiler._compile_with_cache_cuda`` adds ``-ftz=true`` and
``_compile_using_nvrtc_no_warning`` adds ``-arch=sm_XX`` (the device's, capped at
what NVRTC knows) and ``--device-as-default-execution-space``. Only the ``-arch``
choice needs a device, so it is given here; everything else runs CuPy's own code.
"""
import inspect
import io

import pytest

from fastmom.backends import cuda

ARCHS = ("80", "90")


@pytest.fixture(scope="module")
def cupy_compiler():
    cupy = pytest.importorskip("cupy", reason="cupy-cuda13x not installed: NVRTC compile check skipped")
    from cupy.cuda import compiler

    try:
        compiler._get_nvrtc_version()
    except Exception as exc:  # noqa: BLE001 - the wheel's NVRTC library missing or unloadable
        pytest.skip(f"NVRTC not loadable (pip install nvidia-cuda-nvrtc): {exc}")
    return cupy, compiler


def cupy_options(compiler):
    """What CuPy 14 hands NVRTC for our RawModule, less the ``-arch`` it picks per device."""
    from cupy._core import core

    return core.assemble_cupy_compiler_options(cuda.rawmodule_options()) + ("-ftz=true",)


def test_cupy_still_adds_the_flags_replicated_here(cupy_compiler):
    # if a CuPy release changes these, this test (not a GPU run) is the first to say so
    _, compiler = cupy_compiler
    assert "'-ftz=true'" in inspect.getsource(compiler._compile_with_cache_cuda)
    src = inspect.getsource(compiler._compile_using_nvrtc_no_warning)
    assert "'--device-as-default-execution-space'" in src and "_get_arch_for_options_for_nvrtc" in src
    opts = cupy_options(compiler)
    assert "-std=c++17" in opts and not any(o.startswith("--std") for o in opts)  # ours, not CuPy's default
    assert f"-I{cuda.source_dir()}" in opts


@pytest.fixture(scope="module")
def nvrtc_builds(cupy_compiler):
    """{arch: (cubin, {name expression: lowered name}, compile log)}."""
    _, compiler = cupy_compiler
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        # CuPy asks the current device for the arch (memoized per device); no device here
        mp.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
        for arch in ARCHS:
            log = io.StringIO()
            cubin, mapping = compiler.compile_using_nvrtc(
                cuda.module_source(), cupy_options(compiler), arch=arch,
                name_expressions=cuda.NAME_EXPRESSIONS, log_stream=log)
            out[arch] = cubin, mapping, log.getvalue()
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_module_compiles_through_nvrtc(nvrtc_builds, arch):
    cubin, mapping, log = nvrtc_builds[arch]
    assert cubin[:4] == b"\x7fELF", "NVRTC returned no cubin"
    assert "warning" not in log.lower(), log


@pytest.mark.parametrize("arch", ARCHS)
def test_every_name_expression_maps_to_a_kernel(nvrtc_builds, arch):
    cubin, mapping, _ = nvrtc_builds[arch]
    missing = [e for e in cuda.NAME_EXPRESSIONS if not mapping.get(e)]
    assert not missing, f"name expressions without a lowered name: {missing}"
    absent = [e for e in cuda.NAME_EXPRESSIONS if mapping[e].encode() not in cubin]
    assert not absent, f"lowered names not in the {arch} cubin: {absent}"
    assert len(set(mapping[e] for e in cuda.NAME_EXPRESSIONS)) == len(cuda.NAME_EXPRESSIONS)


def test_is_available_explains_without_a_gpu(cupy_compiler):
    """CuPy importable but no usable device (this machine, CI): a reason, not a crash."""
    cupy, _ = cupy_compiler
    try:
        has_device = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver: the CI case
        has_device = False
    why = cuda.is_available()
    if has_device:
        assert why is True or isinstance(why, str)
    else:
        assert isinstance(why, str) and ("no usable CUDA device" in why or "could not query" in why), why
