"""The cpu backend's threading policy under load: why the default is what it is.

Usage, from the repository root (``python bench/thread_policy.py ...`` works too)::

    python -m bench.thread_policy [--markdown out.md] [--json out.json]

Measures network3's training step (batch 10 and 64, float32, median of interleaved
rounds) with 0, 1 and 2 other processes keeping cores busy (each a Python busy loop),
under four policies, each in a fresh process because libgomp reads its wait policy
once, when it starts:

- ``auto`` (the default): short spin (``GOMP_SPINCOUNT=10000``) and the automatic thread
  count (the cores that other processes leave free);
- ``2 threads, spin``: the same spin, the count fixed at 2;
- ``2 threads, passive``: the previous default (``OMP_WAIT_POLICY=passive``);
- ``1 thread``.

Run it on an otherwise idle machine: the busy processes are the only load wanted.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__:  # python -m bench.thread_policy
    from . import common as C
else:  # python bench/thread_policy.py: Python itself puts bench/ first on the path
    import common as C

#: The directory that holds ``bench/``: ``python -m bench.thread_policy`` runs from there.
ROOT = Path(__file__).resolve().parent.parent

POLICIES = [
    ("auto (default)", {}),
    ("2 threads, spin", {"FASTMOM_NUM_THREADS": "2"}),
    ("2 threads, passive (old default)", {"FASTMOM_NUM_THREADS": "2", "OMP_WAIT_POLICY": "passive"}),
    ("1 thread", {"FASTMOM_NUM_THREADS": "1"}),
]
BATCHES = (10, 64)
BUSY_LOOP = "import time\nt = time.time()\nwhile time.time() - t < 600: pass\n"


def _child():
    from fastmom.backends import cpu
    out = {}
    for batch in BATCHES:
        train, _ = C.fastmom_step("cpu", batch)
        out[str(batch)] = C.measure({"train": train}, min_time=0.1, rounds=5)["train"]
    out["threads_at_end"] = cpu.get_num_threads()
    out["thread_policy"] = cpu.thread_policy()
    print(json.dumps(out))


def _measure(env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTMOM_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-m", "bench.thread_policy", "--child"], env=env,
                         cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child()
    results = []
    for n_busy in (0, 1, 2):
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n_busy)]
        try:
            time.sleep(0.5)
            for name, env in POLICIES:
                r = _measure(env)
                results.append({"busy_processes": n_busy, "policy": name, "env": env, **r})
                print(f"busy {n_busy}  {name:34s} " + "  ".join(
                    f"b{b}: {r[str(b)] * 1e3:.2f} ms" for b in BATCHES)
                    + f"  (threads at the end: {r['threads_at_end']})", flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    lines = [f"# cpu backend threading policy under load ({datetime.datetime.now().isoformat(timespec='seconds')})",
             "", f"- cores available: {len(os.sched_getaffinity(0))}; command: `python -m bench.thread_policy`",
             "- network3's training step, float32, median ms per step; other processes are busy loops", "",
             "| other busy processes | policy | " + " | ".join(f"batch {b}" for b in BATCHES)
             + " | threads used at the end |",
             "|---|---|" + "---|" * len(BATCHES) + "---|"]
    for r in results:
        lines.append(f"| {r['busy_processes']} | {r['policy']} | "
                     + " | ".join(f"{r[str(b)] * 1e3:.2f}" for b in BATCHES) + f" | {r['threads_at_end']} |")
    text = "\n".join(lines) + "\n"
    C.write_outputs(text, results, args.markdown, args.json)


if __name__ == "__main__":
    main()
