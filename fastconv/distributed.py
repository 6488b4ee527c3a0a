"""Batch inference on a Dask cluster: ``predict(model, images)`` -> a lazy Dask array.

    from dask.distributed import Client
    import fastconv.distributed as fcd
    client = Client("tcp://scheduler:8786")
    probs = fcd.predict(models.alexnet(), images, batch_size=64)   # lazy
    probs.to_zarr("probs.zarr")          # or probs.compute()

How it maps onto Dask
  * ``images`` is a Dask array (N, C, H, W), or a list of ``.npy`` shards (each
    (n_i, C, H, W), read lazily on the workers, memory-mapped) and/or image files
    (decoded with Pillow on the workers, RGB/grayscale scaled to [0, 1]). It is rechunked to
    ``batch_size`` images per block along N and one block along C, H, W; each block is
    one task, ``model(block)``, so the output is a Dask array with the same chunks
    along N.
  * The model travels once: it is a single node of the graph
    (``dask.delayed(model, pure=True)``) that every task refers to, persisted on the
    cluster when there is a client (so later computes of the same array do not ship it
    again); a worker fetches it once and plans it once per batch shape (``nn.Graph``
    caches plans). It is not scattered: Dask's active memory manager drops the replicas
    of a broadcast scatter down to one within seconds, and when the worker holding that
    one died the job failed ("already forgotten"). A persisted graph node is recomputed
    by the scheduler when its holders die.
  * Threads: every worker process gets ``fastconv.set_num_threads(cores on its host /
    Dask threads on its host)`` (at least 1), so workers x threads never oversubscribe
    a machine. Give workers one Dask thread each (``--nthreads 1``) and several cores.
  * Fault tolerance is Dask's: tasks are pure functions of their block, so the
    scheduler re-runs the tasks of a worker that dies on the others, and the model's
    node too if no surviving worker holds it. No output is lost or counted twice: the
    result is exactly what the single-machine ``model(x)`` gives.

Scaling to many machines (on paper): per batch the network carries the input block
(batch x C x H x W x 4 bytes: 38 MB for 64 AlexNet images) to the worker that runs it,
unless the block is read where it lives (``.npy`` shards on shared storage, or a Dask
array loaded on the workers), and the output block back (64 x 1000 x 4 = 256 KB). The
model crosses the network once per worker (AlexNet 244 MB, ResNet-50 102 MB). With
inputs read on the workers, compute dominates (AlexNet: 0.72 GMACs per image) and
throughput grows with the number of cores; with inputs shipped from the client, its
network link becomes the bottleneck at about (link bandwidth / 0.6 MB) images per
second for 227x227 RGB float32 (e.g. ~2,000 img/s on 10 Gbit/s).
"""
from __future__ import annotations

import os

import numpy as np

from . import _registry


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # an optional dependency (the "dask" extra)
        raise ImportError("fastconv.distributed needs dask: pip install 'fastconv[dask]'"
                          ) from exc
    return dask, da


def _client(client):
    """The given client; None: the current distributed client if there is one; False (or
    no distributed client): None, meaning Dask's local scheduler."""
    if client is False:
        return None
    if client is not None:
        return client
    try:
        from distributed import get_client
        return get_client()
    except (ImportError, ValueError):
        return None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _read_image(path):
    """One image file as float32 (C, H, W) in [0, 1] (RGB, or 1 channel for grayscale)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("reading image files needs Pillow: pip install pillow "
                          "(or give .npy shards)") from exc
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if img.mode in ("1", "L", "I;16") else "RGB"))
    arr = arr.astype(np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _part(dask, da, path):
    """A lazy (n, C, H, W) piece for one .npy shard or one image file (read on a worker)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        header = np.load(path, mmap_mode="r")  # reads the header only
        if header.ndim != 4:
            raise ValueError(f"shard {path!r} has shape {header.shape}; expected (n, C, H, W)")
        return da.from_delayed(dask.delayed(np.load)(path, mmap_mode="r"), header.shape,
                               dtype=header.dtype)
    if path.lower().endswith(IMAGE_SUFFIXES):
        shape = _read_image(path).shape  # the shape must be known before the graph is built
        block = dask.delayed(lambda p: _read_image(p)[None])(path)
        return da.from_delayed(block, (1,) + shape, dtype=np.float32)
    raise ValueError(f"{path!r} is neither a .npy shard nor an image file "
                     f"({', '.join(IMAGE_SUFFIXES)}); give .npy shards of shape (n, C, H, W), "
                     "image files, or a Dask array")


def images_array(images, batch_size):
    """``images`` as a float32 Dask array (N, C, H, W) chunked ``batch_size`` along N.

    images: a Dask array (N, C, H, W), or a list of ``.npy`` shards (each (n, C, H, W),
    memory-mapped on the worker that reads it) and/or image files (one image each, RGB or
    grayscale scaled to [0, 1], decoded with Pillow on the worker; all the same size)."""
    dask, da = _dask()
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list of .npy shards / image files")
        parts = [_part(dask, da, path) for path in images]
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"images differ in (C, H, W): {sorted(shapes)}")
        images = da.concatenate(parts, axis=0)
    elif not hasattr(images, "chunks"):
        raise TypeError(f"images must be a Dask array (N, C, H, W) or a list of .npy shard "
                        f"or image file paths, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    return images.astype(np.float32).rechunk((batch_size, -1, -1, -1))


def _run_block(block, model, backend):
    """One task: the model on one batch of images (plans are cached per worker)."""
    with _registry.use_backend(backend):
        return np.asarray(model(np.ascontiguousarray(block)))


def worker_threads(client):
    """Set fastconv's threads on every worker so that the Dask threads of each host times
    fastconv's threads stays within its cores; returns {worker address: threads}."""
    info = client.scheduler_info()["workers"]
    per_host = {}
    for addr, w in info.items():
        host = w["host"]
        per_host[host] = per_host.get(host, 0) + w["nthreads"]
    cores = client.run(lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count())
    threads = {addr: max(1, cores[addr] // per_host[info[addr]["host"]])
               for addr in info if addr in cores}
    for addr, n in threads.items():
        client.run(_set_threads, n, workers=[addr])
    return threads


def _set_threads(n):
    import fastconv

    fastconv.set_num_threads(n)
    return n


def predict(model, images, *, batch_size=64, backend=None, client=None):
    """Lazy outputs of ``model`` over ``images`` (see the module doc).

    model: a fastconv ``nn`` model (``fastconv.models.*``, ``fastconv.onnx.load(...)``).
    images: a Dask array (N, C, H, W) or a list of ``.npy`` shard / image file paths.
    backend: the fastconv backend the workers use (default: the current one here).
    client: a ``distributed.Client`` (default: the current one, else Dask's local
    scheduler; ``False``: the local scheduler even when a client exists). Returns a
    float32 Dask array whose first axis follows the batches.
    """
    dask, da = _dask()
    x = images_array(images, batch_size)
    backend = _registry.current_backend() if backend is None else backend
    _registry.check_backend_name(backend)
    out_name = model.outputs[0]
    out_shape = model.infer_shapes((batch_size,) + tuple(x.shape[1:]))[out_name]
    client = _client(client)
    shipped = dask.delayed(model, pure=True)  # a graph node, not a scatter: see above
    if client is not None:
        worker_threads(client)
        shipped = client.persist(shipped)
    chunks = (x.chunks[0],) + tuple((d,) for d in out_shape[1:])
    extra = len(out_shape) - 4
    kwargs = {}
    if extra < 0:
        kwargs["drop_axis"] = list(range(len(out_shape), 4))
    elif extra > 0:
        kwargs["new_axis"] = list(range(4, len(out_shape)))
    return da.map_blocks(_run_block, x, shipped, backend, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0,) * len(out_shape), np.float32), **kwargs)
