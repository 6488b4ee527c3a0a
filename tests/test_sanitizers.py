"""The C backend under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer.

A module fixture builds ``fastconv._cext`` with ``FASTCONV_SANITIZE=1`` (fastconv/_build.py:
``-fsanitize=address,undefined -O1 -g``) into a temporary directory that holds a copy of the
``fastconv`` package and of ``csrc/`` (``python fastconv/_build.py`` compiles next to its own
copy, so the tree under test is never touched). Subprocesses then import that copy
(``PYTHONPATH`` = the temporary directory, working directory = it as well, so the editable
install cannot win) with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``:

* ``_DRIVER``: every C entry point on small shapes (each conv algorithm forced, pooling with
  ceil_mode / asymmetric pads / dilation, the GEMV and blocked GEMM paths, LRN / softmax /
  batch-norm / relu / GAP, 1 and 2 threads, the AVX2 memory-bound paths of
  test_c_memory_paths.run_checks), compared with the naive / NumPy backends, then a leak
  check. Python and NumPy themselves leak at exit and hold unreachable-looking blocks, so
  ``leak_check_at_exit=0`` and the driver calls ``__lsan_do_recoverable_leak_check`` after
  the kernels ran; the test fails if any leak report in it names the C extension (``_cext``
  or a ``csrc/`` file). Python's own reports are ignored.
* the hypothesis property tests restricted to ``be=c`` (ci profile), same environment.
* a positive control: an out-of-bounds call through ``fastconv._cext.lib`` must be caught
  (proves the sanitizers are really active, so a clean run means something).

Skips (with the reason) when there is no C compiler or no libasan. ~1-2 min, most of it the
-O1 sanitized build.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

_DRIVER = r'''
import ctypes, os, sys
import numpy as np
sys.path.insert(0, os.environ["FC_TESTS_DIR"])
import fastconv as fc
from fastconv import _checks
from fastconv.backends import c as cb
assert fc.__file__.startswith(os.environ["FC_SAN_DIR"]), fc.__file__
flags = cb.build_info()["c_flags"]
assert "-fsanitize=address,undefined" in flags, flags
print("sanitized build:", fc.__file__, flags, flush=True)

rng = np.random.default_rng(5)
def r(*s):
    return rng.standard_normal(s).astype(np.float32)
def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4, err_msg=what)

CONVS = [  # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (1, 3, 9, 11, 7, 3, 3, 1, (1, 2, 0, 1), 1, 1), (2, 6, 8, 8, 17, 3, 3, 1, 1, 1, 1),
    (1, 8, 10, 9, 20, 3, 3, 2, 1, 1, 2), (2, 5, 7, 7, 13, 1, 1, 1, 0, 1, 1),
    (1, 4, 9, 9, 6, 3, 3, 1, 2, 2, 1), (1, 4, 8, 8, 4, 3, 3, 1, 1, 1, 4),
    (1, 3, 23, 23, 5, 11, 11, 4, 0, 1, 1), (1, 7, 13, 13, 12, 3, 1, (2, 1), (0, 0, 3, 1), 1, 1),
    (1, 40, 6, 7, 33, 3, 3, 1, 1, 1, 1), (1, 300, 3, 3, 37, 1, 1, 1, 0, 1, 1),
]

def once(threads):
    fc.set_num_threads(threads)
    for (N, C, H, W, K, R, S, st, pad, dil, g) in CONVS:
        x, w, b = r(N, C, H, W), r(K, C // g, R, S), r(K)
        p = _checks.check_conv2d(x, w, b, st, pad, dil, g)
        ref = fc.conv2d(x, w, b, st, pad, dil, g, backend="numpy")
        for algo in cb.CONV_ALGORITHMS:
            if cb.lib.fc_conv2d_supports(cb.CONV_ALGORITHMS[algo], *cb._shape(p)):
                for act in (None, "relu"):
                    y = cb.conv2d(x, w, b, p, act, algorithm=algo)
                    close(y, np.maximum(ref, 0) if act else ref, f"conv {algo} {p}")
    for shape, kw in [((2, 3, 9, 10), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
                      ((1, 2, 7, 7), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1, 0, 1))),
                      ((1, 3, 12, 17), dict(kernel_size=2, stride=2))]:
        x = r(*shape)
        close(fc.max_pool2d(x, **kw, backend="c"), fc.max_pool2d(x, **kw, backend="naive"), "max")
        close(fc.max_pool2d(x, **kw, dilation=2, backend="c") if shape[2] > 8 else 0,
              fc.max_pool2d(x, **kw, dilation=2, backend="naive") if shape[2] > 8 else 0, "maxd")
        for cip in (True, False):
            close(fc.avg_pool2d(x, **kw, count_include_pad=cip, backend="c"),
                  fc.avg_pool2d(x, **kw, count_include_pad=cip, backend="naive"), "avg")
        close(fc.global_avg_pool2d(x, backend="c"), x.mean(axis=(2, 3), keepdims=True), "gap")
        close(fc.relu(x, backend="c"), np.maximum(x, 0), "relu")
        for ax in (1, -1):
            close(fc.softmax(x, axis=ax, backend="c"), fc.softmax(x, axis=ax, backend="numpy"), "sm")
        for size in (1, 2, 5):
            close(fc.local_response_norm(x, size, backend="c"),
                  fc.local_response_norm(x, size, backend="numpy"), "lrn")
        C = shape[1]
        m, v, gw, gb = r(C), np.abs(r(C)) + 0.1, r(C), r(C)
        close(fc.batch_norm(x, m, v, gw, gb, backend="c"),
              fc.batch_norm(x, m, v, gw, gb, backend="numpy"), "bn")
    for (M, N, K) in [(1, 9, 30), (9, 1, 30), (7, 19, 5), (33, 40, 300), (64, 70, 257)]:
        for ta in (False, True):
            for tb in (False, True):
                a = r(K, M) if ta else r(M, K)
                bb = r(N, K) if tb else r(K, N)
                cc = r(M, N)
                close(fc.gemm(a, bb, cc, alpha=0.5, beta=2.0, trans_a=ta, trans_b=tb, backend="c"),
                      fc.gemm(a, bb, cc, alpha=0.5, beta=2.0, trans_a=ta, trans_b=tb,
                              backend="numpy"), f"gemm {M} {N} {K}")
    for rows in (1, 3, 5, 12):
        x, w, b = r(rows, 37), r(11, 37), r(11)
        close(fc.linear(x, w, b, backend="c"), x @ w.T + b, "linear")

import time
t0 = time.time()
for threads in (1, 2):
    once(threads)
print(f"ops: {time.time() - t0:.1f} s", flush=True)

# The leak check comes before anything imports numba: LSan would then scan LLVM's large
# mappings (~2 min instead of ~4 s).
t0 = time.time()
lib = ctypes.CDLL(None)  # libasan is LD_PRELOADed: its interface is global
print("LEAK CHECK BEGIN", flush=True)
sys.stderr.flush()
leaked = lib.__lsan_do_recoverable_leak_check()
sys.stderr.flush()
print("LEAK CHECK END", leaked, f"{time.time() - t0:.1f} s", flush=True)

t0 = time.time()
import test_c_memory_paths  # (its module-level fastconv.backends() imports numba)
test_c_memory_paths.run_checks()
print(f"memory paths: {time.time() - t0:.1f} s", flush=True)
print("DRIVER DONE", flush=True)
'''

_CONTROL = r'''
import numpy as np
from fastconv._cext import ffi, lib
x = np.zeros(16, np.float32)
y = np.zeros(16, np.float32)
# n = 17: reads and writes one float past both 64-byte heap buffers
lib.fc_relu(ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y), 17)
print("NOT CAUGHT")
'''


def _libasan():
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (gcc) on PATH: cannot build the sanitized extension")
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True,
                         timeout=60).stdout.strip()
    # gcc prints the bare name back when it has no such file
    if not os.path.isabs(out) or not os.path.exists(out):
        pytest.skip(f"{cc} has no libasan.so (-print-file-name gave {out!r})")
    return out


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """(directory holding the sanitized fastconv copy, env for running it)."""
    libasan = _libasan()
    tmp = tmp_path_factory.mktemp("fastconv-asan")
    shutil.copytree(ROOT / "fastconv", tmp / "fastconv",
                    ignore=shutil.ignore_patterns("_cext*", "__pycache__", "*.so"))
    shutil.copytree(ROOT / "csrc", tmp / "csrc")
    env = dict(os.environ, FASTCONV_SANITIZE="1")
    env.pop("FASTCONV_NATIVE", None)
    res = subprocess.run([sys.executable, os.path.join("fastconv", "_build.py")], cwd=tmp,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, "sanitized build failed:\n" + res.stdout[-3000:] + res.stderr[-3000:]
    assert list((tmp / "fastconv").glob("_cext*.so")), "the build made no _cext*.so"
    run_env = dict(os.environ)
    for k in ("FASTCONV_SANITIZE", "FASTCONV_ISA"):
        run_env.pop(k, None)
    run_env.update(
        PYTHONPATH=os.pathsep.join([str(tmp), str(HERE)]),
        LD_PRELOAD=libasan,
        ASAN_OPTIONS="detect_leaks=1:leak_check_at_exit=0:abort_on_error=0:"
                     "halt_on_error=1:detect_stack_use_after_return=0",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        FC_SAN_DIR=str(tmp), FC_TESTS_DIR=str(HERE),
        FASTCONV_REQUIRE_C="1", PYTHONDONTWRITEBYTECODE="1",
    )
    return tmp, run_env


def _run(args, tmp, env, timeout=400):
    return subprocess.run([sys.executable, *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _findings(stderr):
    """ASan / UBSan error reports in stderr (not the leak report)."""
    return [line for line in stderr.splitlines()
            if re.search(r"ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer", line)]


def test_sanitizers_are_active(sanitized):
    """Positive control: an out-of-bounds kernel call is reported (so clean runs mean something)."""
    tmp, env = sanitized
    res = _run(["-c", _CONTROL], tmp, env, timeout=120)
    assert "NOT CAUGHT" not in res.stdout, res.stdout + res.stderr[-2000:]
    assert "heap-buffer-overflow" in res.stderr, res.stderr[-3000:]
    assert "fc_relu" in res.stderr or "elementwise.c" in res.stderr, res.stderr[-3000:]


def test_c_kernels_clean_under_asan_ubsan_lsan(sanitized):
    tmp, env = sanitized
    res = _run(["-c", _DRIVER], tmp, env)
    out, err = res.stdout, res.stderr
    print(out)
    assert res.returncode == 0 and "DRIVER DONE" in out, (
        f"rc={res.returncode}\n{out[-2000:]}\n{err[-6000:]}")
    assert not _findings(err), "\n".join(_findings(err)) + "\n" + err[-6000:]
    # each leak report block; any that names the C extension is ours
    blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of)", err)
    ours = [b for b in blocks if re.search(r"(Direct|Indirect) leak of", b)
            and re.search(r"_cext|csrc/", b)]
    assert not ours, "LeakSanitizer: the C kernels leak:\n" + "\n".join(ours)[:6000]


_STEAL_DRIVER = r'''
import os, sys
import numpy as np
import fastconv as fc
from fastconv import _checks
from fastconv.backends import c as cb
assert fc.__file__.startswith(os.environ["FC_SAN_DIR"]), fc.__file__
rng = np.random.default_rng(7)
for (N, C, H, W, K, k, pad, groups) in [(2, 64, 6, 6, 80, 3, 1, 1), (3, 32, 7, 7, 80, 3, 1, 2),
                                        (1, 40, 13, 13, 50, 3, 1, 2), (4, 3, 20, 20, 24, 3, 1, 1)]:
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C // groups, k, k)).astype(np.float32)
    ys = []
    for threads in (1, 2, 3, 5):
        fc.set_num_threads(threads)
        p = _checks.check_conv2d(x, w, None, 1, pad, 1, groups)
        ys.append(cb.conv2d(x, w, None, p, None, algorithm="indirect"))
    assert all(np.array_equal(y, ys[0]) for y in ys), (N, C, H, W, K, groups)
print("STEAL DONE")
'''


def test_indirect_conv_stealing_clean_under_sanitizers(sanitized):
    """Every work item of the indirect conv run by a thread that did not own it
    (FASTCONV_TEST_STEAL_FIRST=1, see test_c_conv_paths), under ASan / UBSan."""
    tmp, env = sanitized
    res = _run(["-c", _STEAL_DRIVER], tmp, dict(env, FASTCONV_TEST_STEAL_FIRST="1"))
    assert res.returncode == 0 and "STEAL DONE" in res.stdout, res.stdout + res.stderr[-4000:]
    assert not _findings(res.stderr), "\n".join(_findings(res.stderr))


def test_c_property_tests_under_sanitizers(sanitized):
    """The hypothesis property tests, C backend only, under the sanitizers."""
    tmp, env = sanitized
    env = dict(env, ASAN_OPTIONS=env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0"),
               HYPOTHESIS_PROFILE="ci")
    import inspect

    import test_properties
    ids = [f"{HERE / 'test_properties.py'}::{name}[be=c]" for name, fn in vars(test_properties).items()
           if name.startswith("test_") and "backend" in inspect.signature(fn).parameters]
    assert ids
    res = _run(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *ids], tmp, env)
    tail = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 0, tail
    assert not _findings(res.stderr), tail
    assert re.search(r"\d+ passed", res.stdout), tail
