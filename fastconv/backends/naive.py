"""Plain Python loops: the executable spec of every op, and the "naive loops" baseline.

Every convention of fastconv is written here once, in words, next to the loop
that implements it. Every other backend (numpy, C, Numba, CUDA) is tested
against these functions. The code is deliberately simple: one scalar loop per
output element, NumPy used only to allocate the output and to read and write
single elements. Nothing is vectorised, so this is slow (about a microsecond per
multiply-add) and meant for small shapes, for reading, and as the baseline
that the benchmarks compare against.

Common rules
------------
* Layout is NCHW: x[n, c, h, w]. Arguments arrive validated and normalised by
  ``fastconv._checks`` (``Conv2dParams`` / ``Pool2dParams`` carry every
  hyper-parameter and the output shape); these functions only compute.
* Dtype: arithmetic happens in the dtype of the inputs (float32 or float64; the
  public ops pass float64 through to this backend), including the accumulators,
  and the result has that dtype. Python constants (alpha, eps, ...) are first
  converted to that dtype.
* Output size of conv and pooling (the "(N - F + 2P) / S + 1" rule, with
  dilation and floor):
      P = floor((H + pad_top + pad_bottom - dil_h * (R - 1) - 1) / stride_h) + 1
  and the same for Q along the width. The window of output row p starts at input
  row ``p * stride_h - pad_top`` and its taps are ``dil_h`` rows apart.
* Padding is four numbers in the order (top, left, bottom, right) (the 2-D
  order of ONNX ``pads``); an int or (ph, pw) are expanded to that by
  ``_checks``. Only top and left move the windows; bottom and right only decide
  how many windows fit. ``padding="same"`` (stride 1) pads a total of
  ``dil*(R-1)`` and puts the odd extra row/column at the end (bottom/right), as
  PyTorch does.
"""
from __future__ import annotations

import math

import numpy as np


def _relu_scalar(v, zero):
    """max(v, 0) for one scalar: NaN stays NaN, and -0.0 (and every v <= 0) gives +0.0."""
    if v > 0 or math.isnan(v):
        return v
    return zero


# --------------------------------------------------------------------------- conv2d


def conv2d(x, weight, bias, p, activation):
    """2-D convolution (cross-correlation, no kernel flip), as torch.nn.functional.conv2d.

    x (N,C,H,W), weight (K,C/groups,R,S), bias (K,) or None -> y (N,K,P,Q)

        y[n, k, oh, ow] = bias[k] + sum over c', r, s of
            x[n, g*C/groups + c', oh*stride_h - pad_top + r*dil_h,
                                  ow*stride_w - pad_left + s*dil_w] * weight[k, c', r, s]

    * groups: the C input channels and K output channels are split into
      ``groups`` equal, consecutive blocks. Output channel k belongs to group
      g = k // (K/groups) and reads only input channels g*C/groups ..
      (g+1)*C/groups - 1, which weight indexes as c' = 0 .. C/groups - 1.
      groups == C == K is a depthwise convolution.
    * Zero padding: an input position outside 0 <= h < H, 0 <= w < W is padding
      and contributes nothing (it is skipped; for finite weights that is the
      same as multiplying a zero).
    * activation: None, or "relu" applied after the bias (see ``relu``).
    """
    t = x.dtype.type
    y = np.empty((p.N, p.K, p.P, p.Q), dtype=x.dtype)
    c_per_group = p.C // p.groups
    k_per_group = p.K // p.groups
    for n in range(p.N):
        for k in range(p.K):
            g = k // k_per_group
            for oh in range(p.P):
                for ow in range(p.Q):
                    acc = t(0)
                    for cl in range(c_per_group):
                        c = g * c_per_group + cl
                        for r in range(p.R):
                            h = oh * p.stride_h - p.pad_top + r * p.dil_h
                            if h < 0 or h >= p.H:
                                continue  # padding row
                            for s in range(p.S):
                                w = ow * p.stride_w - p.pad_left + s * p.dil_w
                                if w < 0 or w >= p.W:
                                    continue  # padding column
                                acc += x[n, c, h, w] * weight[k, cl, r, s]
                    if bias is not None:
                        acc += bias[k]
                    if activation == "relu":
                        acc = _relu_scalar(acc, t(0))
                    y[n, k, oh, ow] = acc
    return y


# --------------------------------------------------------------------------- pooling
#
# Pooling windows (both max and average):
#   * Output size follows the conv rule above with kernel_h/kernel_w and dilation
#     (average pooling always has dilation 1), except that with ceil_mode the
#     division is rounded up, so the last window may run past the padded input.
#     But a last window that would *start* inside the bottom/right padding
#     ((P-1)*stride_h - pad_top >= H) is dropped: PyTorch's rule.
#     ``Pool2dParams`` already holds the resulting P and Q.
#   * Padding is at most half the kernel (checked by _checks), so every window
#     holds at least one real input element.


def max_pool2d(x, p):
    """Max pooling, as torch.nn.functional.max_pool2d (values only).

    x (N,C,H,W) -> y (N,C,P,Q)

    y[n, c, oh, ow] is the maximum of x[n, c, oh*stride_h - pad_top + i*dil_h,
    ow*stride_w - pad_left + j*dil_w] over 0 <= i < kernel_h, 0 <= j < kernel_w.
    Padding, and the part of a ceil_mode window past the padded input, count as
    -inf (they never win). NaN propagates: the running maximum starts at -inf
    and takes v when ``v > m or isnan(v)``, so one NaN in the window gives NaN.
    """
    y = np.empty((p.N, p.C, p.P, p.Q), dtype=x.dtype)
    for n in range(p.N):
        for c in range(p.C):
            for oh in range(p.P):
                for ow in range(p.Q):
                    m = -math.inf
                    for i in range(p.kernel_h):
                        h = oh * p.stride_h - p.pad_top + i * p.dil_h
                        if h < 0 or h >= p.H:
                            continue  # padding: -inf
                        for j in range(p.kernel_w):
                            w = ow * p.stride_w - p.pad_left + j * p.dil_w
                            if w < 0 or w >= p.W:
                                continue  # padding: -inf
                            v = x[n, c, h, w]
                            if v > m or math.isnan(v):
                                m = v
                    y[n, c, oh, ow] = m
    return y


def avg_pool2d(x, p):
    """Average pooling, as torch.nn.functional.avg_pool2d (padding adds zeros to the sum).

    x (N,C,H,W) -> y (N,C,P,Q)

    The window of output (oh, ow) covers rows h0 .. h0 + kernel_h - 1 with
    h0 = oh*stride_h - pad_top (and the same for columns). The sum is over the
    real input elements in it. The divisor is:

    * count_include_pad=True: the size of the window clipped to the *padded*
      input, rows -pad_top .. H + pad_bottom - 1 (PyTorch's rule). Padding
      counts, but the part of a ceil_mode window that runs past the padding
      does not.
    * count_include_pad=False: the number of real input elements in the window.
    """
    t = x.dtype.type
    y = np.empty((p.N, p.C, p.P, p.Q), dtype=x.dtype)
    for n in range(p.N):
        for c in range(p.C):
            for oh in range(p.P):
                h0 = oh * p.stride_h - p.pad_top
                h1 = min(h0 + p.kernel_h, p.H + p.pad_bottom)  # clipped to the padded input
                for ow in range(p.Q):
                    w0 = ow * p.stride_w - p.pad_left
                    w1 = min(w0 + p.kernel_w, p.W + p.pad_right)
                    # The real input rows hs..he-1 and columns ws..we-1 inside the window.
                    hs, he = max(h0, 0), min(h1, p.H)
                    ws, we = max(w0, 0), min(w1, p.W)
                    if p.count_include_pad:
                        divisor = (h1 - h0) * (w1 - w0)
                    else:
                        divisor = (he - hs) * (we - ws)
                    acc = t(0)
                    for h in range(hs, he):
                        for w in range(ws, we):
                            acc += x[n, c, h, w]
                    y[n, c, oh, ow] = acc / t(divisor)
    return y


def global_avg_pool2d(x):
    """Mean over the whole H x W plane of each channel.

    x (N,C,H,W) -> y (N,C,1,1);  y[n, c, 0, 0] = sum of x[n, c, :, :] / (H*W).
    """
    t = x.dtype.type
    N, C, H, W = x.shape
    y = np.empty((N, C, 1, 1), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            acc = t(0)
            for h in range(H):
                for w in range(W):
                    acc += x[n, c, h, w]
            y[n, c, 0, 0] = acc / t(H * W)
    return y


# --------------------------------------------------------------------------- gemm / linear


def gemm(a, b, c, alpha, beta, trans_a, trans_b):
    """General matrix multiply with ONNX Gemm semantics.

    a (M,K) or (K,M) if trans_a, b (K,N) or (N,K) if trans_b, c (M,N) or None -> y (M,N)

        y[i, j] = alpha * sum_k op(a)[i, k] * op(b)[k, j] + beta * c[i, j]

    where op(a) = a.T if trans_a else a (and the same for b). The public op has
    already broadcast c (shape (), (N,), (M,1), (1,N) or (M,N)) to a fresh
    (M, N) array; with c None the beta term is absent. The formula is applied
    as written: beta = 0 with an infinite c still gives NaN, as in ONNX.
    """
    t = a.dtype.type
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    N = b.shape[0] if trans_b else b.shape[1]
    alpha, beta = t(alpha), t(beta)
    y = np.empty((M, N), dtype=a.dtype)
    for i in range(M):
        for j in range(N):
            acc = t(0)
            for kk in range(K):
                a_ik = a[kk, i] if trans_a else a[i, kk]
                b_kj = b[j, kk] if trans_b else b[kk, j]
                acc += a_ik * b_kj
            acc = alpha * acc
            if c is not None:
                acc += beta * c[i, j]
            y[i, j] = acc
    return y


def linear(x, weight, bias):
    """Fully connected layer, as torch.nn.functional.linear: y = x @ weight.T + bias.

    x (rows, in), weight (out, in), bias (out,) or None -> y (rows, out)

    The public op flattens every leading dimension of x into ``rows`` and
    restores them afterwards.
    """
    t = x.dtype.type
    rows, n_in = x.shape
    n_out = weight.shape[0]
    y = np.empty((rows, n_out), dtype=x.dtype)
    for i in range(rows):
        for o in range(n_out):
            acc = t(0)
            for j in range(n_in):
                acc += x[i, j] * weight[o, j]
            if bias is not None:
                acc += bias[o]
            y[i, o] = acc
    return y


# --------------------------------------------------------------------------- elementwise


def relu(x):
    """max(x, 0) elementwise, as torch.relu.

    x (any shape) -> y (same shape). NaN stays NaN; -0.0 (like every value
    <= 0) gives +0.0, never -0.0. (Beware: ``x > 0 ? x : 0`` turns NaN into 0.)
    """
    t = x.dtype.type
    flat = x.reshape(-1)
    y = np.empty(flat.shape, dtype=x.dtype)
    for i in range(flat.shape[0]):
        y[i] = _relu_scalar(flat[i], t(0))
    return y.reshape(x.shape)


def softmax(x):
    """Numerically stable softmax over axis 1 of a 3-D view.

    x (outer, L, inner) -> y (outer, L, inner). The public op reshapes any array
    so that the softmax axis is the middle one.

        m = max over l of x[o, l, i]
        y[o, l, i] = exp(x[o, l, i] - m) / sum over l' of exp(x[o, l', i] - m)

    Subtracting the row maximum changes nothing mathematically and keeps exp
    from overflowing. A NaN in a row makes the whole row NaN (exp(NaN) poisons
    the sum); a row of all -inf gives NaN, as in PyTorch.
    """
    t = x.dtype.type
    outer, L, inner = x.shape
    y = np.empty(x.shape, dtype=x.dtype)
    for o in range(outer):
        for i in range(inner):
            m = t(-math.inf)
            for l in range(L):
                if x[o, l, i] > m:
                    m = x[o, l, i]
            total = t(0)
            for l in range(L):
                with np.errstate(invalid="ignore"):  # -inf - -inf is NaN, on purpose
                    d = x[o, l, i] - m
                e = t(math.exp(d))  # <= 1; NaN stays NaN
                y[o, l, i] = e
                total += e
            for l in range(L):
                y[o, l, i] = y[o, l, i] / total
    return y


def local_response_norm(x, size, alpha, beta, k):
    """Across-channel local response normalisation, as torch.nn.functional.local_response_norm.

    x (N, C, L) -> y (N, C, L)   (the public op flattens the spatial dims into L)

        y[n, c, l] = x[n, c, l] / (k + alpha/size * sum over c' of x[n, c', l]^2) ** beta

    The window is c' = c - size//2 .. c + (size-1)//2, clipped to 0 .. C-1 (the
    divisor stays ``size`` even where the window is clipped). For odd size the
    window is centred; for even size it reaches one further *below* c, which is
    PyTorch's convention. ONNX LRN leans the other way (c - (size-1)//2 ..
    c + size//2), so the two differ for even sizes.
    """
    t = x.dtype.type
    N, C, L = x.shape
    scale = t(alpha) / t(size)
    k, beta = t(k), t(beta)
    y = np.empty(x.shape, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            lo = max(c - size // 2, 0)
            hi = min(c + (size - 1) // 2, C - 1)
            for l in range(L):
                sumsq = t(0)
                for cc in range(lo, hi + 1):
                    sumsq += x[n, cc, l] * x[n, cc, l]
                y[n, c, l] = x[n, c, l] / (k + scale * sumsq) ** beta
    return y


def batch_norm(x, mean, var, weight, bias, eps):
    """Inference-time batch normalisation over channel axis 1 (running statistics).

    x (N, C, L), mean/var/weight/bias (C,) -> y (N, C, L)

        y[n, c, l] = (x[n, c, l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]

    The public op fills in weight = 1 and bias = 0 when they are not given.
    """
    t = x.dtype.type
    N, C, L = x.shape
    eps = t(eps)
    y = np.empty(x.shape, dtype=x.dtype)
    for c in range(C):
        std = np.sqrt(var[c] + eps)  # a scalar sqrt in x's dtype (NaN if var + eps < 0)
        for n in range(N):
            for l in range(L):
                y[n, c, l] = (x[n, c, l] - mean[c]) / std * weight[c] + bias[c]
    return y
