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
