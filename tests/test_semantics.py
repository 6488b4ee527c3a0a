"""Array semantics and the global API: layouts, dtypes, empties, in-place safety,
NaN / -0.0 / huge logits, backend selection (thread-local), info(), threads.
"""
from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _registry
from helpers import assert_close, rand, ref_max_pool2d

import conftest

# --------------------------------------------------------------------------- one sample per op

# op -> (builder(rng) -> (positional arrays, kwargs), reduction length)
def _conv(rng):
    return [rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3)),
            rng.standard_normal(6)], dict(stride=(1, 2), padding=(1, 0, 2, 1), groups=2)


SAMPLES = {
    "conv2d": (_conv, 18),
    "max_pool2d": (lambda r: ([r.standard_normal((2, 3, 7, 6))],
                              dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)), 1),
    "avg_pool2d": (lambda r: ([r.standard_normal((2, 3, 7, 6))],
                              dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                   count_include_pad=False)), 9),
    "global_avg_pool2d": (lambda r: ([r.standard_normal((2, 3, 5, 4))], {}), 20),
    "gemm": (lambda r: ([r.standard_normal((6, 5)), r.standard_normal((7, 6)),
                         r.standard_normal((5, 1))],
                        dict(alpha=0.5, beta=1.5, trans_a=True, trans_b=True)), 6),
    "linear": (lambda r: ([r.standard_normal((2, 3, 6)), r.standard_normal((5, 6)),
                           r.standard_normal(5)], {}), 6),
    "relu": (lambda r: ([r.standard_normal((3, 4, 5))], {}), 1),
    "softmax": (lambda r: ([r.standard_normal((3, 4, 5)) * 3], dict(axis=1)), 4),
    "local_response_norm": (lambda r: ([r.standard_normal((2, 6, 3, 4)) * 3],
                                       dict(size=3, alpha=0.1, beta=0.75, k=1.0)), 3),
    "batch_norm": (lambda r: ([r.standard_normal((2, 4, 3, 5)), r.standard_normal(4),
                               r.uniform(0.5, 2.0, 4), r.standard_normal(4),
                               r.standard_normal(4)], dict(eps=1e-3)), 1),
}


def _sample(op, seed=0):
    build, red = SAMPLES[op]
    arrays, kwargs = build(np.random.default_rng(seed))
    return arrays, kwargs, red


def _strided(a):
    """Same values, non-contiguous: every other element of a bigger buffer, last axis reversed."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a.copy()
    if a.ndim == 0:
        return big
    big[..., ::2] = a[..., ::-1]
    view = big[..., ::2][..., ::-1]
    assert not view.flags.c_contiguous or a.size <= 1
    return view


LAYOUTS = {
    "contiguous": np.array,  # float32 C-contiguous: passed to kernels without a copy
    "strided": _strided,
    "fortran": np.asfortranarray,
    "transposed_view": lambda a: np.ascontiguousarray(a.T).T,
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("op", list(SAMPLES))
def test_layouts_give_same_result_and_inputs_untouched(backend, op, layout):
    arrays, kwargs, red = _sample(op)
    arrays = [a.astype(np.float32) for a in arrays]
    expected = getattr(fc, op)(*arrays, backend="naive", **kwargs)
    views = [LAYOUTS[layout](a) for a in arrays]
    for a, v in zip(arrays, views):
        np.testing.assert_array_equal(a, v)
    before = [v.copy() for v in views]
    y = getattr(fc, op)(*views, backend=backend, **kwargs)
    assert_close(y, expected, reduction=red, case=f"{op} {layout} {backend}", dtype=np.float32)
    for i, (v, b) in enumerate(zip(views, before)):
        np.testing.assert_array_equal(v, b, err_msg=f"{op} {backend} modified input #{i}")


# DESIGN.md: naive and numpy compute float64 in float64 (plus any backend that declares it).
FLOAT64_CONTRACT = {"naive", "numpy"} | set(_registry.FLOAT64_BACKENDS)


@pytest.mark.parametrize("op", list(SAMPLES))
def test_float64_in_float64_out(backend, op):
    """float64 inputs give float64 outputs; naive/numpy compute in float64, others in float32."""
    arrays, kwargs, red = _sample(op, seed=1)
    expected64 = getattr(fc, op)(*arrays, backend="naive", **kwargs)
    assert expected64.dtype == np.float64
    before = [a.copy() for a in arrays]
    y = getattr(fc, op)(*arrays, backend=backend, **kwargs)
    assert y.dtype == np.float64, f"{op} {backend}: float64 in, {y.dtype} out"
    if backend in FLOAT64_CONTRACT:
        assert_close(y, expected64, reduction=red, case=f"{op} {backend} float64")
        # and it really was computed in float64, not float32 and cast back
        y32 = getattr(fc, op)(*[a.astype(np.float32) for a in arrays], backend=backend, **kwargs)
        if op not in ("relu", "max_pool2d"):  # those only select values
            assert not np.array_equal(y, y32.astype(np.float64)), (
                f"{op} {backend}: float64 result equals the float32 one: computed in float32?")
    else:
        assert_close(y, expected64, reduction=red, rtol=1e-4 * max(1, red ** 0.5 / 4),
                     atol=1e-5 * max(1, red ** 0.5 / 4), case=f"{op} {backend} float64")
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_float64_spec_matches_float64_oracle():
    """The spec's float64 path is precise (torch float64 as the oracle)."""
    torch = pytest.importorskip("torch")
    x, w, b = _sample("conv2d", seed=3)[0]
    y = fc.conv2d(x, w, b, stride=(1, 2), padding=(1, 1), groups=2, backend="naive")
    t = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                   stride=(1, 2), padding=(1, 1), groups=2).numpy()
    assert_close(y, t, reduction=18, case="naive float64 conv vs torch float64")


def test_mixed_dtypes_promote_to_float64(backend):
    x = rand((1, 2, 5, 5), 0).astype(np.float64)
    w = rand((3, 2, 3, 3), 1)  # float32
    y = fc.conv2d(x, w, backend=backend)
    assert y.dtype == np.float64
    y = fc.gemm(rand((2, 3), 2), rand((3, 4), 3), np.zeros(4), backend=backend)  # c float64
    assert y.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.int8, np.bool_])
@pytest.mark.parametrize("op", list(SAMPLES))
def test_integer_input(backend, op, dtype):
    """Integer / bool arrays are accepted and computed as float32 (float32 out)."""
    arrays, kwargs, red = _sample(op, seed=2)
    rng = np.random.default_rng(5)
    ints = []
    for a in arrays:
        if dtype == np.bool_:
            ints.append(rng.integers(0, 2, a.shape).astype(np.bool_))
        elif np.issubdtype(dtype, np.unsignedinteger):
            ints.append(rng.integers(0, 5, a.shape).astype(dtype))
        else:
            ints.append(rng.integers(-4, 5, a.shape).astype(dtype))
    if op == "batch_norm":
        ints[2] = np.abs(ints[2]).astype(dtype) + 1 if dtype != np.bool_ else ints[2]
    y = getattr(fc, op)(*ints, backend=backend, **kwargs)
    assert y.dtype == np.float32, f"{op} {backend}: {np.dtype(dtype)} in, {y.dtype} out"
    expected = getattr(fc, op)(*[a.astype(np.float32) for a in ints], backend="naive", **kwargs)
    assert_close(y, expected, reduction=red, case=f"{op} {backend} {np.dtype(dtype)}")


# --------------------------------------------------------------------------- empty inputs

EMPTY = {
    "conv2d": (lambda be: fc.conv2d(np.zeros((0, 3, 5, 5), np.float32),
                                    np.ones((4, 3, 3, 3), np.float32), padding=1, stride=2,
                                    backend=be), (0, 4, 3, 3)),
    "max_pool2d": (lambda be: fc.max_pool2d(np.zeros((0, 2, 5, 5), np.float32), 2,
                                            ceil_mode=True, backend=be), (0, 2, 3, 3)),
    "avg_pool2d": (lambda be: fc.avg_pool2d(np.zeros((0, 2, 6, 5), np.float32), 3, 2, 1,
                                            backend=be), (0, 2, 3, 3)),
    "global_avg_pool2d": (lambda be: fc.global_avg_pool2d(np.zeros((0, 3, 4, 4), np.float32),
                                                          backend=be), (0, 3, 1, 1)),
    "gemm": (lambda be: fc.gemm(np.zeros((0, 3), np.float32), np.ones((3, 4), np.float32),
                                backend=be), (0, 4)),
    "linear": (lambda be: fc.linear(np.zeros((0, 5), np.float32), np.ones((3, 5), np.float32),
                                    np.ones(3, np.float32), backend=be), (0, 3)),
    "relu": (lambda be: fc.relu(np.zeros((0, 3), np.float32), backend=be), (0, 3)),
    "softmax": (lambda be: fc.softmax(np.zeros((0, 3), np.float32), backend=be), (0, 3)),
    "local_response_norm": (lambda be: fc.local_response_norm(np.zeros((0, 3, 2, 2), np.float32),
                                                              3, backend=be), (0, 3, 2, 2)),
    "batch_norm": (lambda be: fc.batch_norm(np.zeros((0, 3, 4), np.float32),
                                            np.zeros(3, np.float32), np.ones(3, np.float32),
                                            backend=be), (0, 3, 4)),
}


@pytest.mark.parametrize("op", list(EMPTY))
def test_empty_batch(backend, op):
    call, shape = EMPTY[op]
    y = call(backend)
    assert isinstance(y, np.ndarray) and y.shape == shape and y.dtype == np.float32, (
        f"{op} {backend}: got {getattr(y, 'shape', y)} {getattr(y, 'dtype', '')}, want {shape}")


def test_gemm_empty_inner_dimension(backend):
    """K = 0: op(a) @ op(b) is all zeros, so y = beta * c."""
    c = rand((3, 4), 0)
    y = fc.gemm(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), c, beta=2.0,
                backend=backend)
    assert_close(y, 2.0 * c, case=f"gemm K=0 {backend}", dtype=np.float32)


# --------------------------------------------------------------------------- NaN, -0.0, extremes


@pytest.mark.op("max_pool2d")
def test_max_pool_propagates_nan(backend):
    x = rand((1, 2, 6, 6), 0)
    x[0, 0, 1, 1] = np.nan  # last element of the first 2x2 window (after a bigger one?)
    x[0, 0, 0, 0] = 100.0  # a larger value earlier in the same window must not hide the NaN
    x[0, 1, 4:6, 4:6] = np.nan  # an all-NaN window
    x[0, 1, 0, 0] = np.nan  # NaN first in its window, followed by larger values
    x[0, 1, 0:2, 1] = 50.0
    y = fc.max_pool2d(x, 2, backend=backend)
    assert np.isnan(y[0, 0, 0, 0]), f"{backend}: NaN after a larger value was dropped"
    assert np.isnan(y[0, 1, 2, 2]), f"{backend}: all-NaN window did not give NaN"
    assert np.isnan(y[0, 1, 0, 0]), f"{backend}: leading NaN was dropped"
    assert np.isnan(y).sum() == 3, f"{backend}: NaN leaked into other windows:\n{y}"
    assert_close(y, ref_max_pool2d(x, 2), rtol=0, atol=0, case=f"maxpool NaN {backend}")


@pytest.mark.op("max_pool2d")
def test_max_pool_nan_with_padding_and_neg_inf(backend):
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    x[0, 0, 3, 3] = np.nan
    y = fc.max_pool2d(x, 3, stride=2, padding=1, backend=backend)
    expected = ref_max_pool2d(x, 3, stride=2, padding=1)
    assert_close(y, expected, rtol=0, atol=0, case=f"maxpool -inf/NaN padded {backend}")
    assert np.isneginf(y[0, 0, 0, 0]), "an all -inf window (plus -inf padding) is -inf"


@pytest.mark.op("relu")
def test_relu_signed_zero_nan_inf(backend):
    x = np.array([-0.0, 0.0, -1e-45, -1.0, 1.0, np.nan, -np.inf, np.inf, -np.nan], np.float32)
    y = fc.relu(x, backend=backend)
    assert not np.signbit(y[~np.isnan(y)]).any(), f"{backend}: relu returned -0.0: {y}"
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, np.nan, 0, np.inf, np.nan])
    y64 = fc.relu(x.astype(np.float64), backend=backend)
    assert not np.signbit(y64[~np.isnan(y64)]).any(), f"{backend}: float64 relu gave -0.0"


@pytest.mark.op("conv2d")
def test_conv_relu_no_negative_zero(backend):
    """Fused relu: negative pre-activations (and exact zeros) become +0.0."""
    x = np.ones((1, 1, 3, 3), np.float32)
    w = np.array([[[[-1.0]]], [[[0.0]]]], np.float32)
    b = np.array([0.0, -0.0], np.float32)
    y = fc.conv2d(x, w, b, activation="relu", backend=backend)
    assert (y == 0).all() and not np.signbit(y).any(), f"{backend}: {y}"
    x = rand((1, 2, 5, 5), 0)
    w = rand((3, 2, 3, 3), 1)
    ref = np.maximum(fc.conv2d(x, w, backend="naive"), 0)
    y = fc.conv2d(x, w, activation="relu", backend=backend)
    assert_close(y, ref, reduction=18, case=f"fused relu {backend}")
    assert not np.signbit(y).any()


def test_every_op_from_8_threads_at_once(backend):
    """8 Python threads calling every op the backend implements at the same time (released
    together by a barrier, three rounds) get results identical to the serial calls."""
    from concurrent.futures import ThreadPoolExecutor

    if backend == "cuda" and conftest.cuda_simulated():
        pytest.skip("the CUDA simulator runs every CUDA thread as a Python thread (8 x 10 ops "
                    "x 3 rounds: > 1 min); test_kernels_reentrant_across_python_threads "
                    "covers it")
    ops = [op for op in SAMPLES if (op, backend) in _registry.KERNELS]
    jobs = []
    for seed in range(2 if conftest.runs_like_naive(backend) else 4):
        for op in ops:
            arrays, kwargs, _ = _sample(op, seed)
            jobs.append((op, [np.asarray(a, np.float32) for a in arrays], kwargs))
    serial = [getattr(fc, op)(*args, backend=backend, **kw) for op, args, kw in jobs]
    barrier = threading.Barrier(8)

    def worker(t):
        barrier.wait()
        order = list(range(len(jobs)))[t:] + list(range(len(jobs)))[:t]  # different orders
        return {i: getattr(fc, jobs[i][0])(*jobs[i][1], backend=backend, **jobs[i][2])
                for i in order}

    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            for out in pool.map(worker, range(8)):
                for i, y in out.items():
                    np.testing.assert_array_equal(
                        y, serial[i], err_msg=f"{jobs[i][0]} {backend} from 8 threads")


@pytest.mark.op("softmax")
def test_softmax_huge_logits(backend):
    x = np.array([[1e30, 0.0, -1e30],
                  [-1e30, -1e30, -1e30],
                  [1e30, 1e30, 1e30],
                  [3e38, -3e38, 0.0],
                  [0.0, -np.inf, 1.0]], np.float32)
    y = fc.softmax(x, axis=1, backend=backend)
    e = np.exp(1.0)
    expected = np.array([[1, 0, 0], [1 / 3] * 3, [1 / 3] * 3, [1, 0, 0],
                         [1 / (1 + e), 0, e / (1 + e)]])
    assert_close(y, expected, case=f"softmax extremes {backend}", dtype=np.float32)
    yt = fc.softmax(np.ascontiguousarray(x.T), axis=0, backend=backend)
    assert_close(yt, expected.T, case=f"softmax extremes axis=0 {backend}")


@pytest.mark.op("softmax")
def test_softmax_nan_row(backend):
    x = rand((3, 4), 0)
    x[1, 2] = np.nan
    y = fc.softmax(x, backend=backend)
    assert np.isnan(y[1]).all(), f"{backend}: a NaN logit must poison its row: {y[1]}"
    assert not np.isnan(y[[0, 2]]).any()


# --------------------------------------------------------------------------- backend selection


def _spy(monkeypatch, backend_name, op):
    """Wrap ``op`` of ``backend_name``'s module; returns the list of calls."""
    module = _registry.backend_module(backend_name)
    original = getattr(module, op)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, op, wrapper)
    return calls


def test_use_backend_nests_and_dispatches(monkeypatch):
    x = rand((4,), 0)
    naive_calls = _spy(monkeypatch, "naive", "relu")
    numpy_calls = _spy(monkeypatch, "numpy", "relu")
    assert _registry.current_backend() == "auto"
    with fc.use_backend("naive") as name:
        assert name == "naive" and _registry.current_backend() == "naive"
        fc.relu(x)
        assert len(naive_calls) == 1 and not numpy_calls
        with fc.use_backend("numpy"):
            assert _registry.current_backend() == "numpy"
            fc.relu(x)
            assert len(numpy_calls) == 1 and len(naive_calls) == 1
            fc.relu(x, backend="naive")  # explicit backend= wins over the context
            assert len(naive_calls) == 2
        assert _registry.current_backend() == "naive"
        fc.relu(x)
        assert len(naive_calls) == 3
    assert _registry.current_backend() == "auto"


def test_use_backend_restores_on_exception():
    with pytest.raises(RuntimeError):
        with fc.use_backend("naive"):
            raise RuntimeError("boom")
    assert _registry.current_backend() == "auto"


def test_use_backend_is_thread_local(monkeypatch):
    naive_calls = _spy(monkeypatch, "naive", "relu")
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait(5)
        seen["backend"] = _registry.current_backend()
        fc.relu(np.ones(3, np.float32))  # must not go to naive
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with fc.use_backend("naive"):
        inside.set()
        assert release.wait(10), "worker thread did not finish"
        assert _registry.current_backend() == "naive"
    t.join(10)
    assert seen["backend"] == "auto", f"use_backend leaked into another thread: {seen}"
    assert t.ident not in naive_calls, "the other thread dispatched to naive"


def test_use_backend_threads_concurrently():
    """Two threads in different use_backend blocks, interleaved, each keep their own."""
    errors = []
    barrier = threading.Barrier(2)

    def worker(name):
        try:
            with fc.use_backend(name):
                for _ in range(50):
                    barrier.wait(5)
                    assert _registry.current_backend() == name
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("naive", "numpy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_set_default_backend(monkeypatch):
    naive_calls = _spy(monkeypatch, "naive", "relu")
    fc.set_default_backend("naive")
    assert _registry.current_backend() == "naive"
    fc.relu(np.ones(2, np.float32))
    assert len(naive_calls) == 1
    with fc.use_backend("numpy"):  # the thread-local context overrides the default
        fc.relu(np.ones(2, np.float32))
    assert len(naive_calls) == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(_registry.current_backend()))
    t.start()
    t.join()
    assert seen == ["naive"], "set_default_backend is process-wide"
    fc.set_default_backend("auto")
    assert _registry.current_backend() == "auto"


def test_auto_matches_spec(backend):
    """backend='auto' (and None) gives the spec's answer whatever it picks."""
    x, w, b = [a.astype(np.float32) for a in _sample("conv2d")[0]]
    kw = SAMPLES["conv2d"][0](np.random.default_rng(0))[1]
    ref = fc.conv2d(x, w, b, backend="naive", **kw)
    with fc.use_backend(backend):
        assert_close(fc.conv2d(x, w, b, **kw), ref, reduction=18, case=f"default={backend}")
    assert_close(fc.conv2d(x, w, b, backend="auto", **kw), ref, reduction=18, case="auto")


def test_backends_lists_naive_numpy_c():
    names = fc.backends()
    assert isinstance(names, list)
    assert "naive" in names and "numpy" in names
    assert set(names) <= {b for (_, b) in _registry.KERNELS}
    conftest.check_usable("c")  # skip with the reason, or fail under FASTCONV_REQUIRE_C=1
    assert "c" in names


def test_backends_still_callable_after_backend_import():
    """``fastconv.backends`` must stay the function after ``fastconv.backends.<x>`` is imported."""
    fc.relu(np.ones(2, np.float32), backend="naive")  # imports fastconv.backends.naive
    assert callable(fc.backends), (
        f"fastconv.backends is {fc.backends!r}: importing the fastconv.backends subpackage "
        "rebinds the name, shadowing the backends() function")
    assert "naive" in fc.backends()


def test_info_keys():
    fc.relu(np.ones(2, np.float32), backend="naive")  # a backend has been imported
    info = fc.info()
    for key in ("version", "backends", "threads"):
        assert key in info, f"info() lacks {key!r}: {info}"
    assert info["version"] == fc.__version__
    assert info["threads"] == fc.get_num_threads()
    assert "naive" in info["backends"]
    if "c" in _registry.backends():
        assert "openmp" in info and "isa" in info, info
    else:
        assert "openmp" not in info and "isa" not in info


def test_info_reports_c_build():
    conftest.check_usable("c")
    info = fc.info()
    assert isinstance(info["openmp"], bool), info
    assert isinstance(info["isa"], str) and info["isa"], info


def test_require_c_mechanism(monkeypatch):
    """The conftest gate itself: unusable c skips normally, fails under FASTCONV_REQUIRE_C=1."""
    monkeypatch.setattr(_registry, "backends", lambda: ["naive", "numpy"])
    monkeypatch.setattr(_registry, "unavailable", lambda: {"c": "ImportError: simulated"})
    monkeypatch.delenv("FASTCONV_REQUIRE_C", raising=False)
    with pytest.raises(pytest.skip.Exception, match="simulated"):
        conftest.check_usable("c")
    monkeypatch.setenv("FASTCONV_REQUIRE_C", "1")
    with pytest.raises(pytest.fail.Exception, match="FASTCONV_REQUIRE_C=1.*simulated"):
        conftest.check_usable("c")
    conftest.check_usable("naive")  # usable: neither


def test_c_present_when_required():
    if not conftest.require_c():
        pytest.skip("FASTCONV_REQUIRE_C is not set (CI sets it)")
    assert "c" in _registry.backends(), _registry.unavailable().get("c")


def test_cuda_simulator_flag_set_without_gpu():
    if conftest._has_cuda_gpu():
        pytest.skip("a CUDA GPU is present: the simulator is not forced")
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


# --------------------------------------------------------------------------- threads


def test_num_threads_round_trip():
    before = fc.get_num_threads()
    for n in (1, 2, 3, before):
        fc.set_num_threads(n)
        assert fc.get_num_threads() == n
    if "c" in _registry.backends():
        # the C side's own view of its thread count (build_info()["c_threads"] when reported)
        info = _registry.backend_module("c").build_info()
        if "c_threads" in info:
            for n in (1, 2):
                fc.set_num_threads(n)
                got = _registry.backend_module("c").build_info()["c_threads"]
                assert got == n, f"set_num_threads({n}) did not reach the C backend: {got}"


def test_omp_num_threads_sets_the_start_value():
    """OMP_NUM_THREADS at import is the starting thread count, in Python and in C."""
    import subprocess
    import sys

    code = ("import fastconv as fc; from fastconv import _registry as r; "
            "c = r.backend_module('c').build_info()['c_threads'] if 'c' in r.backends() else 3; "
            "print(fc.get_num_threads(), c)")
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["3", "3"], out


@pytest.mark.host_only  # set_num_threads sets CPU threads
@pytest.mark.parametrize("op", ["conv2d", "gemm", "max_pool2d", "avg_pool2d",
                                "local_response_norm", "softmax", "batch_norm", "linear"])
def test_results_identical_across_thread_counts(backend, op):
    rng = np.random.default_rng(7)
    f = np.float32
    args = {
        "conv2d": ([rng.standard_normal((3, 16, 15, 13)).astype(f),
                    rng.standard_normal((24, 16, 3, 3)).astype(f)], dict(padding=1)),
        "gemm": ([rng.standard_normal((70, 90)).astype(f), rng.standard_normal((90, 65)).astype(f)],
                 {}),
        "max_pool2d": ([rng.standard_normal((2, 16, 15, 15)).astype(f)],
                       dict(kernel_size=3, stride=2, ceil_mode=True)),
        "avg_pool2d": ([rng.standard_normal((2, 16, 15, 15)).astype(f)],
                       dict(kernel_size=3, stride=2, padding=1)),
        "local_response_norm": ([rng.standard_normal((2, 16, 9, 9)).astype(f)], dict(size=5)),
        "softmax": ([rng.standard_normal((64, 100)).astype(f)], {}),
        "batch_norm": ([rng.standard_normal((2, 16, 9, 9)).astype(f), rng.standard_normal(16),
                        rng.uniform(0.5, 1, 16)], {}),
        "linear": ([rng.standard_normal((40, 50)).astype(f),
                    rng.standard_normal((30, 50)).astype(f)], {}),
    }[op]
    if conftest.runs_like_naive(backend) and op in ("conv2d", "gemm", "linear"):
        args[0][0] = args[0][0][:1, ..., :8]  # keep the pure-Python spec fast
        if op == "linear":
            args[0][1] = args[0][1][:, :8]
        if op == "gemm":
            args[0][1] = args[0][1][:8]
    fc.set_num_threads(1)
    y1 = getattr(fc, op)(*args[0], backend=backend, **args[1])
    fc.set_num_threads(2)
    y2 = getattr(fc, op)(*args[0], backend=backend, **args[1])
    np.testing.assert_array_equal(y1, y2, err_msg=f"{op} {backend}: 1 thread != 2 threads")


def _spawned_conv(_):
    import numpy as np

    import fastconv as fc

    fc.set_num_threads(2)  # the child's own OpenMP pool
    x = np.ones((1, 8, 32, 32), np.float32)
    w = np.ones((16, 8, 3, 3), np.float32)
    y = fc.conv2d(x, w, backend="auto")
    return list(y.shape), np.unique(y).tolist()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_worker_after_parent_used_kernels(method):
    """A 'spawn' / 'forkserver' child works after the parent ran (OpenMP) kernels with 2
    threads; fork is documented unsafe (README, "Threads")."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method on this platform")
    fc.set_num_threads(2)
    fc.conv2d(np.ones((1, 8, 32, 32), np.float32), np.ones((16, 8, 3, 3), np.float32))
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(1) as pool:
        out = pool.map(_spawned_conv, [0], chunksize=1)
    assert out[0] == ([1, 16, 30, 30], [72.0]), out


def test_kernels_reentrant_across_python_threads(backend):
    """Kernels are re-entrant (no shared static workspace): concurrent calls from several
    Python threads (the C backend releases the GIL) give exactly the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    small = conftest.runs_like_naive(backend)
    rng = np.random.default_rng(11)
    jobs = []
    for i in range(4):
        C, K, H = (2, 3, 5) if small else (8 + i, 12 + 2 * i, 13 + i)
        x = rng.standard_normal((1, C, H, H)).astype(np.float32)
        w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
        jobs.append(("conv2d", (x, w), dict(padding=1)))
        m = 6 if small else 40 + 7 * i
        a = rng.standard_normal((m, m + 1)).astype(np.float32)
        b = rng.standard_normal((m + 1, m + 3)).astype(np.float32)
        jobs.append(("gemm", (a, b), {}))
        jobs.append(("max_pool2d", (x,), dict(kernel_size=3, stride=2, ceil_mode=True)))
    serial = [getattr(fc, op)(*args, backend=backend, **kw) for op, args, kw in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            futures = [pool.submit(getattr(fc, op), *args, backend=backend, **kw)
                       for op, args, kw in jobs]
            for (op, _, _), f, ref in zip(jobs, futures, serial):
                np.testing.assert_array_equal(f.result(), ref, err_msg=f"{op} {backend} threaded")
