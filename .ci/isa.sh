#!/usr/bin/env bash
# The instruction-set job: the kernel tests against the reference once per level of the
# C kernels that this CPU runs (FASTMOM_ISA=baseline|avx2|avx512, see kernels/cpu/isa.h),
# the thread-count bit-identity test included, so every variant a user may get is
# tested here, not only this machine's best. Uses the installed (editable) build.
# Environment: PYTHON (default: the python on PATH, e.g. the activated .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
cd "$repo"
start=$SECONDS

supported=$("$PYTHON" -c "from fastmom.backends import cpu; assert cpu.is_available() is True, cpu.is_available(); print(*cpu.supported_isas())")
best=$("$PYTHON" -c "from fastmom.backends import cpu; print(cpu.isa())")
echo "== levels this CPU runs: $supported (default $best)"
levels=$supported
# the default level already ran the whole suite; ISA_ALL=1 repeats it here too
[ "${ISA_ALL:-0}" = 1 ] || levels=$(for l in $levels; do [ "$l" = "$best" ] || printf '%s ' "$l"; done)
for level in $levels; do
  FASTMOM_ISA=$level "$PYTHON" -c "
from fastmom.backends import cpu
assert cpu.isa() == '$level', (cpu.isa(), '$level')
assert cpu._k.direct_conv_applies(500, 2, 2) == ('$level' != 'baseline')"
  echo "== FASTMOM_ISA=$level [$((SECONDS - start)) s]"
  # the code compiled per level (kernels/cpu/isa_kernels.c) is conv, pooling, the small-batch
  # dense path, the momentum step and the bias + activation epilogue: their tests
  # (tests/backends/test_cpu_momentum.py and test_bias_act.py run every level in one
  # process already); softmax is the same code everywhere
  FASTMOM_ISA=$level "$PYTHON" -m pytest -q -p no:cacheprovider tests/backends/test_cpu.py \
    tests/backends/test_parity.py tests/backends/test_pool_ties.py tests/backends/test_isa.py \
    -k "not emulated and not gpu and not without_a_c_compiler and (conv or ties or thread or isa or level or direct or dense)"
done
echo "== kernel tests passed at every level: $levels [$((SECONDS - start)) s]"

# The AVX-512 level's forward (64-byte vectors, its tile shapes) and scattered backward
# (64-byte runs) where the CPU lacks
# AVX-512: a throwaway build with FASTMOM_EMULATE_AVX512=1 compiles that code into the
# AVX2 level (kernels/cpu/conv_direct.h), and the conv tests run it against the reference.
# A CPU with AVX-512 ran the real level above.
if [[ " $supported " != *" avx512 "* && " $supported " == *" avx2 "* ]]; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastmom-wide.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  . "$repo/.ci/copy_tree.sh"
  copy_tree "$tmp" --cython-output
  (cd "$tmp" && FASTMOM_EMULATE_AVX512=1 "$PYTHON" setup.py -q build_ext --inplace >build.log 2>&1) || {
    tail -40 "$tmp/build.log" >&2; echo "isa: the emulated AVX-512 build failed" >&2; exit 2; }
  echo "== the AVX-512 forward and scattered backward emulated at the avx2 level [$((SECONDS - start)) s]"
  # (the editable install's finder comes after PYTHONPATH: the copy's build is imported)
  (cd "$tmp" && export FASTMOM_ISA=avx2 FASTMOM_EMULATE_AVX512=1 PYTHONPATH="$tmp" &&
   "$PYTHON" -c "
from fastmom.backends import cpu
assert cpu._k.__file__.startswith('$tmp'), cpu._k.__file__
assert (cpu.isa(), cpu._k.forward_vector_bytes()) == ('avx2', 64), (cpu.isa(), cpu._k.forward_vector_bytes())" &&
   "$PYTHON" -m pytest -q -p no:cacheprovider tests/backends/test_cpu.py tests/backends/test_parity.py \
     tests/backends/test_pool_ties.py tests/backends/test_fuzz.py tests/backends/test_isa.py \
     -k "not emulated and not gpu and not without_a_c_compiler and (conv or ties or thread or direct)")
  echo "== the emulated AVX-512 forward and scattered backward passed [$((SECONDS - start)) s]"
fi
