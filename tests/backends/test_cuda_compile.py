"""Compile check of the CUDA sources (every CI run; needs nvcc, not a GPU or CuPy).

Every ``kernels/cuda/*.cu`` is compiled with the template instantiations that the cuda
backend launches, for sm_80 and sm_90, warnings as errors and register spills or
local-memory use reported by ptxas as errors too. The kernel entry points in the PTX
are demangled and checked against :data:`fastmom.backends.cuda.NAME_EXPRESSIONS`, and
the momentum step must use 16-byte vector loads.
"""
import os
import re
import shutil
import subprocess

import pytest

from fastmom.backends import cuda

NVCC = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
CXXFILT = shutil.which("c++filt")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CI has it): CUDA compile check skipped")

ARCHS = ("sm_80", "sm_90")
SRC = cuda.source_dir()


def _kernels_in(path):
    return set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(.*?\)\s+)?(\w+)\s*\(", path.read_text()))


def test_sources_list_matches_the_directory():
    assert sorted(p.name for p in SRC.glob("*.cu")) == sorted(cuda.SOURCES)
    defined = set().union(*(_kernels_in(SRC / s) for s in cuda.SOURCES))
    assert set(cuda.KERNELS) <= defined, f"launched but not defined: {set(cuda.KERNELS) - defined}"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{(source, arch): ptx text}, compiling each source once per arch."""
    out = {}
    tmp = tmp_path_factory.mktemp("nvcc")
    for src in cuda.SOURCES:
        names = [e for e in cuda.NAME_EXPRESSIONS if e.split("<")[0] in _kernels_in(SRC / src)]
        unit = tmp / f"unit_{src}"
        # taking each instantiation's address makes nvcc emit it, as NVRTC's name_expressions do
        unit.write_text(f'#include "{src}"\n' + "void* fm_instances[] = {"
                        + ", ".join(f"(void*)&{e}" for e in names) + "};\n")
        for arch in ARCHS:
            keep = tmp / f"{src}.{arch}"
            keep.mkdir()
            cmd = [NVCC, *cuda.COMPILE_OPTIONS, f"-I{SRC}", f"-arch={arch}", "-cubin", "-Werror", "all-warnings",
                   "-Xptxas", "-warn-spills,-warn-lmem-usage", "-keep", "-keep-dir", str(keep),
                   "-o", str(keep / "out.cubin"), str(unit)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
            out[src, arch] = next(keep.glob("*.ptx")).read_text()
    return out


def _entries(ptx):
    mangled = re.findall(r"\.entry\s+(\w+)\s*\(", ptx)
    if CXXFILT is None:
        return mangled
    text = subprocess.run([CXXFILT], input="\n".join(mangled), capture_output=True, text=True).stdout
    # "void fm_x<float>(float*, ...)" -> "fm_x<float>"
    return [re.sub(r"^void\s+", "", d).split("(")[0] for d in text.splitlines()]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_launched_kernel_is_compiled(compiled, arch):
    entries = set()
    for src in cuda.SOURCES:
        entries |= set(_entries(compiled[src, arch]))
    if CXXFILT is None:
        missing = [e for e in cuda.NAME_EXPRESSIONS if not any(e.split("<")[0] in m for m in entries)]
    else:
        missing = [e for e in cuda.NAME_EXPRESSIONS if e not in entries]
    assert not missing, f"kernels launched by fastmom.backends.cuda but absent from the {arch} build: {missing}"


def test_momentum_step_uses_16_byte_loads(compiled):
    ptx = compiled["optim.cu", "sm_90"]
    assert re.search(r"ld\.global(\.nc)?\.v4\.f32", ptx), "float momentum step without 128-bit loads"
    assert re.search(r"ld\.global(\.nc)?\.v2\.f64", ptx), "double momentum step without 128-bit loads"
    assert re.search(r"st\.global\.v4\.f32", ptx)


def test_module_source_is_what_nvrtc_gets():
    text = cuda.module_source()
    assert cuda.source_hash() in text.splitlines()[0]
    for s in cuda.SOURCES:
        assert (SRC / s).read_text() in text


def test_import_without_cupy_explains():
    # this module imports everywhere; without CuPy or a GPU, is_available() says why
    why = cuda.is_available()
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert isinstance(why, str) and "CuPy is not installed" in why and "fastmom[cuda12]" in why
        from fastmom.backends import DeviceError, get_backend

        with pytest.raises(DeviceError, match="CuPy is not installed"):
            get_backend("cuda")
    else:
        assert why is True or isinstance(why, str)


def test_whole_module_source_compiles(tmp_path):
    """The concatenated text RawModule gets compiles as one unit with every instantiation."""
    unit = tmp_path / "module.cu"
    unit.write_text(cuda.module_source() + "\nvoid* fm_instances[] = {"
                    + ", ".join(f"(void*)&{e}" for e in cuda.NAME_EXPRESSIONS) + "};\n")
    cmd = [NVCC, *cuda.COMPILE_OPTIONS, f"-I{SRC}", "-arch=sm_90", "--ptx", "-Werror", "all-warnings",
           "-o", str(tmp_path / "module.ptx"), str(unit)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(_entries((tmp_path / "module.ptx").read_text())) == len(cuda.NAME_EXPRESSIONS)


@pytest.fixture(scope="module")
def sass_rows():
    """bench/sass_lint.py's rows for the sm_90 machine code (skipped without its tools)."""
    sass_lint = pytest.importorskip("bench.sass_lint")
    missing = [t for t in ("cuobjdump", "nvdisasm") if sass_lint.tool(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    return sass_lint.lint("sm_90")


def test_no_kernel_spills_registers(sass_rows):
    """Every kernel spill-free on sm_90."""
    assert {r["kernel"] for r in sass_rows} >= set(cuda.NAME_EXPRESSIONS) or CXXFILT is None
    spills = [(r["kernel"], r["spill_bytes"]) for r in sass_rows if r["spill_bytes"]]
    assert not spills, f"kernels spilling registers on sm_90: {spills}"


#: the most instructions per FMA allowed in a conv kernel's hottest loop: issue 13's
#: target, 4, for every instance (the general weight gradient's FMAs include the taps
#: of a 4-tap chunk past a filter row's end, computed and dropped); the register-blocked
#: forward is held to its own goal, 2 (sm_90, nvcc 13: 1.3 for the 5x5/2x2 instance,
#: 1.9 and 2.0 for the general float and double ones)
INSTR_PER_FMA_LIMITS = {f"fm_conv_{k}<{t}{v}>": 2 if k == "pool_fwd" else 4 for t in ("float", "double")
                        for k, v in (("pool_fwd", ", 5, 2"), ("pool_fwd", ", 0, 0"), ("wgrad", ", 5"),
                                     ("wgrad", ", 0"), ("dgrad", ", 5"), ("dgrad", ", 0"))}


def test_conv_hot_loops_within_their_instruction_budget(sass_rows):
    """The hottest loop (innermost, most FMAs) of each conv kernel instance: at most
    INSTR_PER_FMA_LIMITS instructions per FMA."""
    if CXXFILT is None:
        pytest.skip("c++filt not found: kernel instances cannot be named")
    rows = {r["kernel"]: r["hottest_loop"] for r in sass_rows}
    conv = {e for e in cuda.NAME_EXPRESSIONS if e.startswith("fm_conv") and "finalize" not in e}
    assert conv == set(INSTR_PER_FMA_LIMITS), "a conv kernel instance without an instruction budget"
    over = {k: f"{rows[k][0]}/{rows[k][1]}" for k, limit in INSTR_PER_FMA_LIMITS.items()
            if rows[k] is None or rows[k][0] > limit * rows[k][1]}
    assert not over, f"hot loops over their instructions-per-FMA budget on sm_90: {over}"


#: the small-batch dense kernels' budget (kernels/cuda/dense.cu): the product's step loop
#: is one shared broadcast load per FMA plus the weight's load (sm_90, nvcc 13: 2.3 at
#: R = 32, 3.1 at R = 8); the weight gradient's adds its store and bounds test per row
#: (2.4 at R = 32, 4.5 at R = 8, where a row is only 8 FMAs)
DENSE_INSTR_PER_FMA_LIMITS = {f"fm_dense_{k}<{t}, {r}>": limit for t in ("float", "double") for r in (8, 16, 32)
                              for k, limit in (("small", 4), ("wgrad_small", 5))}


def test_dense_hot_loops_within_their_instruction_budget(sass_rows):
    """The hottest loop of each small-batch dense kernel instance: at most
    DENSE_INSTR_PER_FMA_LIMITS instructions per FMA (and found: a loop with FMAs)."""
    if CXXFILT is None:
        pytest.skip("c++filt not found: kernel instances cannot be named")
    rows = {r["kernel"]: r["hottest_loop"] for r in sass_rows}
    dense = {e for e in cuda.NAME_EXPRESSIONS if e.startswith(("fm_dense_small", "fm_dense_wgrad_small"))}
    assert dense == set(DENSE_INSTR_PER_FMA_LIMITS), "a dense kernel instance without an instruction budget"
    over = {k: f"{rows[k][0]}/{rows[k][1]}" if rows[k] else "no FMA loop" for k, limit in
            DENSE_INSTR_PER_FMA_LIMITS.items() if rows[k] is None or rows[k][0] > limit * rows[k][1]}
    assert not over, f"dense hot loops over their instructions-per-FMA budget on sm_90: {over}"
