"""Where the command line's lines go, the line each epoch leaves, and the plots.

Standard output carries the results (network3's lines, tables); with ``--json -`` it
carries the JSON alone and every other line goes to standard error. Progress (the bar,
the per-epoch line) always goes to standard error.
"""
from __future__ import annotations

import sys

__all__ = ["Console", "EpochLine", "plot_curves", "plot_confusion"]


class Console:
    """The command's printer: ``say`` for result lines, ``note`` for progress and
    warnings; ``--quiet`` silences both but :meth:`always`."""

    def __init__(self, json_path=None, quiet=False):
        self.quiet = quiet
        self.out = sys.stderr if json_path == "-" else sys.stdout

    def say(self, text=""):
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def note(self, text):
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @staticmethod
    def always(text):
        print(text, file=sys.stderr, flush=True)


class EpochLine:
    """A callback: one line per epoch, printed when the epoch ends (cost, accuracy,
    seconds), numbered as network3's lines are (``epoch 0`` first)."""

    def __init__(self, console, label=""):
        self.console, self.label = console, label

    def on_epoch_end(self, trainer, record):
        acc = record["validation_accuracy"]
        accuracy = "" if acc is None else f", validation accuracy {acc:.2%}"
        self.console.note(f"{self.label}epoch {record['epoch']}: cost {record['cost']:.4f}{accuracy}, "
                          f"{record['seconds']:.1f} s, {record['images_per_second']:.0f} images/s")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: never a window
    import matplotlib.pyplot as plt
    return plt


def plot_curves(path, curves, title):
    """Validation (and test) accuracy and the training cost by epoch, one line per run
    (``curves``: ``{label: history records}``); epochs numbered from 0 as printed."""
    plt = _pyplot()
    fig, (acc_ax, cost_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for label, hist in curves.items():
        epochs = [r["epoch"] for r in hist]
        (line,) = acc_ax.plot(epochs, [100 * r["validation_accuracy"] for r in hist], marker="o",
                              label=f"{label} (validation)")
        if hist and hist[0]["test_accuracy"] is not None:
            acc_ax.plot(epochs, [100 * r["test_accuracy"] for r in hist], ls="--", alpha=0.6,
                        color=line.get_color(), label=f"{label} (test)")
        cost_ax.plot(epochs, [r["cost"] for r in hist], marker="o", color=line.get_color(), label=label)
    for ax, ylabel in ((acc_ax, "accuracy (%)"), (cost_ax, "training cost")):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(path, confusion, title):
    """The confusion matrix (rows: true class, columns: predicted), counts written in."""
    plt = _pyplot()
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax)
    top = max(max(row) for row in confusion) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i][j] > top / 2 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
