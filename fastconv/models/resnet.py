"""ResNet-50 (He et al. 2015) in torchvision's layout (v1.5: the stride sits on the 3x3
conv of each bottleneck), with torchvision's module names as node names, so a
torchvision ``state_dict`` loads one to one (``model.load_state_dict(...)``).

Bottleneck: 1x1 reduce -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 expand (x4)
-> BN, plus the shortcut (identity, or 1x1 stride conv + BN where the shape changes),
added and passed through ReLU. The planner folds every BN into its conv and fuses the
ReLUs into the convs and the adds.
"""
from __future__ import annotations

import numpy as np

from .. import nn

_STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # width, blocks, first stride


def _conv_bn(g, name, bn_name, cin, cout, k, stride, rng, inputs=None):
    g.add(name, nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, rng=rng),
          inputs)
    return g.add(bn_name, nn.BatchNorm2d(cout))


def resnet50(num_classes=1000, *, seed=0):
    """224x224x3 in; about 25.6M parameters."""
    rng = np.random.default_rng(seed)
    g = nn.Graph(name="resnet50")
    _conv_bn(g, "conv1", "bn1", 3, 64, 7, 2, rng)
    g.add("relu", nn.ReLU())
    g.add("maxpool", nn.MaxPool2d(3, 2, padding=1))                       # [56x56x64]
    cin = 64
    for stage, (width, blocks, stride) in enumerate(_STAGES, start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            s = stride if b == 0 else 1
            x = g.nodes[-1].name
            _conv_bn(g, f"{p}.conv1", f"{p}.bn1", cin, width, 1, 1, rng, x)
            g.add(f"{p}.relu1", nn.ReLU())
            _conv_bn(g, f"{p}.conv2", f"{p}.bn2", width, width, 3, s, rng)
            g.add(f"{p}.relu2", nn.ReLU())
            out = _conv_bn(g, f"{p}.conv3", f"{p}.bn3", width, width * 4, 1, 1, rng)
            shortcut = x
            if b == 0:
                shortcut = _conv_bn(g, f"{p}.downsample.0", f"{p}.downsample.1", cin,
                                    width * 4, 1, s, rng, x)
            g.add(f"{p}.add", nn.Add(), [out, shortcut])
            g.add(f"{p}.relu", nn.ReLU())
            cin = width * 4
    g.add("avgpool", nn.GlobalAvgPool2d())
    g.add("flatten", nn.Flatten())
    g.add("fc", nn.Linear(cin, num_classes, rng=rng))
    return g
