"""AlexNet and VGG16 forward on the GPU in img/s, fastconv's cuda backend next to
PyTorch/cuDNN on the same GPU (when torch sees CUDA), batch 1 and 64.

    pip install -e ".[cuda,test]" && python benchmarks/gpu.py            # needs a real GPU
    python -m pytest -m gpu tests/test_cuda_paths.py                      # the GPU-only tests

The input is uploaded once; every activation stays on the device; the timer
synchronises the GPU after each forward pass. Prints a Markdown table for RESULTS.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv
from fastconv import models


def _timed(fn, sync, seconds):
    fn()
    sync()  # warm-up: JIT compile, weight upload, cuDNN autotune
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _torch_model(torch, name):
    t = torch.nn
    if name == "alexnet":  # the lecture's AlexNet, as fastconv.models.alexnet builds it
        layers = [t.Conv2d(3, 96, 11, 4), t.ReLU(), t.MaxPool2d(3, 2), t.LocalResponseNorm(5, k=2.0),
                  t.Conv2d(96, 256, 5, padding=2, groups=2), t.ReLU(), t.MaxPool2d(3, 2),
                  t.LocalResponseNorm(5, k=2.0), t.Conv2d(256, 384, 3, padding=1), t.ReLU(),
                  t.Conv2d(384, 384, 3, padding=1, groups=2), t.ReLU(),
                  t.Conv2d(384, 256, 3, padding=1, groups=2), t.ReLU(), t.MaxPool2d(3, 2),
                  t.Flatten(), t.Linear(9216, 4096), t.ReLU(), t.Linear(4096, 4096), t.ReLU(),
                  t.Linear(4096, 1000)]
    else:
        layers, cin = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"]:
            layers += [t.MaxPool2d(2)] if v == "M" else [t.Conv2d(cin, v, 3, padding=1), t.ReLU()]
            cin = cin if v == "M" else v
        layers += [t.Flatten(), t.Linear(25088, 4096), t.ReLU(), t.Linear(4096, 4096), t.ReLU(),
                   t.Linear(4096, 1000)]
    return t.Sequential(*layers).eval().cuda()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    from numba import cuda

    info = fastconv.info()
    print(f"fastconv cuda backend: {info.get('cuda', info.get('cuda_unavailable'))}")
    try:
        import torch
        torch_ok = torch.cuda.is_available()
    except ImportError:
        torch, torch_ok = None, False
    print("| network | batch | fastconv img/s | PyTorch img/s | fastconv / PyTorch |")
    print("|---|---:|---:|---:|---:|")
    for name, size in (("alexnet", 227), ("vgg16", 224)):
        model = getattr(models, name)()
        tm = _torch_model(torch, name) if torch_ok else None
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
            xd = cuda.to_device(x)
            ours = _timed(lambda: model(xd), cuda.synchronize, args.seconds)
            row = f"| {name} | {batch} | {batch / ours:.1f} |"
            if tm is not None:
                xt = torch.from_numpy(x).cuda()
                with torch.no_grad():
                    theirs = _timed(lambda: tm(xt), torch.cuda.synchronize, args.seconds)
                row += f" {batch / theirs:.1f} | {theirs / ours:.2f} |"
            else:
                row += " - | - |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
