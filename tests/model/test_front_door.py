"""Issue 15, "the front door": what a new user, a network3 user and an adversarial
tester met first (summary, uint8 images, parameter assignment, copying and pickling,
saving and loading)."""
import copy
import os
import pickle
import stat

import numpy as np
import pytest

from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer
from fastmom.checkpoint import CheckpointError
from fastmom.models import conv_layers


def small_net(mbs=4, seed=0, p_dropout=0.0, device="reference"):
    return Network([ConvPoolLayer((3, 1, 5, 5), (mbs, 1, 28, 28), activation_fn=ReLU),
                    FullyConnectedLayer(3 * 12 * 12, 11, activation_fn=ReLU, p_dropout=p_dropout),
                    SoftmaxLayer(11, 10, p_dropout=p_dropout)], mbs, device=device, seed=seed)


# -- summary ---------------------------------------------------------------------------------

def test_summary_of_network3s_chapter6_net():
    net = Network(conv_layers(10), 10, device="reference")
    rows = net.summary_rows()
    assert [r["output_shape"] for r in rows] == [(20, 12, 12), (40, 4, 4), (100,), (10,)]
    assert [r["params"] for r in rows] == [520, 20040, 64100, 1010]
    # 2 FLOPs per multiply-add: conv 20*1*25 taps at 24x24 positions, 40*20*25 at 8x8
    assert [r["flops"] for r in rows] == [2 * 20 * 25 * 24 * 24, 2 * 40 * 20 * 25 * 8 * 8, 2 * 640 * 100,
                                          2 * 100 * 10]
    text = net.summary()
    assert isinstance(text, str)
    assert "85,670" in text and "3,266,000" in text and "(40, 4, 4)" in text and "ConvPoolLayer" in text
    assert sum(r["params"] for r in rows) == net.flat.size


# -- uint8 images ----------------------------------------------------------------------------

def test_uint8_images_are_scaled_like_the_loaders(rng, capsys):
    from fastmom import Trainer
    x8 = rng.integers(0, 256, (12, 784), dtype=np.uint8)
    x = x8.astype(np.float32) / np.float32(255)  # what fastmom.data's loaders return
    y = rng.integers(0, 10, 12)
    net = small_net()
    np.testing.assert_array_equal(net.forward(x8), net.forward(x))
    np.testing.assert_array_equal(net.forward(x8.reshape(12, 1, 28, 28)), net.forward(x))
    assert net.accuracy(x8, y) == net.accuracy(x, y)
    np.testing.assert_array_equal(net.prepare_inputs(x8), x)
    a, b = small_net(), small_net()
    ha = a.SGD((x8, y), 2, 4, 0.1, (x8, y), None)
    hb = b.SGD((x, y), 2, 4, 0.1, (x, y), None)
    for key in ("cost", "validation_accuracy"):
        assert ha.column(key) == hb.column(key)
    np.testing.assert_array_equal(a.flat.data, b.flat.data)
    c, d = small_net(), small_net()
    Trainer(c, eta=0.1, progress=False).fit((x8, y), 1, (x8, y))
    Trainer(d, eta=0.1, progress=False).fit((x, y), 1, (x, y))
    np.testing.assert_array_equal(c.flat.data, d.flat.data)


# -- parameter assignment --------------------------------------------------------------------

def test_assigning_layer_w_and_b_writes_the_flat_buffer(rng, tmp_path):
    net = small_net()
    x = rng.random((4, 784))
    w_new = rng.normal(size=net.layers[1].w.shape)
    net.layers[1].w = w_new
    net.layers[2].b = np.arange(10)
    assert np.shares_memory(net.layers[1].w, net.flat.data)  # still the buffer's view
    np.testing.assert_array_equal(net.params[2], w_new.astype(np.float32))
    np.testing.assert_array_equal(net.params[5], np.arange(10))
    net.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(Network.load(tmp_path / "m.npz").forward(x), net.forward(x))
    view = net.layers[0].w
    net.layers[0].w += 1.0  # in place: the view itself comes back
    assert net.layers[0].w is view


@pytest.mark.parametrize("value,exc,match", [
    (np.ones((3, 3)), ValueError, r"FullyConnectedLayer\.w must have shape \(432, 11\), got \(3, 3\)"),
    (np.ones((432, 11), complex), TypeError, "must hold real numbers"),
])
def test_assigning_a_bad_layer_w_is_refused(value, exc, match):
    net = small_net()
    before = net.flat.data.copy()
    with pytest.raises(exc, match=match):
        net.layers[1].w = value
    np.testing.assert_array_equal(net.flat.data, before)


def test_params_refuses_item_assignment_but_views_stay_writable():
    net = small_net()
    with pytest.raises(TypeError, match=r"net\.params is read-only.*net\.params\[i\]\[\.\.\.\] = x"):
        net.params[0] = np.zeros(net.params[0].shape)
    with pytest.raises(TypeError, match="read-only"):
        del net.params[0]
    net.params[0][...] = 0.5
    assert (net.layers[0].w == 0.5).all() and (net.flat.data[:net.params[0].size] == 0.5).all()
    assert len(net.params) == 6 and [p.shape for p in net.params[::2]][0] == (3, 1, 5, 5)


# -- copying and pickling --------------------------------------------------------------------

@pytest.mark.parametrize("how", ["deepcopy", "pickle", "copy"])
def test_copy_and_pickle_go_through_the_npz_format(how, rng):
    net = small_net(p_dropout=0.3, device="cpu" if "cpu" in available() else "reference")
    net.params[1][...] = rng.normal(size=net.params[1].shape)
    net.dropout_rng.random()  # advance the dropout stream: its state must travel
    clone = {"deepcopy": copy.deepcopy, "copy": copy.copy,
             "pickle": lambda n: pickle.loads(pickle.dumps(n))}[how](net)
    assert type(clone) is Network and clone is not net
    assert (clone.device, clone.dtype, clone.mini_batch_size) == (net.device, net.dtype, net.mini_batch_size)
    np.testing.assert_array_equal(clone.flat.data, net.flat.data)
    assert not np.shares_memory(clone.flat.data, net.flat.data)
    x, y = rng.random((8, 784)), rng.integers(0, 10, 8)
    # the same dropout masks from here on: equal training steps
    assert clone.cost_and_gradients(x[:4], y[:4])[0] == net.cost_and_gradients(x[:4], y[:4])[0]
    clone.params[0][...] = 0  # independent
    assert net.params[0].any()


def available():
    from fastmom import available_devices
    return available_devices()


def test_pickle_holds_no_backend_module():
    blob = pickle.dumps(small_net())
    assert b"fastmom.backends" not in blob and b"PK" in blob  # the npz archive's bytes


# -- saving: file mode, read-only targets, error names ---------------------------------------

def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        small_net().save(tmp_path / "a.npz")
        os.umask(0o077)
        small_net().save(tmp_path / "b.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.npz").st_mode) == 0o600


def test_saving_over_files(tmp_path):
    path = tmp_path / "m.npz"
    first, second = small_net(seed=1), small_net(seed=2)
    first.save(path)
    second.save(path)  # a writable file of yours is replaced, as open(path, "wb") would
    np.testing.assert_array_equal(Network.load(path).flat.data, second.flat.data)
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match=r"Read-only file, not replaced \(pass overwrite=True.*m\.npz'$"):
        first.save(path)
    np.testing.assert_array_equal(Network.load(path).flat.data, second.flat.data)
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    first.save(path, overwrite=True)
    np.testing.assert_array_equal(Network.load(path).flat.data, first.flat.data)


def test_save_errors_name_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing-dir" / "m.npz"
    with pytest.raises(FileNotFoundError) as exc:
        small_net().save(target)
    assert exc.value.filename == str(target) and ".tmp" not in str(exc.value)
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(IsADirectoryError) as exc:
        small_net().save(tmp_path / "d.npz")
    assert exc.value.filename == str(tmp_path / "d.npz") and ".tmp" not in str(exc.value)
    assert os.listdir(tmp_path) == ["d.npz"]  # no temporary file left behind


# -- loading: pickles refused, another mini-batch size ---------------------------------------

def test_pickle_files_are_refused_in_our_words(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match=r"net\.pkl: not a fastmom file") as exc:
        Network.load(path)
    assert "allow_pickle" not in str(exc.value)
    np.savez(tmp_path / "obj.npz", meta=np.array([{"a": 1}], dtype=object), params=np.ones(3))
    with pytest.raises(CheckpointError, match=r"obj\.npz: member '(meta|params)' holds Python objects; "
                                              r"not a fastmom file") as exc:
        Network.load(tmp_path / "obj.npz")
    assert "allow_pickle" not in str(exc.value)
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(CheckpointError, match=r"a\.npy: a single NumPy array \(\.npy\), not a fastmom file"):
        Network.load(tmp_path / "a.npy")


def test_load_with_another_mini_batch_size(tmp_path, rng):
    net = small_net(mbs=4)
    net.params[1][...] = rng.normal(size=3)
    net.save(tmp_path / "m.npz")
    big = Network.load(tmp_path / "m.npz", mini_batch_size=10)
    assert big.mini_batch_size == 10 and big.layers[0].image_shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(big.flat.data, net.flat.data)
    x = rng.random((23, 784))
    np.testing.assert_allclose(big.forward(x), net.forward(x), rtol=1e-6, atol=1e-7)
    big.cost_and_gradients(x[:10], rng.integers(0, 10, 10))  # workspaces sized for 10
    with pytest.raises(ValueError, match="mini_batch_size must be a positive int"):
        Network.load(tmp_path / "m.npz", mini_batch_size=0)
