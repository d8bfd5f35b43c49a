"""The command line's parser: every subcommand, its flags, their types and defaults.

Each flag's type is a validator of :mod:`fastmom._validate` wrapped by
:func:`~fastmom._validate.arg_type`, so that a refusal names the flag as typed
(``--seed must be an int >= 0, got -1``).
"""
from __future__ import annotations

import argparse
import sys

from .._validate import (arg_type, fraction_of_one, non_negative_float, non_negative_int, positive_float, positive_int,
                         unit_interval)
from .._version import __version__
from ..models import ARCHITECTURES, DEPRECATED_NAMES

__all__ = ["build_parser"]

DESCRIPTION = "fastmom: train, compare, evaluate and describe network3 models from the command line."

_EPOCHS = arg_type(positive_int, "--epochs", int)
_BATCH_SIZE = arg_type(positive_int, "--batch-size", int)
_THREADS = arg_type(positive_int, "--threads", int)
_SEED = arg_type(non_negative_int, "--seed", int)
_LMBDA = arg_type(non_negative_float, "--lmbda")
_DROPOUT = arg_type(unit_interval, "--dropout")
_MOMENTUM = arg_type(unit_interval, "--momentum")


def _eta(flag):
    return arg_type(positive_float, flag)


_TARGET = arg_type(fraction_of_one, "--target")


def _net(text):
    """``--net``: an architecture name; an earlier name is accepted with a warning."""
    new = DEPRECATED_NAMES.get(text)
    if new is None:
        return text
    print(f"fastmom: warning: --net {text} is deprecated: use --net {new}", file=sys.stderr)
    return new


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help text, except where there is none to show
    (None, an off switch) or the help already says it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _subparser(sub, name, help_text, description=None):
    return sub.add_parser(name, help=help_text, description=description or help_text, formatter_class=_Help)


def _data_options(p):
    p.add_argument("--dataset", default="sample",
                   help="sample (the bundled 5,000 MNIST digits), mnist (downloaded once), "
                        "fashion-mnist, a directory of IDX files or network3's mnist.pkl.gz")
    p.add_argument("--device", default=None,
                   help="cpu, reference or cuda (default: the best available)")
    p.add_argument("--threads", type=_THREADS, default=None,
                   help="CPU kernel threads (default: the cores other processes leave free; "
                        "capped at the usable cores)")


def _model_options(p):
    p.add_argument("--net", default="conv", type=_net, choices=tuple(ARCHITECTURES),
                   help="conv: network3's two-conv ReLU net; fc: 784-100 sigmoid; conv-dropout "
                        "(formerly best): chapter 6's best net with dropout")
    p.add_argument("--batch-size", type=_BATCH_SIZE, default=10, help="mini-batch size")
    p.add_argument("--dropout", type=_DROPOUT, default=None,
                   help="p_dropout of the fully connected and softmax layers (default: the net's)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="parameter and arithmetic precision")
    p.add_argument("--pool-ties", default="first", choices=("first", "all"),
                   help="which positions of a max-pool window tied at the maximum get its "
                        "gradient: first (PyTorch's and cuDNN's rule) or all (network3's, on Theano)")


def _training_options(p, epochs):
    p.add_argument("--epochs", type=_EPOCHS, default=epochs, help="epochs to train")
    p.add_argument("--lmbda", type=_LMBDA, default=0.1, help="L2 coefficient (network3's lmbda)")
    p.add_argument("--momentum", type=_MOMENTUM, default=0.9, help="momentum coefficient in [0, 1)")
    p.add_argument("--seed", type=_SEED, default=0,
                   help="seeds the initial weights, dropout masks and data order")
    p.add_argument("--shuffle", action="store_true",
                   help="reshuffle the training data each epoch (network3 did not)")


def _output_options(p, plot_help):
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help=f"{plot_help} (needs matplotlib; any suffix it writes: png, pdf, svg...)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write the results as JSON ('-': to standard output, the other lines "
                        "then go to standard error)")
    p.add_argument("--quiet", action="store_true",
                   help="print only warnings, errors and what was written")


def _train_parser(sub):
    t = _subparser(sub, "train", "train a network3 model with (momentum) SGD",
                   "Train a network3 model with (momentum) SGD. Ctrl-C stops at the end of the "
                   "current mini-batch and writes what was asked for (--json, --save, a "
                   "checkpoint); a second Ctrl-C stops at once.")
    _data_options(t)
    _model_options(t)
    _training_options(t, epochs=5)
    t.add_argument("--eta", type=_eta("--eta"), default=0.01, help="learning rate")
    t.add_argument("--nesterov", action="store_true", help="Nesterov's momentum update")
    t.add_argument("--strict", action="store_true",
                   help="stop with an error when training collapses without NaN (the cost grows "
                        "tenfold or accuracy stays at chance); without it, a one-line warning")
    t.add_argument("--expand", action="store_true",
                   help="train on network3's expanded training set (each image and its four "
                        "one-pixel shifts, shuffled by --seed)")
    t.add_argument("--save", metavar="FILE.npz", default=None,
                   help="save the trained network (read it with Network.load or fastmom evaluate)")
    t.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                   help="write a checkpoint to DIR after every epoch, at the end and on Ctrl-C")
    t.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir (--epochs is the "
                        "total: the epochs already trained count)")
    _output_options(t, "save accuracy and cost curves")
    return t


def _compare_parser(sub):
    c = _subparser(sub, "compare", "plain SGD vs momentum from the same initial weights")
    _data_options(c)
    _model_options(c)
    _training_options(c, epochs=3)
    c.add_argument("--eta", type=_eta("--eta"), default=0.01, help="eta of every optimizer")
    c.add_argument("--eta-sgd", type=_eta("--eta-sgd"), default=None, help="plain SGD's eta (default: --eta)")
    c.add_argument("--eta-momentum", type=_eta("--eta-momentum"), default=None,
                   help="momentum's eta (default: --eta)")
    c.add_argument("--nesterov", action="store_true", help="also run Nesterov momentum")
    c.add_argument("--target", type=_TARGET, default=0.93,
                   help="validation accuracy target, a fraction in (0, 1]")
    _output_options(c, "save the accuracy and cost curves")
    return c


def _evaluate_parser(sub):
    e = _subparser(sub, "evaluate", "accuracy, per-class accuracy and confusion matrix of a saved model")
    e.add_argument("model", metavar="MODEL", help="a file written by --save, Network.save or a checkpoint")
    _data_options(e)
    e.add_argument("--split", choices=("test", "validation", "training"), default="test",
                   help="which part of the data set to evaluate on")
    _output_options(e, "draw the confusion matrix")
    return e


def _summary_parser(sub):
    s = _subparser(sub, "summary", "layers, output shapes, parameters and FLOPs of a network",
                   "Describe a network: each layer's output shape, parameter count and "
                   "floating-point operations per image (forward pass, a multiply-add counted as 2).")
    s.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="a saved model to describe instead of --net")
    _model_options(s)
    s.add_argument("--json", metavar="FILE", default=None, help="write the table as JSON ('-': standard output)")
    return s


def build_parser():
    """The ``fastmom`` argument parser."""
    ap = argparse.ArgumentParser(prog="fastmom", description=DESCRIPTION, formatter_class=_Help)
    ap.add_argument("--version", action="version", version=f"fastmom {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _compare_parser(sub)
    _evaluate_parser(sub)
    _summary_parser(sub)
    # parsed by the suite's own parser (fastmom/convergence/__main__.py)
    sub.add_parser("bench-convergence", add_help=False,
                   help="the convergence benchmark suite (see bench/convergence/README.md)")
    return ap
