"""``Network.SGD`` prints network3's lines character for character and measures accuracy
network3's way (mean over full mini-batches). The expected text was recorded with the
trainer before the training-loop redesign (commit e71d486)."""
import contextlib
import io

import numpy as np
import pytest

from fastmom import FullyConnectedLayer, Network, ReLU, SoftmaxLayer


def problem(n, offset):
    k = np.arange(offset, offset + n * 12, dtype=np.int64)
    x = ((k * 7919 + 13) % 101).reshape(n, 12).astype(np.float32) / 100
    return x, (x[:, :4].sum(1) * 3).astype(np.int64) % 3


def net():
    return Network([FullyConnectedLayer(12, 6, activation_fn=ReLU, p_dropout=0.25),
                    SoftmaxLayer(6, 3, p_dropout=0.25)], 4, device="reference", seed=11)


TRAIN, VAL, TEST = problem(2402, 0), problem(30, 50000), problem(21, 90000)

BOTH = ("Training mini-batch number 0\nEpoch 0: validation accuracy 46.43%\n"
        "This is the best validation accuracy to date.\nThe corresponding test accuracy is 50.00%\n"
        "Training mini-batch number 1000\nEpoch 1: validation accuracy 32.14%\nFinished training network.\n"
        "Best validation accuracy of 46.43% obtained at iteration 599\nCorresponding test accuracy of 50.00%\n")
VAL_ONLY = ("Training mini-batch number 0\nEpoch 0: validation accuracy 46.43%\n"
            "This is the best validation accuracy to date.\nTraining mini-batch number 1000\n"
            "Epoch 1: validation accuracy 32.14%\nFinished training network.\n"
            "Best validation accuracy of 46.43% obtained at iteration 599\n")
NEITHER = "Training mini-batch number 0\nTraining mini-batch number 1000\nFinished training network.\n"


@pytest.mark.parametrize("val,test,expected,accuracies", [
    (VAL, TEST, BOTH, [(13 / 28, 0.5), (9 / 28, 0.45)]),
    (VAL, None, VAL_ONLY, [(13 / 28, None), (9 / 28, None)]),
    (None, None, NEITHER, [(None, None), (None, None)]),
], ids=["validation-and-test", "validation-only", "neither"])
def test_sgd_prints_network3_lines(val, test, expected, accuracies):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = net().SGD(TRAIN, 2, 4, 0.1, val, test, lmbda=0.1, momentum=0.5)
    assert out.getvalue() == expected
    # drop_last: 28 of the 30 validation images and 20 of the 21 test images count
    for record, (val_acc, test_acc) in zip(history, accuracies, strict=True):
        assert record["validation_accuracy"] == (None if val_acc is None else pytest.approx(val_acc))
        assert record["test_accuracy"] == (None if test_acc is None else pytest.approx(test_acc))
    assert history.best_iteration == (599 if val is not None else None)
