"""Command line: ``fastmom train``, ``fastmom compare``, ``fastmom bench-convergence``.

``python -m fastmom`` is the same program.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ._io import write_json
from ._validate import arg_type, positive_float, positive_int, unit_interval
from .models import ARCHITECTURES, DEPRECATED_NAMES

__all__ = ["main"]


_EPOCHS = arg_type(positive_int, "--epochs", int)
_BATCH_SIZE = arg_type(positive_int, "--batch-size", int)
_THREADS = arg_type(positive_int, "--threads", int)
_DROPOUT = arg_type(unit_interval, "--dropout")
_MOMENTUM = arg_type(unit_interval, "--momentum")


def _eta(flag):
    return arg_type(positive_float, flag)


def _net(text):
    """``--net``: an architecture name; an earlier name is accepted with a warning."""
    new = DEPRECATED_NAMES.get(text)
    if new is None:
        return text
    print(f"fastmom: warning: --net {text} is deprecated: use --net {new}", file=sys.stderr)
    return new


def _common(p):
    p.add_argument("--dataset", default="sample",
                   help="sample (bundled 5k MNIST, default), mnist, fashion-mnist, a directory of "
                        "IDX files or network3's mnist.pkl.gz")
    p.add_argument("--net", default="conv", type=_net, choices=tuple(ARCHITECTURES),
                   help="conv: network3's two-conv ReLU net (default); fc: 784-100 sigmoid; "
                        "conv-dropout (formerly best): chapter 6's best net with dropout")
    p.add_argument("--epochs", type=_EPOCHS, default=5)
    p.add_argument("--batch-size", type=_BATCH_SIZE, default=10)
    p.add_argument("--lmbda", type=float, default=0.1, help="L2 coefficient (network3's lmbda)")
    p.add_argument("--dropout", type=_DROPOUT, default=None,
                   help="p_dropout of the fully connected and softmax layers")
    p.add_argument("--device", default=None, help="cpu, reference or cuda (default: best available)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_THREADS, default=None, help="CPU kernel threads")
    p.add_argument("--shuffle", action="store_true", help="reshuffle the training data each epoch")
    p.add_argument("--plot", metavar="FILE.png", help="save accuracy curves (needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="write the history as JSON ('-' for stdout)")


def _parser():
    ap = argparse.ArgumentParser(prog="fastmom", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network3 model with (momentum) SGD")
    _common(t)
    t.add_argument("--eta", type=_eta("--eta"), default=0.01)
    t.add_argument("--momentum", type=_MOMENTUM, default=0.9)
    t.add_argument("--nesterov", action="store_true")
    c = sub.add_parser("compare", help="plain SGD vs momentum from the same initial weights")
    _common(c)
    c.set_defaults(epochs=3)
    c.add_argument("--eta", type=_eta("--eta"), default=0.01, help="eta for both optimizers")
    c.add_argument("--eta-sgd", type=_eta("--eta-sgd"), default=None)
    c.add_argument("--eta-momentum", type=_eta("--eta-momentum"), default=None)
    c.add_argument("--momentum", type=_MOMENTUM, default=0.9)
    c.add_argument("--nesterov", action="store_true", help="also run Nesterov momentum")
    c.add_argument("--target", type=float, default=0.93, help="validation accuracy target")
    sub.add_parser("bench-convergence", add_help=False,
                   help="the convergence benchmark suite (see bench/convergence/README.md)")
    return ap


def _setup(args):
    from .data import load_dataset
    from .models import build_layers
    from .network import Network
    if args.threads is not None:
        from .backends import get_backend
        be = get_backend("cpu")
        be.set_num_threads(args.threads)
    data = load_dataset(args.dataset)

    def make_net():
        return Network(build_layers(args.net, args.batch_size, args.dropout), args.batch_size,
                       device=args.device, dtype=np.dtype(args.dtype), seed=args.seed)
    return data, make_net


def _plot(path, curves, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastmom[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, hist in curves.items():
        epochs = [r["epoch"] + 1 for r in hist]
        (line,) = ax.plot(epochs, [100 * r["validation_accuracy"] for r in hist], marker="o",
                          label=f"{label} (validation)")
        if hist and hist[0]["test_accuracy"] is not None:
            ax.plot(epochs, [100 * r["test_accuracy"] for r in hist], ls="--", alpha=0.6, color=line.get_color(),
                    label=f"{label} (test)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _train(args):
    from .train import Trainer
    (tr, va, te), make_net = _setup(args)
    net = make_net()
    print(f"fastmom train: {args.net} net on {args.dataset} ({len(tr[0])}/{len(va[0])}/{len(te[0])} images), "
          f"device={net.device}, eta={args.eta}, momentum={args.momentum}"
          f"{' (Nesterov)' if args.nesterov else ''}, lmbda={args.lmbda}, batch={args.batch_size}")
    trainer = Trainer(net, eta=args.eta, momentum=args.momentum, nesterov=args.nesterov, lmbda=args.lmbda,
                      shuffle=args.shuffle, seed=args.seed, network3_output=True, progress=False)
    hist = trainer.fit(tr, args.epochs, va, te)
    for r in hist:
        print(f"epoch {r['epoch']}: cost {r['cost']:.4f}, {r['seconds']:.1f} s, "
              f"{r['images_per_second']:.0f} images/s")
    if args.json:
        write_json(args.json, {"config": vars(args), "history": list(hist), "summary": hist.summary()})
    if args.plot:
        _plot(args.plot, {"momentum" if args.momentum else "SGD": hist}, f"fastmom train ({args.dataset})")
    return 0


def _compare(args):
    from .convergence.metrics import epochs_to_target, seconds_to_target
    from .train import Trainer
    (tr, va, te), make_net = _setup(args)
    runs = [("SGD", args.eta_sgd or args.eta, 0.0, False),
            (f"momentum {args.momentum:g}", args.eta_momentum or args.eta, args.momentum, False)]
    if args.nesterov:
        runs.append((f"Nesterov {args.momentum:g}", args.eta_momentum or args.eta, args.momentum, True))
    results, curves = [], {}
    for label, eta, mu, nesterov in runs:
        net = make_net()  # same seed: same initial weights, same data order
        trainer = Trainer(net, eta=eta, momentum=mu, nesterov=nesterov, lmbda=args.lmbda,
                          shuffle=args.shuffle, seed=args.seed, progress=False)
        print(f"training {label} (eta={eta}) on {net.device} ...", flush=True)
        hist = trainer.fit(tr, args.epochs, va, te)
        # the convergence suite's metrics: 1-based epochs and training seconds, None if never
        n_ep, secs = epochs_to_target(hist, args.target), seconds_to_target(hist, args.target)
        results.append({"optimizer": label, "eta": eta, "momentum": mu, "nesterov": nesterov,
                        "validation_by_epoch": hist.column("validation_accuracy"),
                        "final_validation": hist[-1]["validation_accuracy"],
                        "best_validation": hist.best_validation_accuracy,
                        "final_test": hist[-1]["test_accuracy"], "epochs_to_target": n_ep,
                        "seconds_to_target": secs, "seconds": hist[-1]["elapsed"]})
        curves[label] = hist
    print()
    print(format_compare_table(results, args.target))
    if args.json:
        write_json(args.json, {"config": vars(args), "results": results})
    if args.plot:
        _plot(args.plot, curves, f"SGD vs momentum ({args.dataset})")
    return 0


def format_compare_table(results, target):
    """Markdown table of a ``compare`` run."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    head = (f"| optimizer | eta | validation by epoch | best validation | final test | "
            f"epochs to {100 * target:.0f}% | seconds to {100 * target:.0f}% | seconds |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        by_epoch = " / ".join(f"{100 * v:.1f}" for v in r["validation_by_epoch"])
        lines.append(
            f"| {r['optimizer']} | {r['eta']:g} | {by_epoch} | {pct(r['best_validation'])} | "
            f"{pct(r['final_test'])} | {r['epochs_to_target'] or 'not reached'} | "
            f"{'-' if r['seconds_to_target'] is None else format(r['seconds_to_target'], '.1f')} | "
            f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench-convergence":
        from .convergence import main as bench_main
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    from .backends import DeviceError
    from .data import DataError
    try:
        if args.command == "train":
            return _train(args)
        return _compare(args)
    except (DeviceError, DataError, ValueError, TypeError) as exc:
        print(f"fastmom: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
