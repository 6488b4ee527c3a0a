"""pytest-benchmark fixtures: thread count, peers, and the extra_info every row records.

Run:  pytest benchmarks --benchmark-only [--benchmark-save=NAME]
(threads: FASTCONV_BENCH_THREADS, default 2).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastconv  # noqa: E402

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    fastconv.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(THREADS)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


@pytest.fixture(scope="session")
def ort():
    return pytest.importorskip("onnxruntime")


@pytest.fixture
def record(benchmark):
    """Call as record(flops=..., bytes=...) after the benchmark ran."""
    info = fastconv.info()

    def _record(flops=None, bytes_moved=None, **extra):
        median = benchmark.stats.stats.median
        if flops:
            benchmark.extra_info["gflops"] = round(flops / median / 1e9, 2)
        if bytes_moved:
            benchmark.extra_info["gbytes_per_s"] = round(bytes_moved / median / 1e9, 2)
        benchmark.extra_info.update(threads=THREADS, isa=info.get("isa"),
                                    fastconv=info["version"], numpy=np.__version__, **extra)
    return _record
