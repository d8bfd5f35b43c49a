"""Data-parallel processes: who we are, and the few collectives training needs.

fastmom trains on one process unless an MPI launcher started it (``mpirun -np N``,
``srun --mpi=pmix``, ``mpiexec``): :func:`launched` reads the launcher's environment
(:data:`LAUNCHER_VARIABLES`) without importing mpi4py, so the single-process path never
touches MPI. :func:`init` then joins ``MPI.COMM_WORLD`` once per process and returns the
:class:`World`; :func:`rank`, :func:`world_size` and :func:`is_main` ask it.

Collectives are MPI's (mpi4py) on host arrays and NCCL's (``cupy.cuda.nccl``, its unique
id broadcast over MPI) on CuPy arrays, with MPI through host memory as the fallback when
NCCL is missing. Nothing here is home-made: no sockets, no hand-written reductions.

Nothing may hang. MPI errors raise (``ERRORS_RETURN`` instead of MPI's default abort,
so the message is ours), and every blocking collective runs under a watchdog: when the
other ranks have not answered within ``FASTMOM_MPI_TIMEOUT`` seconds (default
:data:`DEFAULT_TIMEOUT`; a rank was killed, or stopped in a debugger) the process prints
which collective it was waiting in and exits with :data:`TIMEOUT_EXIT_CODE`, after which
the launcher ends the rest of the job.

``FASTMOM_DISTRIBUTED=0`` makes a launched process train alone (N independent copies,
fastmom's behaviour before this module).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time

import numpy as np

from ._version import __version__

__all__ = ["LAUNCHER_VARIABLES", "DEFAULT_TIMEOUT", "TIMEOUT_EXIT_CODE", "DistributedError",
           "ConfigurationMismatch", "World", "launched", "init", "rank", "world_size", "is_main",
           "run_on_main", "termination_signals", "overlap_enabled", "bucket_bytes", "use_local_gpu", "digest"]

#: Environment variables that MPI launchers set in every process they start (Open MPI,
#: MPICH/Hydra and Intel MPI, PMIx launchers such as ``srun --mpi=pmix``, MVAPICH2).
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
#: Local-rank variables, to pick a GPU per process on a multi-GPU node.
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK",
                        "SLURM_LOCALID")
#: Seconds a collective may wait for the other ranks (``FASTMOM_MPI_TIMEOUT`` overrides).
#: Generous: a rank may be writing a large checkpoint while the others wait.
DEFAULT_TIMEOUT = 600.0
#: The exit status of a process whose peers stopped answering (EX_SOFTWARE).
TIMEOUT_EXIT_CODE = 70


class DistributedError(RuntimeError):
    """A collective failed: MPI reported an error, or the ranks disagree."""


class ConfigurationMismatch(DistributedError, ValueError):
    """The ranks were started with different configurations (flags, data, versions)."""


def launched(environ=None):
    """Whether an MPI launcher started this process (and ``FASTMOM_DISTRIBUTED`` is not
    ``0``); reads the environment only."""
    env = os.environ if environ is None else environ
    if env.get("FASTMOM_DISTRIBUTED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return any(name in env for name in LAUNCHER_VARIABLES)


_WORLD = None


def init(timeout=None):
    """The process's :class:`World`, created on the first call.

    A single-process world (no mpi4py import) unless :func:`launched`; then
    ``MPI.COMM_WORLD`` with errors returned as exceptions and a watchdog of ``timeout``
    seconds (default ``$FASTMOM_MPI_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`).
    """
    global _WORLD
    if _WORLD is None:
        _WORLD = World.from_mpi(timeout) if launched() else World()
    return _WORLD


def rank():
    """This process's rank (0 without a launcher)."""
    return init().rank


def world_size():
    """The number of processes training together (1 without a launcher)."""
    return init().size


def is_main():
    """Whether this process is rank 0: the one that prints and writes files."""
    return init().rank == 0


def run_on_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0, its result (or exception) broadcast to every
    rank: what reads or writes files (checkpoints) so that all ranks agree on the outcome.
    Without a launcher, just the call."""
    if not launched():
        return fn(*args, **kwargs)
    return init().run_on_main(fn, *args, **kwargs)


def termination_signals():
    """The signals, besides SIGINT, that mean "checkpoint and stop" for this process.

    Under a launcher, Ctrl-C reaches ``mpirun`` only (the ranks are in their own process
    groups); Open MPI then sends the ranks SIGCONT, SIGTERM one second later and SIGKILL
    one more second later (``--mca odls_base_sigkill_timeout S`` lengthens the last
    wait), and forwards SIGUSR1/SIGUSR2 as they are. So SIGTERM and SIGUSR1 request the
    same deferred stop as Ctrl-C.
    """
    if not launched():
        return ()
    return (signal.SIGTERM, signal.SIGUSR1)


def overlap_enabled(environ=None):
    """Whether data parallelism all-reduces each layer's gradient as soon as the backward
    pass has written it (the default) rather than the whole gradient once after it:
    ``FASTMOM_MPI_OVERLAP=0`` turns it off. Host (CPU) arrays only; the ranks must agree
    (it is part of the configuration they compare)."""
    env = os.environ if environ is None else environ
    return env.get("FASTMOM_MPI_OVERLAP", "1").strip().lower() not in ("0", "false", "no", "off")


#: Default size of data parallelism's overlapped all-reduce buckets: each
#: ``MPI_Iallreduce`` costs ~10 us to start and test in shared memory, so smaller layers
#: are grouped (network3's conv net: 3 buckets instead of 8 segments).
DEFAULT_BUCKET_BYTES = 64 * 1024


def bucket_bytes(environ=None):
    """The least bytes of weights gradient in one overlapped all-reduce bucket
    (``FASTMOM_MPI_BUCKET_BYTES``, default :data:`DEFAULT_BUCKET_BYTES`; 0: a bucket per
    layer). See :class:`fastmom.train.parallel.Overlap`."""
    env = os.environ if environ is None else environ
    text = env.get("FASTMOM_MPI_BUCKET_BYTES", str(DEFAULT_BUCKET_BYTES))
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"FASTMOM_MPI_BUCKET_BYTES must be a whole number of bytes >= 0, got {text!r}")
    return value


def use_local_gpu():
    """Select GPU ``local_rank % device_count`` for this process (CuPy); call it before
    building a network on ``device="cuda"``. Returns the device id, or None without a
    launcher."""
    if not launched():
        return None
    import cupy  # optional dependency: only the GPU path needs it
    local = next((int(os.environ[v]) for v in LOCAL_RANK_VARIABLES if v in os.environ), rank())
    device = local % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    return device


def digest(value):
    """A short stable hash of a JSON-able value (dict keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Watchdog:
    """Exit the process when a collective waits longer than ``timeout`` seconds.

    A daemon thread polls the deadline of the collective in progress; mpi4py releases the
    GIL inside MPI calls, so it runs while the main thread is blocked in one. Exiting
    (``os._exit``, not ``MPI.Abort`` which could itself wait on a dead peer) makes the
    launcher end the job with a non-zero status.
    """

    def __init__(self, rank, timeout):
        self.rank, self.timeout = rank, timeout
        self._op, self._deadline = None, None
        threading.Thread(target=self._watch, name="fastmom-mpi-watchdog", daemon=True).start()

    def __call__(self, op):
        self._op = op
        return self

    def __enter__(self):
        self._deadline = time.monotonic() + self.timeout

    def __exit__(self, *exc):
        self._deadline = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                print(f"fastmom: error: rank {self.rank}: the other ranks did not answer within "
                      f"{self.timeout:g} s ({self._op}); a rank has died or hangs. Exiting (set "
                      f"FASTMOM_MPI_TIMEOUT to wait longer).", file=sys.stderr, flush=True)
                os._exit(TIMEOUT_EXIT_CODE)


class World:
    """The processes training together, and their collectives.

    ``World()`` is the single process: every collective returns its input. Use
    :func:`init` rather than building one.

    Attributes
    ----------
    size, rank : int
    comm : mpi4py.MPI.Comm or None
    """

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()
        self._waiting = _Watchdog(self.rank, timeout) if comm is not None else None
        self._nccl = None
        self._mpi = None

    @classmethod
    def from_mpi(cls, timeout=None):
        """``MPI.COMM_WORLD`` with exceptions for errors (mpi4py imported here)."""
        from mpi4py import MPI  # optional dependency: only launched processes import it
        comm = MPI.COMM_WORLD
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        if timeout is None:
            timeout = float(os.environ.get("FASTMOM_MPI_TIMEOUT", DEFAULT_TIMEOUT))
        world = cls(comm, timeout)
        world._mpi = MPI
        return world

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    def _call(self, what, fn, *args, **kwargs):
        """Run one blocking MPI call under the watchdog; MPI errors become
        :class:`DistributedError` naming ``what`` and this rank."""
        try:
            with self._waiting(what):
                return fn(*args, **kwargs)
        except self._mpi.Exception as exc:
            raise DistributedError(f"rank {self.rank}: MPI error in {what}: {exc.Get_error_string()}") from exc

    # -- collectives -----------------------------------------------------------------------

    def allreduce_sum(self, a, op="all-reduce"):
        """Sum ``a`` (a contiguous host or CuPy array) over the ranks, in place."""
        if self.comm is None:
            return a
        if isinstance(a, np.ndarray):
            self._call(op, self.comm.Allreduce, self._mpi.IN_PLACE, a, op=self._mpi.SUM)
        else:
            self._gpu_allreduce(a, op)
        return a

    def iallreduce_sum(self, a, op="all-reduce"):
        """Start summing the contiguous host array ``a`` in place (``MPI_Iallreduce``);
        returns a request for :meth:`wait` (None on one process). Every rank must start
        the same sequence of them."""
        if self.comm is None:
            return None
        return self._call(f"start of {op}", self.comm.Iallreduce, self._mpi.IN_PLACE, a, op=self._mpi.SUM)

    def test(self, requests, op="all-reduce"):
        """Let MPI progress ``requests`` without waiting (``MPI_Testall``).

        Open MPI and MPICH move a non-blocking collective forward only while the process
        is inside an MPI call (no progress thread by default), so a caller that overlaps
        computation with :meth:`iallreduce_sum` calls this between pieces of its work.
        """
        requests = [r for r in requests if r is not None]
        if requests:
            self._call(op, self._mpi.Request.Testall, requests)

    def wait(self, requests, op="all-reduce"):
        """Wait for :meth:`iallreduce_sum` requests (under the watchdog)."""
        requests = [r for r in requests if r is not None]
        if requests:
            self._call(op, self._mpi.Request.Waitall, requests)

    def bcast(self, obj, op="broadcast"):
        """Rank 0's ``obj`` (pickled) on every rank."""
        return obj if self.comm is None else self._call(op, self.comm.bcast, obj, root=0)

    def allgather(self, obj, op="all-gather"):
        """Every rank's ``obj``, in rank order."""
        return [obj] if self.comm is None else self._call(op, self.comm.allgather, obj)

    def barrier(self, op="barrier"):
        if self.comm is not None:
            self._call(op, self.comm.Barrier)

    def run_on_main(self, fn, *args, **kwargs):
        """See :func:`run_on_main`."""
        outcome = None
        if self.rank == 0:
            try:
                outcome = (True, fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 (re-raised on every rank just below)
                outcome = (False, exc)
        ok, value = self.bcast(outcome, op=f"{getattr(fn, '__name__', 'a call')} on rank 0")
        if not ok:
            raise value
        return value

    def check_same(self, parts, what="configuration"):
        """Raise :class:`ConfigurationMismatch` on every rank unless ``parts`` (a dict of
        JSON-able values) hashes the same on all of them; the message names the keys
        that differ and the first rank that differs from rank 0."""
        mine = {key: digest(value) for key, value in parts.items()}
        everyone = self.allgather(mine, op=f"{what} check")
        for r, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                keys = sorted(k for k in set(theirs) | set(everyone[0]) if theirs.get(k) != everyone[0].get(k))
                raise ConfigurationMismatch(
                    f"the {self.size} ranks were started with different {what}s: rank {r} differs from "
                    f"rank 0 in {', '.join(keys)}. Start every rank with the same command, data and "
                    f"fastmom version.")

    # -- GPUs ------------------------------------------------------------------------------

    def _gpu_allreduce(self, a, op):
        """NCCL on the current stream where CuPy has it, else MPI through host memory."""
        if self._nccl is None:
            self._nccl = self._make_nccl()
        if self._nccl is False:
            host = a.get()
            self._call(op, self.comm.Allreduce, self._mpi.IN_PLACE, host, op=self._mpi.SUM)
            a.set(host)
            return
        import cupy  # optional dependency: only CuPy arrays come here
        from cupy.cuda import nccl
        kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream()
        with self._waiting(op):
            self._nccl.allReduce(a.data.ptr, a.data.ptr, a.size, kinds[np.dtype(a.dtype)], nccl.NCCL_SUM,
                                 stream.ptr)
            stream.synchronize()  # under the watchdog: a dead peer shows as a stream that never ends

    def _make_nccl(self):
        """A NCCL communicator over this world (the unique id broadcast from rank 0 over
        MPI), or False when CuPy has no NCCL (then MPI stages through host memory)."""
        try:
            from cupy.cuda import nccl
            if not nccl.available:
                return False
        except ImportError:
            return False
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.bcast(uid, op="NCCL unique id")
        return nccl.NcclCommunicator(self.size, uid, self.rank)


def version_parts():
    """What must match across ranks besides the training configuration."""
    return {"fastmom": __version__, "numpy": np.__version__, "python": sys.version.split()[0]}
