"""The backend interface: every backend provides every member of
:class:`fastmom.backends.Backend` with the same signature, and the C/CUDA kernels use
the activation codes that :data:`fastmom.activations.CODES` defines."""
import inspect
import pathlib
import re

import pytest

from fastmom import activations
from fastmom.backends import PRIMITIVES, Backend, cpu, cuda, reference

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"
MEMBERS = [name for name, v in vars(Backend).items() if callable(v) and not name.startswith("_")]


def _params(fn, drop_self):
    params = list(inspect.signature(fn).parameters.values())
    if drop_self:
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def test_the_protocol_lists_the_primitives():
    assert set(PRIMITIVES) <= set(MEMBERS)
    assert len(MEMBERS) >= 19


@pytest.mark.parametrize("module", [reference, cpu, cuda], ids=lambda m: m.name)
@pytest.mark.parametrize("member", MEMBERS)
def test_backend_module_provides_the_member(module, member):
    # the modules import without their hardware (cpu unbuilt, CuPy missing)
    assert hasattr(module, member), f"{module.name} lacks {member}"
    assert _params(getattr(module, member), False) == _params(getattr(Backend, member), True)


@pytest.mark.parametrize("module", [reference, cpu, cuda], ids=lambda m: m.name)
def test_backend_module_names_itself(module):
    assert module.name in ("reference", "cpu", "cuda")
    assert "xp" in dir(module) or hasattr(module, "__getattr__")


@pytest.mark.parametrize("member", PRIMITIVES)
def test_cuda_kernels_class_has_each_primitive(member):
    """The cuda backend's host code (run on a GPU and on the CPU emulation) too."""
    assert _params(getattr(cuda.Kernels, member), True) == _params(getattr(Backend, member), True)


def test_a_missing_or_changed_member_is_caught():
    class Broken:
        name = "broken"

        @staticmethod
        def dense_forward(x, w, b, act, y):  # no scale
            pass
    assert _params(Broken.dense_forward, False) != _params(Backend.dense_forward, True)
    assert not hasattr(Broken, "conv_pool_forward")


# -- activation codes ----------------------------------------------------------------------

def _enum(path, pattern):
    text = (KERNELS / path).read_text()
    block = re.search(pattern, text, re.S)
    assert block, f"no activation enum found in {path}"
    return {name.lower().removeprefix("fastmom_"): int(v)
            for name, v in re.findall(r"(\w+)\s*=\s*(\d+)", block.group(1))}


@pytest.mark.parametrize("path, pattern", [
    ("cpu/_cpu.pyx", r"# activation codes[^\n]*\ncdef enum:\n((?:\s+\w+ = \d+\n)+)"),
    ("cpu/pool.h", r"/\* activation codes[^\n]*\*/\s*enum\s*\{([^}]*)\}"),
    ("cuda/common.cuh", r"// activation codes[^\n]*\n\s*enum\s+Act\s*\{([^}]*)\}"),
])
def test_kernel_activation_codes_match_python(path, pattern):
    assert _enum(path, pattern) == activations.CODES


def test_activation_codes_cover_every_activation():
    assert set(activations.CODES) == set(activations.ACTIVATIONS)
    assert sorted(activations.CODES.values()) == list(range(len(activations.CODES)))
