"""Run the CUDA kernels on the CPU: the host build of ``kernels/cuda`` and its launcher.

The same ``.cu`` sources that RawModule compiles for the GPU are compiled here with
g++ against ``emulation.cuh`` (a small CUDA emulation: fibers as threads, a real
``__syncthreads`` barrier, bounds-checked global pointers, race-checked shared
memory; see that header) into a shared library, cached under a hash of the sources,
and launched through ctypes over their real grid and block shapes. A kernel error
(out-of-bounds access, shared-memory race, divergent barrier, bad launch shape or
argument types) raises :class:`EmulationError`.

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

__all__ = ["EmulationError", "Emulator", "build", "kernels", "compiler", "symbol"]

CXXFLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unused-variable")


class EmulationError(RuntimeError):
    """An emulated kernel launch failed: the message says what and where."""


class _LaunchCfg(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("dyn_shared", ctypes.c_uint64)]


class _PtrArg(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("nbytes", ctypes.c_int64)]


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


def build(sources=None, names=None, include_dir=None):
    """Compile kernel sources for the host; return an :class:`Emulator`.

    Parameters
    ----------
    sources : list of paths, optional
        ``.cu`` files (default: the cuda backend's :data:`~fastmom.backends.cuda.SOURCES`).
    names : list of str, optional
        Template instantiations to export (default: its :data:`NAME_EXPRESSIONS`).
    include_dir : path, optional
        Where ``common.cuh`` and ``emulation.cuh`` are (default: the package's).

    The library is cached under a hash of everything that goes into it, so a second
    call (or process) with unchanged sources only loads it.
    """
    inc = pathlib.Path(include_dir) if include_dir else _cuda.source_dir()
    sources = [pathlib.Path(s) for s in (sources or [inc / s for s in _cuda.SOURCES])]
    names = tuple(names or _cuda.NAME_EXPRESSIONS)
    cxx = compiler()
    if cxx is None:
        raise EmulationError("no C++ compiler found (set $CXX) to build the CUDA emulation")
    unity = _unity_source(sources, names)
    h = hashlib.sha256(unity.encode())
    for p in sorted(set(sources) | set(inc.glob("*.cuh"))):
        h.update(p.read_bytes())
    h.update(" ".join((cxx,) + CXXFLAGS).encode())
    h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    out = cache_dir() / h.hexdigest()[:20] / "libfmemu.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target, then rename: concurrent builders never see half a file
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = pathlib.Path(tmp) / "unity.cpp"
            src.write_text(unity)
            lib = pathlib.Path(tmp) / "lib.so"
            cmd = [cxx, *CXXFLAGS, f"-I{inc}", "-o", str(lib), str(src)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise EmulationError(f"host build of the CUDA kernels failed:\n{' '.join(cmd)}\n{r.stderr[-6000:]}")
            os.replace(lib, out)
    return Emulator(ctypes.CDLL(str(out)), names)


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
    """Kernels of one host build; :meth:`launch` runs one over a grid."""

    def __init__(self, lib, names):
        self.lib, self.names = lib, tuple(names)
        self._fns = {}

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
                obj = _PtrArg(a.ctypes.data, a.nbytes)
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
        if fn(ctypes.byref(cfg), argv, err, len(err)) != 0:
            raise EmulationError(f"{expr} grid={grid} block={block}: {err.value.decode(errors='replace')}")


_default = None


def kernels(n_sm=2):
    """The cuda backend's :class:`~fastmom.backends.cuda.Kernels` on NumPy arrays, emulated.

    ``n_sm`` stands in for the multiprocessor count (it sizes grids and batch splits);
    small values keep emulated grids small and still exercise multi-block paths.
    """
    global _default
    if _default is None:
        _default = build()
    return _cuda.Kernels(np, _default.launch, lambda a: a.ctypes.data, n_sm)
