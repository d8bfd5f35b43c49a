"""``fastmom bench-convergence`` / ``python -m fastmom.convergence``: the command line
of the convergence suite.

Output directory: ``--out DIR``. Without it, results go to ``./bench/results`` when
that directory exists in the working directory (a checkout of this repository), and
to ``./convergence-quick`` with ``--quick`` (so that a smoke test never overwrites
results); anywhere else a run without ``--out`` is refused. ``--report JSON`` writes
next to its JSON file and ``--list`` writes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .metrics import SELECTION_CRITERIA, summarize_document
from .plots import import_pyplot
from .problems import PROBLEMS, QUICK, RESULT_PREFIX, OptimizerSpec, resolve_problems
from .report import write_reports
from .suite import run_suite
from ..backends import DeviceError

__all__ = ["build_parser", "main"]

#: The results directory of a checkout, used when it exists and ``--out`` is not given.
DEFAULT_OUT = Path("bench") / "results"
QUICK_OUT = Path("convergence-quick")


def _floats(text):
    return [float(x) for x in text.split(",") if x.strip()]


def _eta_grid(text):
    """``0.01,0.1`` (every optimizer) or ``sgd=0.03,0.1;momentum-0.9=0.003,0.01``."""
    if "=" not in text:
        return _floats(text)
    out = {}
    for part in text.split(";"):
        if part.strip():
            label, _, values = part.partition("=")
            out[OptimizerSpec.parse(label).label] = _floats(values)
    return out


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def _problems_epilog():
    """The problems by number; a number naming several (3: on the sample and on
    Fashion-MNIST) lists them together, as ``--problem 3`` runs them together."""
    by_number = {}
    for name, p in PROBLEMS.items():
        by_number.setdefault(p.number, []).append(f"{name} ({p.description})")
    return "problems: " + "; ".join(f"{number}: {' and '.join(items)}" for number, items in by_number.items())


def build_parser(prog="fastmom bench-convergence"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convergence benchmark: plain SGD vs momentum over an eta grid and several "
                    "seeds; eta chosen on validation accuracy, test accuracy reported as "
                    "mean ± std over seeds.",
        epilog=_problems_epilog())
    p.add_argument("--problem", action="append", default=None,
                   help="problem name or number 1-4, comma-separated or repeated "
                        "(default: conv-sample)")
    p.add_argument("--optimizers", type=lambda s: [x for x in s.split(",") if x.strip()],
                   help="comma list, e.g. sgd,momentum-0.9,nesterov-0.9,momentum-0.9+plateau")
    p.add_argument("--etas", type=_eta_grid,
                   help="comma list of learning rates for every optimizer, or one grid per "
                        "optimizer: 'sgd=0.03,0.1,0.3;momentum-0.9=0.003,0.01,0.03'")
    p.add_argument("--seeds", type=_ints, help="comma list of seeds, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, help="epoch budget (default: the problem's)")
    p.add_argument("--batch-size", type=_ints, help="batch size(s), comma list")
    p.add_argument("--device", help="reference, cpu or cuda (default: fastmom's default)")
    p.add_argument("--out", help="output directory (default: ./bench/results where that directory "
                                 "exists, as in a checkout of fastmom, else required; with --quick: "
                                 "convergence-quick, so that a smoke test never overwrites results)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: etas {QUICK['etas']}, seed 0, {QUICK['epochs']} epochs of "
                        f"{QUICK['max_batches']} batches, {QUICK['max_eval']} evaluation images")
    p.add_argument("--max-batches", type=int, help="use only this many training batches per epoch")
    p.add_argument("--fraction", type=float, help="use only this fraction of the training set")
    p.add_argument("--max-eval", type=int, help="use only this many validation and test images")
    p.add_argument("--expand", action="store_true",
                   help="train on network3's expanded training set (each image and its four "
                        "one-pixel shifts, 5x the images; validation and test not expanded); "
                        "default output directory: ./bench/results/convergence-PROBLEM-expand")
    p.add_argument("--select", choices=SELECTION_CRITERIA, default="final",
                   help="eta selection on validation accuracy: final (default), best, target")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished runs in the output directory's JSON and continue an "
                        "interrupted run from its last checkpoint (every run checkpoints each "
                        "epoch under OUT/checkpoints/ until it is finished)")
    p.add_argument("--resume-from", metavar="JSON", action="append", default=[],
                   help="also reuse the runs of this JSON (a grid split over processes or "
                        "machines); repeatable")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: only combine and report the runs that --resume and "
                        "--resume-from provide")
    p.add_argument("--report", metavar="JSON", action="append",
                   help="only rebuild the Markdown and plots from an existing JSON file")
    p.add_argument("--list", action="store_true", help="list the problems and exit")
    return p


def default_out(quick):
    """The output directory when ``--out`` is not given, or None when there is none."""
    if quick:
        return QUICK_OUT
    return DEFAULT_OUT if DEFAULT_OUT.is_dir() else None


def _list_problems():
    for name, p in PROBLEMS.items():
        print(f"{p.number}  {name:16s} {p.description}\n   batch {p.batch_sizes}, lmbda "
              f"{p.lmbda}, {p.epochs} epochs, target {p.target:.0%} validation; "
              f"optimizers {', '.join(p.optimizers)}; etas {p.etas}; seeds {p.seeds}")


def _read_result(path):
    """The suite's JSON document in ``path``, or ValueError naming ``--report`` and why
    it is not one (missing, not JSON, another command's JSON)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--report {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--report {path}: cannot read it as JSON ({exc})") from None
    missing = [key for key in ("config", "runs") if not isinstance(doc, dict) or key not in doc]
    if missing:
        raise ValueError(f"--report {path}: not a convergence suite result (no {', '.join(missing)}); "
                         f"--report reads the {RESULT_PREFIX}-*.json files bench-convergence writes")
    return doc


def _report(paths, plots):
    """``--report``: rebuild the Markdown (and plots) next to each JSON, training nothing."""
    docs = [(path, _read_result(path)) for path in paths]  # every file checked before any write
    for path, doc in docs:
        doc["summary"] = summarize_document(doc)
        for f in write_reports(doc, Path(path).parent, plots=plots):
            print(f"wrote {f}")


def _check_before_training(args):
    """The problems to run, or an error message: refuse what would fail only after
    hours of training."""
    try:
        problems = resolve_problems(args.problem or ["conv-sample"])
    except ValueError as exc:
        return None, str(exc)
    if not args.no_plots:
        try:
            import_pyplot()
        except ImportError as exc:
            return None, str(exc)
    if args.out is None and default_out(args.quick) is None:
        return None, (f"no ./{DEFAULT_OUT.as_posix()} directory here: give the output directory "
                      f"with --out DIR")
    return problems, None


def _run(args, problems, command):

    quick = QUICK if args.quick else {}
    pick = lambda value, key: value if value is not None else quick.get(key)  # noqa: E731
    for name in problems:
        out = args.out if args.out is not None else str(default_out(args.quick))
        if args.expand and args.out is None and not args.quick:  # never beside the plain results
            out = str(Path(out) / f"{RESULT_PREFIX}-{name}-expand")
        try:
            run_suite(name, optimizers=pick(args.optimizers, "optimizers"),
                      etas=pick(args.etas, "etas"), seeds=pick(args.seeds, "seeds"),
                      epochs=pick(args.epochs, "epochs"), batch_sizes=args.batch_size,
                      device=args.device, max_batches=pick(args.max_batches, "max_batches"),
                      fraction=args.fraction, max_eval=pick(args.max_eval, "max_eval"),
                      criterion=args.select, out=out, plots=not args.no_plots,
                      resume=args.resume, resume_from=args.resume_from,
                      train_missing=not args.no_train, command=command, expand=args.expand)
        except (ValueError, DeviceError) as exc:  # bad grid, missing data set or device
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {Path(out) / f'{RESULT_PREFIX}-{name}'}.{{json,md}}"
              + ("" if args.no_plots else " and plots"))
    return 0


def main(argv=None):
    """``fastmom bench-convergence``: parse ``argv`` and run. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        _list_problems()
        return 0
    if args.report:
        try:
            _report(args.report, plots=not args.no_plots)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    problems, error = _check_before_training(args)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = "fastmom bench-convergence " + " ".join(argv if argv is not None else sys.argv[1:])
    return _run(args, problems, command.strip())


if __name__ == "__main__":
    sys.exit(main())
