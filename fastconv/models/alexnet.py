"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013).

The lecture's AlexNet: 227x227x3 in; CONV1 96 11x11/4 -> 55x55x96, POOL1 3x3/2,
NORM1, CONV2 256 5x5 pad 2 (groups 2), POOL2, NORM2, CONV3 384 3x3 pad 1, CONV4 384
(groups 2), CONV5 256 (groups 2), POOL3 -> 6x6x256, FC6 4096, FC7 4096, FC8 1000:
about 61M parameters. ``variant="torchvision"`` is torchvision's 224x224 layout
(64/192/384/256/256 channels, no groups, no LRN, adaptive pool to 6x6), so that
its weights load.
"""
from __future__ import annotations

import numpy as np

from .. import nn


def _classifier(rng, in_features, hidden, classes):
    return [
        ("fc6", nn.Linear(in_features, hidden, rng=rng)), ("relu6", nn.ReLU()),
        ("drop6", nn.Dropout()),
        ("fc7", nn.Linear(hidden, hidden, rng=rng)), ("relu7", nn.ReLU()),
        ("drop7", nn.Dropout()),
        ("fc8", nn.Linear(hidden, classes, rng=rng)),
    ]


def alexnet(num_classes=1000, variant="original", *, seed=0):
    rng = np.random.default_rng(seed)
    if variant == "torchvision":
        # torchvision.models.alexnet, with its module names (features.<i>, classifier.<i>)
        # as node names so its state_dict loads one to one. Its AdaptiveAvgPool2d((6, 6))
        # is the identity for 224x224 inputs (the features already end at 6x6).
        layers = [
            ("features.0", nn.Conv2d(3, 64, 11, stride=4, padding=2, rng=rng)),
            ("features.1", nn.ReLU()), ("features.2", nn.MaxPool2d(3, 2)),
            ("features.3", nn.Conv2d(64, 192, 5, padding=2, rng=rng)),
            ("features.4", nn.ReLU()), ("features.5", nn.MaxPool2d(3, 2)),
            ("features.6", nn.Conv2d(192, 384, 3, padding=1, rng=rng)), ("features.7", nn.ReLU()),
            ("features.8", nn.Conv2d(384, 256, 3, padding=1, rng=rng)), ("features.9", nn.ReLU()),
            ("features.10", nn.Conv2d(256, 256, 3, padding=1, rng=rng)),
            ("features.11", nn.ReLU()), ("features.12", nn.MaxPool2d(3, 2)),
            ("flatten", nn.Flatten()),
            ("classifier.0", nn.Dropout()), ("classifier.1", nn.Linear(9216, 4096, rng=rng)),
            ("classifier.2", nn.ReLU()), ("classifier.3", nn.Dropout()),
            ("classifier.4", nn.Linear(4096, 4096, rng=rng)), ("classifier.5", nn.ReLU()),
            ("classifier.6", nn.Linear(4096, num_classes, rng=rng)),
        ]
        return nn.Sequential(*layers, name="alexnet-torchvision")
    if variant != "original":
        raise ValueError(f"variant={variant!r} must be 'original' or 'torchvision'")
    return _alexnet_like(rng, num_classes, conv1=(96, 11, 4, 0), widths=(256, 384, 384, 256),
                         groups=2, name="alexnet")


def zfnet(num_classes=1000, *, seed=0):
    """AlexNet with CONV1 96 7x7/2 and CONV3-5 at 512/1024/512 (no groups), 224x224 in."""
    rng = np.random.default_rng(seed)
    return _alexnet_like(rng, num_classes, conv1=(96, 7, 2, 1), widths=(256, 512, 1024, 512),
                         groups=1, name="zfnet", conv2_stride=2)


def _alexnet_like(rng, num_classes, conv1, widths, groups, name, conv2_stride=1):
    c1, k1, s1, p1 = conv1
    w2, w3, w4, w5 = widths
    layers = [
        ("conv1", nn.Conv2d(3, c1, k1, stride=s1, padding=p1, rng=rng)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, 2, ceil_mode=name == "zfnet")),
        ("norm1", nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)),
        ("conv2", nn.Conv2d(c1, w2, 5, stride=conv2_stride, padding=2 if conv2_stride == 1
                            else 0, groups=groups, rng=rng)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, 2, ceil_mode=name == "zfnet")),
        ("norm2", nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)),
        ("conv3", nn.Conv2d(w2, w3, 3, padding=1, rng=rng)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(w3, w4, 3, padding=1, groups=groups, rng=rng)), ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(w4, w5, 3, padding=1, groups=groups, rng=rng)), ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2)), ("flatten", nn.Flatten()),
    ] + _classifier(rng, w5 * 6 * 6, 4096, num_classes)
    return nn.Sequential(*layers, name=name)
