"""Shared test setup: GPU tests skip, with the reason, where no CUDA GPU (or no CuPy) is present;
the long fuzzing profile runs only when ``-m`` names it."""
import shutil

import pytest
import torch


def _gpu_missing() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install -e '.[dev]' or '.[cuda13]')"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _gpu_missing()
    fuzz_selected = "fuzz" in (config.getoption("markexpr", "") or "")
    for item in items:
        if reason and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
        if not fuzz_selected and item.get_closest_marker("fuzz") is not None:
            item.add_marker(pytest.mark.skip(reason="the long fuzzing profile runs with pytest -m fuzz"))


def pytest_configure(config):
    """Caches (compiled kernels, tuning entries) go to a fresh folder for every test run."""
    import os
    import tempfile

    os.environ["PIGEON_CACHE_DIR"] = tempfile.mkdtemp(prefix="pigeon-test-cache-")


@pytest.fixture(autouse=True)
def _seeded_random_state():
    """Every test starts from the same torch random state, so its random inputs are seeded even
    where it draws them without a generator, and no test depends on the tests run before it."""
    torch.manual_seed(0)


@pytest.fixture(params=["reference", "cpp", "cuda_harness"])
def backend(request, monkeypatch):
    """Each back end that runs here: the torch reference, the generated C++, and the generated CUDA
    through the CUDA-on-CPU harness (the compiled functions' programs lowered and run there)."""
    name = request.param
    if name != "reference" and shutil.which("g++") is None:
        pytest.skip("needs g++")
    if name == "cuda_harness":
        from cuda_cpu.runner import HarnessProgram
        from pigeon.ir.lower import lower
        from pigeon.runtime import executable
        cache = {}

        def run(program, g, *tensors):
            if id(program) not in cache:
                cache[id(program)] = (program, HarnessProgram(lower(program)))
            return cache[id(program)][1](g, *tensors)
        monkeypatch.setattr(executable, "runner", lambda backend, config=None: run)
        return "reference"  # runs the plans through the harness instead
    return name
