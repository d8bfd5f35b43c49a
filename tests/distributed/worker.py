"""One rank of a multi-rank test: ``mpirun -np N python worker.py OUT SCENARIO JSON``.

Run without ``mpirun`` it is the single-process reference. Every rank writes what it saw
to ``OUT/rank<r>.json`` (history, outcome, exception) and ``OUT/rank<r>.npy`` (final
parameters), which the tests in this directory compare.
"""
import json
import os
import signal
import sys

import numpy as np

from fastmom import Network, distributed
from fastmom.data import load_sample
from fastmom.models import build_layers
from fastmom.train import Checkpointer, Trainer


def make_trainer(cfg, **kwargs):
    net = Network(build_layers(cfg.get("net", "fc"), cfg["batch"], cfg.get("dropout")), cfg["batch"],
                  device=cfg.get("device", "cpu"), dtype=np.float64, seed=cfg.get("seed", 1))
    return Trainer(net, eta=cfg.get("eta", 0.1), momentum=0.9, lmbda=0.1, shuffle=True, seed=2, progress=False,
                   **kwargs)


def data(cfg):
    tr, va, te = load_sample()
    n = cfg.get("n_train", 240)
    return (tr[0][:n], tr[1][:n]), (va[0][:90], va[1][:90]), (te[0][:90], te[1][:90])


def build(name, cfg, out):
    """The trainer of scenario ``name``."""
    r = distributed.rank()
    if name == "train":
        trainer = make_trainer(cfg)
    elif name == "mismatch":
        trainer = make_trainer(dict(cfg, eta=0.1 + 0.01 * r))
    elif name == "nan":
        trainer = make_trainer(cfg, callbacks=[PlantNaN(cfg["rank"], cfg["at"])])
    elif name == "kill":
        trainer = make_trainer(cfg, callbacks=[Kill(cfg["rank"], cfg["at"])])
    elif name in ("checkpoint", "sigint"):
        ck = Checkpointer(os.path.join(out, "ckpt"), every=cfg.get("every", 1), unit=cfg.get("unit", "epoch"))
        callbacks = [Ready(out)] if name == "sigint" else []
        trainer = make_trainer(cfg, checkpointer=ck, callbacks=callbacks, resume=cfg.get("resume"))
    elif name == "overlap-mismatch":
        if r == 1:
            os.environ["FASTMOM_MPI_OVERLAP"] = "0"
        trainer = make_trainer(cfg)
    elif name == "sigint-no-checkpoints":
        trainer = make_trainer(cfg, callbacks=[Ready(out)])
    else:
        raise ValueError(name)
    return trainer


class PlantNaN:
    """On rank ``rank`` only, make a parameter NaN before iteration ``at``."""

    def __init__(self, rank, at):
        self.rank, self.at = rank, at

    def on_batch_begin(self, trainer, iteration):
        if iteration == self.at and distributed.rank() == self.rank:
            trainer.net.flat.data[0] = np.nan


class Kill:
    """``kill -9`` of rank ``rank`` before iteration ``at``."""

    def __init__(self, rank, at):
        self.rank, self.at = rank, at

    def on_batch_begin(self, trainer, iteration):
        if iteration == self.at and distributed.rank() == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)


class Ready:
    """Rank 0 writes ``OUT/ready`` after the first epoch (the test then sends Ctrl-C)."""

    def __init__(self, out):
        self.out = out

    def on_epoch_end(self, trainer, record):
        if distributed.rank() == 0 and trainer.epoch == 1:
            open(os.path.join(self.out, "ready"), "w").close()


def main(out, name, cfg):
    cfg = json.loads(cfg)
    r = distributed.rank()
    report = {"rank": r, "world_size": distributed.world_size(), "error": None}
    trainer = None
    with open(os.path.join(out, f"pid{r}"), "w") as f:  # for tests that signal one rank
        f.write(str(os.getpid()))
    try:
        trainer = build(name, cfg, out)
        tr, va, te = data(cfg)
        trainer.fit_to(tr, cfg.get("epochs", 2), va, te)
    except Exception as exc:  # noqa: BLE001 (the test inspects what each rank raised)
        report["error"] = [type(exc).__name__, str(exc)]
    except KeyboardInterrupt as exc:  # TrainingInterrupted
        report["error"] = [type(exc).__name__, str(exc)]
    if trainer is not None:
        report.update(step=trainer.step, epoch=trainer.epoch, history=list(trainer.history),
                      overlap=getattr(trainer._dp, "overlap", None) is not None,
                      buckets=len(trainer._dp.overlap.layout) if getattr(trainer._dp, "overlap", None) else 0)
        np.save(os.path.join(out, f"rank{r}.npy"), trainer.net.backend.to_numpy(trainer.net.flat.data))
    with open(os.path.join(out, f"rank{r}.json"), "w") as f:
        json.dump(report, f, default=str)
    if name.startswith("sigint"):
        # after its Ctrl-C, mpirun kills the ranks left once one has exited: wait for all
        distributed.init().barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
