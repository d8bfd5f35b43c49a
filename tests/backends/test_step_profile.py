"""bench.step_profile: the per-primitive breakdown of a training step."""
import pytest

from fastmom.backends import cpu

if cpu.is_available() is not True:
    pytest.skip(f"cpu backend not built: {cpu.is_available()}", allow_module_level=True)

step_profile = pytest.importorskip("bench.step_profile")


def test_every_primitive_of_a_step_is_timed_and_the_backend_restored():
    originals = {name: getattr(cpu, name) for name in step_profile.PRIMITIVES}
    plain, parts, wrapped = step_profile.profile("conv", 3, rounds=1, steps=2, warmup=1)
    # network3's conv net: two conv-pool layers (28- and 12-wide inputs), two dense
    # layers, the softmax and the momentum step, each timed under its own key
    for key in [("conv_pool_forward", 28), ("conv_pool_forward", 12), ("conv_pool_backward", 28),
                ("conv_pool_backward", 12), ("dense_forward", 640), ("dense_backward", 640),
                ("softmax_nll_forward", 10), ("softmax_nll_backward", 10)]:
        assert parts.get(key, 0) > 0, (key, sorted(parts))
    assert any(name == "momentum_step" for name, _ in parts)
    assert plain > 0 and wrapped >= sum(parts.values()) > 0
    assert {name: getattr(cpu, name) for name in step_profile.PRIMITIVES} == originals
