"""Whole networks at batch 1: fastconv against ONNX Runtime and PyTorch eager, same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/networks.py --threads 2

Rows:
  * LeNet-5 (``fastconv.models.lenet5``) against the same network in PyTorch eager
    (same weights).
  * The ONNX "light" models that the onnx package ships (bvlc_alexnet, zfnet512, vgg19,
    inception_v1, resnet50), with random weights (``fastconv.onnx.randomized``),
    loaded by ``fastconv.onnx.load`` and by ONNX Runtime (all graph optimisations on,
    ``intra_op_num_threads`` = threads).
Timing alternates the candidates round by round (compare.alternate); the ratio is the
median of the per-round ratios peer time / fastconv time, so > 1 means fastconv is faster.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastconv  # noqa: E402
from compare import alternate, torch_peer  # noqa: E402
from fastconv import models  # noqa: E402

LIGHT_MODELS = ["bvlc_alexnet", "zfnet512", "vgg19", "inception_v1", "resnet50"]


def lenet_candidates(torch, backend):
    model = models.lenet5()
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    t = torch.nn
    tm = t.Sequential(t.Conv2d(1, 6, 5), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5), t.ReLU(),
                      t.MaxPool2d(2), t.Flatten(), t.Linear(400, 120), t.ReLU(),
                      t.Linear(120, 84), t.ReLU(), t.Linear(84, 10)).eval()
    weights = [v for node in model.nodes for v in node.layer.parameters().values()]
    with torch.no_grad():
        for p, w in zip(tm.parameters(), weights):
            p.copy_(torch.from_numpy(w))
    xt = torch.from_numpy(x)
    plan = _plan(model, x, backend)
    with torch.no_grad():
        assert np.allclose(plan.run(x)[0], tm(xt).numpy(), rtol=1e-4, atol=1e-5)

    def run_torch():
        with torch.no_grad():
            tm(xt)

    return {"fastconv": lambda: plan.run(x), "peer": run_torch}


def _plan(model, x, backend):
    with fastconv.use_backend(backend):
        return model.plan_for(x)


def onnx_candidates(name, threads, backend):
    import onnxruntime as ort

    from fastconv import onnx as fc_onnx

    proto = fc_onnx.randomized(fc_onnx.light_model_path(name), seed=0)
    model = fc_onnx.from_model(proto)
    shape = (1,) + tuple(model.input_shapes[model.input_names[0]][1:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    plan = _plan(model, x, backend)
    ours, ref = plan.run(x)[0], sess.run(None, feed)[0]
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    assert err < 1e-4, f"{name}: fastconv and ORT disagree ({err:.1e})"
    return {"fastconv": lambda: plan.run(x), "peer": lambda: sess.run(None, feed)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--backend", default="c")
    parser.add_argument("--only", default="", help="comma-separated substrings of row names")
    args = parser.parse_args(argv)
    fastconv.set_num_threads(args.threads)
    torch = torch_peer(args.threads)
    rows = [("lenet5", "PyTorch eager", lambda: lenet_candidates(torch, args.backend))]
    rows += [(m, "ONNX Runtime", lambda m=m: onnx_candidates(m, args.threads, args.backend))
             for m in LIGHT_MODELS]
    only = [s for s in args.only.split(",") if s]
    print(f"batch 1, {args.threads} threads, fastconv backend {args.backend}, "
          f"{args.rounds} alternating rounds\n")
    print("| network | peer | fastconv ms | peer ms | peer / fastconv |")
    print("|---|---|---:|---:|---:|")
    for name, peer, build in rows:
        if only and not any(s in name for s in only):
            continue
        times = alternate(build(), args.rounds, args.seconds)
        ours, theirs = np.array(times["fastconv"]), np.array(times["peer"])
        ratio = float(np.median(theirs / ours))
        print(f"| {name} | {peer} | {np.median(ours) * 1e3:.2f} | {np.median(theirs) * 1e3:.2f} "
              f"| **{ratio:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
