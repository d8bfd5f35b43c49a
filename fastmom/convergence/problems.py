"""The convergence suite's registry: the optimizers compared, the problems (network,
data set, budget, target) and the subsetting of a problem's data for short runs."""
from __future__ import annotations

import dataclasses
from ..models import build_layers
from ..network import Network
from ..data import load_dataset
from ..data import expand

__all__ = ["DEFAULT_ETAS", "EXPAND_SEED", "RESULT_PREFIX", "OptimizerSpec", "Problem", "PROBLEMS",
           "PROBLEM_ALIASES", "QUICK", "parse_optimizers", "resolve_problems", "build_network",
           "load_problem_data", "setting_name"]

#: Half-decade log grid over [1e-3, 3e-1] (six values).
DEFAULT_ETAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)

# Result files are named convergence-<problem>[...]
RESULT_PREFIX = "convergence"

#: The seed of the expanded training set's order (``--expand``): fixed, so that every
#: run of a process, whatever its seed, trains on the same array (built once per
#: process); each run's own seed still draws its reshuffling every epoch.
EXPAND_SEED = 0


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the comparison.

    Parameters
    ----------
    kind : {"sgd", "momentum", "nesterov"}
    momentum : float
        0 for ``"sgd"``.
    schedule : {None, "plateau"}
        ``"plateau"``: network3 chapter 3's rule, eta divided by 2 whenever the
        validation accuracy stops improving (:class:`fastmom.DivideOnPlateau`).
    """

    kind: str
    momentum: float = 0.0
    schedule: str | None = None

    @property
    def label(self):
        base = "sgd" if self.kind == "sgd" else f"{self.kind}-{self.momentum:g}"
        return base + ("+plateau" if self.schedule == "plateau" else "")

    @property
    def is_baseline(self):
        """Plain SGD: what momentum is compared against."""
        return self.kind == "sgd"

    @classmethod
    def parse(cls, text):
        """Parse ``sgd``, ``momentum`` (0.9), ``momentum-0.5``, ``momentum:0.5``,
        ``nesterov-0.9``, each optionally followed by ``+plateau``."""
        s = text.strip().lower()
        schedule = None
        if s.endswith("+plateau"):
            s, schedule = s[: -len("+plateau")], "plateau"
        for sep in (":", "-", "="):
            if sep in s:
                kind, _, value = s.partition(sep)
                break
        else:
            kind, value = s, ""
        if kind not in ("sgd", "momentum", "nesterov"):
            raise ValueError(f"unknown optimizer {text!r}: expected sgd, momentum[-MU] or "
                             f"nesterov[-MU], optionally with +plateau")
        if kind == "sgd":
            if value:
                raise ValueError(f"plain SGD takes no momentum: {text!r}")
            return cls("sgd", 0.0, schedule)
        try:
            mu = float(value) if value else 0.9
        except ValueError:
            raise ValueError(f"bad momentum in {text!r}") from None
        if not 0 < mu < 1:
            raise ValueError(f"momentum must be in (0, 1), got {text!r}")
        return cls(kind, mu, schedule)


def parse_optimizers(names):
    """``OptimizerSpec`` of each name (see :meth:`OptimizerSpec.parse`); a duplicate is an error."""
    specs = [OptimizerSpec.parse(n) for n in names]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate optimizers in {names}")
    return tuple(specs)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A network, a data set and a budget.

    Attributes
    ----------
    name : str
    number : int
        The problem's number in issue 6.
    description : str
    dataset : str
        A :func:`fastmom.data.load_dataset` name.
    arch : {"conv", "fc", "conv-dropout"}
    batch_sizes : tuple of int
        Each batch size is a separate setting with its own eta choice.
    lmbda : float
        network3's L2 coefficient.
    epochs : int
        The epoch budget.
    target : float
        The validation accuracy that "epochs to target" measures.
    optimizers : tuple of str
        Default optimizers (see :meth:`OptimizerSpec.parse`).
    etas : tuple of float
    seeds : tuple of int
    """

    name: str
    number: int
    description: str
    dataset: str
    arch: str
    batch_sizes: tuple
    lmbda: float
    epochs: int
    target: float
    optimizers: tuple
    etas: tuple = DEFAULT_ETAS
    seeds: tuple = (0, 1, 2)


_ALL_OPTIMIZERS = ("sgd", "momentum-0.5", "momentum-0.9", "momentum-0.99", "nesterov-0.9",
                   "sgd+plateau", "momentum-0.9+plateau")
_MAIN_OPTIMIZERS = ("sgd", "momentum-0.9", "nesterov-0.9", "sgd+plateau", "momentum-0.9+plateau")

PROBLEMS = {
    p.name: p for p in (
        Problem("conv-sample", 1,
                "network3's two-conv ReLU net on the bundled 5k MNIST sample (4000/500/500)",
                "sample", "conv", (10,), 0.1, 10, 0.95, _ALL_OPTIMIZERS),
        Problem("conv-fashion", 2,
                "network3's two-conv ReLU net on Fashion-MNIST (50k/10k/10k)",
                "fashion-mnist", "conv", (10, 64), 0.1, 20, 0.90, _MAIN_OPTIMIZERS),
        Problem("fc-sample", 3,
                "network3's FullyConnected 784-100 sigmoid + softmax on the 5k MNIST sample",
                "sample", "fc", (10,), 0.0, 30, 0.90, _MAIN_OPTIMIZERS),
        Problem("fc-fashion", 3,
                "network3's FullyConnected 784-100 sigmoid + softmax on Fashion-MNIST",
                "fashion-mnist", "fc", (10,), 0.0, 20, 0.85, _MAIN_OPTIMIZERS),
        Problem("dropout-fashion", 4,
                "network3's best chapter-6 net (two conv-pool ReLU, FC 640-1000-1000 ReLU with "
                "dropout 0.5, softmax with dropout 0.5) on Fashion-MNIST",
                "fashion-mnist", "conv-dropout", (10,), 0.1, 40, 0.90, _MAIN_OPTIMIZERS),
    )
}

#: Issue 6's problem numbers.
PROBLEM_ALIASES = {"1": ("conv-sample",), "2": ("conv-fashion",), "3": ("fc-sample", "fc-fashion"),
                   "4": ("dropout-fashion",)}

#: What ``--quick`` changes (each can still be overridden on the command line).
QUICK = {"etas": (0.01, 0.1), "seeds": (0,), "epochs": 2, "max_batches": 20, "max_eval": 100,
         "optimizers": ("sgd", "momentum-0.9", "momentum-0.9+plateau")}


def resolve_problems(names):
    """Expand numbers and comma lists into problem names, keeping order."""
    out = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            expanded = PROBLEM_ALIASES.get(name, (name,))
            for n in expanded:
                if n not in PROBLEMS:
                    raise ValueError(f"unknown problem {name!r}: choose from "
                                     f"{', '.join(PROBLEMS)} or 1-4")
                if n not in out:
                    out.append(n)
    return out


def build_network(arch, batch_size, device=None, seed=None):
    """Build one of the suite's networks.

    Parameters
    ----------
    arch : {"conv", "fc", "conv-dropout"}
        A :data:`fastmom.models.ARCHITECTURES` name.
    batch_size : int
    device : str, optional
    seed : int, optional
        Seeds the initial weights and dropout masks (same seed, same weights).

    Returns
    -------
    fastmom.Network
    """

    return Network(build_layers(arch, batch_size), batch_size, device=device, seed=seed)


def load_problem_data(problem, max_batches=None, fraction=None, batch_size=10, max_eval=None,
                      expand=False):
    """Load a problem's data and subset it for short runs.

    Parameters
    ----------
    problem : Problem
    max_batches : int, optional
        Keep the first ``max_batches * batch_size`` training images.
    fraction : float in (0, 1], optional
        Keep the first ``fraction`` of the training images.
    batch_size : int
    max_eval : int, optional
        Keep the first ``max_eval`` validation and test images.
    expand : bool
        Replace the (subset) training split by network3's expanded training set,
        :func:`fastmom.data.expand` with ``seed=EXPAND_SEED``: the images and their
        four one-pixel shifts, 5 times as many, shuffled. Validation and test are not
        expanded. The expanded array is built once per process and shared by every
        call with the same data (Fashion-MNIST's 250,000 x 784 float32 are ~750 MB).

    Returns
    -------
    training, validation, test : tuple of (x, y)
    """

    training, validation, test = load_dataset(problem.dataset)
    n = len(training[1])
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        n = max(batch_size, int(n * fraction))
    if max_batches is not None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        n = min(n, max_batches * batch_size)
    # subsetting the data (not stopping the epoch early) keeps the Trainer's epoch,
    # L2 scaling (lmbda / number of batches) and shuffling semantics intact
    training = (training[0][:n], training[1][:n])
    if expand:
        training = _expanded(problem.dataset, training)
    if max_eval is not None:
        validation = (validation[0][:max_eval], validation[1][:max_eval])
        test = (test[0][:max_eval], test[1][:max_eval])
    return training, validation, test


#: ``{(dataset, images): expanded (x, y)}``, at most one entry: one expanded set per process.
_EXPANDED = {}


def _expanded(dataset, training):
    """The expanded training set of the first ``len(training)`` images of ``dataset``,
    built on first use and then reused (never copied)."""

    key = (dataset, len(training[1]), EXPAND_SEED)
    if key not in _EXPANDED:
        _EXPANDED.clear()  # free the previous one before building the next
        _EXPANDED[key] = expand(training, seed=EXPAND_SEED)
    return _EXPANDED[key]


def setting_name(problem_name, batch_size, n_batch_sizes):
    """A setting's name in reports and file names: the problem's, with ``-bs<N>`` when
    the problem has several batch sizes."""
    return problem_name if n_batch_sizes == 1 else f"{problem_name}-bs{batch_size}"
