"""Batch-1 (and small-batch) fully connected layers: memory bound, so reported in GB/s.

What is compared (each layer is one group):
  * ``c`` / ``numpy`` / ``numpy.dot``: y = x W^T + b with x (rows, in), W (out, in).
    gbytes_per_s = W bytes / median time (W is read once; x, b and y are < 1% of it).
    The c backend runs fc_sgemv_multi here (rows <= GEMV_MAX_ROWS).
  * ``numpy.copyto``: np.copyto(dst, W), the bandwidth reference.
    gbytes_per_s = 2 * W bytes / median time (read + write).
GEMV GB/s / copy GB/s is the figure of merit (target >= 0.8). OpenBLAS threads spin for
~0.1 s after a call: run with --benchmark-warmup or compare medians, not single rounds.
"""
import numpy as np
import pytest

import fastconv
from layers import FC_LAYERS

IMPLS = [b for b in ("c", "numpy") if b in fastconv.backends()] + ["numpy.dot", "numpy.copyto"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("layer", FC_LAYERS, ids=[l[0] for l in FC_LAYERS])
def test_linear_gemv(benchmark, record, layer, rows, impl):
    name, fin, fout = layer
    if impl == "numpy.copyto" and rows != 1:
        pytest.skip("the copy reference does not depend on rows")
    benchmark.group = f"linear {name} rows={rows}"
    rng = np.random.default_rng(0)
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    x = rng.standard_normal((rows, fin), dtype=np.float32)
    b = rng.standard_normal(fout, dtype=np.float32)
    if impl == "numpy.copyto":
        dst = np.empty_like(w)

        def fn():
            np.copyto(dst, w)
        moved = 2 * w.nbytes
    elif impl == "numpy.dot":
        def fn():
            return np.dot(x, w.T) + b
        moved = w.nbytes
    else:
        def fn():
            return fastconv.linear(x, w, b, backend=impl)
        moved = w.nbytes
    fn()
    benchmark(fn)
    record(bytes_moved=moved, flops=2.0 * rows * fin * fout,
           counted="bytes: W once (GEMV) or 2*W (copy, read + write); flops 2*rows*in*out")
