"""Layers, graphs and the network runner on top of fastconv's ops.

    from fastconv import nn
    model = nn.Sequential(("conv1", nn.Conv2d(1, 6, 5)), ("relu1", nn.ReLU()),
                          ("pool1", nn.MaxPool2d(2)), ("flat", nn.Flatten()),
                          ("fc", nn.Linear(6 * 14 * 14, 10)))
    y = model(x)                       # planned once per input shape and backend
    nn.print_summary(model, (1, 1, 32, 32))
"""
from .graph import Graph, Plan, Sequential, format_summary, print_summary, summary
from .layers import (
    Add,
    AvgPool2d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Layer,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
    Softmax,
)

__all__ = ["Graph", "Plan", "Sequential", "summary", "format_summary", "print_summary", "Layer",
           "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "LocalResponseNorm", "ReLU",
           "Dropout", "Flatten", "Linear", "Softmax", "BatchNorm2d", "Concat", "Add"]
