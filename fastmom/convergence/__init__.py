"""Convergence benchmark suite: plain SGD against momentum, measured the way
optimizer-benchmark papers measure it.

A single training run says little about an optimizer: its result depends on the
learning rate, the seed and the budget. This package runs, for each problem,
every optimizer over a log grid of learning rates and several seeds, then
follows the protocol of DeepOBS (Schneider et al., ICLR 2019) and MLCommons
AlgoPerf:

1. each optimizer's eta is chosen on **validation** accuracy only (by default
   the best mean-over-seeds validation accuracy after the last epoch);
2. the test figures of that choice are reported as mean +/- std over seeds;
3. speed is the number of epochs (and training seconds) needed to reach a target
   validation accuracy;
4. sensitivity is the accuracy across the whole eta grid.

For one seed, every optimizer starts from the same initial weights
(``Network(seed=s)``), sees the data in the same order (``Trainer(seed=s)``) and
draws the same dropout masks; each run records a fingerprint of its initial
weights so that this can be checked in the JSON.

Modules:

- :mod:`.problems`: the optimizers, the problems (registry) and their data subsets;
- :mod:`.suite`: :func:`run_one` (one training run) and :func:`run_suite` (a grid,
  resumable, combinable from several sessions' files);
- :mod:`.resumable`: each run's per-epoch checkpoints, so that ``--resume`` continues
  an interrupted run instead of training it again;
- :mod:`.metrics`: the pure functions the report is built from
  (:func:`epochs_to_target`, :func:`select_eta`, :func:`summarize_setting`,
  :func:`compare_to_sgd`...), on plain run records, so that a report can be
  rebuilt from a saved JSON file; ``fastmom compare`` uses them too;
- :mod:`.report`: the JSON document and the Markdown report; :mod:`.plots`: the PNGs;
- :mod:`.__main__`: the command line (``fastmom bench-convergence ...`` and
  ``python -m fastmom.convergence ...``).
"""
from __future__ import annotations

from .._machine import machine_info
from .metrics import compare_to_sgd, epochs_to_target, seconds_to_target, select_eta, summarize_setting
from .plots import write_plots
from .problems import (DEFAULT_ETAS, EXPAND_SEED, PROBLEM_ALIASES, PROBLEMS, QUICK, OptimizerSpec,
                       Problem, build_network, load_problem_data)
from .report import write_markdown
from .suite import run_one, run_suite

# public names of the former single module that were not in its __all__, still here
from .metrics import SELECTION_CRITERIA, accuracy_profile, summarize_document  # noqa: F401,E402
from .problems import RESULT_PREFIX, resolve_problems  # noqa: F401,E402
from .report import markdown_report, write_reports  # noqa: F401,E402

__all__ = [
    "Problem", "OptimizerSpec", "PROBLEMS", "PROBLEM_ALIASES", "DEFAULT_ETAS", "EXPAND_SEED", "QUICK",
    "build_network", "load_problem_data", "run_one", "run_suite", "select_eta",
    "epochs_to_target", "seconds_to_target", "summarize_setting", "compare_to_sgd",
    "machine_info", "write_markdown", "write_plots", "main",
]


def main(argv=None):
    """``fastmom bench-convergence``: parse ``argv`` and run; returns the exit status.

    (The command line lives in :mod:`.__main__`, imported here only when called, so
    that ``python -m fastmom.convergence`` runs that module once.)
    """
    from .__main__ import main as _main

    return _main(argv)
