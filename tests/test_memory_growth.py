"""No memory growth over many calls: resident set size (``/proc/self/statm``) after a warm-up.

* 10,000 calls of every op (small shapes) on every host backend but the naive spec: a
  per-call leak of one small workspace (>= ~1 KB) would add >= 10 MB, above the bound.
* 10,000 LeNet-5 forwards (batch 1, ~1.5 s): the runner's per-layer path at a tiny shape,
  where a per-forward leak of a few hundred bytes would show.
* 200 AlexNet forwards (batch 1, ~20 ms each on 2 cores): leaking any of its per-forward
  buffers (conv workspaces, activations) would exceed the bound; small per-call leaks
  are what the LeNet-5 and per-op loops catch.

Warm-up first (numba compiles, OpenMP starts its threads, malloc arenas settle), then
``gc.collect()`` and a baseline; the bounds leave room for allocator noise.
"""
from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv import _registry

import conftest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/statm")

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _calls(rng):
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, w, b = r(1, 4, 10, 10), r(8, 4, 3, 3), r(8)
    return {
        "conv2d": ((x, w, b), dict(padding=1)),
        "max_pool2d": ((x, 3), dict(stride=2, padding=1, ceil_mode=True)),
        "avg_pool2d": ((x, 3), dict(stride=2, padding=1, count_include_pad=False)),
        "global_avg_pool2d": ((x,), {}),
        "gemm": ((r(7, 9), r(9, 12), r(12)), dict(alpha=0.5)),
        "linear": ((r(3, 20), r(10, 20), r(10)), {}),
        "relu": ((x,), {}),
        "softmax": ((r(4, 10),), dict(axis=1)),
        "local_response_norm": ((x, 3), {}),
        "batch_norm": ((x, r(4), np.abs(r(4)) + 1, r(4), r(4)), {}),
    }


def _growth(fn, n, warmup):
    for _ in range(warmup):
        fn()
    gc.collect()
    before = rss()
    for _ in range(n):
        fn()
    gc.collect()
    return rss() - before


@pytest.mark.host_only  # backend: every host backend in KERNELS (conftest)
def test_ops_10k_calls_no_rss_growth(backend):
    if conftest.runs_like_naive(backend):
        pytest.skip("the pure-Python spec allocates nothing outside Python objects; "
                    "10,000 calls of it would take minutes")
    calls = {op: c for op, c in _calls(np.random.default_rng(0)).items()
             if (op, backend) in _registry.KERNELS}
    assert calls

    def every_op():
        for op, (args, kw) in calls.items():
            getattr(fc, op)(*args, backend=backend, **kw)

    n = 10_000
    grown = _growth(every_op, n, warmup=300)
    assert grown < 8 * MB, (f"{backend}: RSS grew {grown / MB:.1f} MB over {n} calls of "
                            f"each of {sorted(calls)}")


# 10,000 LeNet-5 forwards (the per-layer path at a tiny shape), 200 AlexNet ones (its large
# per-forward buffers); see the module doc for what each detects.
@pytest.mark.parametrize("name,shape,forwards,warmup", [
    ("lenet5", (1, 1, 32, 32), 10_000, 200), ("alexnet", (1, 3, 227, 227), 200, 5)])
def test_model_forwards_no_rss_growth(name, shape, forwards, warmup):
    from fastconv import models

    model = getattr(models, name)()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref = model(x).copy()
    grown = _growth(lambda: model(x), forwards, warmup=warmup)
    np.testing.assert_array_equal(model(x), ref)
    assert grown < 8 * MB, f"{name}: RSS grew {grown / MB:.1f} MB over {forwards} forwards"
