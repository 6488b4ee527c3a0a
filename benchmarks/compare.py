"""Side-by-side timing of fastconv's backends against the peers, as a Markdown table.

    OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= python benchmarks/compare.py --threads 2

(``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` lets OpenBLAS run its real
kernel; leave them set in tests.) For each layer the candidates are timed in
alternating rounds with a pause between libraries, and each ratio is the median
of the per-round ratios, so that drift on a noisy machine cancels out
(CONVENTIONS.md, benchmark hygiene).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastconv  # noqa: E402
# The timing and peer helpers live in fastconv.bench (shared with `fastconv bench` and the
# pytest-benchmark suites); networks.py imports alternate and torch_peer from here.
from fastconv.bench import (  # noqa: E402,F401
    ConvCase, alternate, blas_info, limit_threads, torch_peer)
from layers import CONV_LAYERS, FC_LAYERS, GEMM_SIZES, MEMORY_OPS, conv_flops  # noqa: E402


def conv_candidates(layer, torch):
    """The C backend (and PyTorch when ``torch`` is given) on a layers.CONV_LAYERS entry."""
    case = ConvCase("conv2d", layer[0], tuple(layer[1:]))
    cands = {"c": case.make("c")}
    if torch is not None:
        cands["torch"] = case.make("torch")
    return cands


def gemm_candidates(n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return {
        "c": lambda: fastconv.gemm(a, b, backend="c"),
        "numpy": lambda: np.matmul(a, b),
    }


def host_fma_speedup(threads, rounds=5, seconds=0.05):
    """The host's own 1 -> ``threads`` speedup on independent FMA chains (csrc's peak probe),
    median over alternating rounds: the most a compute-bound kernel can gain from the extra
    threads at that moment. On a shared host the vCPUs at times get much less than a core
    each (this one has read 1.46 for 2 threads), and every thread-scaling figure of those
    minutes drops with it; a reading near ``threads`` rules that cause out."""
    from fastconv.backends.c import lib
    ratios = []
    for _ in range(rounds):
        fastconv.set_num_threads(1)
        one = lib.fc_fma_peak_gflops(seconds)
        fastconv.set_num_threads(threads)
        ratios.append(lib.fc_fma_peak_gflops(seconds) / one)
    return float(np.median(ratios))


def memory_candidates(entry):
    """The C kernel and a NumPy copy of the same number of bytes (input read + output written)."""
    name, op, shape, kwargs = entry
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    args = ()
    if op == "batch_norm":
        C = shape[1]
        args = (rng.standard_normal(C, dtype=np.float32), rng.random(C, dtype=np.float32) + 0.5)
    fn = getattr(fastconv, op)
    y = fn(x, *args, backend="c", **kwargs)
    moved = x.nbytes + y.nbytes
    src = np.ones(moved // 8, np.float32)  # copy reads src and writes dst: `moved` bytes
    dst = np.empty_like(src)
    return moved, {"c": lambda: fn(x, *args, backend="c", **kwargs),
                   "copy": lambda: np.copyto(dst, src)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="timing per candidate per round")
    parser.add_argument("--only", default="", help="comma-separated substrings of layer names")
    # The thread-scaling ratio divides timings that ran on different vCPU sets, so it is the
    # noisiest figure here: its median over 5 rounds of 0.3 s moved 1.59-2.02 between runs
    # of the same code, over 11 rounds of 0.2 s it held 1.81-1.96 (also through minutes when
    # the FMA probe read 1.0-1.3). Same statistic, more rounds.
    parser.add_argument("--scaling-rounds", type=int, default=11)
    parser.add_argument("--scaling-seconds", type=float, default=0.2)
    parser.add_argument("--sections", default="gemm,conv,gemv,memory,scaling,numba",
                        help="comma-separated: gemm, conv, gemv, memory, scaling, numba")
    args = parser.parse_args(argv)

    limit_threads(args.threads)
    blas = blas_info()
    torch = torch_peer(args.threads)
    info = fastconv.info()
    print(f"fastconv {info['version']}, isa {info.get('isa')}, openmp {info.get('openmp')}, "
          f"{args.threads} threads; numpy {np.__version__} ({blas}); "
          f"torch {torch.__version__ if torch else 'not installed'}\n")

    only = [s for s in args.only.split(",") if s]
    sections = args.sections.split(",")
    if "gemm" in sections or "conv" in sections:
        print("| layer | peer | c GFLOP/s | peer GFLOP/s | c / peer |")
        print("|---|---|---:|---:|---:|")
    ratios = []
    for n in GEMM_SIZES if "gemm" in sections else ():
        name = f"sgemm {n}^3"
        if only and not any(s in name for s in only):
            continue
        res = alternate(gemm_candidates(n), args.rounds, args.seconds)
        flops = 2.0 * n ** 3
        ratio = float(np.median(np.array(res["numpy"]) / np.array(res["c"])))
        print(f"| {name} | numpy/OpenBLAS | {flops / np.median(res['c']) / 1e9:.1f} | "
              f"{flops / np.median(res['numpy']) / 1e9:.1f} | {ratio:.2f} |", flush=True)
    for layer in CONV_LAYERS if "conv" in sections else ():
        if only and not any(s in layer[0] for s in only):
            continue
        cands = conv_candidates(layer, torch)
        res = alternate(cands, args.rounds, args.seconds)
        flops = conv_flops(*layer[1:])
        c_gf = flops / np.median(res["c"]) / 1e9
        if "torch" in res:
            ratio = float(np.median(np.array(res["torch"]) / np.array(res["c"])))
            ratios.append(ratio)
            print(f"| {layer[0]} | torch (oneDNN) | {c_gf:.1f} | "
                  f"{flops / np.median(res['torch']) / 1e9:.1f} | {ratio:.2f} |", flush=True)
        else:
            print(f"| {layer[0]} | - | {c_gf:.1f} | - | - |", flush=True)
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"\nconv geometric mean c / torch: {geo:.2f} (min {min(ratios):.2f})")
    if "gemv" in sections:
        # Batch-1 linear streams W once: GB/s = W bytes / time; the copy moves 2 * W bytes.
        print("\n| FC layer (batch 1) | c GB/s | OpenBLAS sgemv GB/s | NumPy copy GB/s | "
              "c / copy | c / OpenBLAS |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, fin, fout in FC_LAYERS:
            if only and not any(s in name for s in only):
                continue
            rng = np.random.default_rng(0)
            w = rng.standard_normal((fout, fin), dtype=np.float32)
            x = rng.standard_normal((1, fin), dtype=np.float32)
            b = rng.standard_normal(fout, dtype=np.float32)
            dst = np.empty_like(w)
            res = alternate({"c": lambda: fastconv.linear(x, w, b, backend="c"),
                             "blas": lambda: x @ w.T + b,
                             "copy": lambda: np.copyto(dst, w)}, args.rounds, args.seconds)
            gbs = {k: w.nbytes / np.median(v) / 1e9 for k, v in res.items()}
            gbs["copy"] *= 2
            c_copy = float(np.median(np.array(res["copy"]) / (2 * np.array(res["c"]))))
            c_blas = float(np.median(np.array(res["blas"]) / np.array(res["c"])))
            print(f"| {name} | {gbs['c']:.1f} | {gbs['blas']:.1f} | {gbs['copy']:.1f} | "
                  f"{c_copy:.2f} | {c_blas:.2f} |", flush=True)
    if "scaling" in sections:
        # The same C conv at 1 thread and at --threads, alternating, on the AlexNet layers,
        # between two readings of what the host itself gives the extra threads.
        print(f"\nhost FMA probe, 1 -> {args.threads} threads before the table: "
              f"{host_fma_speedup(args.threads):.2f}")
        print(f"\n({args.scaling_rounds} rounds of {args.scaling_seconds} s per thread count)")
        print(f"\n| layer | c 1 thread GFLOP/s | c {args.threads} threads GFLOP/s | speedup "
              "| speedup, fastest calls |")
        print("|---|---:|---:|---:|---:|")
        for layer in CONV_LAYERS:
            if not layer[0].startswith("alexnet") or (only and not any(s in layer[0] for s in only)):
                continue
            run = conv_candidates(layer, None)["c"]

            def with_threads(n, run=run):
                def fn():
                    fastconv.set_num_threads(n)
                    return run()
                return fn
            # speedup: median over rounds of the rounds' median-call ratios (the figure of
            # every table here); fastest calls: the fastest 1-thread call over the fastest
            # 2-thread call of the whole run, which the host's interruptions cannot inflate
            fastest = {}
            res = alternate({"one": with_threads(1), "many": with_threads(args.threads)},
                            args.scaling_rounds, args.scaling_seconds, fastest=fastest)
            fastconv.set_num_threads(args.threads)
            flops = conv_flops(*layer[1:])
            speedup = float(np.median(np.array(res["one"]) / np.array(res["many"])))
            print(f"| {layer[0]} | {flops / np.median(res['one']) / 1e9:.1f} | "
                  f"{flops / np.median(res['many']) / 1e9:.1f} | {speedup:.2f} | "
                  f"{min(fastest['one']) / min(fastest['many']):.2f} |", flush=True)
        print(f"\nhost FMA probe, 1 -> {args.threads} threads after the table: "
              f"{host_fma_speedup(args.threads):.2f}")
    if "numba" in sections and "numba" in fastconv.backends():
        # The Numba backend against the C backend (conv) and OpenBLAS (GEMM), same run.
        print("\n| numba vs | layer | numba GFLOP/s | peer GFLOP/s | numba / peer |")
        print("|---|---|---:|---:|---:|")
        n = 1024
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        cands = {"numba": lambda: fastconv.gemm(a, a, backend="numba"),
                 "numpy": lambda: np.matmul(a, a)}
        res = alternate(cands, args.rounds, args.seconds)
        ratio = float(np.median(np.array(res["numpy"]) / np.array(res["numba"])))
        print(f"| OpenBLAS | sgemm {n}^3 | {2 * n ** 3 / np.median(res['numba']) / 1e9:.1f} | "
              f"{2 * n ** 3 / np.median(res['numpy']) / 1e9:.1f} | {ratio:.2f} |", flush=True)
        for layer in CONV_LAYERS:
            if layer[0] not in ("alexnet.conv2", "alexnet.conv3", "vgg16.conv3_2"):
                continue
            _, N, C, H, W, K, R, S, stride, pad, groups = layer
            x, w, b = (np.random.default_rng(0).standard_normal(s, dtype=np.float32)
                       for s in ((N, C, H, W), (K, C // groups, R, S), (K,)))
            res = alternate({
                "numba": lambda: fastconv.conv2d(x, w, b, stride, pad, 1, groups, backend="numba"),
                "c": lambda: fastconv.conv2d(x, w, b, stride, pad, 1, groups, backend="c"),
            }, args.rounds, args.seconds)
            flops = conv_flops(*layer[1:])
            ratio = float(np.median(np.array(res["c"]) / np.array(res["numba"])))
            print(f"| C backend | {layer[0]} | {flops / np.median(res['numba']) / 1e9:.1f} | "
                  f"{flops / np.median(res['c']) / 1e9:.1f} | {ratio:.2f} |", flush=True)
    if "memory" in sections:
        print("\n| op | shape | c GB/s | NumPy copy GB/s (same bytes) | c / copy |")
        print("|---|---|---:|---:|---:|")
        for entry in MEMORY_OPS:
            if only and not any(s in entry[0] for s in only):
                continue
            moved, cands = memory_candidates(entry)
            res = alternate(cands, args.rounds, args.seconds)
            ratio = float(np.median(np.array(res["copy"]) / np.array(res["c"])))
            print(f"| {entry[0]} | {entry[2]} | {moved / np.median(res['c']) / 1e9:.1f} | "
                  f"{moved / np.median(res['copy']) / 1e9:.1f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
