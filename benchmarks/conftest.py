"""pytest-benchmark fixtures: thread count, peers, and the extra_info every row records.

Run:  pytest benchmarks --benchmark-only [--benchmark-save=NAME | --benchmark-autosave]
      pytest benchmarks --benchmark-only --benchmark-compare=0001   (against a saved run)
(threads: FASTCONV_BENCH_THREADS, default 2). Each group is one op on one shape (or one
model at one batch), so the backends and the peers sit side by side. Every row's
extra_info has the rate (gflops = 2*MACs / median, or gbytes_per_s = bytes read +
written / median), what was counted, threads, ISA, versions and the measured peak; the
saved JSON adds, per group, speedup_naive, speedup_numpy and ratio_best_peer (ratios of
medians; ``fastconv bench`` gives the alternating-rounds version).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastconv  # noqa: E402
from fastconv import bench  # noqa: E402

THREADS = int(os.environ.get("FASTCONV_BENCH_THREADS", "2"))

# Implementations per kind of case: the fastconv backends (cuda only on a real GPU), then the
# peers, each skipped when it is not installed or cannot run the case.
BACKENDS = [b for b in fastconv.backends() if b != "cuda" or bench.real_gpu()]


# Rows that count as peers for ratio_best_peer (numpy.dot: test_bench_gemv's OpenBLAS GEMV;
# its numpy.copyto is a bandwidth reference, not a peer).
PEER_IMPLS = set(bench.PEERS) | {"numpy.dot"}


def impls(case_peers):
    return BACKENDS + list(case_peers)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    bench.limit_threads(THREADS)
    bench.torch_peer(THREADS)


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


@pytest.fixture(scope="session")
def ort():
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def machine():
    return bench.header(THREADS)


def callable_for(case, impl):
    """(fn, scale) for ``impl`` on ``case``: naive on a slice with its work-ratio scale,
    anything else at scale 1; skips when the impl is not installed or cannot run it."""
    if impl in bench.PEERS and impl not in bench.available_peers():
        pytest.skip(f"{impl} is not installed")
    try:
        if impl == "naive":
            return case.naive()
        return case.make(impl), 1.0
    except NotImplementedError as exc:
        pytest.skip(f"{impl} cannot run {case.name}: {exc}")


@pytest.fixture
def record(benchmark, machine):
    """Call as record(case, scale=1.0) (or record(flops=..., bytes_moved=..., counted=...))
    after the benchmark ran."""

    def _record(case=None, scale=1.0, flops=None, bytes_moved=None, **extra):
        median = benchmark.stats.stats.median * scale  # naive slices: scaled to the layer
        if case is not None:
            extra.setdefault("counted", case.counted)
            extra.setdefault("shape", case.shape())
            if case.unit == "GFLOP/s":
                flops = case.work()
            else:
                bytes_moved = case.work()
        if flops:
            benchmark.extra_info["gflops"] = round(flops / median / 1e9, 3)
        if bytes_moved:
            benchmark.extra_info["gbytes_per_s"] = round(bytes_moved / median / 1e9, 3)
        if scale != 1.0:
            benchmark.extra_info["naive_scaled_by"] = scale
        benchmark.extra_info.update(
            median_s=median, threads=THREADS, isa=machine["isa"],
            peak_gflops=machine["peak_gflops"], fastconv=machine["versions"]["fastconv"],
            numpy=np.__version__, versions=machine["versions"], **extra)
    return _record


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Per group: each row's speedup over naive and numpy and its ratio to the best peer
    (> 1: faster), from the medians (naive's scaled up when it ran on a slice)."""
    groups = {}
    for b in output_json["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    for rows in groups.values():
        med = {r["params"].get("impl"): r["extra_info"].get("median_s", r["stats"]["median"])
               for r in rows if r.get("params")}
        peers = [m for i, m in med.items() if i in PEER_IMPLS]
        for r in rows:
            mine = r["extra_info"].get("median_s", r["stats"]["median"])
            r["extra_info"]["speedup_naive"] = med["naive"] / mine if "naive" in med else None
            r["extra_info"]["speedup_numpy"] = med["numpy"] / mine if "numpy" in med else None
            r["extra_info"]["ratio_best_peer"] = min(peers) / mine if peers else None
