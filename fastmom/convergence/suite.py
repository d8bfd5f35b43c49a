"""Running the suite: one training run (:func:`run_one`) and a problem's whole grid
(:func:`run_suite`), resumable and combinable from earlier sessions' JSON files."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .._machine import load_average, machine_info, source_commit
from ._text import pct
from .metrics import SELECTION_CRITERIA, summarize_document
from .problems import (EXPAND_SEED, PROBLEMS, RESULT_PREFIX, OptimizerSpec, parse_optimizers, build_network,
                       load_problem_data)
from .report import write_reports, write_result_json
from .resumable import RunCheckpoints, RunClock, configuration_tag
from ..train import Checkpointer, DivergenceError, DivideOnPlateau, Trainer

__all__ = ["run_one", "run_suite"]


def _fingerprint(net):
    flat = np.ascontiguousarray(net.backend.to_numpy(net.flat.data))
    return hashlib.sha256(flat.tobytes()).hexdigest()[:16]


def run_one(problem, data, optimizer, eta, seed, batch_size, epochs, device=None, checkpoints=None,
            resume=False, log=lambda *a: None):
    """Train one (optimizer, eta, seed) and return its run record.

    A run whose cost becomes NaN/inf is recorded as diverged, with the epochs it
    completed.

    Parameters
    ----------
    checkpoints : path-like, optional
        Checkpoint the run every epoch in a directory under this one (see
        :mod:`.resumable`), deleted when the run ends.
    resume : bool
        With ``checkpoints``: continue from the run's newest checkpoint, if any,
        bit-identically to an uninterrupted run.

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
        (cumulative training seconds), ``wall`` (seconds since the run
        started, evaluation included) and ``cpu`` (the process's CPU seconds
        since the run started, evaluation included: on a shared machine, what
        the run cost whatever the load). A run continued from a checkpoint also
        has ``resumed_at_epochs``; its times add up the sessions that trained it.
    """

    if isinstance(optimizer, str):
        optimizer = OptimizerSpec.parse(optimizer)
    training, validation, test = data
    clock = RunClock()
    net = build_network(problem.arch, batch_size, device=device, seed=seed)
    fingerprint = _fingerprint(net)
    schedule = DivideOnPlateau() if optimizer.schedule == "plateau" else None
    trainer = Trainer(net, optimizer.kind, eta=eta, momentum=optimizer.momentum or 0.9,
                      lmbda=problem.lmbda, shuffle=True, seed=seed, schedule=schedule,
                      callbacks=[clock], progress=False, log=lambda *a: None)
    # the data order is drawn from this generator: equal states, equal orders
    data_order = hashlib.sha256(json.dumps(trainer.data_rng.bit_generator.state, sort_keys=True,
                                           default=str).encode()).hexdigest()[:16]
    store = None
    if checkpoints is not None:
        store = RunCheckpoints(checkpoints, (batch_size, optimizer.label, float(eta), int(seed)),
                               {"init_fingerprint": fingerprint, "data_order_fingerprint": data_order})
        last = store.start(resume)
        trainer.checkpointer = Checkpointer(store.directory, every=1, unit="epoch", keep_last=1)
        if last is not None:
            trainer.load_checkpoint(last)
            clock.resumed_at.append(trainer.epoch)  # carried by the next checkpoints
            log(f"resuming the run at epoch {trainer.epoch} from {last}")
    divergence = None
    # a diverging run overflows before the cost turns NaN; the Trainer reports that
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            trainer.fit_to(training, epochs, validation, test)
        except DivergenceError as exc:
            divergence = str(exc)
    run = _run_record(problem, optimizer, eta, seed, batch_size, epochs, net, trainer, clock, divergence)
    run.update(init_fingerprint=fingerprint, data_order_fingerprint=data_order)
    if clock.resumed_at:
        run["resumed_at_epochs"] = list(clock.resumed_at)
    if store is not None:
        store.finish()
    return run


def _run_record(problem, optimizer, eta, seed, batch_size, epochs, net, trainer, clock, divergence):
    history = []
    for rec, (wall, cpu) in zip(trainer.history, clock.stamps):
        history.append({k: rec[k] for k in ("epoch", "cost", "validation_accuracy", "test_accuracy",
                                            "eta", "seconds", "elapsed")} | {"wall": wall, "cpu": cpu})
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
        "init_fingerprint": None,
        "data_order_fingerprint": None,
        "diverged": divergence is not None,
        "divergence": divergence,
        "stopped_early": divergence is None and len(history) < epochs,
        "wall_seconds": clock.now()[0],
        "history": history,
    }


# ---------------------------------------------------------------------------
# The grid and its configuration
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grid:
    """What one suite runs: every (batch size, optimizer, eta, seed) of it."""

    specs: tuple
    etas: dict  # {optimizer label: tuple of eta}
    seeds: tuple
    epochs: int
    batch_sizes: tuple

    @property
    def total(self):
        return len(self.batch_sizes) * sum(len(g) for g in self.etas.values()) * len(self.seeds)

    @property
    def keys(self):
        return {(bs, sp.label, eta, seed) for bs in self.batch_sizes for sp in self.specs
                for eta in self.etas[sp.label] for seed in self.seeds}


def _eta_grids(specs, etas, problem):
    """One grid for all, or ``{optimizer label: grid}`` (e.g. around each one's known
    good eta), as ``{label: tuple of float}``."""
    if isinstance(etas, dict):
        unknown = set(etas) - {sp.label for sp in specs}
        if unknown:
            raise ValueError(f"--etas names optimizers not in the run: {sorted(unknown)}")
        missing = [sp.label for sp in specs if sp.label not in etas]
        if missing:
            raise ValueError(f"--etas gives no grid for {missing}")
        return {sp.label: tuple(float(e) for e in etas[sp.label]) for sp in specs}
    grid = tuple(float(e) for e in (etas or problem.etas))
    return {sp.label: grid for sp in specs}


def _make_grid(problem, optimizers, etas, seeds, epochs, batch_sizes):
    specs = parse_optimizers(optimizers or problem.optimizers)
    return _Grid(specs=specs, etas=_eta_grids(specs, etas, problem),
                 seeds=tuple(int(s) for s in (seeds if seeds is not None else problem.seeds)),
                 epochs=int(epochs or problem.epochs),
                 batch_sizes=tuple(int(b) for b in (batch_sizes or problem.batch_sizes)))


def _is_reduced(problem, grid, subset):
    """Whether the grid is smaller than the problem's default (or its data subset)."""
    return (any(v is not None for v in subset.values())
            or grid.epochs != problem.epochs or len(grid.seeds) < len(problem.seeds)
            or tuple(grid.batch_sizes) != problem.batch_sizes
            # more optimizers or etas than the default grid is not a reduction
            or not {s.label for s in parse_optimizers(problem.optimizers)} <= {s.label for s in grid.specs}
            or any(not set(problem.etas) <= set(g) for g in grid.etas.values()))


def _suite_config(problem, grid, subset, criterion, backend, expand=False):
    """The ``config`` of the JSON document: the problem, the grid and the protocol
    (``expand``/``expand_seed`` only with the expanded training set, so that the
    files written before it existed read, and print, as they did)."""
    per_optimizer = len(set(grid.etas.values())) > 1
    config = {
        "problem": problem.name, "number": problem.number, "description": problem.description,
        "dataset": problem.dataset, "arch": problem.arch, "lmbda": problem.lmbda,
        "target_validation_accuracy": problem.target, "epochs": grid.epochs,
        "batch_sizes": list(grid.batch_sizes), "optimizers": [s.label for s in grid.specs],
        "etas": ({k: list(v) for k, v in grid.etas.items()} if per_optimizer
                 else list(next(iter(grid.etas.values())))),
        "seeds": list(grid.seeds), **subset, "selection": criterion, "shuffle": True,
        "device": backend,
    }
    if expand:
        config.update(expand=True, expand_seed=EXPAND_SEED)
    config["reduced"] = _is_reduced(problem, grid, subset)
    return config


# ---------------------------------------------------------------------------
# Resuming: the finished runs of earlier sessions
# ---------------------------------------------------------------------------

#: What must match for an earlier file's runs to be reused.
_RESUME_KEYS = ("epochs", "max_batches", "fraction", "max_eval", "device")


def _run_key(run):
    return (run["batch_size"], run["optimizer"], float(run["eta"]), int(run["seed"]))


def _same_configuration(old, config, problem):
    cfg = old.get("config", {})
    same = {k: v for k, v in cfg.items() if k in _RESUME_KEYS}
    return (same == {k: config[k] for k in same}
            and cfg.get("problem", problem.name) == problem.name
            # a file without the key was trained on the plain training set
            and cfg.get("expand", False) == config.get("expand", False))


def _keep_sessions(meta, old_meta):
    """Keep when, where and how the earlier runs were made, each session once: files
    that share an ancestor (two halves of a split grid resumed from one file) list its
    sessions twice; they are kept in the order first seen."""
    earlier = dict(old_meta)
    sessions = meta.setdefault("earlier_sessions", [])
    for e in earlier.pop("earlier_sessions", []) + [earlier]:
        if e not in sessions:
            sessions.append(e)


def _finished_runs(sources, problem, config, meta, log):
    """``{run key: run}`` of the earlier files ``sources`` (``(path, explicit)``; the
    first file to have a run wins). A file of another problem or configuration is an
    error when named explicitly (``resume_from``), else skipped."""
    done = {}
    for path, explicit in sources:
        old = json.loads(path.read_text())
        if not _same_configuration(old, config, problem):
            if explicit:
                raise ValueError(f"{path} holds another problem or configuration "
                                 f"({ {k: old.get('config', {}).get(k) for k in ('problem',) + _RESUME_KEYS} }"
                                 f"{', expanded training set' if old.get('config', {}).get('expand') else ''})")
            log(f"not resuming: {path} was made with another configuration")
            continue
        found = 0
        for r in old.get("runs", []) + old.get("other_runs", []):
            if _run_key(r) not in done:
                done[_run_key(r)] = r
                found += 1
        _keep_sessions(meta, old.get("meta", {}))
        log(f"resuming: {found} runs found in {path}")
    return done


# ---------------------------------------------------------------------------
# Training the grid
# ---------------------------------------------------------------------------


class _Session:
    """One call of :func:`run_suite`: its document, the runs it may reuse, and the
    JSON file it rewrites after every run."""

    def __init__(self, doc, grid, done, json_path, resume=False):
        self.doc, self.grid, self.done, self.json_path = doc, grid, done, json_path
        # unfinished runs checkpoint beside the JSON, and --resume continues them
        self.checkpoints = (None if json_path is None else
                            json_path.parent / "checkpoints" / configuration_tag(doc["config"]))
        self.resume = resume
        self.wanted = grid.keys
        self.t_start = time.perf_counter()
        self.prior_seconds = 0.0  # the reused runs' time, so the total covers every session

    def seconds(self):
        return self.prior_seconds + time.perf_counter() - self.t_start

    def save_progress(self):
        """Rewrite the JSON with the runs so far. The grid's finished runs that the loop
        has not reached again stay in the file, so that interrupting a resumed suite
        loses none of them."""
        if self.json_path is None:
            return
        self.doc["meta"]["suite_seconds"] = self.seconds()
        have = {_run_key(r) for r in self.doc["runs"]}
        pending = [r for k, r in self.done.items() if k not in have and k in self.wanted]
        write_result_json(self.json_path, dict(self.doc, runs=self.doc["runs"] + pending))


def _log_run(log, count, total, problem, key, run):
    bs, label, eta, seed = key
    h = run["history"]
    last = h[-1] if h else {}
    log(f"[{count}/{total}] {problem.name} bs={bs} {label} eta={eta:g} "
        f"seed={seed}: " + ("DIVERGED after %d epochs" % len(h) if run["diverged"]
                            else f"val {pct(last.get('validation_accuracy'), 2)} "
                                 f"test {pct(last.get('test_accuracy'), 2)}")
        + f" ({run['wall_seconds']:.1f} s)")


def _train_grid(session, problem, subset, device, train_missing, log):
    """Run (or reuse) every run of the grid in order, saving after each."""
    grid, doc = session.grid, session.doc
    expand = bool(doc["config"].get("expand"))
    count = 0
    for bs in grid.batch_sizes:
        data = load_problem_data(problem, subset["max_batches"], subset["fraction"], bs,
                                 subset["max_eval"], expand=expand)
        doc["config"].setdefault("sizes", {})[str(bs)] = [len(d[1]) for d in data]
        for spec in grid.specs:
            for eta in grid.etas[spec.label]:
                for seed in grid.seeds:
                    count += 1
                    key = (bs, spec.label, eta, seed)
                    if key in session.done:
                        run = session.done[key]
                        session.prior_seconds += run["wall_seconds"]
                    elif not train_missing:
                        continue
                    else:
                        run = run_one(problem, data, spec, eta, seed, bs, grid.epochs, device,
                                      checkpoints=session.checkpoints, resume=session.resume, log=log)
                        if expand:
                            run["expand"] = True
                        doc["meta"]["runs_trained"] += 1
                    doc["runs"].append(run)
                    _log_run(log, count, grid.total, problem, key, run)
                    session.save_progress()


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------


def _start(problem, grid, subset, criterion, device, command, expand=False):
    """The document's ``meta`` (machine, commit, command) and ``config``."""
    if criterion not in SELECTION_CRITERIA:
        raise ValueError(f"criterion must be one of {SELECTION_CRITERIA}")
    meta = machine_info(device)
    meta["git_commit"] = source_commit()
    meta["command"] = command
    return meta, _suite_config(problem, grid, subset, criterion, meta["backend"], expand)


def _resume_sources(json_path, resume, resume_from):
    sources = [(json_path, False)] if resume and json_path is not None and json_path.exists() else []
    return sources + [(Path(p), True) for p in resume_from]


def run_suite(problem, *, optimizers=None, etas=None, seeds=None, epochs=None, batch_sizes=None,
              device=None, max_batches=None, fraction=None, max_eval=None, criterion="final",
              out=None, plots=True, resume=False, resume_from=(), train_missing=True,
              command=None, log=print, expand=False):
    """Run one problem's grid and write its JSON, Markdown and plots.

    Parameters
    ----------
    problem : Problem or str
    optimizers, etas, seeds, epochs, batch_sizes
        Override the problem's defaults.
    device : str, optional
    max_batches, fraction, max_eval
        Subsetting for short runs (see :func:`load_problem_data`).
    expand : bool
        Train on network3's expanded training set (the subset's images and their
        four one-pixel shifts, :func:`fastmom.data.expand` with seed
        ``EXPAND_SEED``), built once per process; validation and test are not
        expanded. Recorded as ``expand: true`` in the config (and each run) and in
        the report; runs of the plain training set are never resumed into it, nor
        the other way round.
    criterion : {"final", "best", "target"}
        How each optimizer's eta is chosen (always on validation accuracy).
    out : path, optional
        Output directory; nothing is written without it.
    plots : bool
    resume : bool
        Reuse the runs already in ``out``'s JSON that match this configuration, and
        continue an unfinished run from its last checkpoint (every run with ``out``
        checkpoints each epoch under ``out/checkpoints/``, see :mod:`.resumable`).
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
    grid = _make_grid(problem, optimizers, etas, seeds, epochs, batch_sizes)
    subset = {"max_batches": max_batches, "fraction": fraction, "max_eval": max_eval}
    meta, config = _start(problem, grid, subset, criterion, device, command, expand)
    json_path = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"{RESULT_PREFIX}-{problem.name}.json"
    done = _finished_runs(_resume_sources(json_path, resume, resume_from), problem, config, meta, log)
    meta["runs_trained"] = 0  # by this session; 0 = it only combined earlier sessions' runs
    doc = {"meta": meta, "config": config, "runs": [], "summary": {}, "complete": False}
    session = _Session(doc, grid, done, json_path, resume=resume)
    # runs of the same configuration outside this grid (a narrower resume of a wider
    # grid) stay in the file, apart from the report's runs: resuming never loses data
    other = [r for k, r in done.items() if k not in session.wanted]
    if other:
        doc["other_runs"] = other
    _train_grid(session, problem, subset, device, train_missing, log)
    doc["meta"]["suite_seconds"] = session.seconds()
    load = load_average()
    if load is not None:
        doc["meta"]["load_average_at_end"] = [round(x, 2) for x in load]
    doc["summary"] = summarize_document(doc)
    doc["complete"] = len(doc["runs"]) == grid.total
    if out is not None:
        write_result_json(json_path, doc)
        write_reports(doc, out, plots=plots)
    return doc
