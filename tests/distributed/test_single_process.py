"""fastmom.distributed without a launcher (no MPI needed): detection from the environment,
the single-process world, and that nothing imports mpi4py."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastmom import distributed
from fastmom.distributed import ConfigurationMismatch, World


@pytest.mark.parametrize("env, expected", [
    ({}, False),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"PMI_SIZE": "4"}, True),
    ({"PMIX_RANK": "0"}, True),
    ({"MV2_COMM_WORLD_SIZE": "2"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2", "FASTMOM_DISTRIBUTED": "0"}, False),
])
def test_launcher_detected_from_the_environment(env, expected):
    assert distributed.launched(env) is expected


def test_training_without_a_launcher_never_imports_mpi4py():
    code = ("import sys, numpy as np\n"
            "from fastmom import Network, distributed\n"
            "from fastmom.models import build_layers\n"
            "from fastmom.train import Trainer\n"
            "net = Network(build_layers('fc', 4), 4, device='reference', seed=0)\n"
            "x = np.random.default_rng(0).random((16, 784)); y = np.arange(16) % 10\n"
            "Trainer(net, progress=False).fit((x, y), 1, (x, y))\n"
            "assert distributed.world_size() == 1 and distributed.is_main() and distributed.rank() == 0\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr


def test_single_process_world_collectives_are_identities():
    world = World()
    a = np.arange(4.0)
    assert world.allreduce_sum(a) is a and a.tolist() == [0, 1, 2, 3]
    assert world.bcast({"k": 1}) == {"k": 1}
    assert world.allgather(3) == [3]
    assert world.run_on_main(lambda v: v + 1, 1) == 2
    world.check_same({"a": 1})  # nothing to compare with
    with pytest.raises(ZeroDivisionError):
        world.run_on_main(lambda: 1 / 0)


def test_configuration_mismatch_is_a_value_error():
    assert issubclass(ConfigurationMismatch, ValueError)  # the CLI reports it in one line


def test_digest_ignores_key_order():
    assert distributed.digest({"a": 1, "b": [2]}) == distributed.digest({"b": [2], "a": 1})
    assert distributed.digest({"a": 1}) != distributed.digest({"a": 2})
