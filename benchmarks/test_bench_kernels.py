"""Named layers (benchmarks/layers.py), GEMM sizes and memory-bound ops: every backend and
peer side by side, one group per op and shape. The cases and their peers come from
fastconv.bench, the same code ``fastconv bench`` runs."""
import pytest

from conftest import THREADS, callable_for, impls
from fastconv import bench

CASES = bench.cases(ops=["conv2d", "gemm"], threads=THREADS)
MEMORY = bench.cases(ops=[op for op in bench.OPS if op not in ("conv2d", "gemm", "linear")],
                     threads=THREADS)


def _run(benchmark, record, case, impl):
    benchmark.group = f"{case.op} {case.name} {case.shape()}"
    fn, scale = callable_for(case, impl)
    if impl == "naive":  # pure Python, ~0.1 s a call: a few rounds are plenty
        benchmark.pedantic(fn, rounds=3, iterations=1)
    else:
        fn()  # warm-up outside the timer (Numba JIT, page faults, thread pools)
        benchmark(fn)
    record(case, scale)


def _pairs(cases):
    """(case, impl) for every backend and every peer of the case's op."""
    return [pytest.param(c, impl, id=f"{c.name}-{impl}")
            for c in cases for impl in impls(c.peers())]


@pytest.mark.parametrize("case,impl", _pairs(CASES))
def test_kernel(benchmark, record, case, impl):
    _run(benchmark, record, case, impl)


@pytest.mark.parametrize("case,impl", _pairs(MEMORY))
def test_memory_op(benchmark, record, case, impl):
    _run(benchmark, record, case, impl)
