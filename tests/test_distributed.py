"""fastconv.distributed on a loopback LocalCluster (2 worker processes on 127.0.0.1):
results identical to local runs, the model shipped once, threads that don't
oversubscribe, a worker killed mid-job, .npy shards, and the CLI route."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import fastconv.distributed as fcd  # noqa: E402
from fastconv import models  # noqa: E402
from helpers import rand  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _model_keys(y):
    """The keys of the model that the block tasks read (their dependencies that are not
    array chunks), however predict ships it."""
    graph = dict(y.__dask_graph__())
    return {k for (block, *_) in y.__dask_keys__() for k in graph[block].dependencies
            if not isinstance(k, tuple)}


def _model_key(y):
    (key,) = _model_keys(y)
    return key


def local_batches(model, x, batch):
    """What one machine gives for the same batches (kernels may pick per batch size)."""
    return np.concatenate([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def test_lenet5_identical_to_local(client):
    model = models.lenet5()
    x = rand((300, 1, 32, 32), 1)
    y = fcd.predict(model, da.from_array(x, chunks=(100, 1, 32, 32)), batch_size=64)
    assert y.chunks == ((64, 64, 64, 64, 44), (10,))
    out = y.compute()
    np.testing.assert_array_equal(out, local_batches(model, x, 64))
    np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-5)


def test_alexnet_batch_identical_to_local(client):
    model = models.alexnet(num_classes=10)
    x = rand((4, 3, 227, 227), 2)
    out = fcd.predict(model, da.from_array(x), batch_size=2, client=client).compute()
    np.testing.assert_array_equal(out, local_batches(model, x, 2))


def test_threads_never_oversubscribe(client):
    threads = fcd.worker_threads(client)
    cores = len(os.sched_getaffinity(0))
    assert len(threads) == 2
    assert sum(threads.values()) <= max(cores, 2), threads  # 2 workers x 1 Dask thread
    assert client.run(lambda: __import__("fastconv").get_num_threads()) == threads


def test_model_is_shipped_once(client):
    """The graph holds the model once, as one node that every task refers to."""
    model = models.lenet5()
    y = fcd.predict(model, da.from_array(rand((40, 1, 32, 32), 3), chunks=8), batch_size=8)
    graph = dict(y.__dask_graph__())
    assert y.numblocks[0] == 5
    assert len(_model_keys(y)) == 1, _model_keys(y)  # every task reads the same node
    # and no task carries a copy of its own: 5 copies would pickle to 5x the model
    import pickle
    assert len(pickle.dumps(graph)) < 2 * len(pickle.dumps(model))


def test_worker_killed_mid_job_still_completes(client):
    model = models.alexnet(num_classes=10)
    x = rand((48, 3, 227, 227), 4)  # 48 one-image tasks: about a second on 2 workers
    want = local_batches(model, x, 1)
    y = fcd.predict(model, da.from_array(x), batch_size=1)
    model_key = _model_key(y)
    future = client.compute(y)
    deadline = time.time() + 60
    busy, holders = {}, ()
    while not (busy and holders) and time.time() < deadline:
        busy = {w: keys for w, keys in client.processing().items() if keys}
        holders = client.who_has().get(model_key, ())
        time.sleep(0.01)
    # a worker with tasks under way, the model's holder if it has some: losing the only
    # copy of a scattered model lost the job ("already forgotten"); a persisted node is rerun
    victim = next((w for w in busy if w in holders), next(iter(busy)))
    pid = client.run(os.getpid, workers=[victim])[victim]
    # killed before the job ends (a kill after it, of the worker holding the result,
    # tests something else and can leave the result "already forgotten")
    assert not future.done(), "the job ended before the kill: give it more images"
    os.kill(pid, signal.SIGKILL)  # a hard crash: no goodbye to the scheduler
    out = future.result(timeout=300)
    np.testing.assert_array_equal(out, want)
    assert victim not in client.scheduler_info()["workers"]  # it really died


def test_model_lost_on_every_worker_is_recomputed(client):
    """Dask's memory manager keeps as few copies of a value as it can; killing every worker
    that holds the model must not lose the job (a scattered model was lost for good)."""
    model = models.lenet5()
    x = rand((40, 1, 32, 32), 6)
    y = fcd.predict(model, da.from_array(x, chunks=8), batch_size=8)
    first = y.compute()
    holders = client.who_has().get(_model_key(y), ())
    assert holders, "the model is in memory on no worker after a compute"
    for worker in holders:
        os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
    np.testing.assert_array_equal(client.compute(y).result(timeout=120), first)


def test_npy_shards_and_local_scheduler(tmp_path):
    """.npy shards, and no distributed client at all (Dask's local scheduler)."""
    model = models.lenet5()
    x = rand((50, 1, 32, 32), 5)
    paths = []
    for i, part in enumerate((x[:20], x[20:35], x[35:])):
        paths.append(tmp_path / f"shard{i}.npy")
        np.save(paths[-1], part)
    import dask

    with dask.config.set(scheduler="threads"):
        out = fcd.predict(model, [str(p) for p in paths], batch_size=16, client=False)
        assert isinstance(out, da.Array)
        got = out.compute()
    np.testing.assert_array_equal(got, local_batches(model, x, 16))


def test_image_files(tmp_path):
    """Image files (one image each, decoded on the workers): grayscale PNGs for LeNet-5."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (5, 32, 32), dtype=np.uint8)
    paths = []
    for i, p in enumerate(pixels):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(p, mode="L").save(paths[-1])
    model = models.lenet5()
    import dask

    with dask.config.set(scheduler="threads"):
        got = fcd.predict(model, paths, batch_size=2, client=False).compute()
    x = (pixels.astype(np.float32) / 255.0)[:, None]
    np.testing.assert_array_equal(got, local_batches(model, x, 2))


def test_bad_inputs():
    model = models.lenet5()
    with pytest.raises(TypeError, match="Dask array .* or a list of .npy"):
        fcd.predict(model, rand((2, 1, 32, 32), 0), client=False)
    with pytest.raises(ValueError, match="batch_size=0"):
        fcd.predict(model, da.zeros((2, 1, 32, 32)), batch_size=0, client=False)
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        fcd.predict(model, da.zeros((2, 32, 32)), client=False)
    with pytest.raises(ValueError, match="neither a .npy shard nor an image file"):
        fcd.predict(model, ["images.txt"], client=False)


def test_cli_run_dask(client, tmp_path):
    shard = tmp_path / "x.npy"
    np.save(shard, rand((20, 1, 32, 32), 6))
    address = client.scheduler.address
    result = subprocess.run([sys.executable, "-m", "fastconv", "run", "lenet5", "--dask",
                             address, "--images", str(shard), "--batch", "8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "20 images on tcp://127.0.0.1" in result.stdout, result.stdout
