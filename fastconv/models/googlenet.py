"""GoogLeNet / Inception v1 (Szegedy et al. 2014), as in the paper and Caffe's
bvlc_googlenet: a 7x7/2 stem with LRN, nine Inception modules, global average pooling,
one 1000-way FC (the two auxiliary classifiers are training-only and left out).

Each Inception module runs four branches on the same input and concatenates them on
the channel axis: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3/1 max pool -> 1x1.
"""
from __future__ import annotations

import numpy as np

from .. import nn

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) output channels (the paper's table 1)
_INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _conv_relu(g, name, cin, cout, k, rng, inputs=None, **kw):
    g.add(name, nn.Conv2d(cin, cout, k, rng=rng, **kw), inputs)
    return g.add(f"{name}.relu", nn.ReLU())


def _inception(g, name, cin, rng):
    c1, r3, c3, r5, c5, pp = _INCEPTION[name]
    x = g.nodes[-1].name
    b1 = _conv_relu(g, f"inception_{name}.1x1", cin, c1, 1, rng, x)
    _conv_relu(g, f"inception_{name}.3x3_reduce", cin, r3, 1, rng, x)
    b2 = _conv_relu(g, f"inception_{name}.3x3", r3, c3, 3, rng, padding=1)
    _conv_relu(g, f"inception_{name}.5x5_reduce", cin, r5, 1, rng, x)
    b3 = _conv_relu(g, f"inception_{name}.5x5", r5, c5, 5, rng, padding=2)
    g.add(f"inception_{name}.pool", nn.MaxPool2d(3, 1, padding=1), x)
    b4 = _conv_relu(g, f"inception_{name}.pool_proj", cin, pp, 1, rng)
    g.add(f"inception_{name}.output", nn.Concat(axis=1), [b1, b2, b3, b4])
    return c1 + c3 + c5 + pp


def googlenet(num_classes=1000, *, seed=0):
    """224x224x3 in; about 7M parameters."""
    rng = np.random.default_rng(seed)
    g = nn.Graph(name="googlenet")
    _conv_relu(g, "conv1", 3, 64, 7, rng, stride=2, padding=3)           # [112x112x64]
    g.add("pool1", nn.MaxPool2d(3, 2, ceil_mode=True))                   # [56x56x64]
    g.add("norm1", nn.LocalResponseNorm(5, 1e-4, 0.75))
    _conv_relu(g, "conv2_reduce", 64, 64, 1, rng)
    _conv_relu(g, "conv2", 64, 192, 3, rng, padding=1)                   # [56x56x192]
    g.add("norm2", nn.LocalResponseNorm(5, 1e-4, 0.75))
    g.add("pool2", nn.MaxPool2d(3, 2, ceil_mode=True))                   # [28x28x192]
    c = 192
    for name in ("3a", "3b"):
        c = _inception(g, name, c, rng)                                  # [28x28x480]
    g.add("pool3", nn.MaxPool2d(3, 2, ceil_mode=True))                   # [14x14x480]
    for name in ("4a", "4b", "4c", "4d", "4e"):
        c = _inception(g, name, c, rng)                                  # [14x14x832]
    g.add("pool4", nn.MaxPool2d(3, 2, ceil_mode=True))                   # [7x7x832]
    for name in ("5a", "5b"):
        c = _inception(g, name, c, rng)                                  # [7x7x1024]
    g.add("pool5", nn.GlobalAvgPool2d())
    g.add("dropout", nn.Dropout(0.4))
    g.add("flatten", nn.Flatten())
    g.add("fc", nn.Linear(c, num_classes, rng=rng))
    return g
