"""LeNet-5 (LeCun et al. 1998) as the lecture draws it: 32x32x1 in, two 5x5 convs, two
2x2/2 pools, then fully connected layers (120-84-10 by default)."""
from __future__ import annotations

import numpy as np

from .. import nn


def lenet5(fc=(120, 84, 10), *, seed=0):
    """fc: the widths of the fully connected layers; ``fc=(120, 100, 10)`` is the lecture's
    handwritten-digit visualisation variant. ReLU activations, max pooling."""
    rng = np.random.default_rng(seed)
    layers = [
        ("conv1", nn.Conv2d(1, 6, 5, rng=rng)), ("relu1", nn.ReLU()),   # [28x28x6]
        ("pool1", nn.MaxPool2d(2)),                                     # [14x14x6]
        ("conv2", nn.Conv2d(6, 16, 5, rng=rng)), ("relu2", nn.ReLU()),  # [10x10x16]
        ("pool2", nn.MaxPool2d(2)),                                     # [5x5x16]
        ("flatten", nn.Flatten()),
    ]
    width = 16 * 5 * 5
    for i, out in enumerate(fc, start=1):
        layers.append((f"fc{i}", nn.Linear(width, out, rng=rng)))
        if i < len(fc):
            layers.append((f"relu_fc{i}", nn.ReLU()))
        width = out
    return nn.Sequential(*layers, name="lenet5")
