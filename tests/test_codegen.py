"""CUDA code generation without a GPU: every generated kernel compiles with NVRTC (every example
model, forward and backward, every dtype and the enumerated schedule knobs), the source is
stable and readable, and the kernel cache keeps its promises."""
import dataclasses
import multiprocessing
import os

import pytest
import torch

from pigeon.cli import main
from pigeon.codegen import CodegenError, render, render_module, schedule_problem, schedule_variants
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.plans import GemmSchedule, PlanProgram, Strategy
from random_graphs import random_graph

cupy = pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
from pigeon.runtime import kernel_cache  # noqa: E402

MODELS = [rgcn.rgcn, rgat.rgat, hgt.hgt]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
ARCHS = ["compute_80", "compute_90"]


def programs(model, dtype=torch.float32, g=None):
    """The training forward (with residuals) and backward programs of an example model."""
    g = g or random_graph(num_nodes=30, num_edges=600, num_etypes=6, seed=3)
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g)]
    exe = model.executable(g, *args)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    return {"forward": grad.forward, "backward": grad.backward}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_kernel_compiles_with_nvrtc(model, dtype):
    for name, program in programs(model, dtype).items():
        source, kernels = render_module(lower(program))
        assert kernels
        for arch in ARCHS:
            ptx = kernel_cache.compile_ptx(source, arch, f"{model.name}_{name}")
            for k in kernels:
                assert f".entry {k.name}(" in ptx


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_schedule_knob_value_compiles(model):
    for name, program in programs(model).items():
        kernels = {k for mode in ("segmented", "atomic") for k in lower(program, dst_reductions=mode).kernels}
        variants = list(dict.fromkeys(v for k in sorted(kernels, key=lambda k: k.name) for v in schedule_variants(k)))
        assert len(variants) > 2 * len(kernels)
        source, rendered = render_module(variants)
        ptx = kernel_cache.compile_ptx(source, "compute_80", f"{model.name}_{name}_variants")
        assert all(f".entry {k.name}(" in ptx for k in rendered)


def test_invalid_schedules_are_refused():
    plans = lower(programs(rgcn.rgcn)["forward"])
    gemm = next(k for k in plans.kernels if isinstance(k.schedule, GemmSchedule))
    import dataclasses
    bad = dataclasses.replace(gemm, schedule=GemmSchedule(tile_rows=128, tile_cols=128, thread_rows=1, thread_cols=1))
    assert "threads per block" in schedule_problem(bad, bad.schedule)
    with pytest.raises(CodegenError, match="cannot run"):
        render(bad)


def test_source_is_stable_and_readable():
    plans = lower(programs(rgat.rgat)["forward"])
    for plan in plans.kernels:
        first, second = render(plan), render(plan)
        assert first.source == second.source and first.name == second.name
        for op in plan.ops:
            assert f"//   %{op.name} :" in first.source  # the level-1 ops it implements
    names = {render(k).name for k in plans.kernels}
    assert len(names) == len(plans.kernels)


def test_show_cuda_prints_the_kernels(capsys):
    assert main(["show", "rgat", "--cuda", "--dataset", "aifb", "--scale", "0.05"]) == 0
    out = capsys.readouterr().out
    assert 'extern "C" __global__ void pigeon_' in out and "dst_parallel" in out and "pg_group_sum" in out


def test_compile_errors_show_the_source_lines():
    source = "extern \"C\" __global__ void broken(float* x) {\n    x[0] = undefined_name;\n}\n"
    with pytest.raises(kernel_cache.CompileError) as info:
        kernel_cache.compile_ptx(source, "compute_80", "broken", "plan text here")
    text = str(info.value)
    assert "undefined_name" in text and ">     2 |     x[0] = undefined_name;" in text and "plan text here" in text


SOURCE = 'extern "C" __global__ void scale(float* x) { x[threadIdx.x] *= 2.0f; }\n'


def test_disk_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    calls = []
    real = kernel_cache.compile_ptx
    monkeypatch.setattr(kernel_cache, "compile_ptx", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = kernel_cache.cached_ptx(SOURCE, "compute_80")
    assert len(calls) == 1 and ".entry scale(" in first
    assert kernel_cache.cached_ptx(SOURCE, "compute_80") == first and len(calls) == 1  # from disk
    (entry,) = tmp_path.glob("*.ptx")
    entry.write_text(entry.read_text()[:200])  # truncated
    assert kernel_cache.cached_ptx(SOURCE, "compute_80") == first and len(calls) == 2  # rebuilt
    entry.write_text(entry.read_text().replace("scale", "scalf"))  # altered
    assert kernel_cache.cached_ptx(SOURCE, "compute_80") == first and len(calls) == 3
    kernel_cache.cached_ptx(SOURCE, "compute_90")
    assert len(list(tmp_path.glob("*.ptx"))) == 2  # the arch is part of the key
    assert not list(tmp_path.glob("*.tmp"))


def _fill(directory: str) -> str:
    os.environ["PIGEON_CACHE_DIR"] = directory
    return kernel_cache.cached_ptx(SOURCE, "compute_80")


def test_processes_filling_the_cache_at_once(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_fill, [str(tmp_path)] * 8)
    assert len(set(results)) == 1
    assert len(list(tmp_path.glob("*.ptx"))) == 1 and not list(tmp_path.glob("*.tmp"))
    os.environ["PIGEON_CACHE_DIR"] = str(tmp_path)
    assert kernel_cache.cached_ptx(SOURCE, "compute_80") == results[0]


@pytest.mark.parametrize("phase", ["inference", "forward", "backward"])
@pytest.mark.parametrize("feats", [64, 128])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_kernels_fit_in_registers_on_sm90(model, feats, phase):
    """ptxas for sm_90 (machine code, not PTX), float32, default schedules: no kernel spills or
    keeps more than 256 bytes of stack frame; inference kernels use at most 128 registers."""
    g = random_graph(num_nodes=30, num_edges=600, num_etypes=6, seed=3)
    exe = model.executable(g, *model.example_inputs(g, feats=feats, heads=4))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    program = {"inference": exe.forward, "forward": grad.forward, "backward": grad.backward}[phase]
    source, kernels = render_module(lower(program))
    report = kernel_cache.kernel_resources(source, "sm_90", model.name)
    assert set(report) == {k.name for k in kernels}
    for name, r in report.items():
        assert r.spill_bytes == 0 and r.stack_bytes <= 256, (name, r)
        if phase == "inference":
            assert r.registers <= 128, (name, r)


def test_ptxas_report_is_parsed():
    log = ("ptxas info    : Compiling entry function 'k0' for 'sm_90'\n"
           "ptxas info    : Function properties for k0\n"
           "ptxas         .     24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem\n")
    assert kernel_cache.parse_ptxas_report(log) == {"k0": kernel_cache.Resources(40, 24, 20, 2048)}
    assert kernel_cache.occupancy(kernel_cache.Resources(64, 0, 0, 0), 256) == 0.5


@pytest.mark.parametrize("width", [1, 2, 4])
def test_vector_width_gives_vector_loads(width):
    """A traversal's ``vector_width`` of 2 or 4 loads each lane's chunk of consecutive features
    with one instruction (ld.v2 / ld.v4 in the PTX), 1 element by element."""
    import re
    rgcn = next(m for m in MODELS if m.name == "rgcn")
    g = random_graph(num_nodes=30, num_edges=600, num_etypes=6, seed=3)
    plans = lower(rgcn.executable(g, *rgcn.example_inputs(g, feats=64, heads=4)).forward)
    plans = PlanProgram(plans.name, plans.inputs, tuple(
        dataclasses.replace(p, schedule=dataclasses.replace(p.schedule, vector_width=width))
        if p.strategy == Strategy.DST_PARALLEL else p for p in plans.kernels), plans.outputs)
    source, kernels = render_module(plans)
    ptx = kernel_cache.cached_ptx(source, "compute_90")
    (name,) = [k.name for k in kernels if "dst_parallel" in k.name]
    body = ptx.split(f".entry {name}(")[1].split(".entry")[0]
    vector = re.findall(r"ld\.global(?:\.nc)?\.v(\d)\.(?:f32|u32|b32)", body)
    assert set(vector) == (set() if width == 1 else {str(width)})


@pytest.mark.parametrize("dtype, instruction, first_arch", [(torch.float16, "f16", 70), (torch.bfloat16, "bf16", 90)],
                         ids=["float16", "bfloat16"])
def test_16_bit_atomic_adds_are_hardware_reductions(dtype, instruction, first_arch):
    """The backward scatters of 16-bit values add with red.add.noftz where the GPU has it (half
    from sm_70, bfloat16 from sm_90), not with a compare-and-swap loop."""
    import re
    rgcn = next(m for m in MODELS if m.name == "rgcn")
    g = random_graph(num_nodes=30, num_edges=600, num_etypes=6, seed=3)
    inputs = [t.to(dtype) if t.is_floating_point() else t for t in rgcn.example_inputs(g, feats=64, heads=4)]
    exe = rgcn.executable(g, *inputs)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    source, _ = render_module(lower(grad.backward))
    for arch in (80, 90):
        ptx = kernel_cache.cached_ptx(source, f"compute_{arch}")
        reductions = len(re.findall(rf"red\.global\.add\.noftz\.{instruction}\b", ptx))
        assert (reductions > 0) == (arch >= first_arch) and ("cas" in ptx) == (arch < first_arch), arch
