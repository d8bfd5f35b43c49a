"""``fastmom compare``: plain SGD and momentum from the same initial weights and data
order, measured with the convergence suite's metrics.

Under ``mpirun`` each optimizer's run is data-parallel (the :class:`~fastmom.Trainer`'s
doing); rank 0 alone prints the lines and the table and writes ``--json`` (whose
``config`` has ``world_size``) and ``--plot``, while the other ranks wait for it."""
from __future__ import annotations

from .. import distributed
from .._io import write_json
from .output import Console, EpochLine, plot_curves
from .prepare import check_outputs, load_data, network_factory, set_threads
from ..convergence.metrics import epochs_to_target, seconds_to_target
from ..train import Trainer

__all__ = ["run_compare", "format_compare_table"]


def _runs(args):
    """``(label, eta, momentum, nesterov)`` of each optimizer compared."""
    runs = [("SGD", args.eta_sgd or args.eta, 0.0, False),
            (f"momentum {args.momentum:g}", args.eta_momentum or args.eta, args.momentum, False)]
    if args.nesterov:
        runs.append((f"Nesterov {args.momentum:g}", args.eta_momentum or args.eta, args.momentum, True))
    return runs


def run_compare(args):
    """``fastmom compare``; returns the exit status."""
    check_outputs(args)
    console = Console(args.json, args.quiet or not distributed.is_main())  # rank 0 prints
    set_threads(args)
    tr, va, te = load_data(args, network3_accuracy=False)
    make_net = network_factory(args)
    results, curves = [], {}
    for label, eta, mu, nesterov in _runs(args):
        net = make_net()  # same seed: same initial weights, same data order
        trainer = Trainer(net, eta=eta, momentum=mu, nesterov=nesterov, lmbda=args.lmbda, shuffle=args.shuffle,
                          seed=args.seed, progress=False,
                          callbacks=[] if args.quiet else [EpochLine(console, f"{label}: ")])
        console.say(f"training {label} (eta={eta}) on {net.device} ...")
        hist = trainer.fit(tr, args.epochs, va, te)
        # the convergence suite's metrics: 1-based epochs and training seconds, None if never
        results.append({"optimizer": label, "eta": eta, "momentum": mu, "nesterov": nesterov,
                        "validation_by_epoch": hist.column("validation_accuracy"),
                        "cost_by_epoch": hist.column("cost"),
                        "final_validation": hist[-1]["validation_accuracy"],
                        "best_validation": hist.best_validation_accuracy,
                        "final_test": hist[-1]["test_accuracy"],
                        "epochs_to_target": epochs_to_target(hist, args.target),
                        "seconds_to_target": seconds_to_target(hist, args.target),
                        "seconds": hist[-1]["elapsed"]})
        curves[label] = hist
    console.say()
    console.say(format_compare_table(results, args.target))
    distributed.run_on_main(_write_outputs, args, results, curves)
    return 0


def _write_outputs(args, results, curves):
    """``--json`` and ``--plot`` (on rank 0 under ``mpirun``)."""
    if args.json:
        write_json(args.json, {"config": dict(vars(args), world_size=distributed.world_size()), "results": results})
    if args.plot:
        plot_curves(args.plot, curves, f"SGD vs momentum ({args.dataset})")


def format_compare_table(results, target):
    """Markdown table of a ``compare`` run (epochs to target counted from 1: the
    number of epochs trained)."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"
    head = (f"| optimizer | eta | validation by epoch (%) | best validation | final test | "
            f"epochs to {100 * target:g}% | seconds to {100 * target:g}% | seconds |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        by_epoch = " / ".join(f"{100 * v:.1f}" for v in r["validation_by_epoch"])
        lines.append(
            f"| {r['optimizer']} | {r['eta']:g} | {by_epoch} | {pct(r['best_validation'])} | "
            f"{pct(r['final_test'])} | {r['epochs_to_target'] or 'not reached'} | "
            f"{'-' if r['seconds_to_target'] is None else format(r['seconds_to_target'], '.1f')} | "
            f"{r['seconds']:.1f} |")
    return "\n".join(lines)
