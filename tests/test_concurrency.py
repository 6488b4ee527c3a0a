"""The C backend releases the GIL while its kernels run.

(Re-entrancy and identical results from 8 concurrent threads, and spawn / forkserver
workers after OpenMP: tests/test_semantics.py.)

* ``test_gil_released_during_c_conv``: with one OpenMP thread, a big C conv (~0.1-0.5 s per
  call) runs in a worker thread while the main thread keeps counting in pure Python. If the
  kernel held the GIL, the main thread could not run at all during the call (a gap as long
  as the call); released, it keeps ticking. This measures overlap directly, so it holds on
  a loaded machine too (the main thread only needs *some* CPU time during the call).
  ``test_gil_check_detects_a_held_gil`` shows the same check flags a GIL-holding C call.
* ``test_two_threads_run_c_conv_in_parallel``: two threads doing one conv each take < 1.7x
  the wall time of one (~0.3 s of convs each, best of 3 tries; ~1.0x when two cores are
  free, >= 2x if the GIL serialised them). Skipped when other processes keep more than
  0.2 CPUs busy (1-minute load average minus this test's own thread), because then wall
  time cannot show parallelism; the overlap test above still runs.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import fastconv as fc

pytestmark = pytest.mark.skipif("c" not in fc.backends(), reason="C backend not built")


def _big_conv(c=64, hw=56):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    return x, w


def _timed_conv(x, w, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fc.conv2d(x, w, padding=1, backend="c")
    return time.perf_counter() - t0


def _main_thread_during(call):
    """Run ``call`` in a worker thread while this thread counts in pure Python. Returns
    (ticks of this thread inside the call, longest stretch without a tick, call duration)."""
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        call()
        span["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
        for _ in range(200):  # a little pure-Python work per tick
            pass
    t.join()
    inside = [v for v in ticks if span["start"] < v < span["end"]]
    gaps = np.diff([span["start"], *inside, span["end"]])
    return len(inside), float(gaps.max()), span["end"] - span["start"]


def _gil_released(ticks, longest, duration, one_call):
    """Held GIL: no tick during a call, so one gap ~ one whole call. Released: short gaps
    (scheduler slices on a loaded machine)."""
    return ticks > 20 and longest < 0.5 * max(one_call, 0.1)


def test_gil_released_during_c_conv():
    fc.set_num_threads(1)
    x, w = _big_conv(256, 112)  # one call: 15 GFLOP, ~0.1-0.5 s on one thread
    one = _timed_conv(x, w, 1)
    ticks, longest, duration = _main_thread_during(lambda: _timed_conv(x, w, 2))
    assert _gil_released(ticks, longest, duration, one), (
        f"the main thread ticked {ticks} times during {duration:.2f} s of C convs (2 of "
        f"{one:.3f} s), longest stretch without it {longest:.3f} s: the GIL is held")


def test_gil_check_detects_a_held_gil():
    """Negative control: a C call that keeps the GIL (usleep through ctypes.PyDLL, which does
    not release it) is flagged by the same check, so the test above can fail."""
    import ctypes

    try:
        usleep = ctypes.PyDLL(None).usleep
    except (OSError, AttributeError):
        pytest.skip("no usleep in the process's C library")
    usleep.argtypes = [ctypes.c_uint]
    ticks, longest, duration = _main_thread_during(lambda: [usleep(150_000) for _ in range(4)])
    assert not _gil_released(ticks, longest, duration, 0.15), (ticks, longest, duration)


def _idle_cpus():
    """CPUs not used by other processes: the 1-minute load average minus this test's own
    running thread (~1)."""
    try:
        return (os.cpu_count() or 1) - max(0.0, os.getloadavg()[0] - 1.0)
    except OSError:
        return 0.0


def test_two_threads_run_c_conv_in_parallel():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: no parallel speed-up to measure")
    fc.set_num_threads(1)
    x, w = _big_conv()
    reps = max(2, int(0.3 / max(_timed_conv(x, w, 1), 1e-3)))  # ~0.3 s per thread
    ratios = []
    for _ in range(3):
        if _idle_cpus() < 1.8:
            pytest.skip(f"machine busy (load average {os.getloadavg()[0]:.1f} on "
                        f"{os.cpu_count()} CPUs): wall time cannot show the overlap; "
                        "test_gil_released_during_c_conv checks the GIL release")
        single = _timed_conv(x, w, reps)
        barrier = threading.Barrier(2)
        res = []

        def run():
            barrier.wait()
            res.append(_timed_conv(x, w, reps))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ratios.append((time.perf_counter() - t0) / single)
        if ratios[-1] < 1.7:
            return
    pytest.fail(f"two threads took {min(ratios):.2f}x the time of one (best of 3): the C "
                f"kernels do not run in parallel from Python threads (ratios {ratios})")
