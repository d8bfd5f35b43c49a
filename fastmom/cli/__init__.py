"""Command line: ``fastmom train``, ``compare``, ``evaluate``, ``summary`` and
``bench-convergence``; ``python -m fastmom`` is the same program.

``options`` (the parser), ``checks`` (what is refused before any work), ``prepare``
(threads, data, network), ``train``, ``compare``, ``inspection`` (``evaluate`` and
``summary``), ``output`` (where lines go, the per-epoch line, plots).

Exit status: 0 on success; 2 for a refused command line and for the library's own
errors (one line on standard error: a diverged run, a damaged data or checkpoint file,
an unavailable device, a file that cannot be written); 130 after Ctrl-C; 1, with the
traceback, for anything else (a bug: please report it).
"""
from __future__ import annotations

import sys
import warnings

from .options import build_parser
from ..backends import DeviceError
from ..train import DivergenceError

__all__ = ["main"]

#: A refused command line or a library error (argparse uses 2 as well).
USAGE = 2


def _errors():
    """The exceptions that are the user's to fix, not a bug: reported in one line."""
    # DataError, CheckpointError and the CLI's UsageError are ValueErrors; OSError covers
    # a disk that fills up or a file that vanished between the check and the write
    return (DeviceError, DivergenceError, ValueError, OSError)


def _run(args):
    if args.command == "train":
        from .train import run_train
        return run_train(args)
    if args.command == "compare":
        from .compare import run_compare
        return run_compare(args)
    if args.command == "evaluate":
        from .inspection import run_evaluate
        return run_evaluate(args)
    from .inspection import run_summary
    return run_summary(args)


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench-convergence":
        from ..convergence import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    # a warning (a collapsing run, a deprecated name) is one line for a user, not a source line
    warnings.formatwarning = lambda message, category, *rest, **kw: f"fastmom: warning: {message}\n"
    try:
        return _run(args)
    except KeyboardInterrupt:
        from .train import INTERRUPTED
        print("fastmom: interrupted; nothing saved", file=sys.stderr)
        return INTERRUPTED
    except _errors() as exc:
        print(f"fastmom: error: {exc}", file=sys.stderr)
        return USAGE

