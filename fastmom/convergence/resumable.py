"""Runs that outlive a session: each suite run checkpoints every epoch, and ``--resume``
picks an unfinished run up at its last epoch instead of training it again.

A 40-epoch run of problem 4 on the expanded training set takes longer than one
session on a shared two-core machine. Without this, only finished runs were kept
(in the suite's JSON) and an interrupted run was lost whole. The Trainer's checkpoints
already resume bit-identically (``Trainer.fit_to``); this module adds what a suite run
needs around them:

- one directory per run, under ``OUT/checkpoints/<configuration>/``, named after the
  run's key; the configuration part is a hash of everything that changes a run's
  iterates besides its key (problem, expanded set, data subset, device), so that
  no checkpoint is ever resumed into another configuration;
- ``run.json`` beside the checkpoints: the fingerprints of the run's initial weights
  and data order, compared on resume, so that a checkpoint made by code that
  initialises or shuffles differently is refused rather than silently continued;
- :class:`RunClock`, a callback whose per-epoch wall and CPU times are part of the
  checkpoint, so that a resumed run's times keep counting from where they stopped
  (the work lost between the last checkpoint and the interruption is not counted).

The directory is deleted once the run is finished and recorded in the JSON (and
``checkpoints/`` with it once no other run's is left).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from .._io import write_json
from ..checkpoint import latest_checkpoint

__all__ = ["RunClock", "RunCheckpoints", "configuration_tag"]

#: The configuration entries that change a run's iterates (with its key, see suite._run_key).
_IDENTITY = ("problem", "expand", "max_batches", "fraction", "max_eval", "device", "lmbda", "arch")


def configuration_tag(config):
    """A short, stable name for the part of the suite ``config`` that a run's iterates
    depend on besides its own key."""
    ident = {k: config.get(k) for k in _IDENTITY}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{config['problem']}-{digest}"


class RunClock:
    """Per-epoch wall and CPU seconds since the run started, carried through checkpoints.

    After a resume the clock continues from the last checkpointed epoch's times: a
    run's ``wall`` and ``cpu`` add up the sessions that trained it.
    """

    def __init__(self):
        self.stamps = []  # (wall, cpu) at the end of each epoch
        self.resumed_at = []  # the epochs each later session resumed the run at
        self.restart()

    def restart(self):
        """Start counting this session's time, after the times already recorded."""
        wall, cpu = self.stamps[-1] if self.stamps else (0.0, 0.0)
        self._t0 = time.perf_counter() - wall
        self._c0 = time.process_time() - cpu

    def now(self):
        return time.perf_counter() - self._t0, time.process_time() - self._c0

    def on_epoch_end(self, trainer, record):
        self.stamps.append(self.now())

    def state_dict(self):
        return {"stamps": [list(s) for s in self.stamps], "resumed_at": list(self.resumed_at)}

    def load_state_dict(self, state):
        self.stamps = [tuple(s) for s in state["stamps"]]
        self.resumed_at = list(state.get("resumed_at", []))  # absent before 2026-12-06
        self.restart()


class RunCheckpoints:
    """The checkpoint directory of one suite run.

    Parameters
    ----------
    root : path-like
        ``OUT/checkpoints/<configuration_tag>``.
    key : tuple
        The run's ``(batch size, optimizer label, eta, seed)``.
    fingerprints : dict
        ``init_fingerprint`` and ``data_order_fingerprint`` of the run as built now.
    """

    def __init__(self, root, key, fingerprints):
        bs, label, eta, seed = key
        self.directory = Path(root) / f"bs{bs}-{label}-eta{eta:g}-seed{seed}"
        self.fingerprints = dict(fingerprints)

    def start(self, resume):
        """Prepare the directory; return the checkpoint to resume from, or None.

        Without ``resume`` an earlier attempt's checkpoints are discarded (the run
        starts afresh, as the suite's JSON does). With it, the newest checkpoint is
        returned when ``run.json`` matches this run's fingerprints; a mismatch raises
        ValueError naming the directory.
        """
        marker = self.directory / "run.json"
        if not resume and self.directory.exists():
            shutil.rmtree(self.directory)
        if resume and marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded != self.fingerprints:
                raise ValueError(
                    f"{self.directory}: its checkpoints belong to a run with other initial weights or data "
                    f"order ({recorded} != {self.fingerprints}); delete the directory to train the run afresh")
            return latest_checkpoint(str(self.directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(marker, self.fingerprints)
        return None

    def finish(self):
        """The run is recorded in the suite's JSON: its checkpoints are no longer needed."""
        shutil.rmtree(self.directory, ignore_errors=True)
        for parent in (self.directory.parent, self.directory.parent.parent):
            try:
                parent.rmdir()  # only once empty: other runs' checkpoints stay
            except OSError:
                break
