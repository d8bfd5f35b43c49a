"""Checkpoint files: round trips, the pickle-free format, atomic writes (a writer killed
mid-save leaves the previous file loadable), keep-last-K, and clear errors naming the
file for missing, corrupt, truncated or wrong-version checkpoints."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastmom
from fastmom import ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, Trainer, tanh
from fastmom.checkpoint import (FORMAT_VERSION, CheckpointError, list_checkpoints, read_checkpoint,
                                write_checkpoint)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastmom.__file__)))


def small_layers(mbs=5, p=0.2):
    return [ConvPoolLayer((3, 1, 5, 5), (mbs, 1, 12, 12), poolsize=(3, 3), activation_fn=ReLU),
            FullyConnectedLayer(3 * 2 * 2, 7, activation_fn=tanh, p_dropout=p),
            SoftmaxLayer(7, 4, p_dropout=p)]


def small_net(device="reference", **kw):
    return Network(small_layers(), 5, device=device, seed=3, **kw)


def saved(tmp_path, name="net.npz"):
    net = small_net()
    path = tmp_path / name
    net.save(path)
    return net, path


def test_round_trip_rebuilds_architecture_and_outputs(tmp_path):
    net, path = saved(tmp_path)
    net.params[-2][...] = np.random.default_rng(0).normal(size=net.params[-2].shape)
    net.save(path)
    back = Network.load(path)
    assert repr(back) == repr(net)
    np.testing.assert_array_equal(back.flat.data, net.flat.data)
    x = np.random.default_rng(1).random((7, 144))
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    # the dropout stream continues where the saved network's was
    assert back.dropout_rng.random() == net.dropout_rng.random()


def test_load_overrides_device_and_dtype(tmp_path):
    net, path = saved(tmp_path)
    back = Network.load(path, device="cpu", dtype=np.float64)
    assert back.device == "cpu" and back.dtype == np.float64
    np.testing.assert_array_equal(back.flat.data, net.flat.data.astype(np.float64))


def test_seedless_network_keeps_its_seed_tree(tmp_path):
    net = Network(small_layers(), 5, device="reference")
    net.save(tmp_path / "a.npz")
    back = Network.load(tmp_path / "a.npz")
    # same data-order stream for a Trainer built without an explicit seed
    assert back.data_seed_sequence.entropy == net.data_seed_sequence.entropy
    assert back.data_seed_sequence.spawn_key == net.data_seed_sequence.spawn_key


def test_format_is_pickle_free_npz_with_version(tmp_path):
    _, path = saved(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"meta", "params"}
        assert z["meta"].dtype == np.uint8
        meta = json.loads(z["meta"].tobytes())
    assert meta["format"] == "fastmom-checkpoint" and meta["version"] == FORMAT_VERSION
    assert [layer["type"] for layer in meta["network"]["layers"]] == [
        "ConvPoolLayer", "FullyConnectedLayer", "SoftmaxLayer"]


def test_save_refuses_nonfinite_parameters(tmp_path):
    net, path = saved(tmp_path)
    before = path.read_bytes()
    net.params[0][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        net.save(path)
    assert path.read_bytes() == before


# -- bad files -------------------------------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_payload_byte(path):
    # a byte inside the params member: the zip CRC check must catch it
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("params.npy")
    data[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path):
    path.write_bytes(b"this is not a checkpoint at all\n" * 10)


def _empty(path):
    path.write_bytes(b"")


def _wrong_version(path):
    meta, arrays = read_checkpoint(path)
    meta["version"] = 99
    write_checkpoint(path, meta, arrays)
    # write_checkpoint stamps the current version: rewrite the member by hand
    blob = np.frombuffer(json.dumps(dict(meta, version=99)).encode(), np.uint8)
    np.savez(path, meta=blob, **arrays)


def _other_format(path):
    np.savez(path, params=np.zeros(3))


def _pickled_member(path):
    meta, arrays = read_checkpoint(path)
    blob = np.frombuffer(json.dumps(dict(meta, format="fastmom-checkpoint", version=1)).encode(), np.uint8)
    np.savez(path, meta=blob, params=np.array([{"evil": 1}], dtype=object))


def _bad_json(path):
    np.savez(path, meta=np.frombuffer(b"{not json", np.uint8), params=np.zeros(3))


def _wrong_param_count(path):
    meta, arrays = read_checkpoint(path)
    write_checkpoint(path, meta, {"params": arrays["params"][:-1]})


BAD_FILES = [
    (_truncate, "corrupt or truncated"),
    (_flip_payload_byte, "corrupt or truncated"),
    (_garbage, "not a fastmom file"),  # neither a zip nor .npy: never tried as a pickle
    (_empty, "corrupt or truncated"),
    (_wrong_version, "format version 99 is not supported"),
    (_other_format, "not a fastmom checkpoint"),
    (_pickled_member, "'params' holds Python objects; not a fastmom file"),
    (_bad_json, "corrupt metadata"),
    (_wrong_param_count, "params has shape"),
]


@pytest.mark.parametrize("damage,match", BAD_FILES, ids=[f.__name__.strip("_") for f, _ in BAD_FILES])
def test_bad_checkpoint_raises_naming_the_file(tmp_path, damage, match):
    _, path = saved(tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match=match) as exc:
        Network.load(path)
    assert str(path) in str(exc.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as exc:
        Network.load(tmp_path / "nope.npz")
    assert "nope.npz" in str(exc.value)
    with pytest.raises(CheckpointError, match="directory"):
        Network.load(tmp_path)


def test_network_checkpoint_is_not_a_trainer_checkpoint(tmp_path):
    net, path = saved(tmp_path)
    with pytest.raises(CheckpointError, match="network only"):
        Trainer(net, resume=path)


def test_resume_into_other_architecture_is_refused(tmp_path):
    net = small_net()
    tr = Trainer(net, eta=0.1, progress=False)
    tr.save_checkpoint(tmp_path / "c.npz")
    other = Network([FullyConnectedLayer(144, 7), SoftmaxLayer(7, 4)], 5, device="reference")
    with pytest.raises(CheckpointError, match="architecture does not match") as exc:
        Trainer(other, resume=tmp_path / "c.npz")
    assert "c.npz" in str(exc.value)


# -- directories: keep the last K ---------------------------------------------------------

def test_keep_last_and_resume_true(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((40, 144)), rng.integers(0, 4, 40))
    net = small_net()
    tr = Trainer(net, eta=0.05, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3,
                 checkpoint_unit="step", keep_last=2)
    tr.fit(data, 2)  # 16 steps: writes at 3, 6, 9, 12, 15 and the final 16
    names = [os.path.basename(p) for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-e00001-s000000015.npz", "ckpt-e00002-s000000016.npz"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    again = Trainer(small_net(), progress=False, checkpoint_dir=tmp_path, resume=True)
    assert (again.epoch, again.step) == (2, 16)
    np.testing.assert_array_equal(again.net.flat.data, net.flat.data)


def test_trainer_argument_checks(tmp_path):
    net = small_net()
    with pytest.raises(ValueError, match="checkpoint_unit"):
        Trainer(net, checkpoint_unit="minute")
    with pytest.raises(ValueError, match="keep_last"):
        Trainer(net, keep_last=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(net, checkpoint_every=-1)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        Trainer(net, resume=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        Trainer(net, checkpoint_dir=tmp_path / "f")
    with pytest.raises(CheckpointError, match="no checkpoint in this directory"):
        Trainer(net, resume=tmp_path)


# -- atomic writes ------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from fastmom import FullyConnectedLayer, Network, SoftmaxLayer
    # ~8 MB per checkpoint: a write takes long enough to be killed in the middle of it
    net = Network([FullyConnectedLayer(784, 2500), SoftmaxLayer(2500, 10)], 10, device="reference", seed=0)
    path = sys.argv[1]
    i = 0
    while True:
        net.params[1][...] = i  # each version is recognisable by its bias value
        net.save(path)
        print(i, flush=True)
        i += 1
""")


def test_writer_killed_mid_save_leaves_previous_checkpoint(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "ckpt.npz"
    env = dict(os.environ, PYTHONPATH=REPO)
    rng = np.random.default_rng(0)
    mid_write = 0
    for trial in range(12):
        if trial >= 4 and mid_write:
            break
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                                env=env)
        first = proc.stdout.readline()
        assert first.strip().isdigit(), first
        time.sleep(rng.uniform(0.0, 0.3))  # land somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tmps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        mid_write += bool(tmps)
        for n in tmps:
            os.unlink(tmp_path / n)
        done = [int(first)] + [int(s) for s in proc.stdout.read().split()]
        proc.stdout.close()
        net = Network.load(path)  # must not raise: the last completed write is intact
        version = float(net.params[1][0])
        assert np.all(net.params[1] == version)
        # the file holds the last completed save (or the one whose rename beat the kill)
        assert done[-1] <= version <= done[-1] + 1
        # a killed writer may leave its temporary file; it never has the checkpoint's name
        assert all(n.startswith(".ckpt.npz.") for n in tmps)
    assert mid_write, "no kill landed inside a write: the test proved nothing"


def test_interrupt_inside_write_keeps_previous_file(tmp_path, monkeypatch):
    net, path = saved(tmp_path)
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    net.params[1][...] = 7
    with pytest.raises(KeyboardInterrupt):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.npz"]  # the temporary file was removed
