"""The C backend's run-time ISA variants (generic / avx2 / avx512 microkernels).

The ISA is picked once per process (``__builtin_cpu_supports``, lowered by env
``FASTCONV_ISA``), so each variant runs in a subprocess; its results come back in
an .npz and are checked here against the ONNX Runtime oracle. Without this, only
the best ISA of the test machine would ever be tested.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import conftest
from helpers import (
    assert_close,
    oracle_local_response_norm,
    ort_avg_pool2d,
    ort_batch_norm,
    ort_conv2d,
    ort_gemm,
    ort_max_pool2d,
    ort_relu,
    ort_softmax,
    rand,
)

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (op, builder() -> (arrays, kwargs), oracle, reduction)
CASES = {
    "gemm_nn": ("gemm", lambda: ([rand((67, 259), 1), rand((259, 131), 2), rand((67, 1), 3)],
                                 dict(alpha=0.5, beta=2.0)), ort_gemm, 259),
    "gemm_tt": ("gemm", lambda: ([rand((129, 33), 4), rand((17, 129), 5), None],
                                 dict(trans_a=True, trans_b=True)), ort_gemm, 129),
    "gemm_small": ("gemm", lambda: ([rand((3, 5), 6), rand((5, 7), 7), rand((7,), 8)], {}),
                   ort_gemm, 5),
    "conv3x3": ("conv2d", lambda: ([rand((2, 32, 17, 15), 9), rand((48, 32, 3, 3), 10),
                                    rand((48,), 11)], dict(padding=1)), ort_conv2d, 288),
    "conv3x3_relu_odd": ("conv2d", lambda: ([rand((1, 19, 13, 11), 12), rand((37, 19, 3, 3), 13),
                                             rand((37,), 14)],
                                            dict(padding=1, activation="relu")), ort_conv2d, 171),
    "conv1x1": ("conv2d", lambda: ([rand((2, 64, 9, 9), 15), rand((72, 64, 1, 1), 16), None], {}),
                ort_conv2d, 64),
    "conv5x5_s2_groups": ("conv2d", lambda: ([rand((1, 12, 19, 19), 17), rand((20, 6, 5, 5), 18),
                                              rand((20,), 19)],
                                             dict(stride=2, padding=(2, 1, 0, 2), groups=2)),
                          ort_conv2d, 150),
    "depthwise": ("conv2d", lambda: ([rand((2, 16, 10, 10), 20), rand((16, 1, 3, 3), 21), None],
                                     dict(groups=16, padding=1)), ort_conv2d, 9),
    "max_pool": ("max_pool2d", lambda: ([rand((2, 16, 15, 15), 22)],
                                        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
                 ort_max_pool2d, 1),
    "avg_pool": ("avg_pool2d", lambda: ([rand((2, 16, 15, 15), 23)],
                                        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                             count_include_pad=False)), ort_avg_pool2d, 9),
    "relu": ("relu", lambda: ([rand((3, 37, 11), 24)], {}), ort_relu, 1),
    "softmax": ("softmax", lambda: ([rand((5, 103), 25, scale=5)], dict(axis=-1)), ort_softmax,
                103),
    "softmax_ax1": ("softmax", lambda: ([rand((3, 9, 17), 26, scale=5)], dict(axis=1)),
                    ort_softmax, 9),
    "lrn": ("local_response_norm", lambda: ([rand((2, 24, 7, 9), 27, scale=3)],
                                            dict(size=5, alpha=1e-2, beta=0.75, k=2.0)),
            oracle_local_response_norm, 5),
    "batch_norm": ("batch_norm", lambda: ([rand((2, 24, 7, 9), 28), rand((24,), 29),
                                           rand((24,), 30, low=0.5, high=2), rand((24,), 31),
                                           rand((24,), 32)], {}), ort_batch_norm, 1),
}

_CHILD = r"""
import sys
import numpy as np
sys.path.insert(0, {here!r})
import fastconv as fc
from fastconv import _registry
from test_c_isa import CASES
out = {{"isa": np.array(_registry.backend_module("c").build_info()["isa"])}}
for name, (op, build, _, _) in CASES.items():
    arrays, kw = build()
    out[name] = getattr(fc, op)(*arrays, backend="c", **kw)
np.savez({path!r}, **out)
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_c_isa_variant(isa, tmp_path):
    conftest.check_usable("c")
    path = str(tmp_path / "out.npz")
    env = dict(os.environ, FASTCONV_ISA=isa, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(here=HERE, path=path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child with FASTCONV_ISA={isa} failed:\n{proc.stderr[-3000:]}"
    res = np.load(path)
    got_isa = str(res["isa"])
    order = ["generic", "avx2", "avx512"]
    assert got_isa in order, got_isa
    assert order.index(got_isa) <= order.index(isa), f"FASTCONV_ISA={isa} raised it to {got_isa}"
    if got_isa != isa:
        pytest.skip(f"this CPU has no {isa}: ran {got_isa} (checked by the other variants)")
    for name, (op, build, oracle, red) in CASES.items():
        arrays, kw = build()
        expected = oracle(*arrays, **kw)
        assert_close(res[name], expected, reduction=red, case=f"c[{got_isa}] {name}",
                     dtype=np.float32)
