"""fastmom.data.expand: network3's expanded training set (expand_mnist.py)."""
import tracemalloc

import numpy as np
import pytest

from fastmom.data import DataError, expand


def _image():
    # distinct values 1..784, so every shift is visible and no pixel is 0
    return np.arange(1, 785, dtype=np.float32).reshape(28, 28)


def _expected_shifts(img):
    """network3's four shifts written out by hand (not with np.roll)."""
    h, w = img.shape[-2:]
    down = np.zeros_like(img)
    up = np.zeros_like(img)
    right = np.zeros_like(img)
    left = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if i >= 1:
                down[..., i, j] = img[..., i - 1, j]
            if i <= h - 2:
                up[..., i, j] = img[..., i + 1, j]
            if j >= 1:
                right[..., i, j] = img[..., i, j - 1]
            if j <= w - 2:
                left[..., i, j] = img[..., i, j + 1]
    return [img, down, up, right, left]


def _unshuffle(out, n, seed):
    """Undo the documented shuffle: block k, image i is row perm[k*n + i]."""
    perm = np.random.default_rng(seed).permutation(5 * n)
    return [out[perm[k * n:(k + 1) * n]] for k in range(5)]


def test_each_shift_of_a_known_image_exactly():
    img = _image()
    x = img.reshape(1, 784)
    out, labels = expand((x, np.array([4])), seed=3)
    assert out.shape == (5, 784) and labels.tolist() == [4] * 5
    blocks = _unshuffle(out, 1, seed=3)
    names = ["original", "down", "up", "right", "left"]
    for name, got, want in zip(names, blocks, _expected_shifts(img)):
        np.testing.assert_array_equal(got.reshape(28, 28), want, err_msg=name)
    down, up, right, left = (b.reshape(28, 28) for b in blocks[1:])
    # spot checks of the definition, including the zeroed wrapped-in edge
    assert (down[0] == 0).all() and down[1, 0] == 1 and down[27, 27] == img[26, 27]
    assert (up[27] == 0).all() and up[0, 0] == 29 and up[26, 5] == img[27, 5]
    assert (right[:, 0] == 0).all() and right[0, 1] == 1 and right[5, 27] == img[5, 26]
    assert (left[:, 27] == 0).all() and left[0, 0] == 2 and left[9, 26] == img[9, 27]
    # the row/column rolled off the far edge is gone, not wrapped around
    assert img[27].min() not in down and img[0].max() not in up


def test_matches_network3_roll_and_zero():
    rng = np.random.default_rng(0)
    x = rng.random((7, 784), dtype=np.float32)
    out, _ = expand((x, np.arange(7)), seed=11)
    blocks = _unshuffle(out, 7, seed=11)
    np.testing.assert_array_equal(blocks[0], x)
    for k, (d, axis, edge) in enumerate([(1, 0, 0), (-1, 0, 27), (1, 1, 0), (-1, 1, 27)], start=1):
        for i in range(7):
            want = np.roll(x[i].reshape(28, 28), d, axis)
            if axis == 0:
                want[edge, :] = 0
            else:
                want[:, edge] = 0
            np.testing.assert_array_equal(blocks[k][i].reshape(28, 28), want)


def test_labels_follow_their_images():
    n = 50
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n)
    # image i carries its own index in a pixel no shift moves off the image
    # and its label in every pixel of the 26x26 interior
    x = np.zeros((n, 28, 28), dtype=np.float32)
    x[:, 10:18, 10:18] = labels[:, None, None] + 1
    x[:, 14, 14] = 100 + np.arange(n)
    out, out_labels = expand((x, labels), seed=5)
    assert out.shape == (5 * n, 28, 28) and out_labels.shape == (5 * n,)
    # the label of each output row is readable from its pixels
    encoded = out.reshape(5 * n, -1).max(axis=1, where=out.reshape(5 * n, -1) < 100, initial=0) - 1
    np.testing.assert_array_equal(out_labels, encoded.astype(np.int64))
    idx = (out.reshape(5 * n, -1).max(axis=1) - 100).astype(int)
    np.testing.assert_array_equal(out_labels, labels[idx])
    assert np.bincount(idx, minlength=n).tolist() == [5] * n


def test_five_times_count_and_dtypes_preserved():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.uint8, np.float64):
        x = (rng.random((13, 784)) * 200).astype(dtype)
        y = rng.integers(0, 10, 13).astype(np.uint8)
        out, labels = expand((x, y), seed=0)
        assert out.shape == (65, 784) and out.dtype == dtype and out.flags.c_contiguous
        assert labels.shape == (65,) and labels.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == (5 * np.bincount(y, minlength=10)).tolist()


def test_seed_determinism():
    rng = np.random.default_rng(3)
    x = rng.random((40, 784), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    a, la = expand((x, y), seed=7)
    b, lb = expand((x, y), seed=7)
    c, lc = expand((x, y), seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    # a different order of the same images
    np.testing.assert_array_equal(np.sort(a, axis=0), np.sort(c, axis=0))
    assert sorted(map(bytes, a)) == sorted(map(bytes, c))
    # the input is not modified
    np.testing.assert_array_equal(x, np.random.default_rng(3).random((40, 784), dtype=np.float32))


def test_output_is_a_shuffle_of_the_five_blocks():
    rng = np.random.default_rng(4)
    x = rng.random((30, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 30)
    out, labels = expand((x, y), seed=9)
    blocks = np.concatenate([np.stack([s[i] for i in range(30)]) for s in zip(*map(_expected_shifts, x))])
    block_labels = np.tile(y, 5)
    # order-independent: the multiset of (image, label) rows is the same
    want = sorted(bytes(img) + bytes(np.int64(lab)) for img, lab in zip(blocks, block_labels))
    got = sorted(bytes(img) + bytes(np.int64(lab)) for img, lab in zip(out, labels))
    assert got == want
    # and it really is shuffled, not the blocks in order
    assert not np.array_equal(out, blocks)


def test_channel_and_non_square_layouts():
    rng = np.random.default_rng(6)
    x = rng.integers(1, 255, (3, 2, 5, 7)).astype(np.uint8)  # (N, C, H, W), H != W
    out, labels = expand((x, np.array([0, 1, 2])), seed=1)
    assert out.shape == (15, 2, 5, 7) and out.dtype == np.uint8
    blocks = _unshuffle(out, 3, seed=1)
    for i in range(3):
        for k, want in enumerate(_expected_shifts(x[i])):
            np.testing.assert_array_equal(blocks[k][i], want)
    x3 = rng.random((4, 3, 2), dtype=np.float32)  # (N, H, W), the smallest shiftable width
    out3, _ = expand((x3, np.arange(4)), seed=2)
    for k, block in enumerate(_unshuffle(out3, 4, seed=2)):
        for i in range(4):
            np.testing.assert_array_equal(block[i], _expected_shifts(x3[i])[k])


def test_empty_set():
    out, labels = expand((np.zeros((0, 784), np.float32), np.zeros(0, np.int64)))
    assert out.shape == (0, 784) and labels.shape == (0,)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros(5, np.float32), np.zeros(5, np.int64), r"shape \(5,\).*scalar"),
        (np.zeros((5, 783), np.float32), np.zeros(5, np.int64), r"\(5, 783\).*783 pixels is not a square"),
        (np.zeros((5, 1), np.float32), np.zeros(5, np.int64), r"1x1.*at least 2"),
        (np.zeros((5, 1, 28), np.float32), np.zeros(5, np.int64), r"\(5, 1, 28\).*1x28.*at least 2"),
        (np.zeros((5, 3, 28, 1), np.float32), np.zeros(5, np.int64), r"28x1.*at least 2"),
        (np.zeros((5, 1, 1, 4, 4), np.float32), np.zeros(5, np.int64), r"5 dimensions"),
        (np.zeros((5, 784), np.float32), np.zeros(4, np.int64), r"count mismatch.*\(5, 784\).*\(4,\)"),
        (np.zeros((5, 784), np.float32), np.zeros(5, np.float32), r"\(5,\) are float32, expected integers"),
        (np.zeros((5, 784), np.float32), np.zeros((5, 1), np.int64), r"labels have shape \(5, 1\)"),
        (np.zeros((5, 784), object), np.zeros(5, np.int64), r"are object, expected numbers"),
    ],
)
def test_refuses_what_it_cannot_shift(images, labels, match):
    with pytest.raises(DataError, match=match):
        expand((images, labels))
    assert issubclass(DataError, ValueError)


def test_refuses_a_non_pair():
    with pytest.raises(DataError, match="pair"):
        expand(np.zeros((5, 784), np.float32))


def test_peak_memory_near_the_output_size():
    n = 10_000
    x = np.random.default_rng(7).random((n, 784), dtype=np.float32)
    y = np.random.default_rng(8).integers(0, 10, n)
    out_bytes = 5 * n * 784 * 4  # ~157 MB
    tracemalloc.start()
    try:
        out, labels = expand((x, y), seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == out_bytes and out.dtype == np.float32
    # tracemalloc sees NumPy's buffers (else the bound below proves nothing)
    assert peak >= out_bytes
    assert peak < 1.3 * out_bytes, f"peak {peak / 1e6:.1f} MB for a {out_bytes / 1e6:.1f} MB output"
    # spot check content so the test cannot pass on an unfilled array
    blocks = _unshuffle(out, n, seed=0)
    np.testing.assert_array_equal(blocks[0], x)
    np.testing.assert_array_equal(blocks[4].reshape(n, 28, 28)[:, :, :27], x.reshape(n, 28, 28)[:, :, 1:])
    assert (blocks[4].reshape(n, 28, 28)[:, :, 27] == 0).all()
    np.testing.assert_array_equal(labels, np.tile(y, 5)[np.argsort(np.random.default_rng(0).permutation(5 * n))])
