"""Run the command line as a user does: ``python -m fastmom`` in a subprocess."""
import os
import subprocess
import sys


def run_fastmom(*args, check=True, env=None, cwd=None):
    """Run ``python -m fastmom ARGS``; with ``check``, fail on a non-zero exit. A
    traceback on stderr is always a failure: the CLI reports errors in one line."""
    full_env = dict(os.environ, FASTMOM_NUM_THREADS=os.environ.get("FASTMOM_NUM_THREADS", "1"), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "fastmom", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc
