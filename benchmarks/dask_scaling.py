"""Throughput of fastconv.distributed.predict on a loopback LocalCluster: 1 worker
against 2 (one Dask thread each; fastconv threads = cores / workers), next to a plain
``model(x)`` in this process with every core.

    python benchmarks/dask_scaling.py --model alexnet --images 64 --batch 8
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import dask.array as da
    from distributed import Client, LocalCluster

    import fastconv
    import fastconv.distributed as fcd
    from fastconv import cli, models

    model = getattr(models, args.model)()
    shape = (args.images,) + cli.MODEL_INPUTS.get(args.model, (3, 224, 224))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    xs = da.from_array(x, chunks=(args.batch,) + shape[1:])
    rows = []
    model(x[:args.batch])  # warm-up: plan + JIT
    best = min(_timed(lambda: [model(x[i:i + args.batch]) for i in range(0, len(x), args.batch)])
               for _ in range(args.repeats))
    rows.append(("this process, model(x)", fastconv.get_num_threads(), best))
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            y = fcd.predict(model, xs, batch_size=args.batch, client=client)
            threads = sorted(fcd.worker_threads(client).values())
            y.compute()  # warm-up: ship the model, plan and JIT on every worker
            best = min(_timed(y.compute) for _ in range(args.repeats))
            rows.append((f"LocalCluster, {workers} worker(s)", threads, best))
    print(f"{args.model}, {args.images} images, batch {args.batch}, best of {args.repeats}\n")
    print("| setup | fastconv threads | s | img/s |")
    print("|---|---|---:|---:|")
    for name, threads, seconds in rows:
        print(f"| {name} | {threads} | {seconds:.2f} | {args.images / seconds:.1f} |")


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
