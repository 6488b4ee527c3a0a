"""The ``fastconv`` command line: ``fastconv info`` and ``fastconv demo``.

``demo`` runs a LeNet-5-sized forward pass (conv 6@5x5, pool, conv 16@5x5,
pool, FC 120-84-10, softmax) on every usable backend, checks that they agree,
and prints the time per backend and the speedup over the naive Python loops.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import fastconv


def _he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def lenet5_params(seed=0):
    """He-initialised LeNet-5 weights: 32x32x1 input -> 10 classes."""
    rng = np.random.default_rng(seed)
    return {
        "conv1": (_he(rng, (6, 1, 5, 5), 25), np.zeros(6, np.float32)),
        "conv2": (_he(rng, (16, 6, 5, 5), 150), np.zeros(16, np.float32)),
        "fc1": (_he(rng, (120, 400), 400), np.zeros(120, np.float32)),
        "fc2": (_he(rng, (84, 120), 120), np.zeros(84, np.float32)),
        "fc3": (_he(rng, (10, 84), 84), np.zeros(10, np.float32)),
    }


def lenet5_forward(x, params, backend):
    """x (N, 1, 32, 32) -> class probabilities (N, 10), every op on ``backend``."""
    f = fastconv
    y = f.conv2d(x, *params["conv1"], activation="relu", backend=backend)    # 28x28x6
    y = f.max_pool2d(y, 2, backend=backend)                                   # 14x14x6
    y = f.conv2d(y, *params["conv2"], activation="relu", backend=backend)    # 10x10x16
    y = f.max_pool2d(y, 2, backend=backend)                                   # 5x5x16
    y = y.reshape(y.shape[0], -1)
    y = f.relu(f.linear(y, *params["fc1"], backend=backend), backend=backend)
    y = f.relu(f.linear(y, *params["fc2"], backend=backend), backend=backend)
    y = f.linear(y, *params["fc3"], backend=backend)
    return f.softmax(y, axis=1, backend=backend)


def _time(fn, min_seconds=0.2, max_repeats=50):
    fn()  # warm-up (JIT, caches) outside the timer
    times, start = [], time.perf_counter()
    while len(times) < max_repeats and (time.perf_counter() - start < min_seconds or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_info(args):
    info = fastconv.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_demo(args):
    if args.threads:
        fastconv.set_num_threads(args.threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, 1, 32, 32)).astype(np.float32)
    params = lenet5_params()
    print(f"LeNet-5 forward, batch {args.batch}, input {x.shape}, {fastconv.get_num_threads()} threads")
    reference, rows = None, []
    for backend in fastconv.backends():
        out = lenet5_forward(x, params, backend)
        if reference is None:
            reference = out
        err = float(np.max(np.abs(out - reference)))
        seconds = _time(lambda b=backend: lenet5_forward(x, params, b))
        rows.append((backend, seconds, err))
    naive = dict((b, s) for b, s, _ in rows).get("naive")
    print(f"{'backend':<8} {'ms/batch':>10} {'img/s':>10} {'x naive':>9} {'max |diff|':>11}")
    for backend, seconds, err in rows:
        speedup = f"{naive / seconds:8.1f}x" if naive else "      -"
        print(f"{backend:<8} {seconds * 1e3:10.3f} {args.batch / seconds:10.1f} {speedup} {err:11.2e}")
    top = reference[0].argsort()[::-1][:3]
    print("image 0, top-3 classes (random weights):", ", ".join(f"{c}: {reference[0, c]:.3f}" for c in top))
    bad = [b for b, _, e in rows if e > 1e-4]
    if bad:
        print(f"backends disagree with {rows[0][0]}: {bad}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, backends, OpenMP, ISA, threads")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(func=cmd_info)
    p_demo = sub.add_parser("demo", help="LeNet-5-sized forward pass on every backend")
    p_demo.add_argument("--batch", type=int, default=4)
    p_demo.add_argument("--threads", type=int, default=None)
    p_demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
