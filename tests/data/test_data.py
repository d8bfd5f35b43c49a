"""Tests for fastmom.data: IDX parsing, bundled sample, pickles, downloads."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from fastmom import data
from fastmom.data import DataError

from _http import FileServer  # tests/data/_http.py (pytest puts this directory on sys.path)


# Published SHA-256 of the bundled sample (shared/data/README.md).
SAMPLE_SHA256 = {
    "images-idx3-ubyte.gz": "e1b9ad0f33e70df03fd2f5b52b235723a464badfaa4b3b55c16021f6e6fe6711",
    "labels-idx1-ubyte.gz": "e3fa6db2d3ef21a32119c3569d6d322691ce0f6bdeb43e6da6e9328a4e1486ea",
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FOUR = list(data.MNIST_FILES)
TYPE_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------
# helpers: an IDX writer independent of the reader under test
# --------------------------------------------------------------------------


def idx_bytes(arr, code=0x08):
    arr = np.asarray(arr)
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(TYPE_CODES[code]).tobytes()


def write(path, payload, gz=None):
    path = Path(path)
    gz = path.name.endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_mnist(n_train, n_test, seed=0):
    """Random MNIST-format data: {canonical .gz name: raw IDX bytes}, arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) * 7 % 10).astype(np.uint8),
    }
    return {name: idx_bytes(a) for name, a in arrays.items()}, arrays


def write_fake_dir(directory, n_train=60, n_test=10, gz=True, seed=0):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw, arrays = fake_mnist(n_train, n_test, seed)
    for name, payload in raw.items():
        write(directory / (name if gz else name[:-3]), payload, gz=gz)
    return arrays


def check_split(split, n):
    x, y = split
    assert x.shape == (n, 784) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    if n:
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y.min() and y.max() <= 9


def as_xy(images, labels):
    return images.reshape(len(images), 784).astype(np.float32) / np.float32(255), labels.astype(np.int64)


def sample_dir():
    return importlib.resources.files("fastmom") / "_data" / "mnist-5k"


# --------------------------------------------------------------------------
# bundled sample
# --------------------------------------------------------------------------


def test_sample_shapes_dtypes_range():
    training, validation, test = data.load_sample()
    for split, n in ((training, 4000), (validation, 500), (test, 500)):
        check_split(split, n)
    assert training[0].max() == 1.0 and training[0].min() == 0.0


def test_sample_is_stratified():
    training, validation, test = data.load_sample()
    assert np.bincount(training[1], minlength=10).tolist() == [400] * 10
    assert np.bincount(validation[1], minlength=10).tolist() == [50] * 10
    assert np.bincount(test[1], minlength=10).tolist() == [50] * 10


def test_sample_files_match_published_checksums():
    for name, expected in SAMPLE_SHA256.items():
        raw = (sample_dir() / name).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == expected
    assert data._SAMPLE_FILES == SAMPLE_SHA256


def test_sample_via_load_data_shared_and_load_dataset():
    reference = data.load_sample()
    for loaded in (data.load_data_shared("sample"), data.load_data_shared(None), data.load_dataset("sample")):
        for (x, y), (rx, ry) in zip(loaded, reference):
            np.testing.assert_array_equal(x, rx)
            np.testing.assert_array_equal(y, ry)


@pytest.fixture
def sample_copy(tmp_path):
    for name in SAMPLE_SHA256:
        (tmp_path / name).write_bytes((sample_dir() / name).read_bytes())
    return tmp_path


def test_sample_copy_loads(sample_copy):
    training, _, _ = data._load_sample_from(sample_copy)
    np.testing.assert_array_equal(training[1], data.load_sample()[0][1])


def test_sample_flipped_byte_is_detected(sample_copy):
    images = sample_copy / "images-idx3-ubyte.gz"
    raw = bytearray(images.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    images.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum mismatch") as excinfo:
        data._load_sample_from(sample_copy)
    assert str(images) in str(excinfo.value)
    # Without the checksum, gzip's own CRC still catches the damage.
    with pytest.raises(DataError) as excinfo:
        data.load_idx_pair(images, sample_copy / "labels-idx1-ubyte.gz")
    assert str(images) in str(excinfo.value)


def test_sample_truncated_is_detected(sample_copy):
    labels = sample_copy / "labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    with pytest.raises(DataError, match="checksum mismatch") as excinfo:
        data._load_sample_from(sample_copy)
    assert str(labels) in str(excinfo.value)
    with pytest.raises(DataError, match="gzip") as excinfo:
        data.load_idx_pair(sample_copy / "images-idx3-ubyte.gz", labels)
    assert str(labels) in str(excinfo.value)


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(TYPE_CODES))
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5), (2, 3, 5), (1, 1, 1, 1), (4, 0, 2)])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, code, shape, gz):
    rng = np.random.default_rng(sum(shape) + code)
    dtype = np.dtype(TYPE_CODES[code]).newbyteorder("=")
    if dtype.kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(arr, code))
    out = data.read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable copy, not a view of read-only bytes


def test_read_idx_detects_gzip_by_magic(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "images.idx3-ubyte", idx_bytes(arr), gz=True)
    np.testing.assert_array_equal(data.read_idx(path), arr)


def test_read_idx_big_endian_values(tmp_path):
    path = write(tmp_path / "b.idx", bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes([0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE]))
    assert data.read_idx(path).tolist() == [258, -2]


def raises_naming(path, match):
    with pytest.raises(DataError, match=match) as excinfo:
        data.read_idx(path)
    assert path.name in str(excinfo.value)
    return str(excinfo.value)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_truncated_payload(tmp_path, gz):
    payload = idx_bytes(np.zeros((3, 4), np.int16), 0x0B)
    path = write(tmp_path / ("t.idx.gz" if gz else "t.idx"), payload[:-1])
    message = raises_naming(path, "truncated")
    assert f"expected {len(payload)} bytes got {len(payload) - 1}" in message


def test_read_idx_truncated_header(tmp_path):
    raises_naming(write(tmp_path / "h.idx", bytes([0, 0, 8, 3, 0, 0, 0, 1])), "truncated")
    raises_naming(write(tmp_path / "h2.idx", b"\0\0"), "truncated")


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_trailing_bytes(tmp_path, gz):
    payload = idx_bytes(np.zeros(5, np.uint8))
    raises_naming(write(tmp_path / ("x.idx.gz" if gz else "x.idx"), payload + b"\0"), "trailing")


def test_read_idx_bad_magic(tmp_path):
    payload = bytearray(idx_bytes(np.zeros(5, np.uint8)))
    payload[0] = 1
    raises_naming(write(tmp_path / "m.idx", bytes(payload)), "bad magic")
    raises_naming(write(tmp_path / "text.idx.gz", b"hello world, not idx"), "bad magic")


def test_read_idx_unknown_type_code(tmp_path):
    raises_naming(write(tmp_path / "c.idx", bytes([0, 0, 0x07, 1, 0, 0, 0, 0])), "type code")


def test_read_idx_zero_dimensions(tmp_path):
    raises_naming(write(tmp_path / "z.idx", bytes([0, 0, 0x08, 0])), "dimension count")


def test_read_idx_gz_name_but_not_gzip(tmp_path):
    raises_naming(write(tmp_path / "p.idx.gz", idx_bytes(np.zeros(3, np.uint8)), gz=False), "not gzip")


def test_read_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    # gzip magic followed by garbage
    raises_naming(write(tmp_path / "g1.gz", _GARBAGE_GZIP, gz=False), "gzip")
    # stream cut short
    raises_naming(write(tmp_path / "g2.gz", good[: len(good) // 2], gz=False), "gzip")
    # CRC mismatch: damage the stored CRC-32 in the trailer
    bad = bytearray(good)
    bad[-8] ^= 0x01
    raises_naming(write(tmp_path / "g3.gz", bytes(bad), gz=False), "gzip")


_GARBAGE_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 40


def test_read_idx_missing_file(tmp_path):
    raises_naming(tmp_path / "nope.idx", "not found")


# --------------------------------------------------------------------------
# load_idx_pair
# --------------------------------------------------------------------------


def test_load_idx_pair(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (11, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.arange(11, dtype=np.uint8) % 10
    x, y = data.load_idx_pair(write(tmp_path / "i.gz", idx_bytes(images)), write(tmp_path / "l", idx_bytes(labels)))
    check_split((x, y), 11)
    rx, ry = as_xy(images, labels)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    assert x[0, 0] == 0.0 and x[0, 1] == 1.0


@pytest.mark.parametrize(
    "images, labels, match, culprit",
    [
        (np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8), "count mismatch", "labels"),
        (np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8), "out of range", "labels"),
        (np.zeros((2, 28, 28), np.uint8), np.array([3, -1], np.int8), "out of range", "labels"),
        (np.zeros((2, 27, 28), np.uint8), np.zeros(2, np.uint8), "28x28", "images"),
        (np.zeros((2, 784), np.uint8), np.zeros(2, np.uint8), "dimension count", "images"),
        (np.zeros((2, 28, 28), np.int16), np.zeros(2, np.uint8), "uint8", "images"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros((2, 1), np.uint8), "dimension count", "labels"),
    ],
)
def test_load_idx_pair_rejects(tmp_path, images, labels, match, culprit):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B}
    ipath = write(tmp_path / "images.gz", idx_bytes(images, codes[images.dtype]))
    lpath = write(tmp_path / "labels.gz", idx_bytes(labels, codes[labels.dtype]))
    with pytest.raises(DataError, match=match) as excinfo:
        data.load_idx_pair(ipath, lpath)
    assert str(ipath if culprit == "images" else lpath) in str(excinfo.value)


# --------------------------------------------------------------------------
# load_data_shared (network3's mnist.pkl.gz)
# --------------------------------------------------------------------------


def three_splits(seed=2, sizes=(30, 8, 6)):
    rng = np.random.default_rng(seed)
    return tuple(
        (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)) for n in sizes
    )


def assert_same(loaded, expected):
    assert len(loaded) == 3
    for (x, y), (ex, ey) in zip(loaded, expected):
        check_split((x, y), len(ex))
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)


class _Py2StylePickler(pickle.Pickler):
    """Write arrays the way Python 2's cPickle did: raw data as a str."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            reconstruct = np.ndarray.__reduce__(obj)[0]
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin-1"))
            return reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented


def test_load_data_shared_protocol2_gz(tmp_path):
    splits = three_splits()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(splits, protocol=2)))
    assert_same(data.load_data_shared(path), splits)
    assert_same(data.load_data_shared(str(path)), splits)


def test_load_data_shared_python2_style(tmp_path):
    splits = three_splits(3)
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(splits)
    # Python 2 era NumPy lived at numpy.core; GLOBAL opcodes are plain text.
    raw = buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw and b"_codecs" not in raw
    path = tmp_path / "py2.pkl.gz"
    path.write_bytes(gzip.compress(raw))
    assert_same(data.load_data_shared(path), splits)


def test_load_data_shared_plain_protocol5_and_uint8(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (5, 784), dtype=np.uint8)
    splits = ((images, np.arange(5)), (images[:2], np.arange(2)), (images[:1], np.arange(1)))
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(splits, protocol=5))
    loaded = data.load_data_shared(path)
    np.testing.assert_array_equal(loaded[0][0], images.astype(np.float32) / np.float32(255))
    check_split(loaded[2], 1)


class _OpenFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


class _System:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.mark.parametrize("payload, forbidden", [(_OpenFile, "open"), (_System, "system")])
def test_load_data_shared_refuses_code(tmp_path, payload, forbidden):
    canary = tmp_path / "pwned"
    (x, y), validation, test = three_splits()
    evil = ((x, y), validation, (payload(canary), test[1]))
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(evil, protocol=2)))
    # Sanity: an ordinary unpickler would really run the payload.
    assert forbidden in pickle.dumps(evil, protocol=2).decode("latin-1")
    with pytest.raises(DataError, match="forbidden global") as excinfo:
        data.load_data_shared(path)
    assert forbidden in str(excinfo.value) and str(path) in str(excinfo.value)
    assert not canary.exists()


def test_load_data_shared_refuses_other_codecs(tmp_path):
    # _codecs.encode is allowed only for latin-1 (how protocol 2 stores bytes).
    raw = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    path = tmp_path / "codec.pkl"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="not a valid data pickle"):
        data.load_data_shared(path)


def test_load_data_shared_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as excinfo:
        data.load_data_shared(tmp_path / "mnist.pkl.gz")
    assert "mnist.pkl.gz" in str(excinfo.value)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"a": 1}, "three"),
        (three_splits()[:2], "three"),
        ((1, 2, 3), r"\(x, y\) pair"),
        (((np.zeros((2, 10), np.float32), np.zeros(2, np.int64)),) * 3, "784"),
        (((np.zeros((2, 784), np.float32), np.zeros(3, np.int64)),) * 3, "count mismatch"),
        (((np.zeros((2, 784), np.float32), np.array([0, 12])),) * 3, "out of range"),
        (((np.full((2, 784), 2.0, np.float32), np.zeros(2, np.int64)),) * 3, r"\[0, 1\]"),
        (((np.zeros((2, 784), np.float32), np.zeros(2, np.float32)),) * 3, "integers"),
    ],
)
def test_load_data_shared_bad_content(tmp_path, content, match):
    path = tmp_path / "bad.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(content, protocol=2)))
    with pytest.raises(DataError, match=match) as excinfo:
        data.load_data_shared(path)
    assert str(path) in str(excinfo.value)


def test_load_data_shared_truncated(tmp_path):
    raw = gzip.compress(pickle.dumps(three_splits(), protocol=2))
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as excinfo:
        data.load_data_shared(path)
    assert str(path) in str(excinfo.value)
    plain = tmp_path / "cut.pkl"
    plain.write_bytes(pickle.dumps(three_splits(), protocol=2)[:-50])
    with pytest.raises(DataError):
        data.load_data_shared(plain)
    notgz = tmp_path / "plain.pkl.gz"
    notgz.write_bytes(pickle.dumps(three_splits(), protocol=2))
    with pytest.raises(DataError, match="not gzip"):
        data.load_data_shared(notgz)


# --------------------------------------------------------------------------
# data_dir
# --------------------------------------------------------------------------


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTMOM_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv("FASTMOM_DATA_DIR")
    assert data.data_dir() == Path(platformdirs.user_cache_dir("fastmom"))


# --------------------------------------------------------------------------
# load_mnist against a local HTTP server
# --------------------------------------------------------------------------


def test_mnist_constants():
    assert sorted(data.MNIST_FILES) == sorted(
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
    )
    assert data.MNIST_FILES["train-images-idx3-ubyte.gz"] == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    for digest in data.MNIST_FILES.values():
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert data.DEFAULT_MNIST_MIRROR.startswith("https://")


class Mirror:
    def __init__(self, server, raw, arrays):
        self.server = server
        self.arrays = arrays
        self.gz = {name: gzip.compress(payload) for name, payload in raw.items()}
        self.hashes = {name: hashlib.sha256(blob).hexdigest() for name, blob in self.gz.items()}
        server.files.update({"mnist/" + name: blob for name, blob in self.gz.items()})
        self.url = server.url + "mnist/"


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    # Requests must not route 127.0.0.1 through a proxy from the environment.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("FASTMOM_MNIST_MIRROR", raising=False)
    monkeypatch.setenv("FASTMOM_DATA_DIR", str(tmp_path / "cache"))
    raw, arrays = fake_mnist(60, 10, seed=5)
    with FileServer({}) as server:
        yield Mirror(server, raw, arrays)


def check_fake_mnist(result, arrays, n_train=60):
    training, validation, test = result
    n_val = n_train // 6
    check_split(training, n_train - n_val)
    check_split(validation, n_val)
    check_split(test, len(arrays["t10k-labels-idx1-ubyte.gz"]))
    x, y = as_xy(arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(training[0], x[:-n_val])
    np.testing.assert_array_equal(validation[0], x[-n_val:])
    np.testing.assert_array_equal(validation[1], y[-n_val:])
    tx, ty = as_xy(arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(test[0], tx)
    np.testing.assert_array_equal(test[1], ty)


def test_load_mnist_downloads_once(mirror, tmp_path):
    result = data.load_mnist(mirror=mirror.url, files=mirror.hashes)
    check_fake_mnist(result, mirror.arrays)
    target = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(target)) == sorted(FOUR)
    for name in FOUR:
        assert (target / name).read_bytes() == mirror.gz[name]
    assert len(mirror.server.hits) == 4
    # Second call: everything is cached and verified, nothing is fetched.
    check_fake_mnist(data.load_mnist(mirror=mirror.url, files=mirror.hashes), mirror.arrays)
    assert len(mirror.server.hits) == 4


def test_load_mnist_replaces_damaged_cache(mirror, tmp_path):
    data.load_mnist(mirror=mirror.url, files=mirror.hashes)
    damaged = tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(b"junk")
    check_fake_mnist(data.load_mnist(mirror=mirror.url, files=mirror.hashes), mirror.arrays)
    assert mirror.server.hits[4:] == ["mnist/t10k-labels-idx1-ubyte.gz"]
    assert damaged.read_bytes() == mirror.gz["t10k-labels-idx1-ubyte.gz"]


def test_load_mnist_explicit_data_dir(mirror, tmp_path):
    data.load_mnist(data_dir=tmp_path / "elsewhere", mirror=mirror.url.rstrip("/"), files=mirror.hashes)
    assert sorted(os.listdir(tmp_path / "elsewhere" / "mnist")) == sorted(FOUR)
    assert not (tmp_path / "cache").exists()


def test_load_mnist_bad_hash_leaves_nothing(mirror, tmp_path):
    wrong = dict(mirror.hashes)
    wrong["train-images-idx3-ubyte.gz"] = "0" * 64
    with pytest.raises(DataError, match="checksum mismatch") as excinfo:
        data.load_mnist(mirror=mirror.url, files=wrong)
    assert mirror.url + "train-images-idx3-ubyte.gz" in str(excinfo.value)
    target = tmp_path / "cache" / "mnist"
    assert not target.exists() or os.listdir(target) == []


def test_load_mnist_interrupted_download_leaves_nothing(mirror, tmp_path):
    mirror.server.truncate.add("mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(DataError) as excinfo:
        data.load_mnist(mirror=mirror.url, files=mirror.hashes)
    assert "train-images-idx3-ubyte.gz" in str(excinfo.value)
    assert mirror.server.hits == ["mnist/train-images-idx3-ubyte.gz"]
    target = tmp_path / "cache" / "mnist"
    assert not target.exists() or os.listdir(target) == []


def test_load_mnist_mirror_from_environment(mirror, monkeypatch):
    monkeypatch.setenv("FASTMOM_MNIST_MIRROR", mirror.url)
    check_fake_mnist(data.load_mnist(files=mirror.hashes), mirror.arrays)
    assert len(mirror.server.hits) == 4


def test_load_mnist_mirror_argument_beats_environment(mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTMOM_MNIST_MIRROR", "http://127.0.0.1:9/nothing-here/")
    check_fake_mnist(data.load_mnist(mirror=mirror.url, files=mirror.hashes), mirror.arrays)


def test_load_mnist_missing_on_server(mirror):
    with pytest.raises(DataError) as excinfo:
        data.load_mnist(mirror=mirror.server.url + "empty/", files=mirror.hashes)
    assert "empty/train-images-idx3-ubyte.gz" in str(excinfo.value)


def test_load_mnist_files_must_cover_four(mirror):
    with pytest.raises(ValueError, match="t10k"):
        data.load_mnist(mirror=mirror.url, files={"train-images-idx3-ubyte.gz": "0" * 64})


# --------------------------------------------------------------------------
# load_fashion_mnist
# --------------------------------------------------------------------------


@pytest.mark.skipif(
    not all((DEBIAN_FASHION / name).is_file() for name in FOUR),
    reason="Debian's Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_debian(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTMOM_DATA_DIR", str(tmp_path))  # nothing there: falls through to Debian's
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    training, validation, test = data.load_fashion_mnist()
    check_split(training, 50000)
    check_split(validation, 10000)
    check_split(test, 10000)
    assert np.bincount(test[1]).tolist() == [1000] * 10
    assert np.bincount(np.concatenate([training[1], validation[1]])).tolist() == [6000] * 10


@pytest.fixture
def no_fashion(monkeypatch, tmp_path):
    """Point every search place into tmp_path, where nothing exists yet."""
    monkeypatch.setenv("FASTMOM_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "_DEBIAN_FASHION_DIR", tmp_path / "debian")
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_data_dir_argument(no_fashion, gz):
    arrays = write_fake_dir(no_fashion / "mine", gz=gz, seed=7)
    check_fake_mnist(data.load_fashion_mnist(no_fashion / "mine"), arrays)
    check_fake_mnist(data.load_fashion_mnist(str(no_fashion / "mine")), arrays)


def test_fashion_mnist_search_order(no_fashion):
    env_arrays = write_fake_dir(no_fashion / "env" / "fashion-mnist", seed=8)
    debian_arrays = write_fake_dir(no_fashion / "debian", n_train=12, seed=9)
    check_fake_mnist(data.load_fashion_mnist(), env_arrays)
    # An incomplete explicit directory is an error, never a silent fallback.
    write_fake_dir(no_fashion / "partial", seed=10)
    (no_fashion / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="partial"):
        data.load_fashion_mnist(no_fashion / "partial")
    shutil.rmtree(no_fashion / "env")
    check_fake_mnist(data.load_fashion_mnist(), debian_arrays, n_train=12)


def test_fashion_mnist_not_found_lists_places(no_fashion):
    with pytest.raises(DataError) as excinfo:
        data.load_fashion_mnist()
    message = str(excinfo.value)
    for place in (
        no_fashion / "env" / "fashion-mnist",
        Path(platformdirs.user_cache_dir("fastmom")) / "fashion-mnist",
        no_fashion / "debian",
    ):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message


# --------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------


def test_load_dataset_names_dispatch(monkeypatch):
    monkeypatch.setattr(data, "load_mnist", lambda: "mnist!")
    monkeypatch.setattr(data, "load_fashion_mnist", lambda: "fashion!")
    assert data.load_dataset("mnist") == "mnist!"
    assert data.load_dataset("fashion-mnist") == "fashion!"


@pytest.mark.parametrize("n_train", [60, 12, 7])
def test_load_dataset_directory(tmp_path, n_train):
    arrays = write_fake_dir(tmp_path / "d", n_train=n_train, seed=n_train)
    check_fake_mnist(data.load_dataset(tmp_path / "d"), arrays, n_train=n_train)
    check_fake_mnist(data.load_dataset(str(tmp_path / "d")), arrays, n_train=n_train)


def test_load_dataset_directory_too_small_or_empty(tmp_path):
    write_fake_dir(tmp_path / "tiny", n_train=5)
    with pytest.raises(DataError, match="too few"):
        data.load_dataset(tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="IDX files"):
        data.load_dataset(tmp_path / "empty")


def test_load_dataset_directory_of_60000_uses_network3_split(monkeypatch, tmp_path):
    # Only the split is under test: 60,000 fake labels, tiny fake images.
    monkeypatch.setattr(
        data, "load_idx_pair", lambda i, l: (np.zeros((60000, 784), np.float32), np.arange(60000) % 10)
    )
    training, validation, _ = data._load_four({name: tmp_path / name for name in FOUR})
    assert len(training[0]) == 50000 and len(validation[0]) == 10000
    assert validation[1][0] == 50000 % 10


def test_load_dataset_pickle(tmp_path):
    splits = three_splits(6)
    path = tmp_path / "mine.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(splits, protocol=2)))
    assert_same(data.load_dataset(path), splits)
    assert_same(data.load_dataset(str(path)), splits)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        data.load_dataset("cifar-10")
    assert excinfo.type is ValueError
    for name in ("'sample'", "'mnist'", "'fashion-mnist'"):
        assert name in str(excinfo.value)
