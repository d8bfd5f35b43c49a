"""The protocol's metrics: pure functions of run records, shared by the suite's reports
and ``fastmom compare``.

A run record is a dict with ``optimizer``, ``eta``, ``seed``, ``diverged``,
``epochs_budget`` and a ``history``: per-epoch dicts with ``validation_accuracy``,
``test_accuracy``, ``elapsed`` (cumulative training seconds) and ``wall``. A history
alone (a list of such dicts, or a :class:`fastmom.History`) is what
:func:`epochs_to_target` and :func:`seconds_to_target` read: an epoch count is
1-based (1: the first epoch reached it) and None means never.
"""
from __future__ import annotations

import math

import numpy as np

from ._text import fmt_mean_std, pct
from .problems import setting_name

__all__ = ["SELECTION_CRITERIA", "epochs_to_target", "seconds_to_target", "select_eta",
           "summarize_setting", "summarize_document", "compare_to_sgd", "accuracy_profile",
           "group_runs"]

SELECTION_CRITERIA = ("final", "best", "target")


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


def group_runs(runs):
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
    for label, by_eta in group_runs(runs).items():
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
    groups = group_runs(runs)
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


def summarize_document(doc):
    """Summaries of every setting of a JSON document, keyed by setting name."""
    cfg = doc["config"]
    bss = sorted({r["batch_size"] for r in doc["runs"]})
    return {setting_name(cfg["problem"], bs, len(bss)): dict(
                summarize_setting([r for r in doc["runs"] if r["batch_size"] == bs],
                                  cfg["target_validation_accuracy"], cfg["selection"]),
                batch_size=bs)
            for bs in bss}


def _epochs_phrase(agg):
    if agg is None:
        return "n/a (every eta diverged)"
    n = agg["n_seeds"]
    if agg["reached_target"] == 0:
        return f"never within the budget (0/{n} seeds)"
    return f"{fmt_mean_std(agg['epochs_to_target'], pct=False, one='')} epochs ({agg['reached_target']}/{n} seeds)"


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


def _verdict_head(label, baseline, a, res, by_reach):
    if res == 0 and (a is None or a["reached_target"] == 0):
        return f"NEITHER {label} nor {baseline} reaches"
    if by_reach:
        # decided by how many seeds got there, not by speed: say so
        return {1: f"YES, {label} reaches it in more seeds than {baseline}, to",
                -1: f"NO, {label} reaches it in fewer seeds than {baseline}, to"}[res]
    return {1: f"YES, {label} is faster than {baseline} to",
            0: f"NO, {label} ties with {baseline} to",
            -1: f"NO, {label} is slower than {baseline} to"}[res]


def _verdict_caveats(label, a, b, res, by_reach):
    """What the evidence behind a verdict is worth: the seeds that did arrive when reach
    decided it, a single seed, partial reach, a difference within the seed noise."""
    text = ""
    if by_reach and a["reached_target"] and b["reached_target"]:
        ea, eb = a["epochs_to_target"]["mean"], b["epochs_to_target"]["mean"]
        if (ea - eb) * res > 0:  # the seeds that did arrive tell the other story
            text += (f" But on the seeds that reached it, {label} took "
                     f"{'more' if ea > eb else 'fewer'} epochs ({ea:.2f} against {eb:.2f}).")
    partial = [x for x in (a, b) if x is not None and 0 < x["reached_target"] < x["n_seeds"]]
    noise = _within_noise(a, b)
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
    return text


def _verdict(label, entry, baseline, base, at, target):
    """One verdict of :func:`compare_to_sgd`: ``label`` against ``baseline`` at the
    ``chosen`` or ``fastest`` etas."""
    key, eta_key = ("at_chosen", "chosen_eta") if at == "chosen" else ("at_fastest", "fastest_eta")
    a, b = entry[key], base[key]
    res = _beats(a, b)
    how = ("etas chosen on final validation accuracy" if at == "chosen"
           else "each at its fastest eta, chosen on validation")
    by_reach = a is not None and b is not None and res != 0 and _reach(a) != _reach(b)
    text = (f"{_verdict_head(label, baseline, a, res, by_reach)} {pct(target)} validation: "
            f"{_epochs_phrase(a)} at eta {entry[eta_key]} against {_epochs_phrase(b)} at eta "
            f"{base[eta_key]} ({how}).")
    text += _verdict_caveats(label, a, b, res, by_reach)
    return {"optimizer": label, "baseline": baseline, "at": at, "result": res, "text": text}


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
        for at in ("chosen", "fastest"):
            verdicts.append(_verdict(label, entry, baseline, opts[baseline], at, target))
    return verdicts


def accuracy_profile(runs, thresholds):
    """Epochs to each validation threshold: ``{threshold: (mean or None, reached, n)}``,
    the mean over the seeds that reached it."""
    out = {}
    for t in thresholds:
        eps = [epochs_to_target(r["history"], t) for r in runs]
        hit = [e for e in eps if e is not None]
        out[t] = (float(np.mean(hit)) if hit else None, len(hit), len(eps))
    return out
