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

levels=$("$PYTHON" -c "from fastmom.backends import cpu; assert cpu.is_available() is True, cpu.is_available(); print(*cpu.supported_isas())")
best=$("$PYTHON" -c "from fastmom.backends import cpu; print(cpu.isa())")
echo "== levels this CPU runs: $levels (default $best)"
# the default level already ran the whole suite; ISA_ALL=1 repeats it here too
[ "${ISA_ALL:-0}" = 1 ] || levels=$(for l in $levels; do [ "$l" = "$best" ] || printf '%s ' "$l"; done)
for level in $levels; do
  FASTMOM_ISA=$level "$PYTHON" -c "
from fastmom.backends import cpu
assert cpu.isa() == '$level', (cpu.isa(), '$level')
assert cpu._k.direct_conv_applies(500, 2, 2) == ('$level' != 'baseline')"
  echo "== FASTMOM_ISA=$level [$((SECONDS - start)) s]"
  # the code compiled per level (kernels/cpu/isa_kernels.c) is conv, pooling, the small-batch
  # dense path and the momentum step: their tests (tests/backends/test_cpu_momentum.py runs
  # every level in one process already); softmax and the epilogues are the same code everywhere
  FASTMOM_ISA=$level "$PYTHON" -m pytest -q -p no:cacheprovider tests/backends/test_cpu.py \
    tests/backends/test_parity.py tests/backends/test_pool_ties.py tests/backends/test_isa.py \
    -k "not emulated and not gpu and not without_a_c_compiler and (conv or ties or thread or isa or level or direct or dense)"
done
echo "== kernel tests passed at every level: $levels [$((SECONDS - start)) s]"
