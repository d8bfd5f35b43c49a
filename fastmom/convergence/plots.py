"""The suite's plots: learning curves and accuracy against eta, one pair per setting
(matplotlib, imported only here and only when plots are drawn)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .metrics import group_runs, summarize_document
from .problems import RESULT_PREFIX

__all__ = ["import_pyplot", "write_plots"]


def import_pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or an ImportError that says
    how to get it (or do without)."""
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
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs: NaN, quietly
        return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def _curves_figure(plt, s, groups, colors, tag):
    """Learning curves: one line per optimizer at its chosen eta, band = min..max over seeds."""
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
    return fig


def _eta_figure(plt, s, groups, colors, tag):
    """Sensitivity: final accuracy against eta (error bars: std over seeds); the third
    panel puts momentum runs at their long-run step eta/(1-momentum), where they line
    up with plain SGD if momentum is only a larger effective learning rate."""
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
    return fig


def write_plots(doc, out):
    """Learning curves and accuracy-vs-eta plots, one pair per setting.

    Returns
    -------
    list of Path
    """
    plt = import_pyplot()
    out = Path(out)
    summary = doc["summary"] or summarize_document(doc)
    cfg = doc["config"]
    paths = []
    for name, s in summary.items():
        groups = group_runs([r for r in doc["runs"] if r["batch_size"] == s["batch_size"]])
        colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(groups)}
        tag = f"{cfg['problem']} (batch {s['batch_size']}, {len(cfg['seeds'])} seed(s), {cfg['device']})"
        for kind, draw in (("curves", _curves_figure), ("eta", _eta_figure)):
            fig = draw(plt, s, groups, colors, tag)
            fig.tight_layout()
            p = out / f"{RESULT_PREFIX}-{name}-{kind}.png"
            fig.savefig(p, dpi=90)
            plt.close(fig)
            paths.append(p)
    return paths
