"""The one table of kernels: ``(op, backend) -> "module:function"``, and the "auto" policy.

Adding a kernel means adding its row here; tests and benchmarks parametrise over
``KERNELS``. Modules are imported lazily, on the first call that needs them, so
``import fastconv`` stays cheap and a backend that fails to import (no compiler,
no numba) just drops out of ``backends()``.

Every backend module exposes functions with the same names and the same
arguments (after validation by ``_checks``):

    conv2d(x, weight, bias, p: Conv2dParams, activation)     -> y (N, K, P, Q)
    max_pool2d(x, p: Pool2dParams)                           -> y (N, C, P, Q)
    avg_pool2d(x, p: Pool2dParams)                           -> y (N, C, P, Q)
    global_avg_pool2d(x)                                     -> y (N, C, 1, 1)
    gemm(a, b, c, alpha, beta, trans_a, trans_b)             -> y (M, N)
    linear(x, weight, bias)                                  -> y (rows, out)
    relu(x)                                                  -> y (same shape)
    softmax(x)                  over axis 1 of (outer, L, inner)
    local_response_norm(x, size, alpha, beta, k)  x (N, C, L)
    batch_norm(x, mean, var, weight, bias, eps)   x (N, C, L); weight/bias always given

Inputs arrive C-contiguous, in the backend's compute dtype (``COMPUTE_DTYPES``),
never empty, and must not be written to. ``c`` in gemm is the exception: it is a
fresh (M, N) copy that the kernel may overwrite and return.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading

OPS = (
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "gemm",
    "linear",
    "relu",
    "softmax",
    "local_response_norm",
    "batch_norm",
)

# Backend name -> (module, ops it implements). The order is the order backends() lists.
_BACKEND_MODULES = {
    "naive": ("fastconv.backends.naive", OPS),
    "numpy": ("fastconv.backends.numpy_", OPS),
    "c": ("fastconv.backends.c", OPS),
    "numba": ("fastconv.backends.numba_cpu", OPS),
    "cuda": ("fastconv.backends.numba_cuda", OPS),
}

KERNELS = {
    (op, backend): f"{module}:{op}"
    for backend, (module, ops) in _BACKEND_MODULES.items()
    for op in ops
}

# Backends that compute float64 inputs in float64; every other one computes in float32.
FLOAT64_BACKENDS = frozenset({"naive", "numpy"})

# Backends whose kernels run on a GPU: the only ones that take device arrays, and
# never picked by "auto" for host arrays (a copy to the GPU and back per op, and
# under NUMBA_ENABLE_CUDASIM a simulator as slow as the naive loops).
DEVICE_BACKENDS = frozenset({"cuda"})

# "auto" for host arrays: the first usable backend in this order. The C kernels
# are the ones we tune (benchmarks/RESULTS.md records where they stand against
# numpy and the peers, per layer); numba (pure-Python packed GEMM, JIT-compiled) is
# the fallback when the extension is not built, and numpy when numba is missing too. Per-shape choices belong inside the C backend, which
# picks its conv algorithm per call, so this policy stays one line.
AUTO_ORDER = ("c", "numba", "numpy")

_modules: dict[str, object] = {}
_import_errors: dict[str, str] = {}
_lock = threading.Lock()


def _load(backend):
    """Import a backend module once; None (and a recorded reason) if it cannot be used."""
    with _lock:
        if backend in _modules:
            return _modules[backend]
        module_name = _BACKEND_MODULES[backend][0]
        try:
            module = importlib.import_module(module_name)
            if hasattr(module, "set_num_threads"):
                module.set_num_threads(get_num_threads())
        except Exception as exc:  # any failure means "not usable here"
            module = None
            _import_errors[backend] = f"{type(exc).__name__}: {exc}"
        _modules[backend] = module
        return module


def backends():
    """Names of the usable backends, in preference-independent listing order."""
    return [name for name in _BACKEND_MODULES if _load(name) is not None]


def unavailable():
    """{backend: reason} for backends that failed to import."""
    backends()
    return dict(_import_errors)


def backend_module(name):
    check_backend_name(name, allow_auto=False)
    module = _load(name)
    if module is None:
        raise ValueError(f"backend {name!r} is not usable here: {_import_errors.get(name)}")
    return module


def check_backend_name(name, allow_auto=True):
    known = list(_BACKEND_MODULES) + (["auto"] if allow_auto else [])
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"unknown backend {name!r}; known backends are {known}")
    return name


# --------------------------------------------------------------------------- default backend

_default_backend = "auto"
_local = threading.local()


def set_default_backend(name):
    """Set the process-wide default backend (``"auto"`` or a name from backends())."""
    global _default_backend
    check_backend_name(name)
    if name != "auto":
        backend_module(name)
    _default_backend = name


def current_backend():
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _default_backend


@contextlib.contextmanager
def use_backend(name):
    """Within the ``with`` block, ops in this thread default to backend ``name``."""
    check_backend_name(name)
    if name != "auto":
        backend_module(name)
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


# (op, backend as asked, on_device) -> (backend, module, kernel name). Backends load once
# and never unload and KERNELS is fixed, so an answer never changes; the lookup saves the
# ~3 us the checks and the locked load cost, which small layers feel.
_resolved = {}


def resolve(op, backend=None, on_device=False):
    """Return ``(backend_name, kernel_function)`` for one call of ``op``.

    on_device: some input is a device array. "auto" then means cuda; a host
    backend named explicitly is an error rather than a hidden copy to the host.
    """
    name = current_backend() if backend is None else backend
    key = (op, name, on_device) if isinstance(name, str) else None
    hit = _resolved.get(key) if key is not None else None
    if hit is not None:  # the kernel is looked up afresh: a wrapped (monkeypatched) one counts
        return hit[0], getattr(hit[1], hit[2])
    check_backend_name(name)
    if name == "auto":
        order = tuple(DEVICE_BACKENDS) if on_device else AUTO_ORDER
        for candidate in order:
            if (op, candidate) in KERNELS and _load(candidate) is not None:
                name = candidate
                break
        else:
            if on_device:
                raise ValueError(f"{op}: device arrays need the cuda backend, which is not "
                                 f"usable here: {_import_errors.get('cuda')}")
    if on_device and name not in DEVICE_BACKENDS:
        raise TypeError(f"{op}: backend {name!r} works on host arrays but got a device array; "
                        "use backend='cuda' (or 'auto'), or copy the input to the host first")
    if (op, name) not in KERNELS:
        have = sorted(b for (o, b) in KERNELS if o == op)
        raise ValueError(f"backend {name!r} has no kernel for {op!r}; backends with it: {have}")
    module, attr = backend_module(name), KERNELS[(op, name)].split(":")[1]
    if key is not None:
        _resolved[key] = name, module, attr
    return name, getattr(module, attr)


# --------------------------------------------------------------------------- threads


def _initial_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_num_threads = _initial_threads()


def set_num_threads(n):
    """Threads for the C (OpenMP) and Numba kernels. ``OMP_NUM_THREADS`` sets the start value."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n={n!r} must be an int >= 1")
    _num_threads = n
    with _lock:
        loaded = [m for m in _modules.values() if m is not None]
    for module in loaded:
        if hasattr(module, "set_num_threads"):
            module.set_num_threads(n)


def get_num_threads():
    return _num_threads
