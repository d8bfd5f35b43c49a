"""SASS lint of the CUDA kernels: per kernel, registers, spills, shared memory and the
instructions per FMA of its hottest loop, read from the sm_90 machine code (no GPU).

Run ``python -m bench.sass_lint [--arch sm_90]``: compiles the module RawModule gets
(every name expression instantiated) with ``nvcc -cubin``, reads ``cuobjdump
-res-usage`` and ``cuobjdump -sass`` (``cuobjdump``/``nvdisasm`` from the CUDA toolkit
or the ``nvidia-cuda-cuobjdump`` and ``nvidia-cuda-nvdisasm`` wheels) and prints a table.

Shared bytes are the static shared memory (sm_90 adds 1 KiB reserved per block); the
hottest loop is the innermost loop (a backward branch whose body holds no other
backward branch) with the most FFMA/DFMA; "instr/FMA" is its instruction count over
its FMA count. tests/backends/test_cuda_compile.py enforces no spills anywhere and a
budget per conv kernel instance (issue 13's target, 4; 2 for the register-blocked
forward's instances) and per small-batch dense kernel instance (4 for fm_dense_small, 5
for fm_dense_wgrad_small, whose R = 8 instance has only 8 FMAs a row).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from fastmom.backends import cuda

FMA_OPS = ("FFMA", "DFMA")


def tool(name):
    """Path of a CUDA binary tool: PATH, the toolkit, or the nvidia wheels' bin dir."""
    found = shutil.which(name)
    if found:
        return found
    candidates = [pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / name]
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    candidates += sorted(site.glob(f"nvidia/*/bin/{name}")) + sorted(site.glob(f"nvidia/cuda_*/bin/{name}"))
    return next((str(p) for p in candidates if p.exists()), None)


def compile_cubin(arch, workdir):
    unit = pathlib.Path(workdir) / "module.cu"
    unit.write_text(cuda.module_source() + "\nvoid* fm_instances[] = {"
                    + ", ".join(f"(void*)&{e}" for e in cuda.NAME_EXPRESSIONS) + "};\n")
    out = pathlib.Path(workdir) / "module.cubin"
    cmd = [tool("nvcc"), *cuda.COMPILE_OPTIONS, f"-I{cuda.source_dir()}", f"-arch={arch}", "-cubin",
           "-o", str(out), str(unit)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def _env_with_nvdisasm():
    # cuobjdump -sass runs nvdisasm: point it at the one found beside the other tools
    env = dict(os.environ)
    nvdisasm = tool("nvdisasm")
    if nvdisasm:
        env["PATH"] = str(pathlib.Path(nvdisasm).parent) + os.pathsep + env.get("PATH", "")
    return env


def resource_usage(cubin):
    """{mangled name: {"REG", "STACK", "SHARED", "LOCAL", ...}} from ``cuobjdump -res-usage``."""
    text = subprocess.run([tool("cuobjdump"), "-res-usage", str(cubin)], check=True, capture_output=True,
                          text=True).stdout
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
        elif name and "REG:" in line:
            out[name] = {k: int(v) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line)}
            name = None
    return out


def sass_functions(cubin):
    """{mangled name: [(address, opcode, text)]} from ``cuobjdump -sass``."""
    text = subprocess.run([tool("cuobjdump"), "-sass", str(cubin)], check=True, capture_output=True, text=True,
                          env=_env_with_nvdisasm()).stdout
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = out[m.group(1)] = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and cur is not None:
            body = re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())  # drop the predicate
            cur.append((int(m.group(1), 16), body.split()[0].split(".")[0], body))
    return out


def hottest_loop(instrs):
    """``(instructions, fmas)`` of the innermost loop with the most FMAs, or None."""
    loops = []
    for addr, op, body in instrs:
        m = re.match(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?(?:0x)?([0-9a-f]+)", body)
        if op == "BRA" and m:
            target = int(m.group(1), 16)
            if target <= addr:
                loops.append((target, addr))
    inner = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    best = None
    for a, b in inner:
        body = [op for addr, op, _ in instrs if a <= addr <= b]
        fmas = sum(op in FMA_OPS for op in body)
        if fmas and (best is None or fmas > best[1]):
            best = (len(body), fmas)
    return best


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return {n: n for n in names}
    text = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout
    return {n: re.sub(r"^void\s+", "", d).split("(")[0] for n, d in zip(names, text.splitlines())}


def lint(arch="sm_90"):
    """One row per kernel: name, registers, spill (stack/local) bytes, static shared
    bytes, and the hottest loop's (instructions, FMAs) or None."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = compile_cubin(arch, tmp)
        usage = resource_usage(cubin)
        funcs = sass_functions(cubin)
    names = demangle(sorted(usage))
    rows = []
    for mangled in sorted(usage, key=lambda n: names[n]):
        u = usage[mangled]
        rows.append({"kernel": names[mangled], "registers": u.get("REG", 0),
                     "spill_bytes": u.get("STACK", 0) + u.get("LOCAL", 0), "shared_bytes": u.get("SHARED", 0),
                     "hottest_loop": hottest_loop(funcs.get(mangled, []))})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args(argv)
    missing = [t for t in ("nvcc", "cuobjdump", "nvdisasm") if tool(t) is None]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (CUDA toolkit, or pip install nvidia-cuda-cuobjdump "
                 "nvidia-cuda-nvdisasm)")
    rows = lint(args.arch)
    print(f"| kernel ({args.arch}) | registers | spill bytes | shared bytes | hottest loop instr/FMA |")
    print("|---|---|---|---|---|")
    for r in rows:
        loop = r["hottest_loop"]
        per = f"{loop[0] / loop[1]:.1f} ({loop[0]} / {loop[1]})" if loop else "no FMA loop"
        print(f"| {r['kernel']} | {r['registers']} | {r['spill_bytes']} | {r['shared_bytes']} | {per} |")
    return rows


if __name__ == "__main__":
    main()
