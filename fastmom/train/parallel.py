"""Data-parallel training: what :class:`~fastmom.Trainer` does differently on N ranks.

The Trainer asks :func:`attach` for a strategy and calls it at five points: a fit begins
(:meth:`DataParallel.begin_fit`), a mini-batch begins (:meth:`~DataParallel.begin_step`
returns this rank's rows), its gradient is ready (:meth:`~DataParallel.reduce`), accuracy
is measured (:meth:`~DataParallel.evaluate`) and an epoch ends
(:meth:`~DataParallel.agree`). :class:`Local` is the single process: exactly the loop's
own behaviour, no MPI.

Semantics on ``N`` ranks (see ``docs/distributed.md``):

- The network keeps the *global* ``mini_batch_size`` ``B`` (so checkpoints, its
  ``spec()`` and ``num_training_batches`` are those of one process, and a checkpoint
  resumes on any N); ``B`` must divide by ``N``. Every rank draws the same seeded
  permutation, and rank ``r`` trains rows ``r*B/N .. (r+1)*B/N`` of each global
  mini-batch, in the leading ``B/N`` rows of the layers' workspaces.
- The softmax layer's gradient is a mean over the ``B/N`` local rows, so the global
  mean is the all-reduced sum divided by ``N``; the cost likewise. The guard, weights-only
  L2 and the momentum step then run on identical values on every rank, so every decision
  taken from them (divergence, early stopping, plateau schedules) is the same everywhere
  without further messages. Ctrl-C and ``stop_training`` are local events, so they are
  OR-ed across ranks (with the cost, every step; at every epoch end).
- Dropout with ``N > 1``: rank ``r``'s masks for optimizer step ``s`` come from the
  backend generator seeded with ``SeedSequence(entropy, spawn_key=(3, s, r))``
  (:data:`DROPOUT_STREAM`; ``entropy`` is rank 0's network seed), independent of where
  training was resumed. The network's own dropout generator (``spawn_key`` ``(1,)``) is
  untouched on one rank.
- Accuracy: each rank counts the correct answers of a contiguous run of whole evaluation
  mini-batches and the counts are all-reduced, so it equals one process's exactly.
- Overlap (host arrays, :func:`fastmom.distributed.overlap_enabled`): the network's
  ``gradient_ready`` hook starts a non-blocking all-reduce of each layer-aligned bucket
  of the flat gradient as soon as the backward pass has written it, in reverse layer
  order (:class:`Overlap`); :meth:`DataParallel.reduce` waits for them before the guard
  and the momentum step. Each element is still summed once over the ranks, so the
  result is the single all-reduce's up to the order MPI adds in.
"""
from __future__ import annotations

import time
import zlib

import numpy as np

from .. import checkpoint as _ckpt
from .. import distributed as _dist
from .callbacks import Network3Log

__all__ = ["DROPOUT_STREAM", "Local", "DataParallel", "Overlap", "attach"]

#: The first ``spawn_key`` element of the distributed dropout streams (the network's own
#: children are 0, 1 and 2).
DROPOUT_STREAM = 3


def attach(trainer):
    """The strategy for ``trainer``: :class:`DataParallel` when an MPI launcher started
    this process (:func:`fastmom.distributed.launched`), else :class:`Local`."""
    if not _dist.launched():
        return Local(trainer.net)
    return DataParallel(trainer, _dist.init())


class Local:
    """One process: the whole mini-batch, nothing to reduce."""

    world_size = 1

    def __init__(self, net):
        self.batch = net.mini_batch_size

    def begin_fit(self, trainer, run, epochs):
        """A fit is about to train ``run`` for ``epochs`` epochs."""

    def begin_step(self, j, step):
        """This rank's rows of mini-batch ``j`` (optimizer step ``step``): a slice."""
        return slice(j * self.batch, (j + 1) * self.batch)

    def reduce(self, cost, sigint):
        """The global cost of the step whose local ``cost`` and gradient are ready."""
        return cost

    def evaluate(self, net, x, y, drop_last):
        """Accuracy on the prepared ``(x, y)`` (as :meth:`Network.evaluate`, without
        validating the data again: the trainer prepared it once)."""
        n = net.evaluated_rows(x.shape[0], drop_last)
        return net.count_correct(x[:n], y[:n]) / n

    def agree(self, stop_training, sigint):
        """Whether to stop after this epoch."""
        return stop_training

    def interrupted(self, sigint):
        """Whether to stop for Ctrl-C now: one process acts on its own request."""
        return sigint.requested


class DataParallel(Local):
    """Training on every rank of ``world`` (see the module's notes).

    Raises ValueError on every rank when the global mini-batch size does not divide by
    the number of ranks.
    """

    def __init__(self, trainer, world):
        net = trainer.net
        super().__init__(net)
        n = world.size
        if self.batch % n:
            raise ValueError(f"mini_batch_size (--batch-size) {self.batch} is the global mini-batch and must "
                             f"divide by the {n} ranks; choose a multiple of {n}")
        self.world, self.world_size, self.net = world, n, net
        self.local = self.batch // n
        self.offset = world.rank * self.local
        self.dropout = n > 1 and any(getattr(layer, "p_dropout", 0) for layer in net.layers)
        be = net.backend
        self._host = be.xp is np
        # [cost, interrupt requested]: one small all-reduce per step
        self._scalars = np.zeros(2) if self._host else be.zeros((2,), np.float64)
        self._flag_every = 1 if self._host else trainer.check_every  # reading it syncs a GPU
        self.overlap = Overlap(world, net) if n > 1 and self._host and _dist.overlap_enabled() else None
        #: seconds spent in the gradient all-reduce after the backward pass (all of it
        #: without overlap; what the overlap left to wait for with it), and the steps timed
        self.gradient_wait, self.steps = 0.0, 0
        self._pending = False  # a Ctrl-C this rank has not sent to the others yet (see _settle)
        if net.seed is None:
            self._adopt_main(trainer)
        self.entropy = world.bcast(net.seed_sequence.entropy, op="network seed")
        if world.rank != 0:
            for cb in trainer._hooks():
                if isinstance(cb, Network3Log):
                    cb.log = _quiet
            trainer.progress = False

    def _adopt_main(self, trainer):
        """Without a seed every rank drew its own weights and data order: take rank 0's."""
        be, flat = self.net.backend, self.net.flat
        flat.data[...] = be.asarray(self.world.bcast(be.to_numpy(flat.data), op="initial parameters"))
        _ckpt.set_rng_state(trainer.data_rng, self.world.bcast(_ckpt.rng_state(trainer.data_rng),
                                                                  op="data order"))

    # -- a fit --------------------------------------------------------------------------

    def begin_fit(self, trainer, run, epochs):
        """Refuse to train unless every rank has the same configuration, parameters and
        data (:class:`~fastmom.distributed.ConfigurationMismatch` on all ranks)."""
        net, opt = self.net, trainer.optimizer
        if self.overlap is not None:
            self.overlap.disarm()  # what a step that raised inside its backward pass left
        spec = {k: v for k, v in net.spec().items() if k not in ("seed_entropy", "dropout_rng", "device")}
        data = {"training": (run.x, run.y), "validation": run.validation, "test": run.test}
        self.world.check_same({
            "versions": _dist.version_parts(),
            "backend": net.device,
            "network": spec,
            "parameters": _crc(net.backend.to_numpy(net.flat.data)),
            "optimizer": opt.hyper_parameters(),
            "data order": [trainer.shuffle, _ckpt.rng_state(trainer.data_rng)],
            "progress": [trainer.epoch, trainer.step, epochs],
            "accuracy measure": trainer.drop_last,
            "divergence guard": [trainer.check_finite, trainer.check_every],
            "gradient all-reduce": self.overlap.layout if self.overlap else "whole",
            "data": {k: _data_digest(net.backend, v) for k, v in data.items()},
        })

    def begin_step(self, j, step):
        if self.dropout:
            be = self.net.backend
            seq = np.random.SeedSequence(self.entropy, spawn_key=(DROPOUT_STREAM, step, self.world.rank))
            be.set_rng_state(self.net.dropout_rng, be.rng_state(be.make_rng(seq)))
        start = j * self.batch + self.offset
        self._step = step
        if self.overlap is not None:
            self.overlap.arm()  # for this step's backward pass only
        return slice(start, start + self.local)

    def reduce(self, cost, sigint):
        """All-reduce the gradient (sum / N: the mean over the global mini-batch), the
        cost and the Ctrl-C flag; return the global cost."""
        grad, n = self.net.flat.grad, self.world_size
        t0 = time.perf_counter()
        if self.overlap is not None:
            self.overlap.finish()
        else:
            self.world.allreduce_sum(grad, op="gradient all-reduce")
        self.gradient_wait += time.perf_counter() - t0
        self.steps += 1
        if n > 1:
            grad /= n
        s = self._scalars
        s[0] = cost
        s[1] = self._pending or sigint.requested
        self.world.allreduce_sum(s, op="cost all-reduce")
        self._settle(sigint, bool(s[1] > 0) if (self._step + 1) % self._flag_every == 0 else None)
        return float(s[0]) / n if self._host else s[0] / n

    def evaluate(self, net, x, y, drop_last):
        """One process's accuracy: this rank counts whole evaluation mini-batches
        ``[r*M/N, (r+1)*M/N)`` of the ``M`` (the last partial one on the last rank)."""
        bs, n = net.mini_batch_size, net.evaluated_rows(x.shape[0], drop_last)
        batches, r, size = -(-n // bs), self.world.rank, self.world_size
        lo, hi = (r * batches // size) * bs, min(((r + 1) * batches // size) * bs, n)
        count = np.array([net.count_correct(x[lo:hi], y[lo:hi]) if hi > lo else 0], np.int64)
        return int(self.world.allreduce_sum(count, op="accuracy all-reduce")[0]) / n

    def agree(self, stop_training, sigint):
        """OR ``stop_training`` and Ctrl-C over the ranks (one all-reduce)."""
        flags = np.array([bool(stop_training), self._pending or sigint.requested], np.int64)
        self.world.allreduce_sum(flags, op="end-of-epoch agreement")
        self._settle(sigint, bool(flags[1]))
        return bool(flags[0])

    def interrupted(self, sigint):
        """Whether to stop for Ctrl-C now: only when the ranks agreed (:meth:`_settle`),
        never on this rank's own request, which the handler may set at any moment."""
        return sigint.agreed

    def _settle(self, sigint, agreed):
        """Record in ``sigint.agreed`` what the ranks agreed (``agreed``; None on a step
        whose flags are not read), which the trainer acts on (:meth:`interrupted`).

        A Ctrl-C this rank noted after its flag was sent (during the all-reduce, or any
        time until the trainer next checks) is this rank's alone: acting on it would stop
        this rank without the others (they would wait in the next all-reduce for ever),
        and dropping it would lose it; it is kept in ``_pending`` and sent with the next
        all-reduce. No call stands between reading and clearing the flag: Python runs
        signal handlers only at calls and jumps, so none can slip in there; a handler
        that runs after it sets ``requested`` again, to be sent next step.
        """
        if agreed:
            sigint.requested, sigint.agreed, self._pending = True, True, False
            return
        late = sigint.requested
        sigint.requested = False
        self._pending = self._pending or late


class Overlap:
    """The network's ``gradient_ready`` hook: all-reduce the gradient in layer-aligned
    buckets while the backward pass goes on below them.

    The flat gradient holds every layer's weights (in layer order), then every layer's
    biases. Walking the layers in reverse, the order the backward pass writes them, a
    bucket closes at layer ``i`` once the weights of the layers since the last bucket
    reach ``bucket_bytes``: it is the contiguous range from layer ``i``'s weights to the
    previous bucket's start. The first layer closes the last bucket, which also takes
    every bias (contiguous, few, and all final only then). Each closed bucket is one
    ``MPI_Iallreduce``, started when its lowest layer reports; the ones still pending are
    then tested, since MPI moves a non-blocking collective forward only inside an MPI
    call. Calls come in the same order on every rank, and the layout (:attr:`layout`)
    is part of the configuration the ranks compare.

    Parameters
    ----------
    world : fastmom.distributed.World
    net : Network
    bucket_bytes : int, optional
        Default :func:`fastmom.distributed.bucket_bytes`; 0: one bucket per layer.
    """

    def __init__(self, world, net, bucket_bytes=None):
        self.world, self.net = world, net
        if bucket_bytes is None:
            bucket_bytes = _dist.bucket_bytes()
        grad, n_layers = net.flat.grad, len(net.layers)
        sizes = [net.flat.grads[2 * i].size for i in range(n_layers)]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.buckets, self.layout, end = {}, [], int(starts[-1])
        for i in reversed(range(n_layers)):
            if i == 0:
                ranges = [(0, end), (int(starts[-1]), grad.size)]  # the last weights, every bias
            elif (end - starts[i]) * grad.itemsize >= bucket_bytes:
                ranges = [(int(starts[i]), end)]
            else:
                continue
            self.buckets[i] = [grad[a:b] for a, b in ranges if b > a]
            self.layout.append([i, ranges])
            end = int(starts[i])
        self.pending, self.calls, self.n_layers = [], 0, n_layers

    def arm(self):
        """Be the network's ``gradient_ready`` for its next backward pass (only: the first
        layer's report disarms it, so that no other backward pass, a user's
        ``cost_and_gradients`` between steps say, starts collectives on one rank)."""
        self.net.gradient_ready = self

    def disarm(self):
        """Leave the network alone and forget the requests of an unfinished step."""
        self.net.gradient_ready = None
        self.pending, self.calls = [], 0

    def __call__(self, i):
        """Layer ``i``'s gradients are written: start the bucket it closes, if any."""
        if i == 0:
            self.net.gradient_ready = None  # the backward pass is over
        self.calls += 1
        started = [self.world.iallreduce_sum(seg, op="gradient all-reduce") for seg in self.buckets.get(i, ())]
        if started:
            self.pending.extend(started)
            self.world.test(self.pending, op="gradient all-reduce")

    def finish(self):
        """Wait until every started all-reduce has finished (under the watchdog).

        Raises RuntimeError unless every layer reported: a network whose backward pass
        skips the hook would otherwise train unreduced gradients."""
        pending, calls = self.pending, self.calls
        self.pending, self.calls = [], 0
        if calls != self.n_layers:
            raise RuntimeError(f"the backward pass reported {calls} of {self.n_layers} layers' gradients to "
                               f"Network.gradient_ready; set FASTMOM_MPI_OVERLAP=0 for this network")
        self.world.wait(pending, op="gradient all-reduce")


def _quiet(*args, **kwargs):
    """The log of every rank but 0."""


def _crc(a):
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8))


def _data_digest(be, data, rows=1024):
    """Shapes, dtypes, every label and an evenly spaced sample of ``rows`` images."""
    if data is None:
        return None
    x, y = data
    stride = max(1, x.shape[0] // rows)
    return [list(x.shape), str(x.dtype), _crc(be.to_numpy(x[::stride])), _crc(be.to_numpy(y))]
