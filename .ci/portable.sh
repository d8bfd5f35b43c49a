#!/usr/bin/env bash
# The portable-build job: FASTMOM_PORTABLE=1 compiles without -march=native, hence
# without the AVX2 direct convolution (kernels/cpu/conv_direct.h) and with the pooling
# rows (pool.h) on SSE2 vectors. Build that in a throwaway copy of the working tree,
# check that it really took the other path, and run the kernel tests on it.
# Environment: PYTHON (default: the python on PATH, e.g. the activated .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastmom-portable.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

(cd "$repo" && git ls-files -z -c -o --exclude-standard | tar --null -T - -cf -) | tar -x -C "$tmp"
rm -f "$tmp"/fastmom/_kernels/*.so
cd "$tmp"
FASTMOM_PORTABLE=1 "$PYTHON" setup.py -q build_ext --inplace >build.log 2>&1 || {
  tail -40 build.log >&2; echo "portable: build failed" >&2; exit 2; }
# the copy, not the editable install, must be imported (cwd first on sys.path)
PYTHONPATH="$tmp" "$PYTHON" -c "
from fastmom.backends import cpu
assert cpu.__file__.startswith('$tmp'), cpu.__file__
assert not cpu._k.direct_conv_applies(500, 2, 2), 'the portable build has the AVX2 direct kernel'"
PYTHONPATH="$tmp" "$PYTHON" -m pytest -q -p no:cacheprovider tests/backends/test_cpu.py tests/backends/test_parity.py -k "not emulated and not gpu"
echo "== portable build: kernel tests passed"
