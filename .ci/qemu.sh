#!/usr/bin/env bash
# The emulated-CPU job: the proof that one build runs on other x86-64 CPUs. Builds a
# wheel from a throwaway copy of the working tree (on this machine, whatever its CPU),
# installs it into a fresh virtual environment and runs a few kernel parity tests (one
# conv shape per path, dense, momentum) under `qemu-x86_64 -cpu Haswell`: AVX2 + FMA,
# no AVX-512. Dispatch must pick the avx2 kernels there, and FASTMOM_ISA=avx512 must be
# a clear error; with -march=native this build died of SIGILL in available_devices().
# Environment: PYTHON (default: the python on PATH, e.g. the activated .venv; its
# site-packages provide numpy, scipy and pytest to the fresh environment),
# QEMU_CPU (default Haswell).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
cpu_model=${QEMU_CPU:-Haswell}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastmom-qemu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  apt-get install -y -q qemu-user >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q qemu-user; }
fi

. "$repo/.ci/copy_tree.sh"
copy_tree "$tmp/src" --cython-output
"$PYTHON" -m pip wheel -q --no-build-isolation --no-deps -w "$tmp/dist" "$tmp/src" >"$tmp/build.log" 2>&1 || {
  tail -40 "$tmp/build.log" >&2; echo "qemu: wheel build failed" >&2; exit 2; }
wheel=$(ls "$tmp"/dist/fastmom-*.whl)
echo "== built $(basename "$wheel") [$((SECONDS - start)) s]"

# a fresh environment; the project venv's site-packages as a plain path entry (a .pth
# line does not run that directory's own .pth files, so its editable fastmom stays out)
"$PYTHON" -m venv --without-pip "$tmp/venv"
py=$tmp/venv/bin/python
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" >"$site/project-venv.pth"
"$PYTHON" -m pip --python "$py" install -q --no-deps --no-index "$wheel"
cp -r "$repo/tests" "$tmp/tests"  # the tests only: `import fastmom` must find the wheel
echo "== installed into a fresh venv [$((SECONDS - start)) s]"

emu=(qemu-x86_64 -cpu "$cpu_model")
cd "$tmp"
"${emu[@]}" "$py" -c "
import fastmom
from fastmom.backends import cpu
assert cpu.__file__.startswith('$site'), cpu.__file__
print('devices:', fastmom.available_devices(), 'levels:', cpu._k.isa_levels(), 'chosen:', cpu.isa())
assert 'cpu' in fastmom.available_devices()
assert cpu.isa() == 'avx2', 'dispatch picked ' + str(cpu.isa()) + ' on an AVX2-only CPU'
assert cpu._k.direct_conv_applies(500, 2, 2)" 2> >(grep -v "TCG doesn't support" >&2)
FASTMOM_ISA=avx512 "${emu[@]}" "$py" -c "
from fastmom.backends import cpu, get_backend, DeviceError
try:
    get_backend('cpu')
except DeviceError as exc:
    assert 'cannot run' in str(exc), exc
    print('FASTMOM_ISA=avx512:', exc)
else:
    raise AssertionError('FASTMOM_ISA=avx512 accepted on an AVX2-only CPU')" 2> >(grep -v "TCG doesn't support" >&2)
echo "== dispatch checked under qemu -cpu $cpu_model [$((SECONDS - start)) s]"

# one conv shape per path (im2col + 2x2 pool rows + GEMM backward; direct + scattered
# backward; generic windows; direct 1x2 windows), dense, momentum, the levels' agreement
sel="(cpu and ((conv_pool_forward_backward and relu and (10x1x28x28 or 7x20x12x12 or 3x2x10x7 or 2x4x11x9))"
sel+=" or (test_dense and 10x640x100 and relu and 1.0) or (momentum_step and 85670 and mu0.9-nestTrue)))"
sel+=" or (test_isa and not without_a_c_compiler)"
FASTMOM_NUM_THREADS=2 "${emu[@]}" "$py" -m pytest -q -p no:cacheprovider --rootdir "$tmp" \
  tests/backends/test_parity.py tests/backends/test_isa.py -k "$sel" 2> >(grep -v "TCG doesn't support" >&2)
echo "== kernel tests passed under qemu -cpu $cpu_model [$((SECONDS - start)) s]"
