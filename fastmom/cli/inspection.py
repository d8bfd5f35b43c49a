"""``fastmom evaluate`` (accuracy, per-class accuracy and confusion matrix of a saved
model) and ``fastmom summary`` (a network's layers, shapes, parameters and FLOPs)."""
from __future__ import annotations

import numpy as np

from .._io import write_json
from .checks import check_dataset, check_output_file
from .output import Console, plot_confusion
from .prepare import build_net_layers, check_outputs, set_threads
from ..data import load_dataset
from ..network import Network

__all__ = ["run_evaluate", "run_summary", "confusion_matrix"]

_SPLITS = ("training", "validation", "test")


def confusion_matrix(labels, predicted, n_classes):
    """``counts[true, predicted]`` as a list of lists of ints."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predicted)), 1)
    return counts.tolist()


def _evaluation(confusion):
    """Accuracy and per-class accuracy (None for a class without images)."""
    counts = np.asarray(confusion)
    per_class = [None if row.sum() == 0 else float(row[i] / row.sum()) for i, row in enumerate(counts)]
    return float(np.trace(counts) / counts.sum()), per_class


def _evaluation_lines(confusion, per_class):
    n = len(confusion)
    lines = ["class  images  accuracy"]
    for i, acc in enumerate(per_class):
        lines.append(f"{i:>5}  {sum(confusion[i]):>6}  {'-' if acc is None else format(acc, '8.2%')}")
    width = max(4, len(str(max(max(row) for row in confusion))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
              "true " + "".join(f"{j:>{width}}" for j in range(n))]
    lines += [f"{i:>4} " + "".join(f"{c:>{width}}" for c in row) for i, row in enumerate(confusion)]
    return lines


def run_evaluate(args):
    """``fastmom evaluate MODEL``; returns the exit status."""
    check_outputs(args)
    check_dataset(args.dataset)
    console = Console(args.json, args.quiet)
    set_threads(args)
    net = Network.load(args.model, device=args.device)
    x, y = load_dataset(args.dataset)[_SPLITS.index(args.split)]
    predicted = net.backend.to_numpy(net.predict(x))
    confusion = confusion_matrix(y, predicted, net.n_out)
    accuracy, per_class = _evaluation(confusion)
    console.say(f"fastmom evaluate: {args.model} on the {args.dataset} {args.split} set ({len(y)} images): "
                f"accuracy {accuracy:.2%}")
    for line in _evaluation_lines(confusion, per_class):
        console.say(line)
    if args.json:
        write_json(args.json, {"model": args.model, "dataset": args.dataset, "split": args.split,
                               "images": len(y), "accuracy": accuracy, "per_class_accuracy": per_class,
                               "confusion": confusion})
    if args.plot:
        plot_confusion(args.plot, confusion, f"{args.model}: {args.dataset} {args.split} set, "
                                             f"accuracy {accuracy:.2%}")
    return 0


def run_summary(args):
    """``fastmom summary [MODEL] [--net NAME]``: :meth:`Network.summary`; returns the
    exit status."""
    check_output_file("--json", args.json)
    console = Console(args.json)
    if args.model is not None:
        net, title = Network.load(args.model, device="reference"), args.model
    else:
        # the NumPy backend: describing a network needs no compiled kernels or GPU
        net = Network(build_net_layers(args), args.batch_size, device="reference", dtype=args.dtype)
        title = f"--net {args.net}"
    console.say(title)
    console.say(net.summary())
    if args.json:
        rows = net.summary_rows()
        write_json(args.json, {"network": title, "layers": rows,
                               "params": sum(r["params"] for r in rows),
                               "flops_per_image": sum(r["flops"] for r in rows)})
    return 0
