"""What the compiler made of the direct convolution's tap loop, at each instruction-set
level (kernels/cpu/conv_direct.h), read from its assembly: the CPU twin of the CUDA
kernels' SASS lint.

The forward's speed is its innermost loop, one tap of one tile: FV weight-vector loads,
P input broadcasts, FV*P fused multiply-adds into accumulators that stay in registers.
Two regressions have happened there without any test failing, because the results were
right: GCC kept an AVX2 accumulator on the stack (a store-to-load chain every tap), and an
AVX-512 1 x 24 tile compiled to a loop with its sums in memory. Neither level can be timed
on every machine (this one may lack AVX-512), but the assembly can be read on any x86
machine with GCC: compiled here as setup.py compiles it, each tile's tap loop must be
there with its FV*P multiply-adds on the level's full-width registers, store nothing, and
reload at most a couple of values from the stack. The scattered backward's update loops
are read too: at the AVX-512 level they must be on zmm registers; and so are the tap loops
of the row forward for few input channels (fastmom_conv_pool_forward_rows).
"""
import ast
import platform
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "kernels" / "cpu" / "isa_kernels.c"

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("gcc") is None,
    reason="reads GCC's x86-64 assembly")

#: Per level: the vector register of its tiles and the multiply-adds per tap of each tile
#: the forward instantiates (conv_direct.h: FM_MAX_FV and FM_TILE_P): AVX2 2 x 4 and
#: 1 x 8; AVX-512 3 x 8, 2 x 12 and 1 x 12 (16 floats or 8 doubles a vector).
TILES = {"avx2": ("ymm", [8, 8]), "avx512": ("zmm", [12, 24, 24])}
#: Stack references allowed in a tap loop: position offsets reloaded when they outnumber
#: the 16 general registers (2 with 12 positions); never a vector.
MAX_STACK_REFS = 2
#: Instructions a tap loop may spend besides its multiply-adds, weight loads and
#: broadcasts: pointer and counter updates, the branch, the reloads above.
MAX_OVERHEAD = 8
#: Instructions that read their last (AT&T destination) operand without writing it.
NOT_STORES = ("cmp", "test", "vcomis", "vucomis", "prefetch", "bt")


def _setup_flags():
    """The level flags of setup.py's ISA_LEVELS (read, not imported: importing runs setup())."""
    lists = {}
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            lists[node.targets[0].id] = ast.literal_eval(node.value)
    v2, avx2, avx512 = lists["_X86_V2"], lists["_AVX2"], lists["_AVX512"]
    return {"avx2": v2 + avx2, "avx512": v2 + avx2 + avx512}


@pytest.fixture(scope="module")
def assembly(tmp_path_factory):
    """``{level: assembly text}``, compiled the way setup.py compiles each level (Python's
    CFLAGS, -O3 -fopenmp, the level's flags), both levels at once."""
    out = tmp_path_factory.mktemp("asm")
    cflags = (sysconfig.get_config_var("CFLAGS") or "").split()
    procs = {}
    for level, flags in _setup_flags().items():
        cmd = ["gcc", *cflags, "-O3", "-fopenmp", *flags, f"-DFM_ISA={level}",
               f"-I{SOURCE.parent}", "-S", "-o", str(out / f"{level}.s"), str(SOURCE)]
        procs[level] = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for level, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{level}: {err}"
    return {level: (out / f"{level}.s").read_text() for level in procs}


def _function(text, name):
    lines = text.splitlines()
    start = lines.index(f"{name}:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(f"\t.size\t{name},"))
    return lines[start:end]


def _innermost_loops(body):
    """Each innermost loop (a label and the last backward branch to it, with no other such
    span inside) as its list of instructions ``(mnemonic, operands)``."""
    labels = {line[:-1]: i for i, line in enumerate(body) if re.fullmatch(r"\.L\w+:", line)}
    spans = {}
    for i, line in enumerate(body):
        m = re.fullmatch(r"\tj\w+\s+(\.L\w+)", line)
        if m and labels.get(m.group(1), i) < i:
            spans[m.group(1)] = (labels[m.group(1)], i)
    spans = list(spans.values())
    inner = [s for s in spans if not any(t != s and s[0] <= t[0] and t[1] <= s[1] for t in spans)]
    loops = []
    for a, b in inner:
        ins = []
        for line in body[a:b + 1]:
            if line.startswith("\t") and not line.startswith("\t."):
                mnemonic, _, operands = line.strip().partition("\t")
                ins.append((mnemonic, operands.replace(" ", "")))
        loops.append(ins)
    return loops


def _operands(operands):
    """Split AT&T operands at top-level commas (not those inside parentheses)."""
    return re.findall(r"(?:[^,(]|\([^)]*\))+", operands)


def _is_store(mnemonic, operands):
    ops = _operands(operands)
    return bool(ops) and "(" in ops[-1] and not mnemonic.startswith(NOT_STORES)


def _fmas(ins):
    return sum(m.startswith("vfmadd") for m, _ in ins)


def _fma_loops(text, name):
    """The innermost loops of function ``name`` that multiply-add, and their sorted counts
    of multiply-adds."""
    loops = [ins for ins in _innermost_loops(_function(text, name)) if _fmas(ins)]
    return loops, sorted(_fmas(ins) for ins in loops)


def _check_tap_loop(ins, where, reg, max_stack, max_overhead, fma_loads):
    """One tap loop: multiply-adds on ``reg`` (reading memory only with ``fma_loads``), no
    stores, at most ``max_stack`` stack references and none of them a vector, at most
    ``max_overhead`` instructions besides multiply-adds, vector loads, broadcasts and
    register copies."""
    for m, ops in ins:
        if m.startswith("vfmadd"):
            assert set(re.findall(r"%([xyz]mm)", ops)) == {reg}, f"{where}: {m} {ops} is not on {reg}"
            assert fma_loads or "(" not in ops, f"{where}: {m} {ops} reads memory (an input loaded again)"
    stores = [f"{m} {ops}" for m, ops in ins if _is_store(m, ops)]
    assert not stores, f"{where} stores (sums or spills in memory): {stores}"
    stack = [f"{m} {ops}" for m, ops in ins if "(%rsp)" in ops or "(%rbp)" in ops]
    assert len(stack) <= max_stack, f"{where} touches the stack {len(stack)} times: {stack}"
    assert not [s for s in stack if "mm" in s], f"{where} reloads a vector from the stack: {stack}"
    overhead = [f"{m} {ops}" for m, ops in ins
                if not m.startswith(("vfmadd", "vbroadcasts", "vmovup", "vmovap"))]
    assert len(overhead) <= max_overhead, f"{where}: {len(overhead)} other instructions: {overhead}"


@pytest.mark.parametrize("level", sorted(TILES))
@pytest.mark.parametrize("suffix", ["f", "d"])
def test_tap_loops(assembly, level, suffix):
    reg, tiles = TILES[level]
    taps, fmas = _fma_loops(assembly[level], f"fastmom_conv_pool_direct_{suffix}")
    assert fmas == tiles, f"{level} {suffix}: tap loops with {fmas} multiply-adds, expected {tiles}"
    for ins in taps:
        _check_tap_loop(ins, f"{level} {suffix}, the tap loop with {_fmas(ins)} multiply-adds", reg,
                        MAX_STACK_REFS, MAX_OVERHEAD, fma_loads=True)


#: The scattered backward's run loops (conv_direct_impl.h's fm_scatter_sum): a block of
#: 1 to FM_SCATTER_VB = 8 forward vectors summed in registers over a list, one multiply-add
#: each per entry; at the AVX-512 level also each with the odd 32 bytes of a run (one
#: ymm multiply-add more) and that tail alone.
SCATTER_FMAS = {"avx2": set(range(1, 9)), "avx512": set(range(1, 10))}
#: and their instructions besides the multiply-adds, loads and the weight's broadcast:
#: the list's offset and weight loads, pointer and counter updates, the branch
SCATTER_MAX_OVERHEAD = 6


@pytest.mark.parametrize("level", sorted(TILES))
@pytest.mark.parametrize("suffix", ["f", "d"])
def test_scatter_run_loops(assembly, level, suffix):
    """The scattered backward's runs are summed in registers, one load a multiply-add and
    no store in the loop (updating memory per entry, two loads and a store a
    multiply-add, was store-bound); at the AVX-512 level on zmm registers (a 64-byte
    multiply-add costs what a 32-byte one does on Zen 5), but for a run's odd 32 bytes;
    at AVX2 on ymm."""
    reg = TILES[level][0]
    runs, fmas = _fma_loops(assembly[level], f"fastmom_conv_pool_backward_scatter_{suffix}")
    assert set(fmas) == SCATTER_FMAS[level], f"{level} {suffix}: run loops with {fmas} multiply-adds"
    for ins in runs:
        where = f"{level} {suffix}, the run loop with {_fmas(ins)} multiply-adds"
        by_reg = {}  # multiply-adds per register width
        for m, ops in ins:
            if m.startswith("vfmadd"):
                widths = set(re.findall(r"%([xyz]mm)", ops))
                assert len(widths) == 1, f"{where}: {m} {ops} mixes register widths"
                w = widths.pop()
                by_reg[w] = by_reg.get(w, 0) + 1
        if reg == "ymm":
            assert set(by_reg) == {"ymm"}, f"{where}: multiply-adds on {by_reg}, expected ymm"
        else:
            assert by_reg.get("ymm", 0) <= 1 and set(by_reg) <= {"zmm", "ymm"}, \
                f"{where}: multiply-adds on {by_reg}, expected zmm and at most one ymm (the tail)"
        stores = [f"{m} {ops}" for m, ops in ins if _is_store(m, ops)]
        assert not stores, f"{where} stores (sums in memory): {stores}"
        overhead = [f"{m} {ops}" for m, ops in ins
                    if not m.startswith(("vfmadd", "vmovup", "vbroadcasts"))]
        assert len(overhead) <= SCATTER_MAX_OVERHEAD, f"{where}: {len(overhead)} other instructions: {overhead}"


#: The row forward's tiles (conv_direct.h, FM_ROWSF_F x 2 rows x FM_ROWSF_TV vectors):
#: up to 2 filters with AVX2's 16 registers, 4 with AVX-512's 32, each with 1 to 3
#: vectors of columns; 2 * filters * vectors multiply-adds a tap.
ROWS_FILTERS = {"avx2": 2, "avx512": 4}
#: Instructions a row tap loop may spend besides its multiply-adds, input loads, weight
#: broadcasts and register copies (GCC's, renamed away on current x86 cores): pointer
#: updates, the compare, the branch.
ROWS_MAX_OVERHEAD = 4


@pytest.mark.parametrize("level", sorted(TILES))
@pytest.mark.parametrize("suffix", ["f", "d"])
def test_rows_forward_tap_loops(assembly, level, suffix):
    """Every tile of the row forward has its tap loop, on the level's registers, with its
    sums in registers and each input vector loaded once for all its filters (folded into
    every multiply-add, the loads, half of them split across cache lines, were the
    limit on Zen 3)."""
    reg = TILES[level][0]
    expected = sorted(2 * f * tv for f in range(1, ROWS_FILTERS[level] + 1) for tv in (1, 2, 3))
    taps, fmas = _fma_loops(assembly[level], f"fastmom_conv_pool_forward_rows_{suffix}")
    assert fmas == expected, f"{level} {suffix}: tap loops with {fmas} multiply-adds, expected {expected}"
    for ins in taps:
        _check_tap_loop(ins, f"{level} {suffix}, the row tap loop with {_fmas(ins)} multiply-adds",
                        reg, 0, ROWS_MAX_OVERHEAD, fma_loads=False)
