"""Full forward passes of every fastconv.models network at batch 1 and 64, per backend and
against the same graph in PyTorch eager (fastconv.bench.torch_model), one group per model
and batch. Batch 64 of the big networks takes seconds to minutes per pass on 2 cores, so
those run a single round (benchmark.pedantic); JIT and planning happen before the timer."""
import pytest

from conftest import THREADS, callable_for, impls
from fastconv import bench, models

BATCHES = [1, 64]
# 2 * MACs per image below which a pass is cheap enough for several rounds.
CHEAP_FLOPS = 2e9


@pytest.mark.parametrize("impl", impls(("torch",)))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", models.__all__)
def test_model(benchmark, record, name, batch, impl):
    case = bench.ModelCase("model", name, (name, batch), THREADS)
    benchmark.group = f"model {name} batch {batch}"
    fn, scale = callable_for(case, impl)
    cheap = case.work() / batch < CHEAP_FLOPS
    if impl != "naive":
        # Warm up (JIT, caches) on batch 1, which compiles the same kernels as batch 64.
        small = bench.ModelCase("model", name, (name, 1), THREADS)
        small._built = case._model()
        small.make(impl)()
    rounds = 1 if impl == "naive" else (5 if batch == 1 and cheap else
                                        3 if batch == 1 or cheap else 1)
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    record(case, scale)
