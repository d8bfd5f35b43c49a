"""Build the Cython CPU kernels (kernels/cpu/*.pyx) with OpenMP.

One build runs on every machine of its architecture: the hot C kernels
(kernels/cpu/isa_kernels.c: conv_direct.h, pool.h) are compiled once per instruction-set
level and the extension picks the highest level this CPU runs at import (see
kernels/cpu/isa.h; ``FASTMOM_ISA`` forces a lower one). On x86-64 the levels are
``baseline`` (x86-64-v2), ``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512 F/VL/BW/DQ);
elsewhere only ``baseline``, the compiler's default target. The Cython code itself is
compiled for the default target only.

Where no C compiler works (e.g. ``CC=false``), the build skips the extension with a
warning and the install still succeeds: fastmom then runs on its NumPy reference
backend and says so at import. A compiler that works but fails on the kernels is an
error, as it should be.

Environment switches:
- ``FASTMOM_DEBUG=1``: bounds checking and wraparound back on, ``-O0 -g``.
- ``FASTMOM_SANITIZE=1``: AddressSanitizer + UndefinedBehaviorSanitizer (implies debug).
- ``FASTMOM_NO_OPENMP=1``: build without OpenMP (single-threaded kernels).
"""
import glob
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: The one source of the per-level objects (see kernels/cpu/isa.h).
ISA_SOURCE = os.path.join("kernels", "cpu", "isa_kernels.c")
#: The extension that links them.
ISA_EXTENSION = "fastmom._kernels._cpu"
_X86_V2 = ["-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt"]
_AVX2 = ["-mavx", "-mavx2", "-mfma"]
_AVX512 = ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
#: Instruction-set levels, lowest first, with their flags; isa.h's runtime checks match
#: these features. A level whose flags this compiler rejects (any non-x86 target) is
#: left out of the build.
ISA_LEVELS = (("baseline", _X86_V2), ("avx2", _X86_V2 + _AVX2),
              ("avx512", _X86_V2 + _AVX2 + _AVX512))


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class BuildExt(build_ext):
    """build_ext that compiles the per-level kernel objects into the extension and skips
    the extension (with a warning) where no C compiler works."""

    def _compiles(self, flags, code="int main(void) { return 0; }\n"):
        from setuptools.errors import CompileError
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as fh:
                fh.write(code)
            try:
                self.compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            except (CompileError, OSError):
                return False
        return True

    def build_extensions(self):
        if not self._compiles([]):
            self.warn("no working C compiler: the compiled CPU kernels are NOT built; "
                      "fastmom will run on its NumPy reference backend. Install a C "
                      "compiler (e.g. gcc) and reinstall to get them.")
            return
        super().build_extensions()

    def build_extension(self, ext):
        if ext.name == ISA_EXTENSION:
            self._add_isa_objects(ext)
        super().build_extension(ext)

    def _add_isa_objects(self, ext):
        """Compile ISA_SOURCE once per level this compiler targets, with the level's
        flags, into ext's objects; tell the Cython side which levels exist."""
        x86 = self._compiles([], "#if !defined(__x86_64__) && !defined(__i386__)\n"
                                 "#error not x86\n#endif\nint main(void) { return 0; }\n")
        objects, macros = [], []
        for name, flags in ISA_LEVELS:
            if not x86:
                if name != "baseline":
                    continue
                flags = []
            elif not self._compiles(flags):
                if name == "baseline":  # an x86 compiler that takes none of these
                    flags = []
                else:
                    continue
            if name == "avx2" and _flag("FASTMOM_EMULATE_AVX512"):
                # a test build: the AVX-512 level's forward tiles and 64-byte scattered
                # backward at the AVX2 level, for a CPU without AVX-512 to test them
                # (kernels/cpu/conv_direct.h, .ci/isa.sh)
                flags = flags + ["-DFM_EMULATE_AVX512=1"]
            objects += self.compiler.compile(
                [ISA_SOURCE], output_dir=os.path.join(self.build_temp, "isa", name),
                macros=ext.define_macros + [("FM_ISA", name)], include_dirs=ext.include_dirs,
                extra_postargs=ext.extra_compile_args + flags, depends=ext.depends,
                debug=self.debug)
            macros.append((f"FASTMOM_HAVE_{name.upper()}", "1"))
        ext.extra_objects = list(ext.extra_objects or []) + objects
        ext.define_macros = ext.define_macros + macros
        self.announce(f"fastmom: instruction-set levels {', '.join(m[0][13:].lower() for m in macros)}",
                      level=2)


def extensions():
    sources = sorted(glob.glob(os.path.join("kernels", "cpu", "*.pyx")))
    if not sources:
        return []
    import numpy
    from Cython.Build import cythonize

    debug = _flag("FASTMOM_DEBUG") or _flag("FASTMOM_SANITIZE")
    openmp = not _flag("FASTMOM_NO_OPENMP") and sys.platform != "darwin"
    compile_args = ["-O0", "-g"] if debug else ["-O3"]
    link_args = []
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    if _flag("FASTMOM_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
        compile_args += san
        link_args += san
    exts = []
    for src in sources:
        mod = os.path.splitext(os.path.basename(src))[0]
        exts.append(Extension(
            f"fastmom._kernels.{mod}", [src],
            include_dirs=[numpy.get_include(), os.path.join("kernels", "cpu")],
            # the C headers and sources beside the .pyx: an edit to one alone must rebuild
            depends=sorted(glob.glob(os.path.join("kernels", "cpu", "*.[ch]"))),
            extra_compile_args=compile_args, extra_link_args=link_args,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            language="c",
        ))
    directives = {
        "language_level": 3, "boundscheck": debug, "wraparound": debug, "initializedcheck": debug,
        "cdivision": not debug, "nonecheck": debug, "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives, build_dir="build/cython",
                     compile_time_env={"FASTMOM_OPENMP": openmp})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
