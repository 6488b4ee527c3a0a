"""The vectorised-NumPy baseline: im2col + np.matmul for conv, strided slices for the rest.

Same functions, arguments and semantics as ``fastconv.backends.naive`` (the
spec; the conventions are written out there). Arithmetic happens in the dtype of
the inputs (float32, or float64 passed through by the public ops), and the
result has that dtype. BLAS threading is whatever NumPy's BLAS is set to;
``set_num_threads`` does not reach it.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# im2col is done for a chunk of the batch at a time, so that the column matrix
# stays near this size (at least one image per chunk). One image's columns for
# a large layer can still exceed it: for this baseline a whole-layer (per
# image) im2col is acceptable. The C backend tiles it instead.
_IM2COL_BYTES = 64 << 20


def _relu_inplace(y):
    """max(y, 0) in place: NaN stays NaN (NaN <= 0 is False), -0.0 becomes +0.0."""
    y[y <= 0] = 0
    return y


# --------------------------------------------------------------------------- conv2d


def conv2d(x, weight, bias, p, activation):
    """im2col + batched matmul, one matmul per group and image chunk.

    x (N,C,H,W), weight (K,C/groups,R,S), bias (K,) or None -> y (N,K,P,Q)
    """
    G, Cg, Kg = p.groups, p.C // p.groups, p.K // p.groups
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_top, p.pad_bottom), (p.pad_left, p.pad_right)))
    eff_r = p.dil_h * (p.R - 1) + 1
    eff_s = p.dil_w * (p.S - 1) + 1
    # (N, C, P, Q, R, S) view: windows[n, c, oh, ow, r, s] = xp[n, c, oh*sh + r*dh, ow*sw + s*dw]
    windows = sliding_window_view(xp, (eff_r, eff_s), axis=(2, 3))
    windows = windows[:, :, ::p.stride_h, ::p.stride_w, ::p.dil_h, ::p.dil_w][:, :, :p.P, :p.Q]
    windows = windows.reshape(p.N, G, Cg, p.P, p.Q, p.R, p.S)
    # (G, Kg, Cg*R*S): the rows of each group's filter matrix.
    wmat = weight.reshape(G, Kg, Cg * p.R * p.S)

    y = np.empty((p.N, p.K, p.P, p.Q), dtype=x.dtype)
    per_image = p.C * p.R * p.S * p.P * p.Q * x.itemsize
    chunk = max(1, _IM2COL_BYTES // max(per_image, 1))
    for n0 in range(0, p.N, chunk):
        n1 = min(n0 + chunk, p.N)
        B = n1 - n0
        # im2col: (B, G, Cg*R*S, P*Q), a copy of the strided view.
        cols = windows[n0:n1].transpose(0, 1, 2, 5, 6, 3, 4).reshape(
            B, G, Cg * p.R * p.S, p.P * p.Q)
        # (G, Kg, CgRS) @ (B, G, CgRS, PQ) -> (B, G, Kg, PQ), which is already NCHW.
        out = np.matmul(wmat, cols)
        y[n0:n1] = out.reshape(B, p.K, p.P, p.Q)
    if bias is not None:
        y += bias.reshape(1, p.K, 1, 1)
    if activation == "relu":
        _relu_inplace(y)
    return y


# --------------------------------------------------------------------------- pooling


def _pool_padded(x, p, fill):
    """x padded with ``fill`` so that every window of every output lies inside it.

    With ceil_mode the last window may run past H + pad_bottom; that extra part
    is padded too (with the same ``fill``), and is excluded from the average's
    divisor separately.
    """
    need_h = (p.P - 1) * p.stride_h + p.dil_h * (p.kernel_h - 1) + 1
    need_w = (p.Q - 1) * p.stride_w + p.dil_w * (p.kernel_w - 1) + 1
    bottom = max(p.pad_bottom, need_h - p.H - p.pad_top)
    right = max(p.pad_right, need_w - p.W - p.pad_left)
    return np.pad(x, ((0, 0), (0, 0), (p.pad_top, bottom), (p.pad_left, right)),
                  constant_values=fill)


def _window_taps(xp, p):
    """Yield, for each tap (i, j) of the window, the (N, C, P, Q) strided view of xp it reads."""
    for i in range(p.kernel_h):
        h = i * p.dil_h
        for j in range(p.kernel_w):
            w = j * p.dil_w
            yield xp[:, :, h:h + (p.P - 1) * p.stride_h + 1:p.stride_h,
                     w:w + (p.Q - 1) * p.stride_w + 1:p.stride_w]


def max_pool2d(x, p):
    """Running np.maximum over the kernel_h*kernel_w strided views of the -inf-padded input.

    x (N,C,H,W) -> y (N,C,P,Q). np.maximum propagates NaN.
    """
    xp = _pool_padded(x, p, -np.inf)
    y = np.full((p.N, p.C, p.P, p.Q), -np.inf, dtype=x.dtype)
    for tap in _window_taps(xp, p):
        np.maximum(y, tap, out=y)
    return y


def _avg_divisor(p):
    """(P, Q) map of the divisor of each window (the naive backend states the rule)."""
    def counts(n_out, stride, pad_begin, pad_end, kernel, size):
        start = np.arange(n_out) * stride - pad_begin
        end = np.minimum(start + kernel, size + pad_end)  # clipped to the padded input
        if p.count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    ch = counts(p.P, p.stride_h, p.pad_top, p.pad_bottom, p.kernel_h, p.H)
    cw = counts(p.Q, p.stride_w, p.pad_left, p.pad_right, p.kernel_w, p.W)
    return np.outer(ch, cw)


def avg_pool2d(x, p):
    """Sum of the kernel_h*kernel_w strided views of the zero-padded input / divisor map.

    x (N,C,H,W) -> y (N,C,P,Q)
    """
    xp = _pool_padded(x, p, 0)
    y = np.zeros((p.N, p.C, p.P, p.Q), dtype=x.dtype)
    for tap in _window_taps(xp, p):
        y += tap
    y /= _avg_divisor(p).astype(x.dtype)
    return y


def global_avg_pool2d(x):
    """x (N,C,H,W) -> y (N,C,1,1), the mean of each plane."""
    return x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype)


# --------------------------------------------------------------------------- gemm / linear


def gemm(a, b, c, alpha, beta, trans_a, trans_b):
    """y = alpha * op(a) @ op(b) + beta * c (ONNX Gemm; c is a fresh (M, N) array or None).

    a (M,K)|(K,M), b (K,N)|(N,K), c (M,N) or None -> y (M,N)
    """
    y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    y *= a.dtype.type(alpha)
    if c is not None:
        c *= a.dtype.type(beta)  # c is ours to overwrite (see _registry)
        y += c
    return y


def linear(x, weight, bias):
    """y = x @ weight.T + bias.  x (rows, in), weight (out, in), bias (out,) -> y (rows, out)"""
    y = np.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


# --------------------------------------------------------------------------- elementwise


def relu(x):
    """x (any) -> y (same): max(x, 0); NaN stays NaN, -0.0 gives +0.0."""
    return np.where(x <= 0, x.dtype.type(0), x)


def softmax(x):
    """x (outer, L, inner) -> y (same): stable softmax over axis 1."""
    with np.errstate(invalid="ignore"):  # a row of all -inf gives NaN, on purpose
        y = x - x.max(axis=1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    return y


def local_response_norm(x, size, alpha, beta, k):
    """x (N, C, L) -> y (N, C, L), PyTorch's window c - size//2 .. c + (size-1)//2.

    The window sums of x^2 are ``size`` shifted adds of the zero-padded squares
    (not a cumulative sum, which loses precision in float32 by cancellation).
    """
    t = x.dtype.type
    C = x.shape[1]
    sq = np.pad(x * x, ((0, 0), (size // 2, (size - 1) // 2), (0, 0)))
    sumsq = np.zeros_like(x)
    for j in range(size):
        sumsq += sq[:, j:j + C]
    div = t(k) + (t(alpha) / t(size)) * sumsq
    return x / div ** t(beta)


def batch_norm(x, mean, var, weight, bias, eps):
    """x (N, C, L), per-channel (C,) statistics -> y (N, C, L)."""
    std = np.sqrt(var + x.dtype.type(eps))
    return ((x - mean[:, None]) / std[:, None]) * weight[:, None] + bias[:, None]
