"""VGG-16 and VGG-19 (Simonyan & Zisserman 2014), configurations D and E: 3x3 pad-1
convs in five blocks, each closed by a 2x2/2 max pool, then FC 4096-4096-1000.
Node names follow torchvision's ``features.<i>`` / ``classifier.<i>`` indices so a
torchvision state_dict maps one to one."""
from __future__ import annotations

import numpy as np

from .. import nn

_CONFIGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def _vgg(depth, num_classes, seed):
    rng = np.random.default_rng(seed)
    layers, channels, i = [], 3, 0
    for v in _CONFIGS[depth]:
        if v == "M":
            layers.append((f"features.{i}", nn.MaxPool2d(2)))
            i += 1
        else:
            layers.append((f"features.{i}", nn.Conv2d(channels, v, 3, padding=1, rng=rng)))
            layers.append((f"features.{i + 1}", nn.ReLU()))
            channels, i = v, i + 2
    layers += [
        ("flatten", nn.Flatten()),
        ("classifier.0", nn.Linear(512 * 7 * 7, 4096, rng=rng)), ("classifier.1", nn.ReLU()),
        ("classifier.2", nn.Dropout()),
        ("classifier.3", nn.Linear(4096, 4096, rng=rng)), ("classifier.4", nn.ReLU()),
        ("classifier.5", nn.Dropout()),
        ("classifier.6", nn.Linear(4096, num_classes, rng=rng)),
    ]
    return nn.Sequential(*layers, name=f"vgg{depth}")


def vgg16(num_classes=1000, *, seed=0):
    return _vgg(16, num_classes, seed)


def vgg19(num_classes=1000, *, seed=0):
    return _vgg(19, num_classes, seed)
