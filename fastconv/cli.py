"""The ``fastconv`` command line: ``fastconv info | demo | run | bench``.

``demo`` runs LeNet-5 (``fastconv.models.lenet5``: conv 6@5x5, pool, conv 16@5x5,
pool, FC 120-84-10) on every usable backend, checks that they agree, and prints the
time per backend and the speedup over the naive Python loops; then AlexNet on the
fast backends (speedup over numpy), each with the lecture's summary table.
``run MODEL`` runs a model by name (``alexnet``, ``vgg16`` ...) or an ``.onnx`` file on
random input and prints the top classes; ``--profile`` adds a per-layer time table.
``bench`` times chosen ops / backends / models against naive, numpy and the peers
(fastconv.bench holds the machinery; ``--json`` and ``--plot`` save the results).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import fastconv
from fastconv import _registry, models, nn


def _time(fn, min_seconds=0.2, max_repeats=50):
    fn()  # warm-up (JIT, caches) outside the timer
    times, start = [], time.perf_counter()
    while len(times) < max_repeats and (time.perf_counter() - start < min_seconds or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_info(args):
    info = fastconv.info()
    if "c" in info["backends"]:  # a ~0.1 s FMA probe, so it lives here, not in info()
        from .bench import measured_peak
        info["peak_gflops"] = round(measured_peak(), 1)
        info["peak_counted"] = (f"FMA probe, {info['c_threads']} threads, {info['isa']}, "
                                "2 flops per FMA lane")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


def lenet5_forward(model, x, backend):
    with fastconv.use_backend(backend):
        return fastconv.softmax(model(x), axis=1)


def _timed_backends(model, x, backends, reference_backend=None):
    """[(backend, seconds, max |diff| vs the first backend's probabilities)] for ``model``."""
    reference, rows = None, []
    for backend in backends:
        out = lenet5_forward(model, x, backend)
        if reference is None:
            reference = out
        err = float(np.max(np.abs(out - reference)))
        seconds = _time(lambda b=backend: lenet5_forward(model, x, b))
        rows.append((backend, seconds, err))
    return rows, reference


def _print_rows(rows, batch, baseline):
    base = dict((b, s) for b, s, _ in rows).get(baseline)
    print(f"{'backend':<8} {'ms/batch':>10} {'img/s':>10} {'x ' + baseline:>9} {'max |diff|':>11}")
    for backend, seconds, err in rows:
        speedup = f"{base / seconds:8.1f}x" if base else "      -"
        print(f"{backend:<8} {seconds * 1e3:10.3f} {batch / seconds:10.1f} {speedup} {err:11.2e}")


def cmd_demo(args):
    """LeNet-5 on every backend (naive included) and AlexNet on the fast ones."""
    if args.threads:
        fastconv.set_num_threads(args.threads)
    usable = [b for b in fastconv.backends() if b not in _registry.DEVICE_BACKENDS
              or "simulator" not in fastconv.info().get("cuda", "")]  # the simulator: tests only
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, 1, 32, 32)).astype(np.float32)
    model = models.lenet5()
    print(nn.format_summary(model, x.shape), "\n")
    print(f"LeNet-5 forward, batch {args.batch}, {fastconv.get_num_threads()} threads")
    rows, reference = _timed_backends(model, x, usable)
    _print_rows(rows, args.batch, "naive")
    top = reference[0].argsort()[::-1][:3]
    print("image 0, top-3 classes (random weights):", ", ".join(f"{c}: {reference[0, c]:.3f}" for c in top))
    bad = [b for b, _, e in rows if e > 1e-4]
    if not args.skip_alexnet:
        alexnet = models.alexnet()
        xa = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)
        print("\n" + nn.format_summary(alexnet, xa.shape), "\n")
        print(f"AlexNet forward, batch 1 (naive loops would take hours: x numpy instead)")
        rows_a, _ = _timed_backends(alexnet, xa, [b for b in usable if b != "naive"])
        _print_rows(rows_a, 1, "numpy")
        bad += [b for b, _, e in rows_a if e > 1e-4]
    if bad:
        print(f"backends disagree: {bad}", file=sys.stderr)
        return 1
    return 0


# Input size of each named model (channels, height, width).
MODEL_INPUTS = {"lenet5": (1, 32, 32), "alexnet": (3, 227, 227)}


def _load_model(spec, batch):
    """(model, input shape) from a model name or an .onnx path."""
    if spec.endswith(".onnx"):
        from . import onnx as fc_onnx

        model = fc_onnx.load(spec)
        shape = getattr(model, "input_shapes", {}).get(model.input_names[0])
        if not shape:
            raise SystemExit(f"{spec}: cannot tell the input shape of {model.input_names[0]!r}")
        return model, (batch,) + tuple(shape[1:])
    if spec not in models.__all__:
        raise SystemExit(f"unknown model {spec!r}: give an .onnx path or one of "
                         f"{', '.join(models.__all__)}")
    return getattr(models, spec)(), (batch,) + MODEL_INPUTS.get(spec, (3, 224, 224))


def cmd_run(args):
    if args.threads:
        fastconv.set_num_threads(args.threads)
    if args.dask:
        return _run_on_dask(args)
    model, shape = _load_model(args.model, args.batch)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with fastconv.use_backend(args.backend):
        plan = model.plan_for(x)
        logits = plan.run(x)[0]  # warm-up: JIT, caches, weight upload
        seconds = _time(lambda: plan.run(x), min_seconds=args.seconds)
        probs = fastconv.softmax(np.asarray(logits).reshape(len(x), -1), axis=1)
    print(f"{args.model}: batch {args.batch}, input {shape}, backend {args.backend}, "
          f"{fastconv.get_num_threads()} threads: {seconds * 1e3:.2f} ms per batch, "
          f"{args.batch / seconds:.1f} img/s")
    for i, row in enumerate(probs[:args.show]):
        top = row.argsort()[::-1][:5]
        print(f"image {i}: top-5 classes " + ", ".join(f"{c} ({row[c]:.3f})" for c in top))
    if args.profile:
        _print_profile(model, plan, x)
    return 0


def _run_on_dask(args):
    """``run --dask ADDRESS``: fastconv.distributed.predict over .npy shards (--images) or
    --count random images, with Dask's progress bar; prints top-1 counts and throughput."""
    from distributed import Client, progress

    import dask.array as da

    from . import distributed as fcd

    model, shape = _load_model(args.model, args.batch)
    if args.images:
        images = args.images
    else:
        rng = da.random.default_rng(0)
        images = rng.standard_normal((args.count,) + shape[1:], dtype=np.float32,
                                     chunks=(args.batch,) + shape[1:])
    with Client(args.dask) as client:
        start = time.perf_counter()
        out = client.persist(fcd.predict(model, images, batch_size=args.batch,
                                         backend=args.backend, client=client))
        progress(out)
        logits = out.compute()
        seconds = time.perf_counter() - start
    top1 = np.bincount(logits.reshape(len(logits), -1).argmax(axis=1))
    print(f"\n{args.model}: {len(logits)} images on {args.dask} in {seconds:.2f} s "
          f"({len(logits) / seconds:.1f} img/s, batch {args.batch}, backend {args.backend})")
    common = top1.argsort()[::-1][:5]
    print("most frequent top-1 classes: " + ", ".join(f"{c} ({top1[c]})" for c in common))
    return 0


def _print_profile(model, plan, x, repeats=5):
    """Per-step time (median over repeats), share of the total, and GFLOP/s of the MACs."""
    runs = []
    for _ in range(repeats):
        profile = {}
        plan.run(x, profile=profile)
        runs.append(profile)
    times = {name: float(np.median([r[name] for r in runs])) for name in runs[0]}
    total = sum(times.values())
    macs = {r["name"]: r["macs"] for r in nn.summary(model, x.shape)}
    kinds = {node.name: type(node.layer).__name__ for node in model.nodes}
    print(f"{'step':<28} {'layer':<18} {'ms':>9} {'%':>6} {'GFLOP/s':>9}")
    for name, t in times.items():
        flops = 2 * macs.get(name, 0)
        rate = f"{flops / t / 1e9:9.1f}" if flops and t > 0 else " " * 9
        print(f"{name:<28} {kinds.get(name, '?'):<18} {t * 1e3:9.3f} {100 * t / total:6.1f} {rate}")
    print(f"{'total':<28} {'':<18} {total * 1e3:9.3f}")


def _names(text):
    return [s.strip() for s in text.split(",") if s.strip()] if text else []


def cmd_bench(args):
    from . import bench

    threads = args.threads or fastconv.get_num_threads()
    restore = bench.limit_threads(threads)
    try:
        return _bench(args, bench, threads)
    finally:
        restore()


def _bench(args, bench, threads):
    bench.measured_peak()  # before the run, on a quiet machine (then cached)
    usable = [b for b in fastconv.backends()
              if b not in _registry.DEVICE_BACKENDS or bench.real_gpu()]
    backends = _names(args.backends) or usable
    missing = [b for b in backends if b not in usable]
    if missing:
        raise SystemExit(f"backend(s) {missing} not usable here (cuda only on a real GPU); "
                         f"usable: {', '.join(usable)}")
    peers = _names(args.peers) if args.peers is not None else bench.available_peers()
    if peers == ["none"]:
        peers = []
    unknown = [p for p in peers if p not in bench.available_peers()]
    if unknown:
        raise SystemExit(f"peer(s) {unknown} not installed; installed: "
                         f"{', '.join(bench.available_peers())}")
    if "torch" in peers:
        bench.torch_peer(threads)
    ops = _names(args.ops) or None
    models_ = _names(args.models)
    if args.models is None:  # default: LeNet-5 in a quick run, every model in a full one
        models_ = ["lenet5"] if args.quick else list(models.__all__)
    if ops is None and args.models is not None:
        ops = []  # --models alone: just the networks
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds if args.seconds is not None else (0.03 if args.quick else 0.2)
    # A quick run pauses less between libraries: the rounds still alternate and the ratios
    # are medians of per-round ratios, which is what cancels the spinning threads' effect.
    pause = 0.05 if args.quick else 0.2
    try:
        cases = bench.cases(ops, models_, args.batch, args.quick, _names(args.layers), threads)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not cases:
        raise SystemExit("nothing to run: no layer matches --ops / --layers")
    if args.plot:  # fail before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("--plot needs matplotlib: pip install 'fastconv[bench]' "
                             "(or pip install matplotlib)") from None
    start = time.perf_counter()
    rows = bench.run(cases, backends, peers, rounds, seconds, pause, progress=not args.no_progress)
    head = bench.header(threads, backends=backends, peers=peers, rounds=rounds,
                        seconds_per_round=seconds, quick=args.quick, batch=args.batch,
                        command="fastconv " + " ".join(args.argv),
                        wall_s=round(time.perf_counter() - start, 1))
    v = head["versions"]
    print(f"fastconv {v['fastconv']}, {threads} threads, isa {head['isa']}, {head['cpu']}; "
          f"measured peak {_peak_text(head)}; numpy {v['numpy']} ({v['blas']}), "
          f"numba {v['numba']}, torch {v['torch'] or '-'}, onnxruntime {v['onnxruntime'] or '-'}")
    print("GFLOP/s = 2*MACs / time (conv2d, gemm, linear, models); GB/s = bytes read + written "
          "/ time (memory-bound ops). x numpy, x best peer: median of per-round time ratios "
          f"({rounds} alternating rounds); > 1 is faster.\n")
    print(bench.format_table(rows))
    print(f"\n{len(rows)} rows in {head['wall_s']:.1f} s")
    if args.json:
        bench.write_json(args.json, head, rows)
        print(f"wrote {args.json}")
    if args.plot:
        bench.plot(args.plot, head, rows)
        print(f"wrote {args.plot}")
    return 0


def _peak_text(head):
    peak = head.get("peak_gflops")
    return "-" if peak is None else f"{peak:.1f} GFLOP/s (FMA probe)"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, backends, OpenMP, ISA, threads")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(func=cmd_info)
    p_demo = sub.add_parser("demo", help="LeNet-5-sized forward pass on every backend")
    p_demo.add_argument("--batch", type=int, default=4)
    p_demo.add_argument("--threads", type=int, default=None)
    p_demo.add_argument("--skip-alexnet", action="store_true", help="LeNet-5 only")
    p_demo.set_defaults(func=cmd_demo)
    p_run = sub.add_parser("run", help="a model by name or an .onnx file on random input")
    p_run.add_argument("model", help=f"an .onnx path or one of: {', '.join(models.__all__)}")
    p_run.add_argument("--batch", type=int, default=1)
    p_run.add_argument("--backend", default="auto")
    p_run.add_argument("--threads", type=int, default=None)
    p_run.add_argument("--profile", action="store_true", help="per-layer time table")
    p_run.add_argument("--seconds", type=float, default=1.0, help="timing budget")
    p_run.add_argument("--show", type=int, default=1, help="images whose top-5 to print")
    p_run.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                       help="run on a Dask cluster (fastconv.distributed.predict)")
    p_run.add_argument("--images", nargs="+", metavar="PATH",
                       help="with --dask: .npy shards (n, C, H, W) and/or image files")
    p_run.add_argument("--count", type=int, default=256,
                       help="with --dask and no --images: random images to classify")
    p_run.set_defaults(func=cmd_run)
    p_bench = sub.add_parser(
        "bench", help="time ops / models per backend against naive, numpy and the peers",
        description="Time a subset of ops on the named layers (benchmarks/layers.py) and of "
                    "whole models, per backend, against the naive loops, numpy and the peers "
                    "(OpenBLAS, PyTorch, ONNX Runtime, when installed).")
    p_bench.add_argument("--ops", default=None,
                         help="comma-separated ops (default: all): conv2d, gemm, linear, "
                              "max_pool2d, avg_pool2d, local_response_norm (lrn), relu, "
                              "softmax, batch_norm, global_avg_pool2d")
    p_bench.add_argument("--backends", default=None,
                         help="comma-separated backends (default: every usable one; cuda only "
                              "on a real GPU). naive and numpy always run as references")
    p_bench.add_argument("--models", default=None,
                         help=f"comma-separated models for full forward passes, of: "
                              f"{', '.join(models.__all__)} (default: lenet5 with --quick, all "
                              "without; '' for none)")
    p_bench.add_argument("--layers", default=None,
                         help="comma-separated substrings of layer names to keep")
    p_bench.add_argument("--peers", default=None,
                         help="comma-separated peers of: openblas, torch, onnxruntime, or "
                              "'none' (default: every installed one)")
    p_bench.add_argument("--batch", type=int, default=1, help="batch of the model passes")
    p_bench.add_argument("--threads", type=int, default=None)
    p_bench.add_argument("--quick", action="store_true",
                         help="a few small layers, 2 short rounds (about a minute on 2 cores)")
    p_bench.add_argument("--rounds", type=int, default=None,
                         help="alternating rounds (default 5, --quick 2)")
    p_bench.add_argument("--seconds", type=float, default=None,
                         help="timing per candidate per round (default 0.2, --quick 0.03)")
    p_bench.add_argument("--json", default=None, metavar="PATH", help="write rows + header")
    p_bench.add_argument("--plot", default=None, metavar="PATH",
                         help="write a PNG of the rates (needs matplotlib: fastconv[bench])")
    p_bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_bench.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # recorded in bench's header
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
