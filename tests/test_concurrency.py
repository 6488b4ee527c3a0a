"""The C backend releases the GIL while its kernels run.

(Re-entrancy and identical results from 8 concurrent threads, and spawn / forkserver
workers after OpenMP: tests/test_semantics.py.)

* ``test_gil_released_during_c_conv``: with one OpenMP thread, a big C conv runs in a
  worker thread while the main thread keeps counting in pure Python. If the kernel held the
  GIL, the main thread could not run at all during the kernel (one long gap the length of
  the call); released, it keeps ticking. This measures overlap directly, so it holds on a
  loaded machine too (the main thread only needs *some* CPU time during the call).
* ``test_two_threads_run_c_conv_in_parallel``: two threads doing one conv each take < 1.7x
  the wall time of one (best of 3 tries; ~1.0x when two cores are free, >= 2x if the GIL
  serialised them). Skipped when fewer than 2 CPUs are idle (load average), because then
  wall time cannot show parallelism; the overlap test above still runs.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import fastconv as fc

pytestmark = pytest.mark.skipif("c" not in fc.backends(), reason="C backend not built")


def _big_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    return x, w


def _timed_conv(x, w, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fc.conv2d(x, w, padding=1, backend="c")
    return time.perf_counter() - t0


def test_gil_released_during_c_conv():
    fc.set_num_threads(1)
    x, w = _big_conv()
    one = _timed_conv(x, w, 1)
    reps = max(1, int(0.6 / max(one, 1e-3)))  # ~0.6 s of kernels
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        _timed_conv(x, w, reps)
        span["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
        for _ in range(200):  # a little pure-Python work per tick
            pass
    t.join()
    inside = np.array([v for v in ticks if span["start"] < v < span["end"]])
    duration = span["end"] - span["start"]
    assert len(inside) > 20, (f"the main thread ran {len(inside)} times during {duration:.2f} s "
                              "of C kernels: the GIL is held")
    gaps = np.diff(np.concatenate([[span["start"]], inside, [span["end"]]]))
    # held GIL: one gap ~= the whole call (or `reps` gaps ~= one call each); released: short
    # gaps, up to scheduler slices on a loaded machine
    assert gaps.max() < 0.5 * max(duration / reps, 0.02) + 0.05 or gaps.max() < 0.5 * duration, (
        f"longest stretch without the main thread: {gaps.max():.3f} s of {duration:.3f} s "
        f"({reps} convs of {one:.3f} s)")


def _idle_cpus():
    try:
        return (os.cpu_count() or 1) - os.getloadavg()[0]
    except OSError:
        return 0.0


def test_two_threads_run_c_conv_in_parallel():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: no parallel speed-up to measure")
    fc.set_num_threads(1)
    x, w = _big_conv()
    _timed_conv(x, w, 1)
    ratios = []
    for _ in range(3):
        if _idle_cpus() < 1.5:
            pytest.skip(f"machine busy (load average {os.getloadavg()[0]:.1f} on "
                        f"{os.cpu_count()} CPUs): wall time cannot show the overlap; "
                        "test_gil_released_during_c_conv checks the GIL release")
        single = _timed_conv(x, w, 2)
        barrier = threading.Barrier(2)
        res = []

        def run():
            barrier.wait()
            res.append(_timed_conv(x, w, 2))

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
