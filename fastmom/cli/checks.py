"""What the command line checks before any training: a mistake that would surface only
after the last epoch (an unwritable output path, no matplotlib, a batch larger than the
validation set) is refused while it costs nothing.

Every check raises :class:`UsageError` with a message that names the flag as typed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["UsageError", "check_output_file", "check_output_dir", "check_plot", "check_dataset",
           "check_batch_size", "usable_threads"]

_DATASET_NAMES = ("sample", "mnist", "fashion-mnist")
_DATASET_HINT = "give --dataset sample for the bundled 5,000 digits or --dataset mnist to download MNIST"


class UsageError(ValueError):
    """A command line the program refuses before doing any work (exit status 2)."""


def check_output_file(flag, path):
    """Refuse ``path`` unless a file can be written there (``-`` is standard output)."""
    if path is None or path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, not a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: the directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {path}: the file exists and is not writable")


def check_output_dir(flag, path):
    """Refuse ``path`` unless it is, or can be created as, a writable directory."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    existing = p
    while not existing.exists():  # the nearest ancestor that exists is where it is created
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {existing} is not writable")


def check_plot(path):
    """Refuse ``--plot path`` unless matplotlib imports and writes its suffix."""
    if path is None:
        return
    check_output_file("--plot", path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'fastmom[plot]'") from None
    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        what = "." + suffix if suffix else "a file without a suffix"
        raise UsageError(f"--plot {path}: matplotlib cannot write {what}; "
                         f"use one of {', '.join('.' + f for f in sorted(formats))}")


def check_dataset(name):
    """Refuse a ``--dataset`` that names no data set, with what to type instead (the
    loaders' own messages speak to Python callers)."""
    if name in _DATASET_NAMES:
        return
    p = Path(name)
    if p.name.endswith((".pkl.gz", ".pkl")):
        if not p.is_file():
            raise UsageError(f"--dataset {name}: file not found ({_DATASET_HINT})")
        return
    if p.is_dir():
        return
    if p.exists():
        raise UsageError(f"--dataset {name}: neither a directory of IDX files nor a .pkl.gz file")
    if name.endswith(("/", os.sep)) or os.sep in name:
        raise UsageError(f"--dataset {name}: the directory does not exist ({_DATASET_HINT})")
    raise UsageError(f"--dataset {name}: unknown data set; expected sample, mnist, fashion-mnist, "
                     "a directory of MNIST-format IDX files or a .pkl.gz file")


def check_batch_size(batch_size, dataset, splits):
    """Refuse a ``--batch-size`` larger than a split that training or its accuracy
    measurement divides into mini-batches (``splits``: ``{name: images}``)."""
    for name, n in splits.items():
        if batch_size > n:
            raise UsageError(f"--batch-size {batch_size} is larger than the {name} set of --dataset "
                             f"{dataset} ({n} images): give --batch-size {n} or less")


def usable_threads(requested):
    """``--threads``, capped (with a warning) at the cores this process may run on:
    more threads than cores only wait for each other."""
    if requested is None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > cores:
        print(f"fastmom: warning: --threads {requested} is more than the {cores} usable cores: using {cores}",
              file=sys.stderr)
        return cores
    return requested
