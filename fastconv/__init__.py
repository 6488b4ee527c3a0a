"""fastconv: fast CNN kernels behind one NumPy API.

    import fastconv as fc
    y = fc.conv2d(x, w, b, stride=1, padding=1)          # backend="auto"
    with fc.use_backend("numpy"):
        y = fc.max_pool2d(y, 2)

See ``fastconv.backends.naive`` for the exact semantics of every op.
"""
# Import the backends/ subpackage before binding the name ``backends`` to the
# function: Python sets ``fastconv.backends`` to the subpackage when it is first
# imported, which would otherwise overwrite the function on first use.
from . import backends as _backends_package  # noqa: F401
from ._registry import (
    backends,
    get_num_threads,
    set_default_backend,
    set_num_threads,
    use_backend,
)
from .ops import (
    avg_pool2d,
    batch_norm,
    conv2d,
    gemm,
    global_avg_pool2d,
    linear,
    local_response_norm,
    max_pool2d,
    relu,
    softmax,
)

__version__ = "0.1.0"


def info():
    """Version, usable backends, the C build (OpenMP, ISA picked at run time), numba's version
    and threading layer, threads, and what the cuda backend runs on (GPU or simulator)."""
    import numpy

    from . import _registry

    result = {
        "version": __version__,
        "numpy": numpy.__version__,
        "backends": backends(),
        "default_backend": _registry.current_backend(),
        "threads": get_num_threads(),
    }
    if "c" in result["backends"]:
        result.update(_registry.backend_module("c").build_info())
    else:
        result["c_unavailable"] = _registry.unavailable().get("c")
    if "numba" in result["backends"]:
        result.update(_registry.backend_module("numba").build_info())
    else:
        result["numba_unavailable"] = _registry.unavailable().get("numba")
    if "cuda" in result["backends"]:  # says whether it is a real GPU or the simulator
        result.update(_registry.backend_module("cuda").build_info())
    else:
        result["cuda_unavailable"] = _registry.unavailable().get("cuda")
    return result


__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "gemm", "linear", "relu",
    "softmax", "local_response_norm", "batch_norm", "backends", "use_backend",
    "set_default_backend", "set_num_threads", "get_num_threads", "info", "__version__",
]
