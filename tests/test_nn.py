"""fastconv.nn and fastconv.models: shapes and parameter counts (the lecture's tables),
planned forward == layer-by-layer forward (BN folding and ReLU fusion change nothing),
every backend against the naive spec, weights I/O, torchvision-layout state_dicts
against PyTorch, and the runner's errors."""
from __future__ import annotations

import numpy as np
import pytest

import fastconv as fc
from fastconv import models, nn
from helpers import assert_close, rand


def layer_by_layer(model, *xs):
    """The unplanned reference: every node's own forward, through the public ops."""
    values = dict(zip(model.input_names, xs))
    for node in model.nodes:
        values[node.name] = node.layer.forward(*(values[i] for i in node.inputs))
    outs = [values[n] for n in model.outputs]
    return outs[0] if len(outs) == 1 else outs


# ---------------------------------------------------------------------------- lecture tables


def test_alexnet_summary_is_the_lecture_table():
    rows = {r["name"]: r for r in nn.summary(models.alexnet(), (1, 3, 227, 227))}
    expect = {"conv1": (1, 96, 55, 55), "pool1": (1, 96, 27, 27), "norm1": (1, 96, 27, 27),
              "conv2": (1, 256, 27, 27), "pool2": (1, 256, 13, 13), "conv3": (1, 384, 13, 13),
              "conv4": (1, 384, 13, 13), "conv5": (1, 256, 13, 13), "pool5": (1, 256, 6, 6),
              "fc6": (1, 4096), "fc7": (1, 4096), "fc8": (1, 1000)}
    for name, shape in expect.items():
        assert rows[name]["output_shape"] == shape, (name, rows[name])
    assert rows["conv1"]["params"] == 96 * 3 * 11 * 11 + 96  # 34,944
    assert rows["conv1"]["macs"] == 55 * 55 * 96 * 3 * 11 * 11
    total = sum(r["params"] for r in rows.values())
    assert 60e6 < total < 62e6, total  # "about 60M"
    text = nn.format_summary(models.alexnet(), (1, 3, 227, 227))
    assert "[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0" in text
    assert "[27x27x96] POOL1: max 3x3 filters at stride 2" in text
    assert "[6x6x256] POOL5" in text and "[4096] FC6: 4096 neurons" in text


@pytest.mark.parametrize("builder,shape,params_m", [
    (models.lenet5, (1, 1, 32, 32), 0.0617), (models.zfnet, (1, 3, 224, 224), 107.6),
    (models.vgg16, (1, 3, 224, 224), 138.4), (models.vgg19, (1, 3, 224, 224), 143.7),
    (models.googlenet, (1, 3, 224, 224), 7.0), (models.resnet50, (1, 3, 224, 224), 25.6),
], ids=lambda v: getattr(v, "__name__", None))
def test_model_shapes_and_parameter_counts(builder, shape, params_m):
    rows = nn.summary(builder(), shape)
    assert rows[-1]["output_shape"] == (1, 10 if builder is models.lenet5 else 1000)
    total = sum(r["params"] for r in rows) / 1e6
    assert abs(total - params_m) / params_m < 0.01, (builder.__name__, total)


def test_lenet5_variants():
    rows = nn.summary(models.lenet5(), (2, 1, 32, 32))
    shapes = {r["name"]: r["output_shape"] for r in rows}
    assert shapes["conv1"] == (2, 6, 28, 28) and shapes["pool2"] == (2, 16, 5, 5)
    assert [r["output_shape"][1] for r in rows if r["type"] == "Linear"] == [120, 84, 10]
    lecture = nn.summary(models.lenet5(fc=(120, 100, 10)), (1, 1, 32, 32))
    assert [r["output_shape"][1] for r in lecture if r["type"] == "Linear"] == [120, 100, 10]


# ---------------------------------------------------------------------------- the planner


# simulator=False: a whole LeNet on the CUDA simulator takes a minute; the simulated
# cuda graph is test_graph_on_device_keeps_activations_there (a GPU runs this one too).
@pytest.mark.op("conv2d", simulator=False)
def test_lenet5_every_backend_matches_naive(backend):
    model = models.lenet5()
    x = rand((2, 1, 32, 32), 3)
    with fc.use_backend(backend):
        y = model(x)
    with fc.use_backend("naive"):
        ref = layer_by_layer(model, x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 10)
    assert_close(y, ref, reduction=400, case=f"lenet5 on {backend} vs naive layer by layer")


def _small_resnet_inception():
    """BN after convs (folded), ReLU after conv/add (fused), a residual add, a concat,
    Dropout (removed) and a graph output that is a fused ReLU."""
    rng = np.random.default_rng(5)
    g = nn.Graph(name="tiny")
    g.add("conv1", nn.Conv2d(3, 8, 3, padding=1, rng=rng, bias=False))
    bn = nn.BatchNorm2d(8, weight=rng.uniform(0.5, 2, 8), bias=rng.standard_normal(8),
                        running_mean=rng.standard_normal(8),
                        running_var=rng.uniform(0.5, 2, 8))
    g.add("bn1", bn)
    g.add("relu1", nn.ReLU())
    g.add("conv2", nn.Conv2d(8, 8, 3, padding=1, rng=rng))
    g.add("add", nn.Add(), ["conv2", "relu1"])
    g.add("relu2", nn.ReLU())
    g.add("b1", nn.Conv2d(8, 4, 1, rng=rng), "relu2")
    g.add("b2", nn.MaxPool2d(3, 1, padding=1), "relu2")
    g.add("cat", nn.Concat(), ["b1", "b2"])
    g.add("drop", nn.Dropout())
    g.add("gap", nn.GlobalAvgPool2d())
    g.add("flat", nn.Flatten())
    g.add("fc", nn.Linear(12, 5, rng=rng))
    g.add("out", nn.ReLU())
    return g


def test_plan_folds_and_fuses_without_changing_results():
    g = _small_resnet_inception()
    x = rand((2, 3, 9, 9), 1)
    plan = g.plan_for(x)
    step_names = [s[0] for s in plan.steps]
    for gone in ("bn1", "relu1", "relu2", "drop"):
        assert gone not in step_names, step_names
    y = g(x)
    with fc.use_backend("naive"):
        ref = layer_by_layer(g, x)
    assert_close(y, ref, reduction=72, case="planned tiny graph vs naive layer by layer")
    assert g.plan_for(x) is plan  # cached per shape and backend
    assert g.plan_for(rand((1, 3, 9, 9), 2)) is not plan


def test_outputs_that_pass_inputs_through():
    """Dropout (identity) as a graph output, fed by a graph input or by another output."""
    x = rand((2, 3), 1)
    g = nn.Graph(["x"], ["d"])
    g.add("d", nn.Dropout(), ["x"])
    np.testing.assert_array_equal(g(x), x)
    g = nn.Graph(["x"], ["r", "d"])
    g.add("r", nn.ReLU(), ["x"])
    g.add("d", nn.Dropout(), ["r"])
    r, d = g(x)
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_array_equal(d, r)


def test_run_feeds_and_multiple_outputs():
    g = nn.Graph(inputs=["a", "b"], outputs=["s", "r"])
    g.add("s", nn.Add(), ["a", "b"])
    g.add("r", nn.ReLU(), "s")
    a, b = rand((2, 3), 1), rand((2, 3), 2)
    s, r = g(a, b)
    assert_close(s, a + b, case="add")
    assert_close(r, np.maximum(a + b, 0), case="relu")
    out = g.run({"a": a, "b": b})
    assert set(out) == {"s", "r"}
    with pytest.raises(ValueError, match="feeds lack inputs"):
        g.run({"a": a})


@pytest.mark.parametrize("activation", [None, "relu"])
def test_planned_add_matches_numpy_bit_for_bit(backend, activation):
    """The plan's residual sum (the c backend's fused fc_add, NumPy or the GPU elsewhere)
    gives a + b (then ReLU) exactly, NaN and -0.0 included, into reused buffers call after
    call; broadcasting adds (host backends) keep the NumPy path."""
    from conftest import runs_like_naive

    g = nn.Graph(inputs=["a", "b"], outputs=["s"])
    g.add("t", nn.Add(), ["a", "b"])
    g.add("s", nn.Add(activation=activation), ["t", "b"])
    shape = (2, 3, 4, 5) if runs_like_naive(backend) else (2, 3, 70, 71)
    a, b = rand(shape, 1), rand(shape, 2)
    a[0, 0, 0, :4] = [np.nan, -0.0, 0.0, -1.0]
    b[0, 0, 0, :4] = [1.0, -0.0, -0.0, 0.5]
    t = a + b
    ref = t + b
    if activation == "relu":
        ref = np.where(ref > 0, ref, np.where(np.isnan(ref), ref, np.float32(0)))
    with fc.use_backend(backend):
        for _ in range(2):
            np.testing.assert_array_equal(g(a, b), ref)
        if backend == "cuda":
            return  # device Adds need equal shapes (a clear ValueError otherwise)
        c = rand((1,) + shape[1:], 3)  # broadcast over the batch
        np.testing.assert_array_equal(g(a, c), (a + c) + c if activation is None
                                      else np.maximum((a + c) + c, 0))


def test_graph_on_device_keeps_activations_there():
    """On the cuda backend the input is uploaded once and every activation stays on the
    device; host in -> host out, device in -> device out."""
    conftest = pytest.importorskip("conftest")
    conftest.check_usable("cuda")
    from numba import cuda

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.LocalResponseNorm(3), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
                          nn.Softmax())
    x = rand((2, 1, 6, 6), 4)
    with fc.use_backend("cuda"):
        y_host = model(x)
    y_dev = model(cuda.to_device(x))
    assert isinstance(y_host, np.ndarray) and not isinstance(y_dev, np.ndarray)
    with fc.use_backend("naive"):
        ref = layer_by_layer(model, x)
    assert_close(y_host, ref, reduction=36, case="cuda graph, host input")
    assert_close(y_dev.copy_to_host(), ref, reduction=36, case="cuda graph, device input")
    # residual add and concat (ResNet / Inception glue) on the device too
    g = nn.Graph()
    g.add("c", nn.Conv2d(1, 2, 3, padding=1))
    g.add("add", nn.Add(activation="relu"), ["c", "c"])
    g.add("cat", nn.Concat(), ["add", "c"])
    yd = g(cuda.to_device(x))
    assert not isinstance(yd, np.ndarray)
    with fc.use_backend("naive"):
        ref = layer_by_layer(g, x)
    assert_close(yd.copy_to_host(), ref, reduction=9, case="cuda add/concat")


# ---------------------------------------------------------------------------- weights


def test_weights_round_trip_exactly(tmp_path):
    a, b = models.alexnet(seed=1), models.alexnet(seed=2)
    path = tmp_path / "alexnet.npz"
    a.save_weights(path)
    b.load_weights(path)
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v, err_msg=k)


def test_weight_mismatch_lists_the_differences(tmp_path):
    model = models.lenet5()
    weights = model.parameters()
    weights.pop("conv1.bias")
    weights["conv9.weight"] = np.zeros(3, np.float32)
    weights["fc1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError) as err:
        model.load_weights(weights)
    msg = str(err.value)
    assert "missing ['conv1.bias']" in msg and "unexpected ['conv9.weight']" in msg
    assert "fc1.weight: file (3, 3) vs model (120, 400)" in msg


def _torch_alexnet(torch):
    """torchvision.models.alexnet's module tree (names and layout), built in plain torch."""
    t = torch.nn
    features = t.Sequential(
        t.Conv2d(3, 64, 11, 4, 2), t.ReLU(), t.MaxPool2d(3, 2), t.Conv2d(64, 192, 5, padding=2),
        t.ReLU(), t.MaxPool2d(3, 2), t.Conv2d(192, 384, 3, padding=1), t.ReLU(),
        t.Conv2d(384, 256, 3, padding=1), t.ReLU(), t.Conv2d(256, 256, 3, padding=1), t.ReLU(),
        t.MaxPool2d(3, 2))
    classifier = t.Sequential(t.Dropout(), t.Linear(9216, 4096), t.ReLU(), t.Dropout(),
                              t.Linear(4096, 4096), t.ReLU(), t.Linear(4096, 1000))
    model = t.Module()
    model.features, model.avgpool, model.classifier = features, t.AdaptiveAvgPool2d(6), classifier
    model.forward = lambda x: classifier(torch.flatten(model.avgpool(features(x)), 1))
    return model


def _torch_resnet50(torch):
    """torchvision.models.resnet50's module tree (v1.5 bottlenecks), built in plain torch."""
    t = torch.nn

    class Bottleneck(t.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = t.Conv2d(cin, width, 1, bias=False), t.BatchNorm2d(width)
            self.conv2 = t.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = t.BatchNorm2d(width)
            self.conv3 = t.Conv2d(width, width * 4, 1, bias=False)
            self.bn3, self.relu = t.BatchNorm2d(width * 4), t.ReLU()
            self.downsample = None
            if stride != 1 or cin != width * 4:
                self.downsample = t.Sequential(t.Conv2d(cin, width * 4, 1, stride, bias=False),
                                               t.BatchNorm2d(width * 4))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(t.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = t.Conv2d(3, 64, 7, 2, 3, bias=False), t.BatchNorm2d(64)
            self.relu, self.maxpool = t.ReLU(), t.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (w, n, s) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(cin, w, s if b == 0 else 1))
                    cin = w * 4
                setattr(self, f"layer{i + 1}", t.Sequential(*blocks))
            self.avgpool, self.fc = t.AdaptiveAvgPool2d(1), t.Linear(2048, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet50()


def _randomise_bn(torch, model):
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean.data = torch.randn(n, generator=gen) * 0.1
            m.running_var.data = torch.rand(n, generator=gen) + 0.5


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet50"])
def test_torchvision_layout_state_dict_matches_torch(name, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if name == "alexnet":
        tm, ours, shape = _torch_alexnet(torch), models.alexnet(variant="torchvision"), 224
    elif name == "resnet50":
        tm, ours, shape = _torch_resnet50(torch), models.resnet50(), 224
        _randomise_bn(torch, tm)
    else:
        t = torch.nn
        layers, cin = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"]:
            layers += [t.MaxPool2d(2)] if v == "M" else [t.Conv2d(cin, v, 3, padding=1), t.ReLU()]
            cin = v if v != "M" else cin
        tm = t.Module()
        tm.features = t.Sequential(*layers)
        tm.classifier = t.Sequential(t.Linear(25088, 4096), t.ReLU(), t.Dropout(),
                                     t.Linear(4096, 4096), t.ReLU(), t.Dropout(),
                                     t.Linear(4096, 1000))
        tm.forward = lambda x: tm.classifier(torch.flatten(tm.features(x), 1))
        ours, shape = models.vgg16(), 224
    tm.eval()
    path = tmp_path / f"{name}.pt"
    torch.save(tm.state_dict(), path)
    ours.load_state_dict(str(path))
    x = rand((1, 3, shape, shape), 7)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    got = ours(x)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, f"{name}: max |diff| / max |logit| = {err:.2e}"


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet50"])
def test_torchvision_models_state_dict_matches_torchvision(name, tmp_path):
    """The real torchvision models (where torchvision is installed; it is not a test
    dependency): their state_dict loads into ours and gives the same logits."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tm = getattr(tv.models, name)(weights=None).eval()
    if name == "resnet50":
        _randomise_bn(torch, tm)
    ours = models.alexnet(variant="torchvision") if name == "alexnet" else getattr(models, name)()
    path = tmp_path / f"{name}.pt"
    torch.save(tm.state_dict(), path)
    ours.load_state_dict(str(path))
    x = rand((2, 3, 224, 224), 8)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    got = ours(x)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-4, f"torchvision {name}: max |diff| / max |logit| = {err:.2e}"


# ---------------------------------------------------------------------------- errors


def test_graph_errors_name_the_node():
    g = nn.Sequential(("conv", nn.Conv2d(3, 4, 5)), ("fc", nn.Linear(10, 2)))
    with pytest.raises(ValueError, match=r"node 'conv' \(Conv2d\) on input shape\(s\) "
                                         r"\[\(1, 3, 4, 4\)\]"):
        g(rand((1, 3, 4, 4), 0))
    with pytest.raises(ValueError, match="node 'fc' .* in_features"):
        g(rand((1, 3, 8, 8), 0))
    with pytest.raises(ValueError, match="takes 1 input"):
        g(rand((1, 3, 8, 8), 0), rand((1, 3, 8, 8), 0))
    with pytest.raises(ValueError, match="reads \\['nope'\\]"):
        g.add("x", nn.ReLU(), "nope")
    with pytest.raises(ValueError, match="already used"):
        g.add("conv", nn.ReLU())
    with pytest.raises(TypeError, match="not a fastconv.nn layer"):
        g.add("f", lambda x: x)
    with pytest.raises(ValueError, match="weight of shape"):
        nn.Conv2d(3, 4, 3, weight=np.zeros((4, 3, 5, 5)))


def test_model_forward_is_planned_once_per_shape(monkeypatch):
    model = models.lenet5()
    x = rand((1, 1, 32, 32), 0)
    model(x)
    built = []
    monkeypatch.setattr(nn.graph.Plan, "__init__",
                        lambda self, *a: built.append(a) or (_ for _ in ()).throw(AssertionError))
    model(x)  # cached: no new plan
    assert built == []



def test_plan_reuses_buffers_and_returns_fresh_outputs():
    """On c the steps write into per-plan buffers reused by liveness; results never alias
    them (a second call must not change the first result), also when the graph ends in a
    view (Flatten) of a buffered step."""
    model = models.alexnet()
    x1, x2 = rand((1, 3, 227, 227), 1), rand((1, 3, 227, 227), 2)
    plan = model.plan_for(x1, backend="c")
    buffered = [s for s in plan.steps if s[4] is not None]
    assert buffered and len(plan.buffer_shapes) < len(buffered)  # reused, not one per step
    with fc.use_backend("c"):
        y1 = model(x1)
        kept = y1.copy()
        y2 = model(x2)
    np.testing.assert_array_equal(y1, kept)
    assert not np.array_equal(y1, y2)
    g = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten())
    xa, xb = rand((1, 1, 8, 8), 3), rand((1, 1, 8, 8), 4)
    ya = g(xa)
    ya_kept = ya.copy()
    g(xb)
    np.testing.assert_array_equal(ya, ya_kept)


def test_one_model_from_several_threads():
    """Each calling thread gets its own buffers: concurrent forwards match serial ones."""
    from concurrent.futures import ThreadPoolExecutor

    model = models.lenet5()
    xs = [rand((3, 1, 32, 32), i) for i in range(8)]
    serial = [model(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        for got, want in zip(pool.map(model, xs * 3), serial * 3):
            np.testing.assert_array_equal(got, want)
