"""Run the CUDA kernels on the CPU: the host build of ``kernels/cuda`` and its launcher.

The same ``.cu`` sources that RawModule compiles for the GPU are compiled here with
g++ against ``emulation.cuh`` (a small CUDA emulation: fibers as threads, a real
``__syncthreads`` barrier, bounds-checked global pointers, race-checked shared
memory; see that header) into a shared library, cached under a hash of the sources,
and launched through ctypes over their real grid and block shapes. A kernel error
(out-of-bounds access, shared-memory race, divergent barrier, bad launch shape or
argument types) raises :class:`EmulationError`.

Memory statistics are opt-in (``build(memstats=True)``, ``kernels(memstats=True)``, or
``FASTMOM_CUDA_EMU_MEMSTATS=1`` for every build): a separate build, compiled with
``-DFM_EMU_MEMSTATS -g``, groups each warp's accesses into the instructions the
hardware would issue and counts per call site the 32-byte global sectors touched and
the shared-memory wavefronts (bank conflicts); :attr:`Emulator.memory_log` holds one
:class:`LaunchMemory` per launch. The checking build is not slowed down by it.

:func:`kernels` returns the cuda backend's own host code
(:class:`fastmom.backends.cuda.Kernels`) bound to NumPy arrays and this launcher, so
tests exercise the checks, launch shapes and workspaces of the real backend too.

Needs a C++20 compiler (``$CXX``, default ``g++``) and POSIX ``ucontext``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import numpy as np

from . import cuda as _cuda

__all__ = ["EmulationError", "Emulator", "LaunchMemory", "SiteMemory", "build", "compiler", "kernels", "symbol"]

CXXFLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unused-variable")


class EmulationError(RuntimeError):
    """An emulated kernel launch failed: the message says what and where."""


class _LaunchCfg(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("dyn_shared", ctypes.c_uint64)]


class _PtrArg(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("nbytes", ctypes.c_int64), ("dev", ctypes.c_uint64)]


class _MemSite(ctypes.Structure):  # fm_emu::SiteTotals
    _fields_ = [(n, ctypes.c_uint64) for n in ("pc", "kind", "warp_accesses", "lane_accesses", "bytes",
                                                "distinct_bytes", "sectors", "wavefronts")]


#: the alignment a device allocation has (cudaMalloc: 256 bytes; CuPy's pool: 512)
DEVICE_ALIGNMENT = 256


def _device_address(a):
    """The address a device would give ``a``'s first element: NumPy aligns its buffers
    to 16 or 64 bytes, a device to 256, so the emulation shifts each array by its
    allocation's misalignment (a view keeps its offset into the allocation)."""
    root = a
    while isinstance(getattr(root, "base", None), np.ndarray):
        root = root.base
    return a.ctypes.data - root.ctypes.data % DEVICE_ALIGNMENT


class SiteMemory:
    """One access site of a kernel over a launch (global or shared), as counted by the
    emulation: ``warp_accesses`` warp instructions by ``lane_accesses`` threads."""

    __slots__ = ("pc", "kind", "warp_accesses", "lane_accesses", "bytes", "distinct_bytes", "sectors",
                 "wavefronts", "where")

    def __init__(self, raw, where="?"):
        for f, _ in _MemSite._fields_:
            setattr(self, f, int(getattr(raw, f)))
        self.kind = "global" if self.kind == 0 else "shared"
        self.where = where

    @property
    def efficiency(self):
        """Global: distinct bytes asked for over the bytes of the sectors touched (1.0
        when every fetched byte is used)."""
        return self.distinct_bytes / (32 * self.sectors) if self.sectors else 1.0

    @property
    def replays(self):
        """Shared: wavefronts beyond one per warp access (bank conflicts); 0 for global."""
        return self.wavefronts - self.warp_accesses if self.kind == "shared" else 0

    def __repr__(self):
        return (f"SiteMemory({self.kind} {self.where}: {self.warp_accesses} warp accesses, "
                f"{self.sectors} sectors, {self.wavefronts} wavefronts)")


class LaunchMemory:
    """The memory statistics of one emulated launch: its sites and global footprint."""

    def __init__(self, expr, grid, block, sites, footprint_sectors):
        self.expr, self.grid, self.block = expr, grid, block
        self.sites, self.footprint_sectors = sites, footprint_sectors

    def total(self, kind, field):
        return sum(getattr(s, field) for s in self.sites if s.kind == kind)


def compiler():
    """The C++ compiler used for the host build, or None if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def symbol(expr):
    """C identifier for a kernel name expression: ``fm_x<float>`` -> ``fm_x_float``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", expr).strip("_")


def cache_dir() -> pathlib.Path:
    """``$FASTMOM_CUDA_EMU_CACHE``, else the user cache directory of fastmom."""
    env = os.environ.get("FASTMOM_CUDA_EMU_CACHE")
    if env:
        return pathlib.Path(env)
    import platformdirs

    return pathlib.Path(platformdirs.user_cache_dir("fastmom")) / "cuda-emu"


def _unity_source(sources, names):
    lines = ["#define FASTMOM_EMULATION 1", '#include "common.cuh"']
    lines += [f'#include "{pathlib.Path(s).resolve()}"' for s in sources]
    lines += [f"FM_EMU_EXPORT({symbol(e)}, {e})" for e in names]
    return "\n".join(lines) + "\n"


def _memstats_default():
    return os.environ.get("FASTMOM_CUDA_EMU_MEMSTATS", "") not in ("", "0")


def build(sources=None, names=None, include_dir=None, memstats=None):
    """Compile kernel sources for the host; return an :class:`Emulator`.

    Parameters
    ----------
    sources : list of paths, optional
        ``.cu`` files (default: the cuda backend's :data:`~fastmom.backends.cuda.SOURCES`).
    names : list of str, optional
        Template instantiations to export (default: its :data:`NAME_EXPRESSIONS`).
    include_dir : path, optional
        Where ``common.cuh`` and ``emulation.cuh`` are (default: the package's).
    memstats : bool, optional
        Build with the memory statistics (default: ``$FASTMOM_CUDA_EMU_MEMSTATS``).

    The library is cached under a hash of everything that goes into it, so a second
    call (or process) with unchanged sources only loads it.
    """
    inc = pathlib.Path(include_dir) if include_dir else _cuda.source_dir()
    sources = [pathlib.Path(s) for s in (sources or [inc / s for s in _cuda.SOURCES])]
    names = tuple(names or _cuda.NAME_EXPRESSIONS)
    memstats = _memstats_default() if memstats is None else bool(memstats)
    # -g: the statistics name each access site by its source line (addr2line)
    flags = CXXFLAGS + (("-DFM_EMU_MEMSTATS=1", "-g") if memstats else ())
    cxx = compiler()
    if cxx is None:
        raise EmulationError("no C++ compiler found (set $CXX) to build the CUDA emulation")
    unity = _unity_source(sources, names)
    h = hashlib.sha256(unity.encode())
    for p in sorted(set(sources) | set(inc.glob("*.cuh"))):
        h.update(p.read_bytes())
    h.update(" ".join((cxx,) + flags).encode())
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    out = cache_dir() / h.hexdigest()[:20] / "libfmemu.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target, then rename: concurrent builders never see half a file
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = pathlib.Path(tmp) / "unity.cpp"
            src.write_text(unity)
            lib = pathlib.Path(tmp) / "lib.so"
            cmd = [cxx, *flags, f"-I{inc}", "-o", str(lib), str(src)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise EmulationError(f"host build of the CUDA kernels failed:\n{' '.join(cmd)}\n{r.stderr[-6000:]}")
            os.replace(lib, out)
    return Emulator(ctypes.CDLL(str(out)), names, path=out if memstats else None)


def _arg_code(a):
    if isinstance(a, np.ndarray):
        return f"p{a.itemsize}"
    if isinstance(a, np.generic):
        kind = {"f": "f", "i": "i", "u": "u"}.get(a.dtype.kind)
        if kind:
            return f"{kind}{a.itemsize}"
    raise TypeError(f"kernel arguments must be NumPy arrays or NumPy scalars of the exact C type, "
                    f"got {type(a).__name__} {a!r}")


class Emulator:
    """Kernels of one host build; :meth:`launch` runs one over a grid.

    With memory statistics (``build(memstats=True)``), every launch appends a
    :class:`LaunchMemory` to :attr:`memory_log` (clear it at will).
    """

    def __init__(self, lib, names, path=None):
        self.lib, self.names = lib, tuple(names)
        self._fns = {}
        self.memstats = path is not None
        self.path = path
        self.memory_log = []
        self._where = {}
        if self.memstats:
            self.lib.fm_emu_mem_site.argtypes = [ctypes.c_int, ctypes.POINTER(_MemSite)]
            self.lib.fm_emu_mem_footprint_sectors.restype = ctypes.c_uint64

    def where(self, pcs):
        """``{pc: "file:line"}`` for access sites: the innermost source frame outside
        ``emulation.cuh`` (a helper such as ``common.cuh``'s block_sum is named as such)."""
        todo = sorted({pc for pc in pcs if pc not in self._where})
        if todo and shutil.which("addr2line"):
            # pc is a return address: the call is the instruction before it
            r = subprocess.run(["addr2line", "-i", "-a", "-e", str(self.path)] + [hex(pc - 1) for pc in todo],
                               capture_output=True, text=True)
            frames, cur = {}, None
            for line in r.stdout.splitlines():
                if line.startswith("0x"):
                    cur = int(line, 16) + 1
                    frames[cur] = []
                elif cur is not None:
                    frames[cur].append(line.split(" (")[0])
            for pc, fr in frames.items():
                own = [f for f in fr if "emulation.cuh" not in f and not f.startswith("/usr")]
                self._where[pc] = pathlib.Path(own[0]).name if own else "?"
        return {pc: self._where.get(pc, "?") for pc in pcs}

    def _read_memory(self, expr, grid, block):
        n = self.lib.fm_emu_mem_nsites()
        raw = []
        for i in range(n):
            site = _MemSite()
            self.lib.fm_emu_mem_site(i, ctypes.byref(site))
            raw.append(site)
        where = self.where([int(r.pc) for r in raw])
        sites = [SiteMemory(r, where[int(r.pc)]) for r in raw]
        self.memory_log.append(LaunchMemory(expr, grid, block, sites, int(self.lib.fm_emu_mem_footprint_sectors())))

    def signature(self, expr):
        """The kernel's parameter codes, e.g. ``"p4,p4,i8,f4"`` (p: pointer, with element size)."""
        fn = getattr(self.lib, f"fm_emu_sig__{symbol(expr)}")
        fn.restype = ctypes.c_char_p
        return fn().decode()

    def launch(self, expr, grid, block, args, shared_mem=0):
        """Run kernel ``expr`` over ``grid`` x ``block`` with ``args`` (arrays, NumPy scalars).

        Raises
        ------
        EmulationError
            On a wrong argument list or any error the emulation detects in the kernel.
        """
        if expr not in self.names:
            raise EmulationError(f"kernel {expr!r} is not in this build ({', '.join(self.names)})")
        got = ",".join(_arg_code(a) for a in args)
        want = self.signature(expr)
        if got != want:
            raise EmulationError(f"{expr}: arguments ({got}) do not match the kernel's parameters ({want})")
        keep, argv = [], (ctypes.c_void_p * max(1, len(args)))()
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                if not a.flags["C_CONTIGUOUS"]:
                    raise EmulationError(f"{expr}: array argument {i} is not C-contiguous")
                obj = _PtrArg(a.ctypes.data, a.nbytes, _device_address(a) if self.memstats else 0)
            else:
                obj = ctypes.create_string_buffer(a.tobytes(), a.itemsize)
            keep.append(obj)
            argv[i] = ctypes.cast(ctypes.pointer(obj), ctypes.c_void_p)
        grid = tuple(int(v) for v in grid) + (1,) * (3 - len(grid))
        block = tuple(int(v) for v in block) + (1,) * (3 - len(block))
        cfg = _LaunchCfg((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), int(shared_mem))
        fn = self._fns.get(expr)
        if fn is None:
            fn = self._fns[expr] = getattr(self.lib, f"fm_emu_launch__{symbol(expr)}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(_LaunchCfg), ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        err = ctypes.create_string_buffer(1024)
        if self.memstats:
            self.lib.fm_emu_mem_reset()
        if fn(ctypes.byref(cfg), argv, err, len(err)) != 0:
            raise EmulationError(f"{expr} grid={grid} block={block}: {err.value.decode(errors='replace')}")
        if self.memstats:
            self._read_memory(expr, grid, block)


_default = {}


def kernels(n_sm=2, memstats=None):
    """The cuda backend's :class:`~fastmom.backends.cuda.Kernels` on NumPy arrays, emulated.

    ``n_sm`` stands in for the multiprocessor count (it sizes grids and batch splits);
    small values keep emulated grids small and still exercise multi-block paths.
    With ``memstats`` (default ``$FASTMOM_CUDA_EMU_MEMSTATS``), the build that counts
    memory accesses: its :class:`Emulator` is the returned object's ``emulator``.
    """
    memstats = _memstats_default() if memstats is None else bool(memstats)
    if memstats not in _default:
        _default[memstats] = build(memstats=memstats)
    emu = _default[memstats]
    k = _cuda.Kernels(np, emu.launch, lambda a: a.ctypes.data, n_sm)
    k.emulator = emu
    return k
