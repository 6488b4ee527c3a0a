"""Shared test helpers: the one comparison helper, input generators and the oracles.

Oracles are independent of fastconv: ONNX Runtime (always installed with the
``test`` extra) and PyTorch (optional; tests that need it call
``pytest.importorskip("torch")``). Each oracle takes the arguments of the
matching fastconv op (same names, same defaults) and translates them itself, so
a convention bug in fastconv (pad order, ceil_mode, LRN window ...) cannot
cancel out against the same bug in the oracle.

Known semantic differences between fastconv (= torch.nn.functional) and ONNX are
handled explicitly below, each with a comment:

* ONNX AveragePool ``count_include_pad`` defaults to 0 (PyTorch: True) -> we
  always pass it explicitly.
* ONNX LRN's window for an even ``size`` leans the other way from PyTorch's
  (ONNX: c - floor((size-1)/2) .. c + ceil((size-1)/2); PyTorch and fastconv:
  c - size//2 .. c + (size-1)//2), and ORT 1.32 refuses even sizes outright.
  Even sizes therefore use PyTorch (when installed) and the hand-written
  ``ref_lrn``. ``onnx.reference``'s LRN is wrong (onnx 1.23): never used.
* ceil_mode edge windows: ONNX Runtime 1.32 follows PyTorch (a window that would
  start in the end padding is dropped; count_include_pad divides by the window
  clipped to the padded input), checked over a grid against PyTorch and against
  the hand-written ``ref_avg_pool2d`` / ``ref_max_pool2d`` in
  tests/test_ops_oracle.py::test_oracles_agree_*. (ONNX's own shape inference
  does *not* drop that window: it predicts one more row/column than ORT returns,
  which is why ``ort_run`` leaves the output shape to ORT and mutes its warning.)
  PyTorch takes symmetric padding only, so asymmetric pooling uses ORT + the
  hand-written references.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

# --------------------------------------------------------------------------- comparison

_TOL = {
    # dtype: (rtol, atol) for a reduction of length 1
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.float64): (1e-10, 1e-12),
}


def tolerance(dtype, reduction=1):
    """(rtol, atol) for results of ``dtype`` whose elements each sum ``reduction`` terms.

    Rounding error of a float sum grows roughly with sqrt(length) (random signs);
    we loosen both tolerances by max(1, sqrt(reduction / 16)) so that short sums
    keep the base tolerance (1e-4 relative for float32) and long ones (e.g. a
    conv over 576 taps -> x6) do not fail on blocking-order noise.
    """
    rtol, atol = _TOL[np.dtype(dtype)]
    scale = max(1.0, math.sqrt(max(int(reduction), 1) / 16.0))
    return rtol * scale, atol * scale


def assert_close(actual, expected, *, reduction=1, case="", rtol=None, atol=None,
                 dtype=None, max_report=5):
    """Assert |actual - expected| <= atol + rtol*|expected| elementwise, NaN == NaN.

    The tolerance is that of the *lower* precision of the two arrays (a float32
    result compared with a float64 reference gets float32 tolerance), loosened
    with ``reduction`` (see ``tolerance``). ``dtype``, if given, must equal
    ``actual.dtype``. On failure the message names ``case`` and lists the first
    ``max_report`` mismatches with their indices.
    """
    where = f"[{case}] " if case else ""
    assert isinstance(actual, np.ndarray), f"{where}result is {type(actual).__name__}, not ndarray"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{where}shape {actual.shape} != expected {expected.shape}"
    )
    if dtype is not None:
        assert actual.dtype == np.dtype(dtype), f"{where}dtype {actual.dtype} != {np.dtype(dtype)}"
    low = np.float64
    for arr in (actual, expected):
        if arr.dtype != np.float64:
            low = np.float32
    r0, a0 = tolerance(low, reduction)
    rtol = r0 if rtol is None else rtol
    atol = a0 if atol is None else atol
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    bad = nan_a != nan_e
    with np.errstate(invalid="ignore"):
        inf_e = np.isinf(e)
        bad |= inf_e & (a != e)
        finite = ~nan_e & ~nan_a & ~inf_e
        diff = np.where(finite, np.abs(a - e), 0.0)
        tol = atol + rtol * np.abs(np.where(finite, e, 0.0))
        bad |= diff > tol
    if bad.any():
        idx = np.argwhere(bad)
        lines = []
        for i in idx[:max_report]:
            i = tuple(int(v) for v in i)
            lines.append(
                f"  at {i}: actual={a[i]!r} expected={e[i]!r} "
                f"|diff|={abs(a[i] - e[i]):.3g} tol={tol[i]:.3g}"
            )
        max_err = float(np.max(np.where(finite, diff, 0.0))) if finite.any() else float("nan")
        raise AssertionError(
            f"{where}{len(idx)} of {a.size} elements differ (rtol={rtol:.3g}, atol={atol:.3g}, "
            f"reduction={reduction}, max |diff|={max_err:.3g}); first mismatches:\n"
            + "\n".join(lines)
        )


def rand(shape, seed, dtype=np.float32, scale=1.0, low=None, high=None):
    """Deterministic random array (normal * scale, or uniform [low, high) when given)."""
    rng = np.random.default_rng(seed)
    if low is not None:
        out = rng.uniform(low, high, size=shape)
    else:
        out = rng.standard_normal(shape) * scale
    return out.astype(dtype)


def case_seed(text):
    """A stable seed from a case id (Python's hash() is salted per process)."""
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") % (2**32) ^ len(text)


# --------------------------------------------------------------------------- padding (independent)


def norm_pads(padding):
    """fastconv padding (int, (ph, pw) or (t, l, b, r)) -> ONNX pads [t, l, b, r]."""
    if isinstance(padding, int):
        return [padding] * 4
    padding = list(padding)
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    assert len(padding) == 4
    return padding


def norm_pair(v):
    return [v, v] if isinstance(v, int) else list(v)


# --------------------------------------------------------------------------- ONNX Runtime

_ORT_OPSET = 17


def ort_run(op_type, inputs, attrs=None, *, opset=_ORT_OPSET):
    """Run a single-node ONNX model on ONNX Runtime (CPU) and return its first output.

    inputs: list of arrays or None (None = omitted optional input, empty name).
    """
    from onnx import helper

    names, graph_inputs, feeds = [], [], {}
    for i, arr in enumerate(inputs):
        if arr is None:
            names.append("")
            continue
        arr = np.ascontiguousarray(arr)
        name = f"in{i}"
        names.append(name)
        elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
        feeds[name] = arr
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op_type, names, ["out"], **(attrs or {}))
    out_elem = graph_inputs[0].type.tensor_type.elem_type
    out = helper.make_tensor_value_info("out", out_elem, None)  # shape left to ORT
    graph = helper.make_graph([node], "oracle", graph_inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return ort_run_model(model, feeds)[0]


def ort_run_model(model, feeds, *, threads=1):
    """Run an ONNX model (a ModelProto or its serialized bytes) on ONNX Runtime (CPU, graph
    optimisations off, so ORT computes each node as written); returns the list of outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # ORT warns when ONNX shape inference disagrees with it (ceil_mode)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _f32(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float32) for a in arrays]


def ort_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    x, weight, bias = _f32(x, weight, bias)
    attrs = dict(strides=norm_pair(stride), dilations=norm_pair(dilation), group=groups,
                 kernel_shape=list(weight.shape[2:]))
    if padding == "same" and norm_pair(dilation) == [1, 1]:
        # PyTorch 'same' puts the odd extra pad at the end == ONNX SAME_UPPER.
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding == "same":
        # ORT refuses SAME_UPPER with dilation > 1 ("Dilation not supported for
        # AutoPadType::SAME_UPPER"): spell out PyTorch's rule, total = d*(k-1),
        # begin = total // 2, the odd one at the end.
        tot = [d * (k - 1) for d, k in zip(norm_pair(dilation), weight.shape[2:])]
        attrs["pads"] = [tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2]
    elif padding == "valid":
        attrs["auto_pad"] = "VALID"
    else:
        attrs["pads"] = norm_pads(padding)
    y = ort_run("Conv", [x, weight, bias], attrs)
    if activation == "relu":
        y = np.maximum(y, 0)
    return y


def _pool_attrs(kernel_size, stride, padding, ceil_mode):
    k = norm_pair(kernel_size)
    return dict(kernel_shape=k, strides=norm_pair(k if stride is None else stride),
                pads=norm_pads(padding), ceil_mode=int(bool(ceil_mode)))


def ort_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    attrs = _pool_attrs(kernel_size, stride, padding, ceil_mode)
    attrs["dilations"] = norm_pair(dilation)
    (x,) = _f32(x)
    y = ort_run("MaxPool", [x], attrs)
    # A dilated window can miss every real input element and see only padding.
    # ORT then returns -FLT_MAX (its running max starts at lowest()); PyTorch and
    # fastconv start from -inf and return -inf. Translate, unless -FLT_MAX is real data.
    lowest = np.finfo(np.float32).min
    if not (x == lowest).any():
        y = np.where(y == lowest, np.float32(-np.inf), y)
    return y


def ort_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True):
    attrs = _pool_attrs(kernel_size, stride, padding, ceil_mode)
    # ONNX's default is count_include_pad=0, PyTorch's (and fastconv's) is True: always explicit.
    attrs["count_include_pad"] = int(bool(count_include_pad))
    return ort_run("AveragePool", _f32(x), attrs)


def ort_global_avg_pool2d(x):
    return ort_run("GlobalAveragePool", _f32(x))


def ort_gemm(a, b, c=None, *, alpha=1.0, beta=1.0, trans_a=False, trans_b=False):
    a, b, c = _f32(a, b, c)
    attrs = dict(alpha=float(alpha), beta=float(beta), transA=int(trans_a), transB=int(trans_b))
    return ort_run("Gemm", [a, b, c], attrs, opset=13)


def ort_linear(x, weight, bias=None):
    x, weight, bias = _f32(x, weight, bias)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = ort_run("Gemm", [x2, weight, bias], dict(transB=1), opset=13)
    return y.reshape(lead + (weight.shape[0],))


def ort_relu(x):
    return ort_run("Relu", _f32(x))


def ort_softmax(x, axis=-1):
    # opset >= 13: Softmax normalises along `axis` only (older opsets flattened from axis on).
    return ort_run("Softmax", _f32(x), dict(axis=axis), opset=13)


def ort_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """ORT LRN, odd sizes only: ORT refuses an even size (``size_ % 2 == 1`` assertion).

    For an even size ONNX's window would also lean the other way from PyTorch's
    (ONNX c-(size/2-1) .. c+size/2, PyTorch c-size/2 .. c+size/2-1), so even sizes
    go to ``torch_local_response_norm`` or the hand-written ``ref_lrn`` instead.
    """
    assert size % 2 == 1, "ORT's LRN refuses even sizes; use ref_lrn / torch"
    (x,) = _f32(x)
    attrs = dict(size=size, alpha=float(alpha), beta=float(beta), bias=float(k))
    return ort_run("LRN", [x], attrs)


def oracle_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """ORT for odd sizes; the hand-written PyTorch-window loop for even ones (see above)."""
    if size % 2 == 1:
        return ort_local_response_norm(x, size, alpha, beta, k)
    return ref_lrn(x, size, alpha, beta, k)


def ort_batch_norm(x, mean, var, weight=None, bias=None, eps=1e-5):
    x, mean, var, weight, bias = _f32(x, mean, var, weight, bias)
    C = x.shape[1]
    weight = np.ones(C, np.float32) if weight is None else weight
    bias = np.zeros(C, np.float32) if bias is None else bias
    # ONNX BatchNormalization wants at least (N, C); inference mode (training_mode=0).
    return ort_run("BatchNormalization", [x, weight, bias, mean, var], dict(epsilon=float(eps)),
                   opset=15)


# --------------------------------------------------------------------------- PyTorch


def _torch():
    import torch

    return torch


def _t(a):
    torch = _torch()
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def torch_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 activation=None):
    torch = _torch()
    F = torch.nn.functional
    xt, wt, bt = _t(x), _t(weight), _t(bias)
    if isinstance(padding, str):
        with warnings.catch_warnings():  # "padding='same' with even kernel ... zero-padded copy"
            warnings.simplefilter("ignore", UserWarning)
            y = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation,
                         groups=groups)
    else:
        t, left, b, r = norm_pads(padding)
        xt = F.pad(xt, (left, r, t, b))  # F.pad order: last dim first (left, right, top, bottom)
        y = F.conv2d(xt, wt, bt, stride=stride, padding=0, dilation=dilation, groups=groups)
    if activation == "relu":
        y = torch.relu(y)
    return y.numpy()


def torch_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    torch = _torch()
    F = torch.nn.functional
    t, left, b, r = norm_pads(padding)
    assert (t, left) == (b, r), "torch max_pool2d takes symmetric padding only"
    return F.max_pool2d(_t(x), kernel_size, stride=stride, padding=(t, left), dilation=dilation,
                        ceil_mode=ceil_mode).numpy()


def torch_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                     count_include_pad=True):
    torch = _torch()
    F = torch.nn.functional
    t, left, b, r = norm_pads(padding)
    assert (t, left) == (b, r), "torch avg_pool2d takes symmetric padding only"
    return F.avg_pool2d(_t(x), kernel_size, stride=stride, padding=(t, left), ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad).numpy()


def torch_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    torch = _torch()
    return torch.nn.functional.local_response_norm(_t(x), size, alpha=alpha, beta=beta,
                                                   k=k).numpy()


def torch_softmax(x, axis=-1):
    torch = _torch()
    return torch.softmax(_t(x), dim=axis).numpy()


# --------------------------------------------------------------------------- hand-written references


def ref_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Hand-written float64 LRN, PyTorch window c - size//2 .. c + (size-1)//2 (clipped)."""
    x = np.asarray(x, np.float64)
    C = x.shape[1]
    y = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
        s = np.sum(x[:, lo:hi + 1] ** 2, axis=1)
        y[:, c] = x[:, c] / (k + alpha / size * s) ** beta
    return y


def _pool_out(size, k, s, p0, p1, d, ceil_mode):
    """PyTorch's output-size rule (written independently of fastconv._checks)."""
    eff = d * (k - 1) + 1
    num = size + p0 + p1 - eff
    if ceil_mode:
        out = math.ceil(num / s) + 1
        # The last window must start inside the input or the *begin* padding.
        if (out - 1) * s >= size + p0:
            out -= 1
    else:
        out = num // s + 1
    return out


def ref_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True):
    """Hand-written float64 average pooling, PyTorch's divisor rule, asymmetric pads allowed.

    Window rows hs .. hs+kh-1 with hs = i*stride - pad_top. With count_include_pad
    the divisor is the window clipped to the *padded* input (rows < H + pad_bottom),
    otherwise the number of real input elements in it.
    """
    x = np.asarray(x, np.float64)
    kh, kw = norm_pair(kernel_size)
    sh, sw = norm_pair(kernel_size if stride is None else stride)
    t, left, b, r = norm_pads(padding)
    N, C, H, W = x.shape
    P = _pool_out(H, kh, sh, t, b, 1, ceil_mode)
    Q = _pool_out(W, kw, sw, left, r, 1, ceil_mode)
    y = np.empty((N, C, P, Q))
    for i in range(P):
        hs = i * sh - t
        he = min(hs + kh, H + b)
        for j in range(Q):
            ws = j * sw - left
            we = min(ws + kw, W + r)
            pool = (he - hs) * (we - ws)
            h0, h1, w0, w1 = max(hs, 0), min(he, H), max(ws, 0), min(we, W)
            s = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            div = pool if count_include_pad else (h1 - h0) * (w1 - w0)
            y[:, :, i, j] = s / div
    return y


def ref_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Hand-written float64 max pooling (NaN propagates), asymmetric pads allowed."""
    x = np.asarray(x, np.float64)
    kh, kw = norm_pair(kernel_size)
    sh, sw = norm_pair(kernel_size if stride is None else stride)
    dh, dw = norm_pair(dilation)
    t, left, b, r = norm_pads(padding)
    N, C, H, W = x.shape
    P = _pool_out(H, kh, sh, t, b, dh, ceil_mode)
    Q = _pool_out(W, kw, sw, left, r, dw, ceil_mode)
    y = np.full((N, C, P, Q), -np.inf)
    for i in range(P):
        for j in range(Q):
            for u in range(kh):
                for v in range(kw):
                    h, w = i * sh - t + u * dh, j * sw - left + v * dw
                    if 0 <= h < H and 0 <= w < W:
                        val = x[:, :, h, w]
                        cur = y[:, :, i, j]
                        y[:, :, i, j] = np.where(np.isnan(val) | (val > cur), val, cur)
    return y
