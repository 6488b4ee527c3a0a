"""The worked examples from the CNN lecture, on every backend.

Expected values here are the lecture's (computed by hand there), not our output.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from conftest import runs_like_naive

LECTURE_INPUT = np.array([[1, 1, 1, 0, 0],
                          [0, 1, 1, 1, 0],
                          [0, 0, 1, 1, 1],
                          [0, 0, 1, 1, 0],
                          [0, 1, 1, 0, 0]], np.float32)
LECTURE_FILTER = np.array([[1, 0, 1],
                           [0, 1, 0],
                           [1, 0, 1]], np.float32)
LECTURE_OUTPUT = np.array([[4, 3, 4],
                           [2, 4, 3],
                           [2, 3, 4]], np.float32)


@pytest.mark.op("conv2d")
def test_lecture_convolved_feature(backend):
    y = fc.conv2d(LECTURE_INPUT[None, None], LECTURE_FILTER[None, None], backend=backend)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0], LECTURE_OUTPUT, err_msg=f"backend {backend}")


@pytest.mark.op("conv2d")
@pytest.mark.parametrize("stride,pad,expected", [(1, 0, 5), (2, 0, 3), (1, 1, 7), (3, 1, 3),
                                                 (3, 0, 2)],
                         ids=["s1p0", "s2p0", "s1p1", "s3p1", "s3p0_doesnt_fit"])
def test_lecture_output_size_rule(backend, stride, pad, expected):
    """(N - F + 2P) / stride + 1 on a 7x7 input and 3x3 filter.

    Stride 3 without padding: (7 - 3)/3 + 1 = 2.33 "doesn't fit" in the lecture;
    like PyTorch, fastconv floors it to 2 (the last column is never read).
    """
    N, F = 7, 3
    x = np.ones((1, 1, N, N), np.float32)
    w = np.ones((1, 1, F, F), np.float32)
    y = fc.conv2d(x, w, stride=stride, padding=pad, backend=backend)
    assert (N - F + 2 * pad) // stride + 1 == expected
    assert y.shape == (1, 1, expected, expected), f"{backend}: {y.shape}"
    # a window of ones sees 9 ones inside the image, fewer where it overlaps the zero padding
    taps = np.zeros(N + 2 * pad)
    taps[pad:pad + N] = 1
    per_axis = np.array([taps[i * stride:i * stride + F].sum() for i in range(expected)])
    np.testing.assert_array_equal(y[0, 0], np.outer(per_axis, per_axis), err_msg=backend)


@pytest.mark.op("conv2d")
def test_lecture_parameter_count(backend):
    """Ten 5x5 filters over a 32x32x3 input: 10*(5*5*3) + 10 = 760 parameters, 28x28x10 out."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    weight = rng.standard_normal((10, 3, 5, 5)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    if runs_like_naive(backend):
        x = x[:, :, :10, :10]  # pure Python loops: same weights, smaller image
    y = fc.conv2d(x, weight, bias, backend=backend)
    assert weight.size + bias.size == 10 * (5 * 5 * 3) + 10 == 760
    out_hw = x.shape[2] - 5 + 1
    assert y.shape == (1, 10, out_hw, out_hw)
    if not runs_like_naive(backend):
        assert y.shape[1:] == (10, 28, 28)  # 28x28x10, channels first
    # every parameter is used: perturbing any one weight (or bias) changes the output
    for k, c, r, s in [(0, 0, 0, 0), (9, 2, 4, 4), (4, 1, 2, 3)]:
        w2 = weight.copy()
        w2[k, c, r, s] += 1.0
        diff = fc.conv2d(x, w2, bias, backend=backend) - y
        np.testing.assert_allclose(diff[0, k], x[0, c, r:r + out_hw, s:s + out_hw], rtol=1e-4,
                                   atol=1e-4)
        assert not np.delete(diff[0], k, axis=0).any()
