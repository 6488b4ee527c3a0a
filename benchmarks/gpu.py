"""AlexNet and VGG16 forward on the GPU in img/s, fastconv's cuda backend next to
PyTorch/cuDNN on the same GPU (when torch sees CUDA), batch 1 and 64; then SGEMM and
named conv layers in GFLOP/s next to cuBLAS/cuDNN.

PyTorch runs in strict FP32 (TF32 off for cuBLAS and cuDNN): fastconv computes in
FP32 on the CUDA cores, and TF32 tensor cores would compare a different arithmetic.

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
from layers import CONV_LAYERS  # benchmarks/ is on the path when run as a script


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


# (name, N, C, H, W, K, R, S, stride, padding, groups): layers of the CPU conv suite
# (benchmarks/layers.py) at batch sizes that fill a GPU, and ResNet's res2 1x1 reduce.
_CPU_LAYERS = {layer[0]: layer for layer in CONV_LAYERS}
GPU_CONV_LAYERS = [(f"{name} b{batch}", batch, *_CPU_LAYERS[name][2:]) for name, batch in (
    ("alexnet.conv1", 32), ("alexnet.conv2", 32), ("alexnet.conv3", 32),
    ("vgg16.conv1_2", 8), ("vgg16.conv3_2", 8), ("vgg16.conv5_2", 8))] + [
    ("resnet50 1x1 256->64 b32", 32, 256, 56, 56, 64, 1, 1, 1, 0, 1)]
GEMM_SIZES = (1024, 4096)


def _ops_table(torch, cuda, seconds):
    """SGEMM and conv layers in GFLOP/s, fastconv cuda next to cuBLAS/cuDNN (FP32)."""
    rng = np.random.default_rng(0)
    print("\n| op | fastconv GFLOP/s | PyTorch GFLOP/s | fastconv / PyTorch |")
    print("|---|---:|---:|---:|")
    cases = []
    for n in GEMM_SIZES:
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        cases.append((f"sgemm {n}^3", 2.0 * n ** 3, (a, b),
                      lambda a, b: fastconv.gemm(a, b, backend="cuda"), lambda a, b: a @ b))
    for name, N, C, H, W, K, R, S, st, pad, g in GPU_CONV_LAYERS:
        P, Q = (H + 2 * pad - R) // st + 1, (W + 2 * pad - S) // st + 1
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = (rng.standard_normal((K, C // g, R, S)) * 0.05).astype(np.float32)
        bias = rng.standard_normal(K).astype(np.float32)
        flops = 2.0 * N * K * P * Q * (C // g) * R * S
        cases.append((name, flops, (x, w, bias),
                      lambda x, w, b, st=st, pad=pad, g=g: fastconv.conv2d(
                          x, w, b, stride=st, padding=pad, groups=g, backend="cuda"),
                      lambda x, w, b, st=st, pad=pad, g=g: torch.nn.functional.conv2d(
                          x, w, b, stride=st, padding=pad, groups=g)))
    for name, flops, host, ours_fn, torch_fn in cases:
        dev = [cuda.to_device(h) for h in host]
        ours = _timed(lambda: ours_fn(*dev), cuda.synchronize, seconds)
        row = f"| {name} | {flops / ours / 1e9:.0f} |"
        if torch is not None:
            tdev = [torch.from_numpy(h).cuda() for h in host]
            with torch.no_grad():
                theirs = _timed(lambda: torch_fn(*tdev), torch.cuda.synchronize, seconds)
            row += f" {flops / theirs / 1e9:.0f} | {theirs / ours:.2f} |"
        else:
            row += " - | - |"
        print(row, flush=True)


PLAN_GEMM_SIZES = (1024, 2048, 4096)
PLANS = [("big", 1), ("big", 2), ("big", 4), ("small", 1), ("small", 2), ("small", 4),
         ("small", 8)]


def _plans_table(cuda, seconds):
    """Each forced GEMM plan (tile, k splits) against what gemm_plan picks: the data
    behind the plan rule in fastconv/backends/numba_cuda.py. Times in microseconds."""
    from fastconv import _checks
    from fastconv.backends import numba_cuda as nc

    rng = np.random.default_rng(0)
    cases = []
    for n in PLAN_GEMM_SIZES:
        a, b = (cuda.to_device(rng.standard_normal((n, n)).astype(np.float32)) for _ in "ab")
        cases.append((f"sgemm {n}^3", nc.gemm_plan(n, n, n),
                      lambda plan, a=a, b=b: nc.gemm(a, b, None, 1.0, 0.0, False, False,
                                                     path=plan[0], splits=plan[1])))
    batch1 = [(name.split(" ")[0] + " b1", 1, *rest) for name, _, *rest in GPU_CONV_LAYERS[1:]]
    layers = GPU_CONV_LAYERS + batch1
    for name, N, C, H, W, K, R, S, st, pad, g in layers:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = (rng.standard_normal((K, C // g, R, S)) * 0.05).astype(np.float32)
        p = _checks.check_conv2d(x, w, None, st, pad, 1, g)
        xd, wd = cuda.to_device(x), cuda.to_device(w)
        crs = C // g * R * S
        cases.append((name, nc.gemm_plan(K // g, N * p.P * p.Q, crs, g),
                      lambda plan, xd=xd, wd=wd, p=p: nc.conv2d(
                          xd, wd, None, p, None, algorithm="implicit_gemm", plan=plan)))
    print("\n| case | auto plan | " + " | ".join(f"{t}/{k}" for t, k in PLANS) + " |")
    print("|---|---|" + "---:|" * len(PLANS))
    for name, auto, run in cases:
        times = [_timed(lambda: run(plan), cuda.synchronize, seconds) * 1e6 for plan in PLANS]
        best = min(times)
        cells = [f"**{t:.0f}**" if t == best else f"{t:.0f}" for t in times]
        print(f"| {name} | {auto[0]}/{auto[1]} | " + " | ".join(cells) + " |", flush=True)


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
    parser.add_argument("--skip-networks", action="store_true")
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--plans", action="store_true",
                        help="only time every forced GEMM plan (tile, k splits) per case")
    args = parser.parse_args(argv)
    from numba import cuda

    if args.plans:
        return _plans_table(cuda, args.seconds)
    info = fastconv.info()
    print(f"fastconv cuda backend: {info.get('cuda', info.get('cuda_unavailable'))}")
    try:
        import torch
        torch_ok = torch.cuda.is_available()
        torch.backends.cuda.matmul.allow_tf32 = False  # strict FP32, as fastconv computes
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
              f"{torch.cuda.get_device_name() if torch_ok else 'no CUDA'}")
    except ImportError:
        torch, torch_ok = None, False
    if not args.skip_ops:
        _ops_table(torch if torch_ok else None, cuda, args.seconds)
    if args.skip_networks:
        return
    print("\n| network | batch | fastconv img/s | PyTorch img/s | fastconv / PyTorch |")
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
