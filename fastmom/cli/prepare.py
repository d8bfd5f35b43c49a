"""What ``train`` and ``compare`` share before training: the thread count, the data set
(checked, loaded, optionally expanded), the batch size checked against it, and a
function that builds the network."""
from __future__ import annotations

import numpy as np

from .checks import check_batch_size, check_dataset, check_plot, check_output_file, usable_threads
from ..backends import get_backend
from .. import data
from ..models import build_layers
from ..network import Network

__all__ = ["check_outputs", "set_threads", "load_data", "network_factory"]


def check_outputs(args):
    """Refuse an unwritable ``--json``/``--plot`` (and matplotlib's absence) up front."""
    check_output_file("--json", args.json)
    check_plot(args.plot)


def set_threads(args):
    """Apply ``--threads`` (capped at the usable cores) to the cpu backend."""
    threads = usable_threads(args.threads)
    if threads is not None:
        get_backend("cpu").set_num_threads(threads)


def load_data(args, expand=False, network3_accuracy=True):
    """``(training, validation, test)`` of ``--dataset``; with ``expand`` the training
    split is network3's expanded set (seeded by ``--seed``). Refuses a ``--batch-size``
    that a split cannot fill once: training needs a full mini-batch, and so does
    network3's accuracy (the mean over full mini-batches) where ``network3_accuracy``."""
    check_dataset(args.dataset)
    training, validation, test = data.load_dataset(args.dataset)
    if expand:
        training = data.expand(training, seed=args.seed)
    splits = {"training": len(training[0])}
    if network3_accuracy:
        splits.update(validation=len(validation[0]), test=len(test[0]))
    check_batch_size(args.batch_size, args.dataset, splits)
    return training, validation, test


def build_net_layers(args):
    """The layers of ``--net`` for ``--batch-size``, ``--dropout`` and ``--pool-ties``."""
    return build_layers(args.net, args.batch_size, args.dropout, pool_ties=args.pool_ties)


def network_factory(args):
    """A function returning a new network of ``--net`` with ``--seed``'s initial weights."""

    def make_net():
        return Network(build_net_layers(args), args.batch_size, device=args.device,
                       dtype=np.dtype(args.dtype), seed=args.seed)
    return make_net
