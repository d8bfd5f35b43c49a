"""Convergence benchmark suite: plain SGD against momentum, measured the way
optimizer-benchmark papers measure it.

A single training run says little about an optimizer: its result depends on the
learning rate, the seed and the budget. This module runs, for each problem,
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

Entry points: :func:`main` (``fastmom bench-convergence ...`` and
``python -m fastmom.convergence ...``), :func:`run_suite`, and the pure
functions the report is built from (:func:`select_eta`,
:func:`epochs_to_target`, :func:`summarize_setting`), which work on plain run
records so that a report can be rebuilt from a saved JSON file.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

__all__ = [
    "Problem", "OptimizerSpec", "PROBLEMS", "PROBLEM_ALIASES", "DEFAULT_ETAS", "QUICK",
    "build_network", "load_problem_data", "run_one", "run_suite", "select_eta",
    "epochs_to_target", "seconds_to_target", "summarize_setting", "compare_to_sgd",
    "machine_info", "write_markdown", "write_plots", "main",
]

#: Half-decade log grid over [1e-3, 3e-1] (six values).
DEFAULT_ETAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)

SELECTION_CRITERIA = ("final", "best", "target")

# Result files are named bench/results/convergence-<problem>[...]
RESULT_PREFIX = "convergence"


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the comparison.

    Parameters
    ----------
    kind : {"sgd", "momentum", "nesterov"}
    momentum : float
        0 for ``"sgd"``.
    schedule : {None, "plateau"}
        ``"plateau"``: network3 chapter 3's rule, eta divided by 2 whenever the
        validation accuracy stops improving (:class:`fastmom.DivideOnPlateau`).
    """

    kind: str
    momentum: float = 0.0
    schedule: str | None = None

    @property
    def label(self):
        base = "sgd" if self.kind == "sgd" else f"{self.kind}-{self.momentum:g}"
        return base + ("+plateau" if self.schedule == "plateau" else "")

    @property
    def is_baseline(self):
        """Plain SGD: what momentum is compared against."""
        return self.kind == "sgd"

    @classmethod
    def parse(cls, text):
        """Parse ``sgd``, ``momentum`` (0.9), ``momentum-0.5``, ``momentum:0.5``,
        ``nesterov-0.9``, each optionally followed by ``+plateau``."""
        s = text.strip().lower()
        schedule = None
        if s.endswith("+plateau"):
            s, schedule = s[: -len("+plateau")], "plateau"
        for sep in (":", "-", "="):
            if sep in s:
                kind, _, value = s.partition(sep)
                break
        else:
            kind, value = s, ""
        if kind not in ("sgd", "momentum", "nesterov"):
            raise ValueError(f"unknown optimizer {text!r}: expected sgd, momentum[-MU] or "
                             f"nesterov[-MU], optionally with +plateau")
        if kind == "sgd":
            if value:
                raise ValueError(f"plain SGD takes no momentum: {text!r}")
            return cls("sgd", 0.0, schedule)
        try:
            mu = float(value) if value else 0.9
        except ValueError:
            raise ValueError(f"bad momentum in {text!r}") from None
        if not 0 < mu < 1:
            raise ValueError(f"momentum must be in (0, 1), got {text!r}")
        return cls(kind, mu, schedule)


def _specs(names):
    specs = [OptimizerSpec.parse(n) for n in names]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate optimizers in {names}")
    return tuple(specs)


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """A network, a data set and a budget.

    Attributes
    ----------
    name : str
    number : int
        The problem's number in issue 6.
    description : str
    dataset : str
        A :func:`fastmom.data.load_dataset` name.
    arch : {"conv", "fc", "conv-dropout"}
    batch_sizes : tuple of int
        Each batch size is a separate setting with its own eta choice.
    lmbda : float
        network3's L2 coefficient.
    epochs : int
        The epoch budget.
    target : float
        The validation accuracy that "epochs to target" measures.
    optimizers : tuple of str
        Default optimizers (see :meth:`OptimizerSpec.parse`).
    etas : tuple of float
    seeds : tuple of int
    """

    name: str
    number: int
    description: str
    dataset: str
    arch: str
    batch_sizes: tuple
    lmbda: float
    epochs: int
    target: float
    optimizers: tuple
    etas: tuple = DEFAULT_ETAS
    seeds: tuple = (0, 1, 2)


_ALL_OPTIMIZERS = ("sgd", "momentum-0.5", "momentum-0.9", "momentum-0.99", "nesterov-0.9",
                   "sgd+plateau", "momentum-0.9+plateau")
_MAIN_OPTIMIZERS = ("sgd", "momentum-0.9", "nesterov-0.9", "sgd+plateau", "momentum-0.9+plateau")

PROBLEMS = {
    p.name: p for p in (
        Problem("conv-sample", 1,
                "network3's two-conv ReLU net on the bundled 5k MNIST sample (4000/500/500)",
                "sample", "conv", (10,), 0.1, 10, 0.95, _ALL_OPTIMIZERS),
        Problem("conv-fashion", 2,
                "network3's two-conv ReLU net on Fashion-MNIST (50k/10k/10k)",
                "fashion-mnist", "conv", (10, 64), 0.1, 20, 0.90, _MAIN_OPTIMIZERS),
        Problem("fc-sample", 3,
                "network3's FullyConnected 784-100 sigmoid + softmax on the 5k MNIST sample",
                "sample", "fc", (10,), 0.0, 30, 0.90, _MAIN_OPTIMIZERS),
        Problem("fc-fashion", 3,
                "network3's FullyConnected 784-100 sigmoid + softmax on Fashion-MNIST",
                "fashion-mnist", "fc", (10,), 0.0, 20, 0.85, _MAIN_OPTIMIZERS),
        Problem("dropout-fashion", 4,
                "network3's best chapter-6 net (two conv-pool ReLU, FC 640-1000-1000 ReLU with "
                "dropout 0.5, softmax with dropout 0.5) on Fashion-MNIST",
                "fashion-mnist", "conv-dropout", (10,), 0.1, 40, 0.90, _MAIN_OPTIMIZERS),
    )
}

#: Issue 6's problem numbers.
PROBLEM_ALIASES = {"1": ("conv-sample",), "2": ("conv-fashion",), "3": ("fc-sample", "fc-fashion"),
                   "4": ("dropout-fashion",)}

#: What ``--quick`` changes (each can still be overridden on the command line).
QUICK = {"etas": (0.01, 0.1), "seeds": (0,), "epochs": 2, "max_batches": 20, "max_eval": 100,
         "optimizers": ("sgd", "momentum-0.9", "momentum-0.9+plateau")}


def resolve_problems(names):
    """Expand numbers and comma lists into problem names, keeping order."""
    out = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            expanded = PROBLEM_ALIASES.get(name, (name,))
            for n in expanded:
                if n not in PROBLEMS:
                    raise ValueError(f"unknown problem {name!r}: choose from "
                                     f"{', '.join(PROBLEMS)} or 1-4")
                if n not in out:
                    out.append(n)
    return out


def build_network(arch, batch_size, device=None, seed=None):
    """Build one of the suite's networks.

    Parameters
    ----------
    arch : {"conv", "fc", "conv-dropout"}
    batch_size : int
    device : str, optional
    seed : int, optional
        Seeds the initial weights and dropout masks (same seed, same weights).

    Returns
    -------
    fastmom.Network
    """
    from . import Network
    from .models import build_layers

    # the suite's names for the architectures of fastmom.models
    names = {"conv": "conv", "fc": "fc", "conv-dropout": "best"}
    if arch not in names:
        raise ValueError(f"unknown architecture {arch!r}")
    layers = build_layers(names[arch], batch_size)
    return Network(layers, batch_size, device=device, seed=seed)


def load_problem_data(problem, max_batches=None, fraction=None, batch_size=10, max_eval=None):
    """Load a problem's data and subset it for short runs.

    Parameters
    ----------
    problem : Problem
    max_batches : int, optional
        Keep the first ``max_batches * batch_size`` training images.
    fraction : float in (0, 1], optional
        Keep the first ``fraction`` of the training images.
    batch_size : int
    max_eval : int, optional
        Keep the first ``max_eval`` validation and test images.

    Returns
    -------
    training, validation, test : tuple of (x, y)
    """
    from .data import load_dataset

    training, validation, test = load_dataset(problem.dataset)
    n = len(training[1])
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n = max(batch_size, int(n * fraction))
    if max_batches is not None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        n = min(n, max_batches * batch_size)
    # subsetting the data (not stopping the epoch early) keeps the Trainer's epoch,
    # L2 scaling (lmbda / number of batches) and shuffling semantics intact
    training = (training[0][:n], training[1][:n])
    if max_eval is not None:
        validation = (validation[0][:max_eval], validation[1][:max_eval])
        test = (test[0][:max_eval], test[1][:max_eval])
    return training, validation, test


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def _fingerprint(net):
    flat = np.ascontiguousarray(net.backend.to_numpy(net.flat.data))
    return hashlib.sha256(flat.tobytes()).hexdigest()[:16]


def run_one(problem, data, optimizer, eta, seed, batch_size, epochs, device=None):
    """Train one (optimizer, eta, seed) and return its run record.

    A run whose cost becomes NaN/inf is recorded as diverged, with the epochs it
    completed.

    Returns
    -------
    dict
        ``optimizer`` (label), ``kind``, ``momentum``, ``nesterov``, ``schedule``,
        ``eta``, ``seed``, ``batch_size``, ``epochs_budget``, ``init_fingerprint``
        (of the initial weights), ``data_order_fingerprint`` (of the state of the
        generator that shuffles the data), ``diverged``, ``divergence`` (message or None), ``stopped_early`` (the
        schedule ended the run), ``wall_seconds`` and ``history``: one dict per
        epoch with ``epoch``, ``cost``, ``validation_accuracy``,
        ``test_accuracy``, ``eta``, ``seconds`` (training), ``elapsed``
        (cumulative training seconds) and ``wall`` (seconds since the run
        started, evaluation included).
    """
    from .trainer import DivergenceError, DivideOnPlateau, Trainer

    if isinstance(optimizer, str):
        optimizer = OptimizerSpec.parse(optimizer)
    training, validation, test = data
    t_start = time.perf_counter()
    net = build_network(problem.arch, batch_size, device=device, seed=seed)
    fingerprint = _fingerprint(net)
    walls = []

    def stamp(trainer, record):
        walls.append(time.perf_counter() - t_start)

    schedule = DivideOnPlateau() if optimizer.schedule == "plateau" else None
    trainer = Trainer(net, optimizer.kind, eta=eta, momentum=optimizer.momentum or 0.9,
                      lmbda=problem.lmbda, shuffle=True, seed=seed, schedule=schedule,
                      callbacks=[stamp], progress=False, log=lambda *a: None)
    # the data order is drawn from this generator: equal states, equal orders
    data_order = hashlib.sha256(json.dumps(trainer.data_rng.bit_generator.state, sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
    divergence = None
    # a diverging run overflows before the cost turns NaN; the Trainer reports that
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            trainer.fit(training, epochs, validation, test)
        except DivergenceError as exc:
            divergence = str(exc)
    history = []
    for rec, wall in zip(trainer.history, walls):
        history.append({k: rec[k] for k in ("epoch", "cost", "validation_accuracy", "test_accuracy",
                                            "eta", "seconds", "elapsed")} | {"wall": wall})
    return {
        "problem": problem.name,
        "batch_size": batch_size,
        "optimizer": optimizer.label,
        "kind": optimizer.kind,
        "momentum": optimizer.momentum,
        "nesterov": optimizer.kind == "nesterov",
        "schedule": optimizer.schedule,
        "eta": float(eta),
        "seed": int(seed),
        "epochs_budget": int(epochs),
        "device": net.device,
        "init_fingerprint": fingerprint,
        "data_order_fingerprint": data_order,
        "diverged": divergence is not None,
        "divergence": divergence,
        "stopped_early": divergence is None and len(history) < epochs,
        "wall_seconds": time.perf_counter() - t_start,
        "history": history,
    }


# ---------------------------------------------------------------------------
# Metrics (pure functions of run records)
# ---------------------------------------------------------------------------


def epochs_to_target(history, target, key="validation_accuracy"):
    """Number of epochs after which ``key`` first reaches ``target``.

    Parameters
    ----------
    history : list of dict
        Per-epoch records in order.
    target : float
    key : str

    Returns
    -------
    int or None
        1 if the first epoch already reaches it; None if no epoch does.
    """
    for i, rec in enumerate(history):
        acc = rec.get(key)
        if acc is not None and acc >= target:
            return i + 1
    return None


def seconds_to_target(history, target, key="validation_accuracy", clock="elapsed"):
    """Training seconds (``clock="elapsed"``) or wall seconds (``"wall"``) until
    ``key`` first reaches ``target``; None if it never does."""
    n = epochs_to_target(history, target, key)
    return None if n is None else history[n - 1][clock]


def _final(run, key):
    h = run["history"]
    return h[-1][key] if h else None


def _best_val_record(run):
    """The record of the best validation accuracy (network3's ``>=``: the last of ties)."""
    best = None
    for rec in run["history"]:
        acc = rec["validation_accuracy"]
        if acc is not None and (best is None or acc >= best["validation_accuracy"]):
            best = rec
    return best


def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    # one value has no spread to report (None, shown as "1 seed"), not a spread of 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else None


def _group(runs):
    """{optimizer label: {eta: [runs sorted by seed]}}, insertion-ordered."""
    out = {}
    for run in runs:
        out.setdefault(run["optimizer"], {}).setdefault(run["eta"], []).append(run)
    for by_eta in out.values():
        for lst in by_eta.values():
            lst.sort(key=lambda r: r["seed"])
    return out


def _validation_score(group, criterion, target):
    """Sort key (larger is better) of one eta's seeds, from validation data only.

    A diverged seed disqualifies the eta: an eta that sometimes blows up is not
    a usable choice.
    """
    if not group or any(r["diverged"] or not r["history"] for r in group):
        return (-math.inf, -math.inf)
    final = float(np.mean([_final(r, "validation_accuracy") for r in group]))
    best = float(np.mean([_best_val_record(r)["validation_accuracy"] for r in group]))
    if criterion == "final":
        return (final, best)
    if criterion == "best":
        return (best, final)
    if criterion == "target":
        # fewest epochs to target (unreached: one past the budget), then accuracy
        budget = max(r["epochs_budget"] for r in group)
        ep = [epochs_to_target(r["history"], target) or budget + 1 for r in group]
        return (-float(np.mean(ep)), final)
    raise ValueError(f"criterion must be one of {SELECTION_CRITERIA}, got {criterion!r}")


def select_eta(runs, criterion="final", target=None):
    """Choose each optimizer's eta on validation accuracy (never test accuracy).

    Parameters
    ----------
    runs : list of dict
        Run records of one setting (one problem and batch size), with
        ``optimizer``, ``eta``, ``seed``, ``diverged``, ``epochs_budget`` and a
        ``history`` of per-epoch ``validation_accuracy``.
    criterion : {"final", "best", "target"}
        ``"final"``: the best mean over seeds of the validation accuracy after the
        last epoch (DeepOBS's default); ``"best"``: of the best validation
        accuracy over the epochs; ``"target"``: the fewest mean epochs to reach
        ``target`` validation accuracy. Ties go to the other accuracy, then to
        the smaller eta. An eta with a diverged seed is never chosen.
    target : float, optional
        Needed for ``criterion="target"``.

    Returns
    -------
    dict
        ``{optimizer label: {"eta": float or None, "score": float or None}}``;
        ``eta`` is None when every eta diverged.
    """
    if criterion == "target" and target is None:
        raise ValueError("criterion='target' needs a target")
    chosen = {}
    for label, by_eta in _group(runs).items():
        best_eta, best_key = None, None
        for eta in sorted(by_eta):
            key = _validation_score(by_eta[eta], criterion, target)
            if key[0] == -math.inf:
                continue
            if best_key is None or key > best_key:  # strict: ties keep the smaller eta
                best_eta, best_key = eta, key
        chosen[label] = {"eta": best_eta, "score": None if best_key is None else best_key[0]}
    return chosen


def _seed_metrics(run, target):
    best = _best_val_record(run)
    return {
        "seed": run["seed"],
        "final_validation": _final(run, "validation_accuracy"),
        "final_test": _final(run, "test_accuracy"),
        "best_validation": best["validation_accuracy"] if best else None,
        "test_at_best_validation": best["test_accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "epochs_to_target": epochs_to_target(run["history"], target),
        "seconds_to_target": seconds_to_target(run["history"], target),
        "wall_to_target": seconds_to_target(run["history"], target, clock="wall"),
        "epochs_run": len(run["history"]),
        "seconds_per_epoch": (run["history"][-1]["elapsed"] / len(run["history"])
                              if run["history"] else None),
        "diverged": run["diverged"],
    }


def _aggregate(per_seed):
    out = {"n_seeds": len(per_seed)}
    for key in ("final_validation", "final_test", "best_validation", "test_at_best_validation",
                "seconds_per_epoch"):
        out[key] = dict(zip(("mean", "std"), _mean_std([m[key] for m in per_seed])))
    reached = [m for m in per_seed if m["epochs_to_target"] is not None]
    out["reached_target"] = len(reached)
    for key in ("epochs_to_target", "seconds_to_target", "wall_to_target"):
        # mean over the seeds that reached the target; reached_target says how many
        out[key] = dict(zip(("mean", "std"), _mean_std([m[key] for m in reached])))
    out["per_seed"] = per_seed
    return out


def summarize_setting(runs, target, criterion="final"):
    """Everything the report shows for one setting (problem and batch size).

    Returns
    -------
    dict
        ``criterion``, ``target``, ``optimizers``: one entry per optimizer with
        its ``chosen_eta``, the metrics at that eta (``final_test`` etc. as
        ``{"mean", "std"}``, ``epochs_to_target``, ``reached_target``), the
        ``fastest_eta`` (fewest mean epochs to target, validation only) with its
        metrics, and ``sensitivity``: per eta, the mean/std final validation and
        test accuracy and the number of diverged seeds. ``verdicts``: see
        :func:`compare_to_sgd`.
    """
    chosen = select_eta(runs, criterion, target)
    fastest = select_eta(runs, "target", target)
    groups = _group(runs)
    out = {"criterion": criterion, "target": target, "optimizers": {}}
    for label, by_eta in groups.items():
        entry = {"chosen_eta": chosen[label]["eta"], "fastest_eta": fastest[label]["eta"],
                 "sensitivity": []}
        for eta in sorted(by_eta):
            grp = by_eta[eta]
            ok = [r for r in grp if not r["diverged"] and r["history"]]
            fv = _mean_std([_final(r, "validation_accuracy") for r in ok])
            ft = _mean_std([_final(r, "test_accuracy") for r in ok])
            ep = [epochs_to_target(r["history"], target) for r in ok]
            entry["sensitivity"].append({
                "eta": eta, "n_seeds": len(grp), "diverged": sum(r["diverged"] for r in grp),
                "final_validation": dict(zip(("mean", "std"), fv)),
                "final_test": dict(zip(("mean", "std"), ft)),
                "reached_target": sum(e is not None for e in ep),
            })
        for which, eta in (("at_chosen", entry["chosen_eta"]), ("at_fastest", entry["fastest_eta"])):
            entry[which] = (None if eta is None else
                            _aggregate([_seed_metrics(r, target) for r in by_eta[eta]]))
        # the seeds' initial weights, for the same-start check across optimizers
        entry["init_fingerprints"] = sorted({(r["seed"], r["init_fingerprint"])
                                             for grp in by_eta.values() for r in grp})
        out["optimizers"][label] = entry
    out["verdicts"] = compare_to_sgd(out, target)
    return out


def _pct(x, nd=1):
    return "n/a" if x is None else f"{100 * x:.{nd}f}%"


def _epochs_phrase(agg):
    if agg is None:
        return "n/a (every eta diverged)"
    n = agg["n_seeds"]
    if agg["reached_target"] == 0:
        return f"never within the budget (0/{n} seeds)"
    return f"{_ms(agg['epochs_to_target'], pct=False, one='')} epochs ({agg['reached_target']}/{n} seeds)"


def _reach(agg):
    """Fraction of an aggregate's seeds that reached the target."""
    return agg["reached_target"] / agg["n_seeds"]


def _beats(a, b):
    """+1 if aggregate ``a`` reaches the target faster than ``b``, -1 if slower,
    0 for a tie: a larger fraction of seeds reaching it wins, then fewer mean epochs."""
    if a is None or b is None:
        return 0 if a is b else (1 if b is None else -1)
    fa, fb = _reach(a), _reach(b)
    if fa != fb:
        return 1 if fa > fb else -1
    if a["reached_target"] == 0:
        return 0
    ea, eb = a["epochs_to_target"]["mean"], b["epochs_to_target"]["mean"]
    return 0 if abs(ea - eb) < 1e-9 else (1 if ea < eb else -1)


def _within_noise(a, b):
    """``(difference of mean epochs, its standard error)`` when every seed of both
    reached the target, else None."""
    if a is None or b is None or a["reached_target"] != a["n_seeds"] or b["reached_target"] != b["n_seeds"]:
        return None
    ea, eb = a["epochs_to_target"], b["epochs_to_target"]
    if ea["std"] is None or eb["std"] is None:  # one seed: the noise is unknown
        return None
    se = math.sqrt(ea["std"] ** 2 / a["n_seeds"] + eb["std"] ** 2 / b["n_seeds"])
    return ea["mean"] - eb["mean"], se


def compare_to_sgd(summary, target):
    """Plain-language verdicts: does each momentum optimizer reach the target in
    fewer epochs than plain SGD, each at its own best eta?

    Each momentum/Nesterov optimizer is compared with ``sgd`` (a ``+plateau``
    variant with ``sgd+plateau`` where present), twice: at the etas chosen on
    final validation accuracy, and at each optimizer's fastest eta.

    Returns
    -------
    list of dict
        ``optimizer``, ``baseline``, ``at`` ("chosen" or "fastest"), ``result``
        (+1 momentum faster, 0 tie, -1 slower) and ``text``.
    """
    opts = summary["optimizers"]
    verdicts = []
    for label, entry in opts.items():
        if label.startswith("sgd"):
            continue
        baseline = "sgd+plateau" if label.endswith("+plateau") and "sgd+plateau" in opts else "sgd"
        if baseline not in opts:
            continue
        base = opts[baseline]
        for at, key in (("chosen", "at_chosen"), ("fastest", "at_fastest")):
            a, b = entry[key], base[key]
            eta_key = "chosen_eta" if at == "chosen" else "fastest_eta"
            res = _beats(a, b)
            how = ("etas chosen on final validation accuracy" if at == "chosen"
                   else "each at its fastest eta, chosen on validation")
            by_reach = a is not None and b is not None and res != 0 and _reach(a) != _reach(b)
            if res == 0 and (a is None or a["reached_target"] == 0):
                head = f"NEITHER {label} nor {baseline} reaches"
            elif by_reach:
                # decided by how many seeds got there, not by speed: say so
                head = {1: f"YES, {label} reaches it in more seeds than {baseline}, to",
                        -1: f"NO, {label} reaches it in fewer seeds than {baseline}, to"}[res]
            else:
                head = {1: f"YES, {label} is faster than {baseline} to",
                        0: f"NO, {label} ties with {baseline} to",
                        -1: f"NO, {label} is slower than {baseline} to"}[res]
            text = (f"{head} {_pct(target)} validation: {_epochs_phrase(a)} at eta "
                    f"{entry[eta_key]} against {_epochs_phrase(b)} at eta {base[eta_key]} ({how}).")
            partial = [x for x in (a, b) if x is not None and 0 < x["reached_target"] < x["n_seeds"]]
            noise = _within_noise(a, b)
            if by_reach and a["reached_target"] and b["reached_target"]:
                ea, eb = a["epochs_to_target"]["mean"], b["epochs_to_target"]["mean"]
                if (ea - eb) * res > 0:  # the seeds that did arrive tell the other story
                    text += (f" But on the seeds that reached it, {label} took "
                             f"{'more' if ea > eb else 'fewer'} epochs ({ea:.2f} against {eb:.2f}).")
            if any(x is not None and x["n_seeds"] < 2 for x in (a, b)):
                text += " Weak evidence: a single seed, so the seed-to-seed noise is unknown."
            elif partial:
                # the means then cover different seeds: say how thin the evidence is
                text += " Weak evidence: not every seed reached the target."
            elif noise is not None and res != 0:
                diff, se = noise
                if abs(diff) <= se:
                    text += (f" The difference ({abs(diff):.2f} epochs) is within the seed-to-seed "
                             f"noise (standard error {se:.2f}): not a reliable difference.")
            verdicts.append({"optimizer": label, "baseline": baseline, "at": at, "result": res,
                             "text": text})
    return verdicts


# ---------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _thread_count(backend):
    """The backend's thread count where it says, else OpenMP's setting, else the cores."""
    for attr in ("num_threads", "get_num_threads", "threads"):
        val = getattr(backend, attr, None)
        if val is None:
            continue
        try:
            val = val() if callable(val) else val
            return int(val)
        except Exception:  # a backend's query failing must not stop the benchmark
            continue
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit():
        return int(env)
    return os.cpu_count()


def machine_info(device=None):
    """Library version, backend, threads and a description of this machine."""
    from . import __version__
    from .backends import get_backend

    backend = get_backend(device)
    info = {
        "fastmom_version": __version__,
        "backend": backend.name,
        "threads": _thread_count(backend),
        "environment": {k: os.environ[k] for k in ("FASTMOM_NUM_THREADS", "OMP_NUM_THREADS",
                                                    "OMP_WAIT_POLICY", "FASTMOM_DEVICE")
                        if k in os.environ},
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{"library": p.get("internal_api"), "threads": p.get("num_threads")}
                                for p in threadpool_info()]
    except ImportError:
        pass
    return info


def _git_commit():
    try:
        import subprocess
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------


def _setting_name(problem_name, batch_size, n_batch_sizes):
    return problem_name if n_batch_sizes == 1 else f"{problem_name}-bs{batch_size}"


def _run_key(run):
    return (run["batch_size"], run["optimizer"], float(run["eta"]), int(run["seed"]))


def run_suite(problem, *, optimizers=None, etas=None, seeds=None, epochs=None, batch_sizes=None,
              device=None, max_batches=None, fraction=None, max_eval=None, criterion="final",
              out=None, plots=True, resume=False, resume_from=(), train_missing=True,
              command=None, log=print):
    """Run one problem's grid and write its JSON, Markdown and plots.

    Parameters
    ----------
    problem : Problem or str
    optimizers, etas, seeds, epochs, batch_sizes
        Override the problem's defaults.
    device : str, optional
    max_batches, fraction, max_eval
        Subsetting for short runs (see :func:`load_problem_data`).
    criterion : {"final", "best", "target"}
        How each optimizer's eta is chosen (always on validation accuracy).
    out : path, optional
        Output directory; nothing is written without it.
    plots : bool
    resume : bool
        Reuse the runs already in ``out``'s JSON that match this configuration.
    resume_from : sequence of paths
        More JSON files whose runs are reused (a grid split over processes or
        machines, each with its own ``out``); each must be of the same problem and
        configuration, or this raises ValueError. The first file to have a run wins.
    train_missing : bool
        False: train nothing, only report the runs that ``resume``/``resume_from``
        provide (the report says the grid is incomplete when runs are missing).
    command : str, optional
        The command line, recorded in the outputs.
    log : callable

    Returns
    -------
    dict
        The JSON document: ``meta``, ``config``, ``runs`` and ``summary``.
    """
    if isinstance(problem, str):
        problem = PROBLEMS[problem]
    specs = _specs(optimizers or problem.optimizers)
    # one grid for all, or {optimizer label: grid} (e.g. around each one's known good eta)
    if isinstance(etas, dict):
        unknown = set(etas) - {sp.label for sp in specs}
        if unknown:
            raise ValueError(f"--etas names optimizers not in the run: {sorted(unknown)}")
        missing = [sp.label for sp in specs if sp.label not in etas]
        if missing:
            raise ValueError(f"--etas gives no grid for {missing}")
        grids = {sp.label: tuple(float(e) for e in etas[sp.label]) for sp in specs}
    else:
        grid = tuple(float(e) for e in (etas or problem.etas))
        grids = {sp.label: grid for sp in specs}
    per_optimizer = len(set(grids.values())) > 1
    seeds = tuple(int(s) for s in (seeds if seeds is not None else problem.seeds))
    epochs = int(epochs or problem.epochs)
    batch_sizes = tuple(int(b) for b in (batch_sizes or problem.batch_sizes))
    if criterion not in SELECTION_CRITERIA:
        raise ValueError(f"criterion must be one of {SELECTION_CRITERIA}")
    meta = machine_info(device)
    meta["git_commit"] = _git_commit()
    meta["command"] = command
    config = {
        "problem": problem.name, "number": problem.number, "description": problem.description,
        "dataset": problem.dataset, "arch": problem.arch, "lmbda": problem.lmbda,
        "target_validation_accuracy": problem.target, "epochs": epochs,
        "batch_sizes": list(batch_sizes), "optimizers": [s.label for s in specs],
        "etas": ({k: list(v) for k, v in grids.items()} if per_optimizer
                 else list(next(iter(grids.values())))), "seeds": list(seeds), "max_batches": max_batches, "fraction": fraction,
        "max_eval": max_eval, "selection": criterion, "shuffle": True,
        "device": meta["backend"],
    }
    reduced = (max_batches is not None or fraction is not None or max_eval is not None
               or epochs != problem.epochs or len(seeds) < len(problem.seeds)
               or tuple(batch_sizes) != problem.batch_sizes
               # more optimizers or etas than the default grid is not a reduction
               or not {s.label for s in _specs(problem.optimizers)} <= {s.label for s in specs}
               or any(not set(problem.etas) <= set(g) for g in grids.values()))
    config["reduced"] = reduced

    json_path = None
    done = {}
    sources = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"{RESULT_PREFIX}-{problem.name}.json"
        if resume and json_path.exists():
            sources.append((json_path, False))
    sources += [(Path(p), True) for p in resume_from]
    for path, explicit in sources:
        old = json.loads(path.read_text())
        keys = ("epochs", "max_batches", "fraction", "max_eval", "device")
        same = {k: v for k, v in old.get("config", {}).items() if k in keys}
        ok = (same == {k: config[k] for k in same}
              and old.get("config", {}).get("problem", problem.name) == problem.name)
        if not ok:
            if explicit:
                raise ValueError(f"{path} holds another problem or configuration "
                                 f"({ {k: old.get('config', {}).get(k) for k in ('problem',) + keys} })")
            log(f"not resuming: {path} was made with another configuration")
            continue
        found = 0
        for r in old.get("runs", []) + old.get("other_runs", []):
            if _run_key(r) not in done:
                done[_run_key(r)] = r
                found += 1
        # keep when, where and how the earlier runs were made
        earlier = dict(old.get("meta", {}))
        sessions = meta.setdefault("earlier_sessions", [])
        # files that share an ancestor (two halves of a split grid resumed from one
        # file) list its sessions twice: keep each once, in the order first seen
        for e in earlier.pop("earlier_sessions", []) + [earlier]:
            if e not in sessions:
                sessions.append(e)
        log(f"resuming: {found} runs found in {path}")

    meta["runs_trained"] = 0  # by this session; 0 = it only combined earlier sessions' runs
    doc = {"meta": meta, "config": config, "runs": [], "summary": {}, "complete": False}
    # runs of the same configuration outside this grid (a narrower resume of a wider
    # grid) stay in the file, apart from the report's runs: resuming never loses data
    t_suite = time.perf_counter()
    prior_seconds = 0.0
    total = len(batch_sizes) * sum(len(g) for g in grids.values()) * len(seeds)
    wanted = {(bs, sp.label, eta, seed) for bs in batch_sizes for sp in specs
              for eta in grids[sp.label] for seed in seeds}
    other = [r for k, r in done.items() if k not in wanted]
    if other:
        doc["other_runs"] = other
    count = 0
    for bs in batch_sizes:
        data = load_problem_data(problem, max_batches, fraction, bs, max_eval)
        config.setdefault("sizes", {})[str(bs)] = [len(d[1]) for d in data]
        for spec in specs:
            for eta in grids[spec.label]:
                for seed in seeds:
                    count += 1
                    key = (bs, spec.label, eta, seed)
                    if key in done:
                        run = done[key]
                        prior_seconds += run["wall_seconds"]
                    elif not train_missing:
                        continue
                    else:
                        run = run_one(problem, data, spec, eta, seed, bs, epochs, device)
                        doc["meta"]["runs_trained"] += 1
                    doc["runs"].append(run)
                    h = run["history"]
                    last = h[-1] if h else {}
                    log(f"[{count}/{total}] {problem.name} bs={bs} {spec.label} eta={eta:g} "
                        f"seed={seed}: " + ("DIVERGED after %d epochs" % len(h) if run["diverged"]
                                            else f"val {_pct(last.get('validation_accuracy'), 2)} "
                                                 f"test {_pct(last.get('test_accuracy'), 2)}")
                        + f" ({run['wall_seconds']:.1f} s)")
                    if json_path is not None:
                        doc["meta"]["suite_seconds"] = prior_seconds + time.perf_counter() - t_suite
                        # finished runs of the grid that the loop has not reached again stay
                        # in the file, so that interrupting a resumed suite loses none of them
                        have = {_run_key(r) for r in doc["runs"]}
                        pending = [r for k, r in done.items() if k not in have and k in wanted]
                        _write_json(json_path, dict(doc, runs=doc["runs"] + pending))
    doc["meta"]["suite_seconds"] = prior_seconds + time.perf_counter() - t_suite
    try:
        doc["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    doc["summary"] = summarize_document(doc)
    doc["complete"] = len(doc["runs"]) == total
    if out is not None:
        _write_json(json_path, doc)
        write_reports(doc, out, plots=plots)
    return doc


def summarize_document(doc):
    """Summaries of every setting of a JSON document, keyed by setting name."""
    cfg = doc["config"]
    bss = sorted({r["batch_size"] for r in doc["runs"]})
    return {_setting_name(cfg["problem"], bs, len(bss)): dict(
                summarize_setting([r for r in doc["runs"] if r["batch_size"] == bs],
                                  cfg["target_validation_accuracy"], cfg["selection"]),
                batch_size=bs)
            for bs in bss}


def _write_json(path, doc):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default))
    os.replace(tmp, path)  # never leave a half-written file behind


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def _ms(d, pct=True, nd=2, one=" (1 seed)"):
    if d is None or d.get("mean") is None:
        return "n/a"
    k = 100 if pct else 1
    if d.get("std") is None:
        return f"{k * d['mean']:.{nd}f}{one}"
    return f"{k * d['mean']:.{nd}f} ± {k * d['std']:.{nd}f}"


def _grid_text(etas):
    if isinstance(etas, dict):
        return "; ".join(f"{k}: {', '.join(f'{e:g}' for e in v)}" for k, v in etas.items())
    return ", ".join(f"{e:g}" for e in etas)


def _hms(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def write_reports(doc, out, plots=True):
    """Write the Markdown report and (optionally) the plots of a JSON document."""
    out = Path(out)
    if plots:
        pngs = write_plots(doc, out)
        names = [p.name for p in pngs]
    else:
        # keep linking the plots an earlier run drew
        pngs = []
        names = sorted(p.name for p in out.glob(f"{RESULT_PREFIX}-{doc['config']['problem']}*.png")
                       if p.name.endswith(("-curves.png", "-eta.png")))
    md = write_markdown(doc, out / f"{RESULT_PREFIX}-{doc['config']['problem']}.md", names)
    return [md] + pngs


def _combined_only(session):
    """Whether a session trained nothing and only combined other sessions' runs
    (files written before ``runs_trained`` existed say so in their command)."""
    if "runs_trained" in session:
        return session["runs_trained"] == 0
    return "--no-train" in (session.get("command") or "")


def _sessions_text(meta):
    """When, with how many threads and under what load the runs were trained.

    A file combined from many sessions (a grid split over processes, resumed over
    days) gets one summary line; each session's record stays in the JSON."""
    earlier = meta.get("earlier_sessions", [])
    here = {k: meta.get(k) for k in ("date", "threads", "load_average_at_start")}
    if not earlier:
        return (f"{here['threads']} threads; {here['date']}; load average at start "
                f"{here['load_average_at_start']}")
    trained = [e for e in earlier if not _combined_only(e)]
    combined_only = _combined_only(meta)
    trained += [] if combined_only else [here]
    if not trained:  # nothing says who trained the runs (hand-edited or very old files)
        return f"combined on {here['date']} without training"
    dates = sorted(str(e.get("date")) for e in trained)
    threads = sorted({e.get("threads") for e in trained}, key=str)
    loads = [e["load_average_at_start"][0] for e in trained if e.get("load_average_at_start")]
    text = (f"trained in {len(trained)} sessions (processes) from {dates[0]} to {dates[-1]}, "
            f"{'/'.join(map(str, threads))} threads each")
    if loads:
        text += f", 1-minute load average at start {min(loads):g} to {max(loads):g}"
    text += " (each session in the JSON's `meta.earlier_sessions`)"
    if combined_only:
        text += f"; combined on {here['date']} without training"
    return text


def markdown_report(doc, png_names=()):
    """The Markdown text of a JSON document (see :func:`write_markdown`)."""
    cfg, meta = doc["config"], doc["meta"]
    summary = doc["summary"] or summarize_document(doc)
    lines = [f"## Convergence: problem {cfg['number']}, `{cfg['problem']}`"
             + (" (REDUCED grid)" if cfg.get("reduced") else ""), ""]
    lines.append(f"{cfg['description']}. lmbda {cfg['lmbda']}, epoch budget {cfg['epochs']}, "
                 f"target {_pct(cfg['target_validation_accuracy'])} validation accuracy, "
                 f"training data reshuffled every epoch.")
    lines.append("")
    sizes = cfg.get("sizes", {})
    lines.append(f"- Grid: optimizers {', '.join(cfg['optimizers'])}; eta "
                 f"{_grid_text(cfg['etas'])}; seeds "
                 f"{', '.join(map(str, cfg['seeds']))}; batch size "
                 f"{', '.join(map(str, cfg['batch_sizes']))}"
                 + "".join(f"; images (train/validation/test) at batch {bs}: "
                           f"{'/'.join(map(str, n))}" for bs, n in sizes.items()) + ".")
    subset = [f"{k}={cfg[k]}" for k in ("max_batches", "fraction", "max_eval") if cfg.get(k)]
    if subset:
        lines.append(f"- Data subset: {', '.join(subset)}.")
    lines.append(f"- Eta selection: on VALIDATION accuracy only ({_CRITERION_TEXT[cfg['selection']]}); "
                 "test figures are those of the chosen eta, mean ± std over seeds. An eta with a "
                 "diverged seed is never chosen. Same initial weights, data order and dropout "
                 "masks for every optimizer at a given seed.")
    lines.append(f"- Machine: {meta['cpu_model']}, {meta['cpu_cores']} cores, {meta['platform']}; "
                 f"fastmom {meta['fastmom_version']} (commit {meta.get('git_commit')}), backend "
                 f"`{meta['backend']}`; {_sessions_text(meta)}.")
    lines.append(f"- Total time: {_hms(meta.get('suite_seconds', 0))} for {len(doc['runs'])} runs"
                 + (" (summed over the sessions)" if meta.get("earlier_sessions") else "")
                 + ("" if doc.get("complete") else " (INCOMPLETE: the suite did not finish)") + ".")
    if meta.get("command"):
        lines.append(f"- Command: `{meta['command']}`")
    lines.append("")
    for name, s in summary.items():
        tgt = _pct(s["target"])
        lines.append(f"### `{name}`: batch size {s['batch_size']}")
        lines.append("")
        lines.append(f"| optimizer | chosen eta | final validation % | final test % | "
                     f"test % at best validation | epochs to {tgt} val. (seeds) | "
                     f"train s to {tgt} | train s/epoch |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for label, e in s["optimizers"].items():
            a = e["at_chosen"]
            if a is None:
                lines.append(f"| {label} | all diverged | | | | | | |")
                continue
            ept = ("never" if a["reached_target"] == 0 else
                   f"{_ms(a['epochs_to_target'], pct=False, one='')} ({a['reached_target']}/{a['n_seeds']})")
            lines.append(f"| {label} | {e['chosen_eta']:g} | {_ms(a['final_validation'])} | "
                         f"{_ms(a['final_test'])} | {_ms(a['test_at_best_validation'])} | {ept} | "
                         f"{_ms(a['seconds_to_target'], pct=False, nd=1)} | "
                         f"{_ms(a['seconds_per_epoch'], pct=False, nd=2)} |")
        lines.append("")
        lines.append("Seconds are training time (evaluation excluded) on this shared machine under "
                     "the load of the moment (see the load averages above): they compare optimizers "
                     "only as far as that load was steady; the epoch counts do not depend on it.")
        lines.append("")
        lines.extend(_profile_table(doc, s))
        lines.append("**Does momentum beat plain SGD in epochs to target?**")
        lines.append("")
        for v in s["verdicts"]:
            lines.append(f"- {v['text']}")
        lines.extend(_fallback_verdicts(doc, s))
        if not s["verdicts"]:
            lines.append("- (no momentum/SGD pair in this grid)")
        lines.append("")
        lines.append(f"Sensitivity: mean final validation accuracy % over seeds at each eta "
                     f"(`div` = a seed diverged; `*` = chosen; `>` = reached {tgt} in every seed):")
        lines.append("")
        etas = sorted({row["eta"] for e in s["optimizers"].values() for row in e["sensitivity"]})
        lines.append("| optimizer | " + " | ".join(f"{x:g}" for x in etas) + " |")
        lines.append("|---|" + "---|" * len(etas))
        for label, e in s["optimizers"].items():
            cells = {row["eta"]: row for row in e["sensitivity"]}
            out = []
            for x in etas:
                row = cells.get(x)
                if row is None:
                    out.append("")
                elif row["diverged"]:
                    out.append(f"div ({row['diverged']}/{row['n_seeds']})")
                else:
                    mark = ("*" if x == e["chosen_eta"] else "") + (
                        ">" if row["reached_target"] == row["n_seeds"] else "")
                    out.append(f"{100 * row['final_validation']['mean']:.2f}{mark}")
            lines.append(f"| {label} | " + " | ".join(out) + " |")
        lines.append("")
        for png in png_names:
            if png in (f"{RESULT_PREFIX}-{name}-curves.png", f"{RESULT_PREFIX}-{name}-eta.png"):
                lines.append(f"![{png}]({png})")
        lines.append("")
    return "\n".join(lines)


def accuracy_profile(runs, thresholds):
    """Epochs to each validation threshold: ``{threshold: (mean or None, reached, n)}``,
    the mean over the seeds that reached it."""
    out = {}
    for t in thresholds:
        eps = [epochs_to_target(r["history"], t) for r in runs]
        hit = [e for e in eps if e is not None]
        out[t] = (float(np.mean(hit)) if hit else None, len(hit), len(eps))
    return out


def _profile_table(doc, s):
    """Epochs to accuracies below the target too: where the target is not reached
    within the budget this still shows which optimizer gets there first."""
    target = s["target"]
    thresholds = [round(target - d, 4) for d in (0.10, 0.05, 0.025)] + [target]
    runs = [r for r in doc["runs"] if r["batch_size"] == s["batch_size"]]
    groups = _group(runs)
    lines = ["Epochs to lower validation accuracies too, at the chosen etas (mean over the "
             "seeds that reached it; seeds reaching it in parentheses):", "",
             "| optimizer | " + " | ".join(_pct(t) for t in thresholds) + " |",
             "|---|" + "---|" * len(thresholds)]
    for label, e in s["optimizers"].items():
        if e["chosen_eta"] is None:
            continue
        prof = accuracy_profile(groups[label][e["chosen_eta"]], thresholds)
        cells = [("never" if m is None else f"{m:.2f}") + f" ({k}/{n})" for m, k, n in prof.values()]
        lines.append(f"| {label} (eta {e['chosen_eta']:g}) | " + " | ".join(cells) + " |")
    return lines + [""]


def _fallback_verdicts(doc, s):
    """Where neither optimizer reached the target, compare them at the highest lower
    threshold (of the profile table) that both reached in every seed, labelled as such."""
    target = s["target"]
    thresholds = [round(target - d, 4) for d in (0.025, 0.05, 0.10)]
    groups = _group([r for r in doc["runs"] if r["batch_size"] == s["batch_size"]])
    opts = s["optimizers"]
    lines = []
    for v in s["verdicts"]:
        if v["at"] != "chosen" or not v["text"].startswith("NEITHER"):
            continue
        a, b = opts[v["optimizer"]], opts[v["baseline"]]
        if a["chosen_eta"] is None or b["chosen_eta"] is None:
            continue
        pa = accuracy_profile(groups[v["optimizer"]][a["chosen_eta"]], thresholds)
        pb = accuracy_profile(groups[v["baseline"]][b["chosen_eta"]], thresholds)
        for t in thresholds:
            (ma, ka, na), (mb, kb, nb) = pa[t], pb[t]
            if ka == na and kb == nb:
                word = ("faster" if ma < mb - 1e-9 else "slower" if ma > mb + 1e-9 else "as fast")
                lines.append(f"- (Below the target, for information: to {_pct(t)} validation, "
                             f"{v['optimizer']} is {word}: {ma:.2f} epochs against {mb:.2f} for "
                             f"{v['baseline']}, over {na} and {nb} seeds.)")
                break
    return lines


_CRITERION_TEXT = {
    "final": "best mean-over-seeds validation accuracy after the last epoch",
    "best": "best mean-over-seeds best-epoch validation accuracy",
    "target": "fewest mean epochs to the target validation accuracy",
}


def write_markdown(doc, path, png_names=()):
    """Write :func:`markdown_report` to ``path`` and return the path."""
    path = Path(path)
    path.write_text(markdown_report(doc, png_names))
    return path


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the convergence plots need matplotlib: `pip install matplotlib` "
                          "(or `pip install fastmom[plot]`), or pass --no-plots") from None
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    return plt


def _curve(runs, key):
    """Per-epoch mean, min and max of ``key`` over seeds (a run stopped by its
    schedule keeps its last value; a diverged run is left out from where it stopped)."""
    n = max((r["epochs_budget"] for r in runs), default=0)
    rows = []
    for r in runs:
        vals = [rec[key] for rec in r["history"]]
        if not r["diverged"] and vals:
            vals = vals + [vals[-1]] * (n - len(vals))
        rows.append(vals + [np.nan] * (n - len(vals)))
    a = np.array(rows, dtype=float)
    with np.errstate(all="ignore"), _quiet_nan():
        return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


class _quiet_nan:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def write_plots(doc, out):
    """Learning curves and accuracy-vs-eta plots, one pair per setting.

    Returns
    -------
    list of Path
    """
    plt = _import_pyplot()
    out = Path(out)
    summary = doc["summary"] or summarize_document(doc)
    cfg = doc["config"]
    paths = []
    for name, s in summary.items():
        runs = [r for r in doc["runs"] if r["batch_size"] == s["batch_size"]]
        groups = _group(runs)
        colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(groups)}
        tag = f"{cfg['problem']} (batch {s['batch_size']}, {len(cfg['seeds'])} seed(s), {cfg['device']})"

        # learning curves: one line per optimizer at its chosen eta, band = min..max over seeds
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        floor = [100.0, 100.0]  # lowest band value of the accuracy panels, for their y range
        for label, e in s["optimizers"].items():
            if e["chosen_eta"] is None:
                continue
            grp = groups[label][e["chosen_eta"]]
            x = np.arange(1, max(r["epochs_budget"] for r in grp) + 1)
            for ax, key in zip(axes, ("validation_accuracy", "test_accuracy", "cost")):
                mean, lo, hi = _curve(grp, key)
                scale = 1.0 if key == "cost" else 100.0
                ax.plot(x, scale * mean, "-o", ms=3, color=colors[label],
                        label=f"{label} (eta {e['chosen_eta']:g})")
                ax.fill_between(x, scale * lo, scale * hi, color=colors[label], alpha=0.18)
                if key != "cost" and np.isfinite(lo).any():
                    i = ("validation_accuracy", "test_accuracy").index(key)
                    floor[i] = min(floor[i], float(np.nanmin(scale * lo)))
        axes[0].axhline(100 * s["target"], color="grey", ls="--", lw=1, label="target")
        for ax, title in zip(axes, ("validation accuracy %", "test accuracy %",
                                    "training cost (NLL + L2)")):
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[2].set_yscale("log")
        for ax, lo in zip(axes[:2], floor):
            ax.set_ylim(max(lo - 1, 0), 100)
        axes[0].legend(fontsize=8, loc="lower right")
        fig.suptitle(f"Learning curves at each optimizer's chosen eta (band: min-max over seeds): {tag}")
        fig.tight_layout()
        p = out / f"{RESULT_PREFIX}-{name}-curves.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

        # sensitivity: final accuracy against eta (error bars: std over seeds); the third
        # panel puts momentum runs at their long-run step eta/(1-momentum), where they
        # line up with plain SGD if momentum is only a larger effective learning rate
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
        panels = (("final_validation", "eta"), ("final_test", "eta"),
                  ("final_validation", "effective"))
        for label, e in s["optimizers"].items():
            rows = e["sensitivity"]
            mu = next(iter(groups[label].values()))[0].get("momentum") or 0.0
            for ax, (key, xkind) in zip(axes, panels):
                xs = [r["eta"] / (1 - mu) if xkind == "effective" else r["eta"] for r in rows]
                m = np.array([np.nan if r[key]["mean"] is None or r["diverged"] else 100 * r[key]["mean"]
                              for r in rows])
                sd = np.array([0 if r[key]["std"] is None else 100 * r[key]["std"] for r in rows])
                ax.errorbar(xs, m, yerr=sd, fmt="-o", ms=4, capsize=3, color=colors[label],
                            label=label)
                div = [x for x, r in zip(xs, rows) if r["diverged"]]
                if div:
                    ax.plot(div, [5] * len(div), "x", color=colors[label], ms=8)
                if e["chosen_eta"] is not None and key == "final_validation":
                    i = [r["eta"] for r in rows].index(e["chosen_eta"])
                    ax.plot([xs[i]], [m[i]], "*", ms=14, color=colors[label], mec="k")
        for ax, title, xlabel in zip(axes, ("final validation accuracy % (star: chosen eta)",
                                            "final test accuracy %",
                                            "final validation accuracy % against eta/(1-momentum)"),
                                     ("eta", "eta", "eta / (1 - momentum)")):
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylim(0, 100)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8, loc="lower left")
        fig.suptitle(f"Accuracy against eta (x at 5%: diverged): {tag}")
        fig.tight_layout()
        p = out / f"{RESULT_PREFIX}-{name}-eta.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


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


def build_parser(prog="fastmom bench-convergence"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convergence benchmark: plain SGD vs momentum over an eta grid and several "
                    "seeds; eta chosen on validation accuracy, test accuracy reported as "
                    "mean ± std over seeds.",
        epilog="problems: " + "; ".join(f"{p.number}: {n} ({p.description})"
                                        for n, p in PROBLEMS.items()))
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
    p.add_argument("--out", help="output directory (default: bench/results; with --quick: "
                                 "convergence-quick, so that a smoke test never overwrites results)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: etas {QUICK['etas']}, seed 0, {QUICK['epochs']} epochs of "
                        f"{QUICK['max_batches']} batches, {QUICK['max_eval']} evaluation images")
    p.add_argument("--max-batches", type=int, help="use only this many training batches per epoch")
    p.add_argument("--fraction", type=float, help="use only this fraction of the training set")
    p.add_argument("--max-eval", type=int, help="use only this many validation and test images")
    p.add_argument("--select", choices=SELECTION_CRITERIA, default="final",
                   help="eta selection on validation accuracy: final (default), best, target")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished runs in the output directory's JSON")
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


def main(argv=None):
    """``fastmom bench-convergence``: parse ``argv`` and run. Returns the exit status."""
    from .backends import DeviceError

    args = build_parser().parse_args(argv)
    if args.list:
        for name, p in PROBLEMS.items():
            print(f"{p.number}  {name:16s} {p.description}\n   batch {p.batch_sizes}, lmbda "
                  f"{p.lmbda}, {p.epochs} epochs, target {p.target:.0%} validation; "
                  f"optimizers {', '.join(p.optimizers)}; etas {p.etas}; seeds {p.seeds}")
        return 0
    if args.report:
        for path in args.report:
            doc = json.loads(Path(path).read_text())
            doc["summary"] = summarize_document(doc)
            for f in write_reports(doc, Path(path).parent, plots=not args.no_plots):
                print(f"wrote {f}")
        return 0
    try:
        problems = resolve_problems(args.problem or ["conv-sample"])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_plots:
        try:
            _import_pyplot()
        except ImportError as exc:  # fail before hours of training, not after
            print(f"error: {exc}", file=sys.stderr)
            return 2
    quick = QUICK if args.quick else {}
    if args.out is None:
        args.out = "convergence-quick" if args.quick else "bench/results"
    pick = lambda value, key: value if value is not None else quick.get(key)  # noqa: E731
    command = "fastmom bench-convergence " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in problems:
        try:
            run_suite(name, optimizers=pick(args.optimizers, "optimizers"),
                      etas=pick(args.etas, "etas"), seeds=pick(args.seeds, "seeds"),
                      epochs=pick(args.epochs, "epochs"), batch_sizes=args.batch_size,
                      device=args.device, max_batches=pick(args.max_batches, "max_batches"),
                      fraction=args.fraction, max_eval=pick(args.max_eval, "max_eval"),
                      criterion=args.select, out=args.out, plots=not args.no_plots,
                      resume=args.resume, resume_from=args.resume_from,
                      train_missing=not args.no_train,
                      command=command.strip())
        except (ValueError, DeviceError) as exc:  # bad grid, missing data set or device
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {Path(args.out) / f'{RESULT_PREFIX}-{name}'}.{{json,md}}"
              + ("" if args.no_plots else " and plots"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
