"""Build the Cython CPU kernels (kernels/cpu/*.pyx) with OpenMP.

Environment switches:
- ``FASTMOM_DEBUG=1``: bounds checking and wraparound back on, ``-O0 -g``.
- ``FASTMOM_SANITIZE=1``: AddressSanitizer + UndefinedBehaviorSanitizer (implies debug).
- ``FASTMOM_NO_OPENMP=1``: build without OpenMP (single-threaded kernels).
- ``FASTMOM_PORTABLE=1``: no ``-march=native``. By default the kernels are compiled for
  the CPU that builds them (``pip install .`` builds on the machine that runs them):
  AVX2/AVX-512 loops make the momentum step 1.3x faster on this project's machine. Set
  it when building a wheel or a shared environment for other CPUs.
"""
import glob
import os
import sys

from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _accepts(flag):
    """Whether the C compiler takes ``flag`` (not every compiler knows -march=native)."""
    import subprocess
    import sysconfig
    import tempfile
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as fh:
            fh.write("int main(void) { return 0; }\n")
        try:
            res = subprocess.run(cc + [flag, "-c", src, "-o", os.path.join(tmp, "t.o")],
                                 capture_output=True)
        except OSError:
            return False
    return res.returncode == 0


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
    if not _flag("FASTMOM_PORTABLE") and _accepts("-march=native"):
        compile_args.append("-march=native")
    exts = []
    for src in sources:
        mod = os.path.splitext(os.path.basename(src))[0]
        exts.append(Extension(
            f"fastmom._kernels.{mod}", [src],
            include_dirs=[numpy.get_include(), os.path.join("kernels", "cpu")],
            # the C headers beside the .pyx: an edit to one alone must rebuild the module
            depends=sorted(glob.glob(os.path.join("kernels", "cpu", "*.h"))),
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


setup(ext_modules=extensions())
