"""Graph (a DAG of layers in topological order), Sequential, the planner, summary, weights I/O.

A ``Graph`` is a list of nodes ``(name, layer, input names)``; its inputs and outputs
are names too. Calling it runs a *plan*, built once per (input shapes, backend) and
cached:

  * shapes are inferred for every node (bad shapes fail here, naming the node);
  * BatchNorm2d right after a Conv2d (its only consumer) is folded into the conv's
    weight and bias; a ReLU right after a Conv2d or an Add is fused into it;
    Dropout disappears;
  * every conv / pool / linear / relu / LRN step holds its kernel, its validated
    parameter object and its weights already in the backend's form (contiguous
    float32; on the GPU, device arrays uploaded once), so a step costs one kernel
    call plus microseconds of Python; a backend with ``prepare_conv2d`` (``c``) also
    prepares each conv's weights once (packed GEMM panels, Winograd transforms), and
    one with ``add`` (``c``) runs equal-shape residual sums with the ReLU fused;
  * steps on the ``c`` backend write into buffers allocated once per plan (and per
    calling thread) and reused by liveness, so a forward pass allocates almost nothing;
    an activation is dropped as soon as its last consumer has run.

The input is copied to the backend's form once (to the GPU for ``cuda``) and only
the outputs come back (to the host when the input was a host array). Changing a
layer's weights after a call: ``load_weights`` resets the plans itself; after
assigning to a layer's attributes directly, call ``model.reset_plans()``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _checks, _registry
from . import layers as L


@dataclass
class Node:
    name: str
    layer: L.Layer
    inputs: list = field(default_factory=list)


class Graph:
    """A DAG of named layers. ``add`` appends in topological order."""

    def __init__(self, inputs=("input",), outputs=None, name="graph"):
        self.input_names = list(inputs)
        self.output_names = None if outputs is None else list(outputs)
        self.name = name
        self.nodes: list[Node] = []
        self._plans = {}

    # ------------------------------------------------------------------ building

    def add(self, name, layer, inputs=None):
        """Append ``layer`` as node ``name`` fed by ``inputs`` (names; default: the last
        node, or the graph's first input). Returns ``name`` for chaining."""
        if not isinstance(layer, L.Layer):
            raise TypeError(f"node {name!r}: {layer!r} is not a fastconv.nn layer")
        known = set(self.input_names) | {n.name for n in self.nodes}
        if name in known:
            raise ValueError(f"node name {name!r} is already used in {self.name}")
        if inputs is None:
            inputs = [self.nodes[-1].name if self.nodes else self.input_names[0]]
        elif isinstance(inputs, str):
            inputs = [inputs]
        missing = [i for i in inputs if i not in known]
        if missing:
            raise ValueError(f"node {name!r} reads {missing}, which no earlier node or graph "
                             f"input produces (known: {sorted(known)})")
        if layer.n_inputs != -1 and len(inputs) != layer.n_inputs:
            raise ValueError(f"node {name!r}: {type(layer).__name__} takes {layer.n_inputs} "
                             f"input(s), got {inputs}")
        self.nodes.append(Node(name, layer, list(inputs)))
        self._plans.clear()
        return name

    @property
    def outputs(self):
        return self.output_names or [self.nodes[-1].name]

    def __getitem__(self, name):
        for node in self.nodes:
            if node.name == name:
                return node.layer
        raise KeyError(f"{self.name} has no node {name!r}")

    # ------------------------------------------------------------------ running

    def __call__(self, *xs):
        """Run on inputs in the order of ``input_names``: one output, or a list of them."""
        if len(xs) != len(self.input_names):
            raise ValueError(f"{self.name} takes {len(self.input_names)} input(s) "
                             f"{self.input_names}, got {len(xs)}")
        outs = self.plan_for(*xs).run(*xs)
        return outs[0] if len(outs) == 1 else outs

    def run(self, feeds):
        """{input name: array} -> {output name: array}."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.name}: feeds lack inputs {missing} (got {sorted(feeds)})")
        xs = [feeds[n] for n in self.input_names]
        return dict(zip(self.outputs, self.plan_for(*xs).run(*xs)))

    def plan_for(self, *xs, backend=None):
        """The cached plan for these inputs' shapes on ``backend`` (default: the current one)."""
        on_device = any(_checks.is_device_array(x) for x in xs)
        xs = [x if _checks.is_device_array(x) else np.asarray(x) for x in xs]
        name = _registry.current_backend() if backend is None else backend
        key = (tuple(tuple(x.shape) for x in xs), name, on_device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan(self, key[0], name, on_device)
        return plan

    def reset_plans(self):
        self._plans.clear()

    def __getstate__(self):
        """Pickled (sent to a Dask worker, saved) without the plans: they are a per-process
        cache of bound kernels and buffers, rebuilt on first use."""
        state = self.__dict__.copy()
        state["_plans"] = {}
        return state

    def infer_shapes(self, *input_shapes):
        """{node or input name: output shape}; ValueError naming the node on a bad shape."""
        shapes = dict(zip(self.input_names, (tuple(s) for s in input_shapes)))
        for node in self.nodes:
            try:
                shapes[node.name] = tuple(node.layer.output_shape(*(shapes[i]
                                                                    for i in node.inputs)))
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"node {node.name!r} ({type(node.layer).__name__}) on input "
                                f"shape(s) {[shapes[i] for i in node.inputs]}: {exc}") from None
        return shapes

    # ------------------------------------------------------------------ weights

    def parameters(self):
        """{"node.param": array} over every layer, in node order."""
        return {f"{n.name}.{k}": v for n in self.nodes for k, v in n.layer.parameters().items()}

    def save_weights(self, path):
        """Every parameter into one .npz (float32, exact)."""
        np.savez(path, **self.parameters())

    def load_weights(self, source):
        """Parameters from an .npz path or a {name: array} dict. Every name and shape must
        match: ValueError lists the missing, unexpected and mis-shaped ones otherwise."""
        if isinstance(source, dict):
            given = {k: np.asarray(v) for k, v in source.items()}
        else:
            with np.load(source) as data:
                given = {k: data[k] for k in data.files}
        have = self.parameters()
        missing = sorted(set(have) - set(given))
        unexpected = sorted(set(given) - set(have))
        misshaped = [f"{k}: file {given[k].shape} vs model {have[k].shape}"
                     for k in have if k in given and given[k].shape != have[k].shape]
        if missing or unexpected or misshaped:
            raise ValueError(f"weights do not match {self.name}: missing {missing}, "
                             f"unexpected {unexpected}, shape mismatches {misshaped}")
        for node in self.nodes:
            own = {k: given[f"{node.name}.{k}"] for k in node.layer.parameters()}
            if own:
                node.layer.set_parameters(own)
        self._plans.clear()

    def load_state_dict(self, source):
        """A PyTorch state_dict (a dict of tensors, or a .pt/.pth path; needs torch) whose
        names follow this model's node names, i.e. torchvision's layout for the models
        that say so. ``num_batches_tracked`` counters are ignored; every other name and
        shape must match (ValueError lists the differences)."""
        if not isinstance(source, dict):
            try:
                import torch
            except ImportError:
                raise ImportError("loading a .pt state_dict needs torch installed "
                                  "(pip install torch); or convert it to .npz") from None
            source = torch.load(source, map_location="cpu", weights_only=True)
        weights = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
                   for k, v in source.items() if not k.endswith("num_batches_tracked")}
        self.load_weights(weights)


class Sequential(Graph):
    """A chain of layers. ``Sequential(Conv2d(...), ReLU(), ...)`` or with names,
    ``Sequential(("conv1", Conv2d(...)), ("relu1", ReLU()), ...)``."""

    def __init__(self, *layers, name="sequential"):
        super().__init__(name=name)
        for i, item in enumerate(layers):
            node_name, layer = item if isinstance(item, tuple) else (
                f"{type(item).__name__.lower()}{i}", item)
            self.add(node_name, layer)


# ---------------------------------------------------------------------- the plan


class Plan:
    """One graph planned for fixed input shapes and a backend (see the module doc)."""

    def __init__(self, graph, input_shapes, backend, on_device):
        self.backend, self.on_device = backend, on_device
        # The GPU backend's module when activations live on the GPU (its ``constant``
        # uploads an array once); None for the host backends.
        self.gpu = (_registry.backend_module("cuda")
                    if on_device or backend in _registry.DEVICE_BACKENDS else None)
        self.input_names = graph.input_names
        self.shapes = graph.infer_shapes(*input_shapes)
        nodes = _fuse(graph)
        self.steps = []
        last_use = {}
        for i, node in enumerate(nodes):
            for name in node.inputs:
                last_use[name] = i
        for name in graph.outputs:
            last_use[name] = len(nodes)
        self.outputs = graph.outputs
        for i, node in enumerate(nodes):
            shapes = [self.shapes[n] for n in node.inputs]
            fn, takes_out = self._step(node.layer, shapes)
            free = [n for n in set(node.inputs) if last_use.get(n) == i]
            self.steps.append([node.name, fn, node.inputs, free, takes_out])
        self._plan_buffers()
        self._local = threading.local()  # each calling thread gets its own buffers

    def _plan_buffers(self):
        """Give each step that can write into ``out=`` a reused buffer, by liveness.

        A value that came from any other step may be a view of its inputs (Flatten is a
        reshape), so it keeps their buffers alive too. A buffer goes back to the pool
        (per shape) when no live value refers to it; graph outputs never get one, and an
        output that may view a buffer is copied before it is returned."""
        owners, refs, pool, self.buffer_shapes = {}, {}, {}, []
        outputs = set(self.outputs)
        for step in self.steps:
            name, _, inputs, free, takes_out = step
            if takes_out and name not in outputs:
                shape = self.shapes[name]
                free_ids = pool.get(shape, [])
                buf = free_ids.pop() if free_ids else len(self.buffer_shapes)
                if buf == len(self.buffer_shapes):
                    self.buffer_shapes.append(shape)
                owners[name] = {buf}
                step[4] = buf
            else:
                owners[name] = set().union(*(owners.get(i, set()) for i in inputs))
                step[4] = None
            for buf in owners[name]:
                refs[buf] = refs.get(buf, 0) + 1
            for dead in free:
                for buf in owners.pop(dead, ()):
                    refs[buf] -= 1
                    if refs[buf] == 0:
                        pool.setdefault(self.buffer_shapes[buf], []).append(buf)
        self.copy_outputs = {n for n in self.outputs if owners.get(n)}

    def _buffers(self):
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = [np.empty(s, np.float32) for s in self.buffer_shapes]
        return buffers

    def _kernel(self, op):
        return _registry.resolve(op, self.backend, self.on_device)

    def _constant(self, name, arr):
        """A weight in the form the backend's kernels take (on the GPU for cuda)."""
        if arr is None:
            return None
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        module = _registry.backend_module(name)
        return module.constant(arr) if hasattr(module, "constant") else arr

    def _step(self, layer, shapes):
        """(callable(*inputs, out=None), takes_out) for one layer: a bound kernel where it
        pays (``takes_out``: it can write into a given buffer), else the layer itself."""
        with _registry.use_backend(self.backend):
            if isinstance(layer, L.Conv2d):
                name, kernel = self._kernel("conv2d")
                p, act = layer.params_for(shapes[0]), layer.activation
                w, b = self._constant(name, layer.weight), self._constant(name, layer.bias)
                prepare = getattr(_registry.backend_module(name), "prepare_conv2d", None)
                if prepare is not None:  # weights transformed once per plan (c: Winograd)
                    return self._bound(name, "conv2d", prepare(w, b, p, act))
                return self._bound(name, "conv2d", lambda x, **o: kernel(x, w, b, p, act, **o))
            if isinstance(layer, L.Linear) and len(shapes[0]) == 2:
                name, kernel = self._kernel("linear")
                w, b = self._constant(name, layer.weight), self._constant(name, layer.bias)
                return self._bound(name, "linear", lambda x, **o: kernel(x, w, b, **o))
            if isinstance(layer, (L.MaxPool2d, L.AvgPool2d)):
                op = "max_pool2d" if isinstance(layer, L.MaxPool2d) else "avg_pool2d"
                name, kernel = self._kernel(op)
                p = _checks.check_pool2d(
                    L._Shape(shapes[0]), layer.kernel_size, layer.stride, layer.padding,
                    getattr(layer, "dilation", 1), layer.ceil_mode,
                    getattr(layer, "count_include_pad", True))
                return self._bound(name, op, lambda x, **o: kernel(x, p, **o))
            if isinstance(layer, L.ReLU):
                name, kernel = self._kernel("relu")
                return self._bound(name, "relu", kernel)
            if isinstance(layer, L.Add) and len(shapes) == 2 and shapes[0] == shapes[1]:
                name, _ = self._kernel("relu")  # the backend that runs this plan's kernels
                add = getattr(_registry.backend_module(name), "add", None)
                if add is not None and name not in _registry.DEVICE_BACKENDS:
                    act = layer.activation
                    return self._bound(name, "add", lambda a, b, **o: add(a, b, act, **o))
        backend = self.backend

        def through_public_ops(*xs):
            with _registry.use_backend(backend):
                return layer.forward(*xs)

        return through_public_ops, False

    @staticmethod
    def _bound(backend, op, fn):
        return fn, op in getattr(_registry.backend_module(backend), "TAKES_OUT", ())

    def run(self, *xs, profile=None):
        """Outputs for inputs ``xs``. ``profile``: a dict that collects {step name: seconds}
        (each step synchronised with the GPU first when it runs there)."""
        values = {}
        for name, x in zip(self.input_names, xs):
            if not _checks.is_device_array(x):
                x = np.ascontiguousarray(x, dtype=np.float32)
                if self.gpu is not None:
                    x = self.gpu.constant(x)  # the one copy to the GPU
            values[name] = x
        buffers = self._buffers()
        for name, fn, inputs, free, buf in self.steps:
            start = time.perf_counter()
            if buf is None:
                values[name] = fn(*(values[i] for i in inputs))
            else:
                values[name] = fn(*(values[i] for i in inputs), out=buffers[buf])
            if profile is not None:
                if self.gpu is not None:
                    self.gpu.synchronize()
                profile[name] = profile.get(name, 0.0) + time.perf_counter() - start
            for f in free:
                values.pop(f, None)
        # outputs must not be views of buffers that the next call overwrites
        outs = [values[n].copy() if n in self.copy_outputs else values[n] for n in self.outputs]
        if self.gpu is not None and not self.on_device:  # host in -> host out: only the end
            outs = [o.copy_to_host() for o in outs]
        return outs


def _fuse(graph):
    """Nodes after folding BN into convs, fusing ReLU into convs / adds, removing Dropout.

    Returns new Node objects (copies of fused layers); the graph itself is untouched.
    """
    consumers = {}
    for node in graph.nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node.name)
    keep_names = set(graph.outputs)
    rename = {}  # a removed node's name -> the node that now produces its value
    out = []
    by_name = {}

    def source(name):
        while name in rename:
            name = rename[name]
        return name

    for node in graph.nodes:
        inputs = [source(i) for i in node.inputs]
        layer = node.layer
        if isinstance(layer, L.Dropout) and node.name not in keep_names:
            rename[node.name] = inputs[0]  # (a Dropout that is an output stays, as identity)
            continue
        prev = by_name.get(inputs[0]) if len(inputs) == 1 else None
        only_consumer = (prev is not None and prev.name not in keep_names
                         and len(consumers.get(prev.name, [])) == 1)
        if only_consumer and isinstance(layer, L.BatchNorm2d) and isinstance(prev.layer, L.Conv2d) \
                and prev.layer.activation is None:
            prev.layer = _fold_bn(prev.layer, layer)
            rename[node.name] = prev.name
            consumers[prev.name] = consumers.get(node.name, [])
            continue
        if only_consumer and isinstance(layer, L.ReLU) and isinstance(prev.layer, (L.Conv2d, L.Add)) \
                and prev.layer.activation is None:
            prev.layer = _with_relu(prev.layer)
            rename[node.name] = prev.name
            consumers[prev.name] = consumers.get(node.name, [])
            continue
        new = Node(node.name, layer, inputs)
        out.append(new)
        by_name[node.name] = new
    # outputs renamed away (e.g. the graph ends in a fused ReLU) keep their public name
    for name in graph.outputs:
        if name in rename:
            producer = by_name[source(name)]
            producer.name, old = name, producer.name
            for n in out:
                n.inputs = [name if i == old else i for i in n.inputs]
    return out


def _copy_layer(layer):
    new = object.__new__(type(layer))
    new.__dict__.update(layer.__dict__)
    return new


def _with_relu(layer):
    new = _copy_layer(layer)
    new.activation = "relu"
    return new


def _fold_bn(conv, bn):
    """conv then bn == one conv with w * scale[k] and (b - mean) * scale + beta."""
    scale, shift = bn.scale_shift()
    new = _copy_layer(conv)
    new.weight = (conv.weight * scale[:, None, None, None]).astype(np.float32)
    bias = np.zeros(conv.out_channels) if conv.bias is None else conv.bias.astype(np.float64)
    new.bias = (bias * scale + shift).astype(np.float32)
    return new


# ---------------------------------------------------------------------- summary


def summary(model, input_shape):
    """One dict per node: name, type, output_shape (with batch), params, macs, text."""
    shapes = model.infer_shapes(tuple(input_shape))
    rows = []
    for node in model.nodes:
        ins = [shapes[i] for i in node.inputs]
        rows.append({
            "name": node.name,
            "type": type(node.layer).__name__,
            "output_shape": shapes[node.name],
            "params": sum(int(v.size) for v in node.layer.parameters().values()),
            "macs": int(node.layer.macs(*ins)),
            "text": node.layer.describe(),
        })
    return rows


def _lecture_shape(shape):
    """(N, C, H, W) -> "HxWxC", as the lecture writes volumes; other shapes as "a x b"."""
    if len(shape) == 4:
        return f"{shape[2]}x{shape[3]}x{shape[1]}"
    return "x".join(str(d) for d in shape[1:])


def format_summary(model, input_shape):
    """The lecture's table: ``[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0``."""
    rows = summary(model, input_shape)
    lines = [f"[{_lecture_shape(tuple(input_shape))}] INPUT"]
    for r in rows:
        lines.append(f"[{_lecture_shape(r['output_shape'])}] {r['name'].upper()}: {r['text']}"
                     + (f"  ({r['params']:,} params)" if r["params"] else ""))
    params = sum(r["params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    lines.append(f"total: {params:,} parameters ({params / 1e6:.1f}M), {macs:,} MACs "
                 f"({macs / 1e9:.2f} GMACs) per batch of {input_shape[0]}")
    return "\n".join(lines)


def print_summary(model, input_shape):
    print(format_summary(model, input_shape))


__all__ = ["Graph", "Sequential", "Plan", "Node", "summary", "format_summary", "print_summary"]
