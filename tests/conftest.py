"""Backend parametrisation, CUDA simulator set-up and hypothesis profiles.

Backends come from the one table, ``fastconv._registry.KERNELS``: a test that
takes the ``backend`` fixture runs once per backend listed there (restricted to
the backends that implement the op named by ``@pytest.mark.op("conv2d")`` when
the test carries that mark). Adding a backend to the table (numba, cuda ...)
therefore adds it to every test with no edits here.

Under the CUDA simulator (no GPU) the ``cuda`` backend runs one Python thread per
CUDA thread, as slow as the naive loops, so it is dropped wherever ``naive`` is
(``exclude=("naive",)`` marks shapes too large for the pure-Python spec); it still
runs the whole small grid, and tests/test_cuda_paths.py forces each of its paths.
On a real GPU it runs everything.

A backend that is listed but not usable here (failed import, no compiler, no
numba) shows up as a SKIP with the import error as the reason -- except ``c``
when ``FASTCONV_REQUIRE_C=1`` (CI sets it): then every ``c`` test FAILS, so a
broken build cannot pass silently.

Hypothesis profiles: ``ci`` (default: 25 examples, no deadline), ``dev``
(100 examples) and ``long`` (1000 examples). Pick one with
``HYPOTHESIS_PROFILE=long pytest tests/test_properties.py``.
"""
from __future__ import annotations

import os
import shutil


def _has_cuda_gpu():
    """Cheap check that does not import numba (the simulator flag must precede that import)."""
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


# Must happen before anything imports numba (the future cuda backend): with no GPU
# the CUDA backend then runs on numba's simulator instead of failing to import.
if not _has_cuda_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import fastconv  # noqa: E402
from fastconv import _registry  # noqa: E402

_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
             HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _listing_order():
    """Backends named in KERNELS, in the registry's own listing order."""
    named = {b for (_, b) in _registry.KERNELS}
    order = list(getattr(_registry, "_BACKEND_MODULES", {}))
    return [b for b in order if b in named] + sorted(named - set(order))


ALL_BACKENDS = _listing_order()


def backends_for(op):
    """Backends that KERNELS lists for ``op`` (usable here or not)."""
    return [b for b in ALL_BACKENDS if (op, b) in _registry.KERNELS]


def cuda_simulated():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") not in ("", "0")


def runs_like_naive(backend):
    """Backends that run in Python loops: naive, and cuda on the simulator. Tests size
    their shapes down for these."""
    return backend == "naive" or (backend == "cuda" and cuda_simulated())


def require_c():
    return os.environ.get("FASTCONV_REQUIRE_C", "") not in ("", "0")


def check_usable(name):
    """Skip (or, for c under FASTCONV_REQUIRE_C=1, fail) when ``name`` is not usable here."""
    if name in _registry.backends():  # not fastconv.backends: see test_semantics
        return
    reason = _registry.unavailable().get(name, "not in fastconv.backends()")
    if name == "c" and require_c():
        pytest.fail(f"FASTCONV_REQUIRE_C=1 but backend 'c' is not usable: {reason}",
                    pytrace=False)
    pytest.skip(f"backend {name!r} is not usable here: {reason}")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "host_only: a CPU-only property (e.g. thread counts); no GPU backends")
    config.addinivalue_line(
        "markers", "op(name, exclude=(), simulator=True): the fastconv op a test exercises; "
        "restricts its `backend` parametrisation to the backends that KERNELS lists for that "
        "op, minus `exclude` (and minus cuda under the CUDA simulator when simulator=False "
        "or when naive is excluded)")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("op")
    names = backends_for(mark.args[0]) if mark else list(ALL_BACKENDS)
    if mark:
        # exclude=("naive",): tests on shapes too large for the pure-Python spec.
        exclude = set(mark.kwargs.get("exclude", ()))
        if cuda_simulated() and ("naive" in exclude or not mark.kwargs.get("simulator", True)):
            exclude.add("cuda")
        names = [n for n in names if n not in exclude]
        assert names or mark.kwargs.get("exclude"), (
            f"no backend in KERNELS implements {mark.args[0]!r}")
    host_only = metafunc.definition.get_closest_marker("host_only")
    if host_only:
        names = [n for n in names if n not in _registry.DEVICE_BACKENDS]
    metafunc.parametrize("backend", names, indirect=True, ids=[f"be={n}" for n in names])


@pytest.fixture
def backend(request):
    """A backend name from KERNELS; skipped (or failed, see module doc) when not usable."""
    name = request.param
    check_usable(name)
    return name


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Tests that touch the default backend or the thread count put them back."""
    default = _registry._default_backend
    threads = fastconv.get_num_threads()
    yield
    if _registry._default_backend != default:
        fastconv.set_default_backend(default)
    if fastconv.get_num_threads() != threads:
        fastconv.set_num_threads(threads)


def pytest_report_header(config):
    usable = _registry.backends()
    lines = [f"fastconv backends in KERNELS: {ALL_BACKENDS}; usable: {usable}"]
    for name, why in _registry.unavailable().items():
        lines.append(f"  unusable {name}: {why}")
    lines.append(f"hypothesis profile: {settings._current_profile}; "
                 f"FASTCONV_REQUIRE_C={os.environ.get('FASTCONV_REQUIRE_C', '')!r}")
    return lines
