"""The suite's outputs: the JSON document (written atomically) and its Markdown report,
rebuilt from the JSON alone (``--report``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_write, write_json
from ._text import fmt_mean_std, grid_text, hms, pct
from .metrics import accuracy_profile, group_runs, summarize_document
from .plots import write_plots
from .problems import RESULT_PREFIX

__all__ = ["write_result_json", "write_reports", "write_markdown", "markdown_report"]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def write_result_json(path, doc):
    """Write a suite's JSON document atomically (never a half-written file)."""
    return write_json(path, doc, default=_json_default, indent=1, newline=False)


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


def _trained_sessions(meta):
    """The sessions (``meta`` and its ``earlier_sessions``) that trained runs."""
    trained = [e for e in meta.get("earlier_sessions", []) if not _combined_only(e)]
    return trained + ([] if _combined_only(meta) else [meta])


def _machine_text(meta):
    """The machine of the file; when some runs were trained on another CPU model (a
    grid resumed on another machine), each model that trained runs, with its number of
    sessions."""
    own = f"{meta['cpu_model']}, {meta['cpu_cores']} cores, {meta['platform']}"
    models = {}
    for e in _trained_sessions(meta):
        models[e.get("cpu_model")] = models.get(e.get("cpu_model"), 0) + 1
    if set(models) <= {meta["cpu_model"]}:
        return own
    trained = ", ".join(f"{m} ({n} session{'s' if n > 1 else ''})" for m, n in models.items())
    return f"runs trained on {trained}; this file written on {own}"


def _sessions_text(meta):
    """When, with how many threads and under what load the runs were trained.

    A file combined from many sessions (a grid split over processes, resumed over
    days) gets one summary line; each session's record stays in the JSON."""
    earlier = meta.get("earlier_sessions", [])
    here = {k: meta.get(k) for k in ("date", "threads", "load_average_at_start")}
    if not earlier:
        return (f"{here['threads']} threads; {here['date']}; load average at start "
                f"{here['load_average_at_start']}")
    trained = _trained_sessions(meta)
    combined_only = _combined_only(meta)
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


def _header_lines(doc):
    """The title, the problem and the grid, the protocol, the machine and the command."""
    cfg, meta = doc["config"], doc["meta"]
    lines = [f"## Convergence: problem {cfg['number']}, `{cfg['problem']}`"
             + (", expanded training set" if cfg.get("expand") else "")
             + (" (REDUCED grid)" if cfg.get("reduced") else ""), ""]
    lines.append(f"{cfg['description']}. lmbda {cfg['lmbda']}, epoch budget {cfg['epochs']}, "
                 f"target {pct(cfg['target_validation_accuracy'])} validation accuracy, "
                 f"training data reshuffled every epoch.")
    lines.append("")
    sizes = cfg.get("sizes", {})
    lines.append(f"- Grid: optimizers {', '.join(cfg['optimizers'])}; eta "
                 f"{grid_text(cfg['etas'])}; seeds "
                 f"{', '.join(map(str, cfg['seeds']))}; batch size "
                 f"{', '.join(map(str, cfg['batch_sizes']))}"
                 + "".join(f"; images (train/validation/test) at batch {bs}: "
                           f"{'/'.join(map(str, n))}" for bs, n in sizes.items()) + ".")
    if cfg.get("expand"):
        lines.append(f"- Training set: EXPANDED (`expand: true`): network3's expanded training set, "
                     f"each training image and its four one-pixel shifts, 5x the images, shuffled "
                     f"(`fastmom.data.expand(training, seed={cfg.get('expand_seed')})`); validation "
                     f"and test not expanded.")
    subset = [f"{k}={cfg[k]}" for k in ("max_batches", "fraction", "max_eval") if cfg.get(k)]
    if subset:
        lines.append(f"- Data subset: {', '.join(subset)}.")
    lines.append(f"- Eta selection: on VALIDATION accuracy only ({_CRITERION_TEXT[cfg['selection']]}); "
                 "test figures are those of the chosen eta, mean ± std over seeds. An eta with a "
                 "diverged seed is never chosen. Same initial weights, data order and dropout "
                 "masks for every optimizer at a given seed.")
    lines.append(f"- Machine: {_machine_text(meta)}; "
                 f"fastmom {meta['fastmom_version']} (commit {meta.get('git_commit')}), backend "
                 f"`{meta['backend']}`; {_sessions_text(meta)}.")
    lines.append(f"- Total time: {hms(meta.get('suite_seconds', 0))} for {len(doc['runs'])} runs"
                 + (" (summed over the sessions)" if meta.get("earlier_sessions") else "")
                 + ("" if doc.get("complete") else " (INCOMPLETE: the suite did not finish)") + ".")
    if meta.get("command"):
        lines.append(f"- Command: `{meta['command']}`")
    lines.append("")
    return lines


def _results_table(s, tgt):
    """One row per optimizer: its chosen eta and the figures at it."""
    lines = [f"| optimizer | chosen eta | final validation % | final test % | "
             f"test % at best validation | epochs to {tgt} val. (seeds) | "
             f"train s to {tgt} | train s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for label, e in s["optimizers"].items():
        a = e["at_chosen"]
        if a is None:
            lines.append(f"| {label} | all diverged | | | | | | |")
            continue
        ept = ("never" if a["reached_target"] == 0 else
               f"{fmt_mean_std(a['epochs_to_target'], pct=False, one='')} ({a['reached_target']}/{a['n_seeds']})")
        lines.append(f"| {label} | {e['chosen_eta']:g} | {fmt_mean_std(a['final_validation'])} | "
                     f"{fmt_mean_std(a['final_test'])} | {fmt_mean_std(a['test_at_best_validation'])} | {ept} | "
                     f"{fmt_mean_std(a['seconds_to_target'], pct=False, nd=1)} | "
                     f"{fmt_mean_std(a['seconds_per_epoch'], pct=False, nd=2)} |")
    return lines + [""]


def _sensitivity_table(s, tgt):
    """Mean final validation accuracy of every optimizer at every eta of the grid."""
    lines = [f"Sensitivity: mean final validation accuracy % over seeds at each eta "
             f"(`div` = a seed diverged; `*` = chosen; `>` = reached {tgt} in every seed):", ""]
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
    return lines + [""]


def _setting_lines(doc, name, s, png_names):
    """A setting's section: results, profile, verdicts, sensitivity and plots."""
    tgt = pct(s["target"])
    lines = [f"### `{name}`: batch size {s['batch_size']}", ""]
    lines.extend(_results_table(s, tgt))
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
    lines.extend(_sensitivity_table(s, tgt))
    for png in png_names:
        if png in (f"{RESULT_PREFIX}-{name}-curves.png", f"{RESULT_PREFIX}-{name}-eta.png"):
            lines.append(f"![{png}]({png})")
    lines.append("")
    return lines


def markdown_report(doc, png_names=()):
    """The Markdown text of a JSON document (see :func:`write_markdown`)."""
    summary = doc["summary"] or summarize_document(doc)
    lines = _header_lines(doc)
    for name, s in summary.items():
        lines.extend(_setting_lines(doc, name, s, png_names))
    return "\n".join(lines)


def _profile_table(doc, s):
    """Epochs to accuracies below the target too: where the target is not reached
    within the budget this still shows which optimizer gets there first."""
    target = s["target"]
    thresholds = [round(target - d, 4) for d in (0.10, 0.05, 0.025)] + [target]
    runs = [r for r in doc["runs"] if r["batch_size"] == s["batch_size"]]
    groups = group_runs(runs)
    lines = ["Epochs to lower validation accuracies too, at the chosen etas (mean over the "
             "seeds that reached it; seeds reaching it in parentheses):", "",
             "| optimizer | " + " | ".join(pct(t) for t in thresholds) + " |",
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
    groups = group_runs([r for r in doc["runs"] if r["batch_size"] == s["batch_size"]])
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
                lines.append(f"- (Below the target, for information: to {pct(t)} validation, "
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
    text = markdown_report(doc, png_names)
    atomic_write(path, lambda f: f.write(text), text=True)
    return path

