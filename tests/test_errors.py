"""Bad inputs: the exception TYPE, and a message that names the offending argument.

Validation lives in the API layer (``_checks``), so every backend must raise the
same error before its kernel runs; each test runs once per backend in KERNELS.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import _registry

f32 = np.float32


def X(*shape):
    return np.ones(shape, f32)


# Each entry: id -> (callable(backend), exception type, regex the message must match).
# The regex names the argument (and where useful the rule) that was broken.
CASES = {
    # ---- conv2d: ranks / channels / groups
    "conv_x_rank3": (lambda be: fc.conv2d(X(3, 5, 5), X(2, 3, 3, 3), backend=be),
                     ValueError, r"\bx\b.*4-D"),
    "conv_x_rank5": (lambda be: fc.conv2d(X(1, 1, 3, 5, 5), X(2, 3, 3, 3), backend=be),
                     ValueError, r"\bx\b.*4-D"),
    "conv_weight_rank3": (lambda be: fc.conv2d(X(1, 3, 5, 5), X(3, 3, 3), backend=be),
                          ValueError, r"weight.*4-D"),
    "conv_channel_mismatch": (lambda be: fc.conv2d(X(1, 3, 5, 5), X(2, 4, 3, 3), backend=be),
                              ValueError, r"weight.*C/groups"),
    "conv_C_not_div_groups": (lambda be: fc.conv2d(X(1, 3, 5, 5), X(2, 1, 3, 3), groups=2,
                                                   backend=be),
                              ValueError, r"C=3.*groups=2"),
    "conv_K_not_div_groups": (lambda be: fc.conv2d(X(1, 4, 5, 5), X(3, 2, 3, 3), groups=2,
                                                   backend=be),
                              ValueError, r"K=3.*groups=2"),
    "conv_groups_channels": (lambda be: fc.conv2d(X(1, 4, 5, 5), X(4, 4, 3, 3), groups=2,
                                                  backend=be),
                             ValueError, r"weight.*groups=2"),
    # ---- conv2d: hyper-parameters
    "conv_stride0": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), stride=0, backend=be),
                     ValueError, r"stride.*>= 1"),
    "conv_stride_neg_pair": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), stride=(1, -1),
                                                  backend=be),
                             ValueError, r"stride"),
    "conv_stride_float": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), stride=1.5,
                                               backend=be),
                          TypeError, r"stride"),
    "conv_stride_bool": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), stride=True,
                                              backend=be),
                         TypeError, r"stride"),
    "conv_dilation0": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), dilation=0, backend=be),
                       ValueError, r"dilation.*>= 1"),
    "conv_dilation_float": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), dilation=2.0,
                                                 backend=be),
                            TypeError, r"dilation"),
    "conv_groups0": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), groups=0, backend=be),
                     ValueError, r"groups.*>= 1"),
    "conv_groups_float": (lambda be: fc.conv2d(X(1, 2, 5, 5), X(2, 1, 3, 3), groups=2.0,
                                               backend=be),
                          TypeError, r"groups"),
    "conv_padding_negative": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3), padding=-1,
                                                   backend=be),
                              ValueError, r"padding.*>= 0"),
    "conv_padding_negative_tlbr": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3),
                                                        padding=(0, 0, -1, 0), backend=be),
                                   ValueError, r"padding"),
    "conv_padding_3tuple": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3),
                                                 padding=(1, 1, 1), backend=be),
                            TypeError, r"padding"),
    "conv_padding_bad_string": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3),
                                                     padding="full", backend=be),
                                ValueError, r"padding.*'same'"),
    "conv_same_stride2": (lambda be: fc.conv2d(X(1, 1, 6, 6), X(1, 1, 3, 3), padding="same",
                                               stride=2, backend=be),
                          ValueError, r"same.*stride"),
    "conv_window_too_big": (lambda be: fc.conv2d(X(1, 1, 4, 4), X(1, 1, 5, 5), backend=be),
                            ValueError, r"kernel.*larger than the padded input"),
    "conv_window_too_big_dilated": (lambda be: fc.conv2d(X(1, 1, 6, 6), X(1, 1, 3, 3),
                                                         dilation=3, backend=be),
                                    ValueError, r"dilation.*larger than the padded input"),
    "conv_bias_length": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(2, 1, 3, 3), X(3), backend=be),
                         ValueError, r"bias.*\(2,\)"),
    "conv_bias_2d": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(2, 1, 3, 3), X(2, 1), backend=be),
                     ValueError, r"bias"),
    "conv_bad_activation": (lambda be: fc.conv2d(X(1, 1, 5, 5), X(1, 1, 3, 3),
                                                 activation="gelu", backend=be),
                            ValueError, r"activation"),
    "conv_zero_channels": (lambda be: fc.conv2d(X(1, 0, 5, 5), X(1, 0, 3, 3), backend=be),
                           ValueError, r"\bx\b"),
    # ---- pooling
    "maxpool_x_rank3": (lambda be: fc.max_pool2d(X(2, 5, 5), 2, backend=be),
                        ValueError, r"\bx\b.*4-D"),
    "avgpool_x_rank2": (lambda be: fc.avg_pool2d(X(5, 5), 2, backend=be),
                        ValueError, r"\bx\b.*4-D"),
    "maxpool_kernel0": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 0, backend=be),
                        ValueError, r"kernel_size"),
    "maxpool_kernel_float": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 2.0, backend=be),
                             TypeError, r"kernel_size"),
    "maxpool_stride0": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 2, stride=0, backend=be),
                        ValueError, r"stride.*>= 1"),
    "avgpool_stride_float": (lambda be: fc.avg_pool2d(X(1, 1, 5, 5), 2, stride=1.0, backend=be),
                             TypeError, r"stride"),
    "maxpool_dilation0": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 2, dilation=0, backend=be),
                          ValueError, r"dilation.*>= 1"),
    "maxpool_pad_negative": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 3, padding=-1, backend=be),
                             ValueError, r"padding.*>= 0"),
    "maxpool_pad_over_half": (lambda be: fc.max_pool2d(X(1, 1, 5, 5), 3, padding=2, backend=be),
                              ValueError, r"padding.*more than half of kernel_size"),
    "avgpool_pad_over_half_k2": (lambda be: fc.avg_pool2d(X(1, 1, 5, 5), 2, padding=(0, 0, 2, 0),
                                                          backend=be),
                                 ValueError, r"padding bottom=2.*half of kernel_size=2"),
    "avgpool_pad_over_half_rect": (lambda be: fc.avg_pool2d(X(1, 1, 5, 5), (3, 1), padding=(0, 1),
                                                            backend=be),
                                   ValueError, r"padding left=1.*half of kernel_size=1"),
    "maxpool_window_too_big": (lambda be: fc.max_pool2d(X(1, 1, 3, 3), 4, backend=be),
                               ValueError, r"window.*larger than the padded input"),
    "maxpool_window_too_big_dilated": (lambda be: fc.max_pool2d(X(1, 1, 4, 4), 2, dilation=4,
                                                                backend=be),
                                       ValueError, r"window.*larger than the padded input"),
    "avgpool_window_too_big": (lambda be: fc.avg_pool2d(X(1, 1, 2, 5), 3, stride=1, backend=be),
                               ValueError, r"window.*larger than the padded input"),
    "gap_rank3": (lambda be: fc.global_avg_pool2d(X(2, 3, 4), backend=be),
                  ValueError, r"\bx\b.*4-D"),
    "gap_empty_spatial": (lambda be: fc.global_avg_pool2d(X(1, 2, 0, 3), backend=be),
                          ValueError, r"\bx\b"),
    # ---- gemm / linear
    "gemm_a_rank1": (lambda be: fc.gemm(X(3), X(3, 2), backend=be), ValueError, r"\ba\b.*2-D"),
    "gemm_b_rank3": (lambda be: fc.gemm(X(2, 3), X(1, 3, 2), backend=be),
                     ValueError, r"\bb\b.*2-D"),
    "gemm_inner_mismatch": (lambda be: fc.gemm(X(2, 3), X(4, 5), backend=be),
                            ValueError, r"inner dimensions"),
    "gemm_inner_mismatch_trans": (lambda be: fc.gemm(X(2, 3), X(5, 4), trans_b=True, backend=be),
                                  ValueError, r"inner dimensions.*trans_b=True"),
    "gemm_c_not_broadcastable": (lambda be: fc.gemm(X(2, 3), X(3, 4), X(3), backend=be),
                                 ValueError, r"\bc\b.*broadcast.*\(2, 4\)"),
    "gemm_c_wrong_rows": (lambda be: fc.gemm(X(2, 3), X(3, 4), X(3, 1), backend=be),
                          ValueError, r"\bc\b.*broadcast"),
    "gemm_c_bigger_than_out": (lambda be: fc.gemm(X(1, 3), X(3, 4), X(2, 4), backend=be),
                               ValueError, r"\bc\b.*broadcast"),
    "gemm_c_rank3": (lambda be: fc.gemm(X(2, 3), X(3, 4), X(1, 2, 4), backend=be),
                     ValueError, r"\bc\b"),
    "gemm_alpha_str": (lambda be: fc.gemm(X(2, 3), X(3, 4), alpha="1", backend=be),
                       TypeError, r"alpha"),
    "gemm_beta_nan": (lambda be: fc.gemm(X(2, 3), X(3, 4), beta=float("nan"), backend=be),
                      ValueError, r"beta"),
    "linear_in_mismatch": (lambda be: fc.linear(X(4, 5), X(3, 6), backend=be),
                           ValueError, r"in_features"),
    "linear_weight_rank1": (lambda be: fc.linear(X(4, 5), X(5), backend=be),
                            ValueError, r"weight.*2-D"),
    "linear_bias_length": (lambda be: fc.linear(X(4, 5), X(3, 5), X(4), backend=be),
                           ValueError, r"bias.*\(3,\)"),
    "linear_x_0d": (lambda be: fc.linear(np.float32(1.0), X(3, 1), backend=be),
                    ValueError, r"\bx\b"),
    # ---- elementwise
    "softmax_axis_out_of_range": (lambda be: fc.softmax(X(2, 3), axis=2, backend=be),
                                  ValueError, r"axis=2"),
    "softmax_axis_negative_oor": (lambda be: fc.softmax(X(2, 3), axis=-3, backend=be),
                                  ValueError, r"axis=-3"),
    "softmax_axis_float": (lambda be: fc.softmax(X(2, 3), axis=1.0, backend=be),
                           TypeError, r"axis"),
    "softmax_axis_none": (lambda be: fc.softmax(X(2, 3), axis=None, backend=be),
                          TypeError, r"axis"),
    "softmax_0d": (lambda be: fc.softmax(np.float32(1.0), backend=be), ValueError, r"\bx\b"),
    "lrn_x_rank2": (lambda be: fc.local_response_norm(X(2, 3), 3, backend=be),
                    ValueError, r"\bx\b.*3 dimensions"),
    "lrn_size0": (lambda be: fc.local_response_norm(X(1, 3, 2, 2), 0, backend=be),
                  ValueError, r"size"),
    "lrn_size_float": (lambda be: fc.local_response_norm(X(1, 3, 2, 2), 3.0, backend=be),
                       TypeError, r"size"),
    "lrn_alpha_str": (lambda be: fc.local_response_norm(X(1, 3, 2, 2), 3, alpha="x", backend=be),
                      TypeError, r"alpha"),
    "bn_x_rank1": (lambda be: fc.batch_norm(X(3), X(3), X(3), backend=be),
                   ValueError, r"\bx\b"),
    "bn_mean_length": (lambda be: fc.batch_norm(X(2, 3, 4), X(4), X(3), backend=be),
                       ValueError, r"mean.*\(3,\)"),
    "bn_var_length": (lambda be: fc.batch_norm(X(2, 3, 4), X(3), X(2), backend=be),
                      ValueError, r"var.*\(3,\)"),
    "bn_weight_length": (lambda be: fc.batch_norm(X(2, 3, 4), X(3), X(3), X(5), backend=be),
                         ValueError, r"weight.*\(3,\)"),
    "bn_bias_2d": (lambda be: fc.batch_norm(X(2, 3, 4), X(3), X(3), None, X(3, 1), backend=be),
                   ValueError, r"bias"),
    "bn_eps_negative": (lambda be: fc.batch_norm(X(2, 3), X(3), X(3), eps=-1.0, backend=be),
                        ValueError, r"eps"),
    # ---- dtypes: complex / object / str / datetime / None -> TypeError naming the argument
    "conv_x_complex": (lambda be: fc.conv2d(X(1, 1, 3, 3).astype(np.complex64), X(1, 1, 3, 3),
                                            backend=be),
                       TypeError, r"\bx\b.*complex"),
    "conv_weight_object": (lambda be: fc.conv2d(X(1, 1, 3, 3), X(1, 1, 3, 3).astype(object),
                                                backend=be),
                           TypeError, r"weight.*object"),
    "conv_bias_str": (lambda be: fc.conv2d(X(1, 1, 3, 3), X(1, 1, 3, 3), np.array(["a"]),
                                           backend=be),
                      TypeError, r"bias"),
    "maxpool_x_str": (lambda be: fc.max_pool2d(np.full((1, 1, 2, 2), "a"), 2, backend=be),
                      TypeError, r"\bx\b"),
    "avgpool_x_complex": (lambda be: fc.avg_pool2d(X(1, 1, 2, 2) + 1j, 2, backend=be),
                          TypeError, r"\bx\b.*complex"),
    "gap_x_object": (lambda be: fc.global_avg_pool2d(X(1, 1, 2, 2).astype(object), backend=be),
                     TypeError, r"\bx\b"),
    "gemm_b_complex": (lambda be: fc.gemm(X(2, 2), X(2, 2).astype(np.complex128), backend=be),
                       TypeError, r"\bb\b.*complex"),
    "gemm_c_object": (lambda be: fc.gemm(X(2, 2), X(2, 2), X(2, 2).astype(object), backend=be),
                      TypeError, r"\bc\b"),
    "linear_x_str": (lambda be: fc.linear(np.array([["a", "b"]]), X(3, 2), backend=be),
                     TypeError, r"\bx\b"),
    "relu_x_object": (lambda be: fc.relu(np.array([1.0, None]), backend=be),
                      TypeError, r"\bx\b"),
    "relu_x_complex": (lambda be: fc.relu(np.ones(3, np.complex64), backend=be),
                       TypeError, r"\bx\b.*complex"),
    "relu_x_none": (lambda be: fc.relu(None, backend=be), TypeError, r"\bx\b"),
    "softmax_x_datetime": (lambda be: fc.softmax(np.array(["2020-01-01"], "datetime64[D]"),
                                                 backend=be),
                           TypeError, r"\bx\b"),
    "lrn_x_complex": (lambda be: fc.local_response_norm(X(1, 3, 2, 2) + 0j, 3, backend=be),
                      TypeError, r"\bx\b.*complex"),
    "bn_var_str": (lambda be: fc.batch_norm(X(2, 2), X(2), np.array(["1", "2"]), backend=be),
                   TypeError, r"\bvar\b"),
}


@pytest.mark.parametrize("key", list(CASES))
def test_bad_input(backend, key):
    fn, exc, pattern = CASES[key]
    with pytest.raises(exc, match=pattern):
        fn(backend)


@pytest.mark.parametrize("op,call", [
    ("conv2d", lambda be: fc.conv2d(X(1, 1, 3, 3), X(1, 1, 1, 1), backend=be)),
    ("max_pool2d", lambda be: fc.max_pool2d(X(1, 1, 2, 2), 2, backend=be)),
    ("avg_pool2d", lambda be: fc.avg_pool2d(X(1, 1, 2, 2), 2, backend=be)),
    ("global_avg_pool2d", lambda be: fc.global_avg_pool2d(X(1, 1, 2, 2), backend=be)),
    ("gemm", lambda be: fc.gemm(X(2, 2), X(2, 2), backend=be)),
    ("linear", lambda be: fc.linear(X(2, 2), X(2, 2), backend=be)),
    ("relu", lambda be: fc.relu(X(2), backend=be)),
    ("softmax", lambda be: fc.softmax(X(2), backend=be)),
    ("local_response_norm", lambda be: fc.local_response_norm(X(1, 2, 2), 2, backend=be)),
    ("batch_norm", lambda be: fc.batch_norm(X(1, 2), X(2), X(2), backend=be)),
])
@pytest.mark.parametrize("name", ["nope", "C", "numpy_", "", 3, "auto "])
def test_unknown_backend_in_op(op, call, name):
    """backend= with an unknown name: ValueError listing the known backends (no fallback)."""
    with pytest.raises(ValueError, match=r"unknown backend.*known backends.*'naive'.*'numpy'"):
        call(name)


@pytest.mark.parametrize("name", ["nope", "Numpy", " naive", 0, None])
def test_unknown_backend_in_use_backend(name):
    with pytest.raises(ValueError, match=r"unknown backend.*known backends.*'naive'"):
        with fc.use_backend(name):
            pass  # pragma: no cover


@pytest.mark.parametrize("name", ["nope", "NAIVE", 1.5])
def test_unknown_backend_in_set_default_backend(name):
    before = _registry.current_backend()
    with pytest.raises(ValueError, match=r"unknown backend.*known backends.*'naive'"):
        fc.set_default_backend(name)
    assert _registry.current_backend() == before, "a refused default must not be installed"


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True, None])
def test_bad_set_num_threads(n):
    before = fc.get_num_threads()
    with pytest.raises(ValueError, match=r"\bn\b"):
        fc.set_num_threads(n)
    assert fc.get_num_threads() == before


def test_cached_shape_checks_refuse_what_they_refuse_uncached():
    """check_conv2d / check_pool2d cache results by (shapes, plain hyper-parameters): after a
    valid call is cached, a bool, float or numpy stride of equal value is still refused,
    list arguments (unhashable) still work, and a new shape gets its own parameters."""
    from fastconv import _checks

    x, w = np.ones((1, 2, 6, 6), np.float32), np.ones((4, 2, 3, 3), np.float32)
    p = _checks.check_conv2d(x, w, None, 1, 1, 1, 1)
    assert _checks.check_conv2d(x, w, None, 1, 1, 1, 1) is p
    for bad in (True, 1.0, np.int64(1)):
        if isinstance(bad, np.integer):  # numpy integers are valid, just not cached
            assert _checks.check_conv2d(x, w, None, bad, 1, 1, 1) == p
            continue
        with pytest.raises(TypeError, match="stride"):
            _checks.check_conv2d(x, w, None, bad, 1, 1, 1)
    assert _checks.check_conv2d(x, w, None, [1, 1], [1, 1], 1, 1) == p
    with pytest.raises(ValueError, match="bias"):
        _checks.check_conv2d(x, w, np.ones(3, np.float32), 1, 1, 1, 1)
    q = _checks.check_conv2d(np.ones((2, 2, 7, 6), np.float32), w, None, 1, 1, 1, 1)
    assert (q.N, q.H, q.P) == (2, 7, 7) and (p.N, p.H, p.P) == (1, 6, 6)
    pool = _checks.check_pool2d(x, 2, None, 0, 1, False, True)
    assert _checks.check_pool2d(x, 2, None, 0, 1, False, True) is pool
    with pytest.raises(TypeError, match="kernel_size"):
        _checks.check_pool2d(x, True, None, 0, 1, False, True)
