"""The C++/OpenMP back end: every kernel of RGCN, RGAT, HGT and the README's DSL example, run
as generated C++, against the plain-PyTorch formulas (float64 to rounding, float32 to a stated
tolerance), forward and the gradient of every input, on random and adversarial graphs; and the
compiler cache, the command line and the schedule knobs of the C++ target."""
import dataclasses
import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest
import torch

import formulas
import pigeon
import pigeon.nn as pnn
from pigeon.codegen import CodegenError, render, schedule_variants
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.plans import CpuGemmSchedule, CpuTraversalSchedule, PlanProgram, runs_on_blas
from pigeon.lang import dot, leaky_relu, linear, softmax, sum
from pigeon.runtime import cpp, cpp_compiler
from pigeon.runtime.reference import execute
from random_graphs import random_graph

if cpp_compiler.find_compiler() is None:
    pytest.skip("the C++ back end needs a C++ compiler with OpenMP", allow_module_level=True)


@pigeon.compile
def readme_rgat(g, h, weight, attn_src, attn_dst):
    """The DSL example of the README, as written there."""
    heads, size = attn_src.shape[1:]
    for e in g.edges():
        z = linear(h[e.src], weight[e.etype]).reshape(heads, size)
        z_dst = linear(h[e.dst], weight[e.etype]).reshape(heads, size)
        e.score = leaky_relu(dot(z, attn_src[e.etype]) + dot(z_dst, attn_dst[e.etype]), 0.2)
        e.msg = z
    for n in g.dst_nodes():
        n.out = sum(softmax(e.score) * e.msg for e in n.incoming_edges()).reshape(heads * size)
    return n.out


def hub_graph():
    """One destination with in-degree 20,000 (plus a few ordinary edges), over 5 edge types."""
    gen = torch.Generator().manual_seed(7)
    n = 300
    src = torch.cat([torch.randint(0, n, (20_000,), generator=gen), torch.randint(0, n, (200,), generator=gen)])
    dst = torch.cat([torch.zeros(20_000, dtype=torch.long), torch.randint(1, n - 20, (200,), generator=gen)])
    etype = torch.randint(0, 5, (src.numel(),), generator=gen)
    return pigeon.Graph.from_edges(src, dst, etype, n, torch.randint(0, 2, (n,), generator=gen), num_etypes=5)


GRAPHS = {
    # most of the 300 edge types empty; isolated nodes, self loops, multi-edges
    "random": lambda: random_graph(num_nodes=40, num_edges=240, num_etypes=300, seed=1),
    "block": lambda: random_graph(num_nodes=30, num_edges=150, num_etypes=40, seed=2, num_dst_nodes=12),
    "thousand_etypes": lambda: random_graph(num_nodes=200, num_edges=3000, num_etypes=1000, seed=4),
    "hub": hub_graph,
    "no_edges": lambda: pigeon.Graph.from_edges([], [], [], 5, [0, 1, 0, 1, 1], num_etypes=3),
}
TOLERANCE = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-4, 2e-4)}  # rtol, atol per unit of the largest value


def assert_close(ours, reference, dtype, msg=""):
    rtol, atol = TOLERANCE[dtype]
    scale = max(reference.abs().max().item(), 1.0) if reference.numel() else 1.0
    torch.testing.assert_close(ours.double(), reference, rtol=rtol, atol=atol * scale, msg=msg)


def cases(g, dtype, seed=0):
    """(compiled function, formula, seeded arguments) of every model on ``g``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(dtype, *shape):
        return torch.randn(*shape, dtype=torch.float64, generator=gen).to(dtype)

    r, t = g.num_etypes, g.num_ntypes
    heads, size = 2, 4
    hd = heads * size
    return {
        "rgcn": (rgcn.rgcn, formulas.rgcn,
                 [rand(dtype, g.num_nodes, 6), rand(dtype, r, 6, 5), rand(dtype, 6, 5), rand(dtype, 5), None]),
        "rgat": (rgat.rgat, formulas.rgat,
                 [rand(dtype, g.num_nodes, 6), rand(dtype, r, 6, hd), rand(dtype, r, heads, size),
                  rand(dtype, r, heads, size), rand(dtype, hd)]),
        "hgt": (hgt.hgt, formulas.hgt,
                [rand(dtype, g.num_nodes, 6), rand(dtype, t, 6, hd), rand(dtype, t, 6, hd), rand(dtype, t, 6, hd),
                 rand(dtype, r, heads, size, size), rand(dtype, r, heads, size, size), rand(dtype, r, heads),
                 rand(dtype, t, hd, hd), rand(dtype, t), rand(dtype, 6, hd)]),
        "readme_rgat": (readme_rgat, formulas.rgat,
                        [rand(dtype, g.num_nodes, 6), rand(dtype, r, 6, hd), rand(dtype, r, heads, size),
                         rand(dtype, r, heads, size)]),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt", "readme_rgat"])
def test_generated_cpp_matches_formula(model, graph, dtype):
    g = GRAPHS[graph]()
    fn, formula, args = cases(g, dtype, seed=len(graph) + len(model) + 0)[model]
    ours = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    theirs = [a.double().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    with pigeon.use_backend("cpp"):
        out = fn(g, *ours)
    assert fn.last_executable.backend == "cpp"
    ref = formula(g, *theirs)
    assert out.dtype == dtype
    assert_close(out, ref.detach(), dtype, f"{model}: output")
    with torch.no_grad(), pigeon.use_backend("cpp"):  # inference runs other kernels (no residuals)
        assert_close(fn(g, *args), ref.detach(), dtype, f"{model}: output without autograd")
    upstream = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (out * upstream.to(dtype)).sum().backward()
    (ref * upstream).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(a, torch.Tensor):
            expected = b.grad if b.grad is not None else torch.zeros_like(b)
            assert a.grad is not None, f"{model}: argument {i} got no gradient"
            assert_close(a.grad, expected, dtype, f"{model}: gradient {i}")


def test_layers_default_to_the_cpp_backend_and_respect_thread_count():
    g = random_graph(num_nodes=40, num_edges=240, num_etypes=30, seed=5)
    layer = pnn.RGATConv(6, 4, g.num_etypes, num_heads=2).double()
    h = torch.randn(g.num_nodes, 6, dtype=torch.float64)
    out = layer(g, h)
    assert layer.last_executable.backend == "cpp"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = layer(g, h)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out, again, rtol=1e-12, atol=1e-12)
    with pigeon.use_backend("reference"):
        torch.testing.assert_close(layer(g, h), out, rtol=1e-10, atol=1e-10)


def _plans(model, g, dtype=torch.float64):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g)]
    exe = model.executable(g, *args)
    params = dict(model._bind(g, args, {}))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    return grad, [params[n.name] for n in exe.forward.inputs]


def _knob_variants():
    """One C++ plan program per value of every CPU schedule knob (the others at their defaults)."""
    out = []
    for schedule in (CpuGemmSchedule(), CpuTraversalSchedule()):
        for knob, values in schedule.CHOICES.items():
            out += [(type(schedule), knob, v) for v in values]
    return out


@pytest.mark.parametrize("schedule_type,knob,value", _knob_variants(), ids=lambda x: str(getattr(x, "__name__", x)))
def test_every_cpu_knob_value_keeps_the_numbers(schedule_type, knob, value):
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, tensors = _plans(hgt.hgt, g)

    def with_knob(program):
        plans = lower(program, target="cpp")
        kernels = tuple(dataclasses.replace(k, schedule=dataclasses.replace(k.schedule, **{knob: value}))
                        if isinstance(k.schedule, schedule_type) else k for k in plans.kernels)
        return PlanProgram(plans.name, plans.inputs, kernels, plans.outputs)

    def run(program, inputs):
        return cpp.CppProgram.from_plans(with_knob(program))(g, *inputs)

    forward = run(grad.forward, tensors)
    for a, b in zip(forward, execute(grad.forward, g, *tensors)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    upstream = [torch.randn_like(o) for o in forward[: grad.num_outputs]]
    inputs = [*forward[grad.num_outputs:], *upstream]
    for a, b in zip(run(grad.backward, inputs), execute(grad.backward, g, *inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_every_cpu_knob_value_renders_different_code(model):
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, _ = _plans(model, g)
    for program in (grad.forward, grad.backward):
        for plan in lower(program, target="cpp").kernels:
            seen = {_code(plan)}
            for variant in schedule_variants(plan):
                code = _code(variant)
                assert code not in seen, f"{plan.name}: {variant.schedule} renders the same code as another value"
                seen.add(code)


def _code(plan):
    """The generated code of a plan, its name and schedule comment aside."""
    if runs_on_blas(plan):
        return "torch.matmul per type"
    kernel = render(plan)
    return kernel.source.split("level-1 ops:")[1].replace(kernel.name, "KERNEL")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    cpp_compiler._LOADED.clear()
    yield tmp_path / "cpp"
    cpp_compiler._LOADED.clear()


SOURCE = 'extern "C" int answer(int x) { return x + 41; }\n'


def test_cache_reuses_and_recompiles_corrupt_libraries(cache):
    first = cpp_compiler.compile_library(SOURCE)
    assert cpp_compiler.compile_library(SOURCE) == first  # warm: no compile
    assert first.stat().st_mtime_ns == cpp_compiler.compile_library(SOURCE).stat().st_mtime_ns
    first.write_bytes(first.read_bytes()[:100])  # truncated
    again = cpp_compiler.compile_library(SOURCE)
    assert cpp_compiler.ctypes.CDLL(str(again)).answer(1) == 42
    (cache / next(p.name for p in cache.glob("*.manifest"))).write_text("garbage")
    assert cpp_compiler.ctypes.CDLL(str(cpp_compiler.compile_library(SOURCE))).answer(0) == 41


def _compile_and_call(directory: str) -> int:
    os.environ["PIGEON_CACHE_DIR"] = directory
    from pigeon.runtime import cpp_compiler as c
    return c.ctypes.CDLL(str(c.compile_library(SOURCE))).answer(2)


def test_processes_filling_the_cpp_cache_at_once(cache):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_compile_and_call, [str(cache.parent)] * 8) == [43] * 8
    assert len(list(cache.glob("*.manifest"))) == 1
    assert not list(cache.glob(".*tmp"))


def test_compile_error_shows_the_message_and_the_source_path(cache):
    with pytest.raises(cpp_compiler.CppCompileError) as err:
        cpp_compiler.compile_library('extern "C" int broken() { return undefined_name; }\n', "broken")
    assert "undefined_name" in str(err.value) and str(cache) in str(err.value)


def test_no_compiler_falls_back_to_the_reference_with_a_warning(monkeypatch):
    from pigeon import config
    monkeypatch.setenv("CXX", "no-such-compiler-anywhere")
    config._cpp_available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="install g\\+\\+"):
            assert config.choose_backend(torch.device("cpu")) == "reference"
    finally:
        config._cpp_available.cache_clear()


@pytest.mark.parametrize("backward", [False, True])
def test_show_cpp_prints_one_translation_unit_that_compiles(tmp_path, backward):
    command = [sys.executable, "-m", "pigeon.cli", "show", "hgt", "--cpp", "--dataset", "aifb", "--scale", "0.01"]
    shown = subprocess.run(command + (["--backward"] if backward else []), capture_output=True, text=True, check=True)
    assert shown.stdout.count('extern "C" void pigeon_') >= 4
    source = tmp_path / "shown.cpp"
    source.write_text(shown.stdout)
    compiler = shutil.which(cpp_compiler.find_compiler())
    subprocess.run([compiler, "-c", "-fopenmp", str(source), "-o", str(tmp_path / "shown.o")], check=True)


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_a_gemm_on_blas_runs_as_torch_matmul_and_gives_the_numbers(model):
    """A C++ GEMM scheduled with ``blas=True`` has no generated code: it runs as torch ops, one
    matmul per type, and gives the generated kernel's numbers; the tuner can time it."""
    from pigeon.codegen import InterpretedKernel, render_module
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, tensors = _plans(model, g)
    plans = lower(grad.forward, target="cpp")
    blas = PlanProgram(plans.name, plans.inputs, tuple(
        dataclasses.replace(k, schedule=dataclasses.replace(k.schedule, blas=True))
        if isinstance(k.schedule, CpuGemmSchedule) else k for k in plans.kernels), plans.outputs)
    _, kernels = render_module(blas)
    gemms = [k for k in kernels if isinstance(k.plan.schedule, CpuGemmSchedule)]
    assert gemms and all(isinstance(k, InterpretedKernel) for k in gemms)
    with pytest.raises(CodegenError, match="blas=True"):
        render(gemms[0].plan)
    for a, b in zip(cpp.CppProgram.from_plans(blas)(g, *tensors), cpp.CppProgram.from_plans(plans)(g, *tensors)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for gemm in gemms:
        assert any(v.schedule.blas for v in schedule_variants(dataclasses.replace(gemm.plan, schedule=CpuGemmSchedule())))


def test_kernels_that_walk_rows_in_an_order_read_the_graph_arrays_in_that_order():
    """A per-destination loop reads the per-edge graph arrays (indices, degrees) in CSR order at
    ``begin + i``, and an edge kernel walking its rows in target order reads them at its
    position: front to back, not at random edge ids."""
    import re

    from pigeon.codegen import render_module
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, _ = _plans(rgat.rgat, g)
    sources = [render_module(lower(p, target="cpp"))[0] for p in (grad.forward, grad.backward)]
    text = "\n".join(sources)
    assert re.search(r"p_index_\w+_edge_by_csr\[begin \+ i\]", text)
    assert re.search(r"p_\w+_by_compact\w*\[position\]", text)
    assert not re.search(r"p_(index|degree)_\w+\[e\]", text)  # no graph array read at an edge id
    assert not re.search(r"p_(index|degree)_\w+_edge\[row\]", "\n".join(
        s for s in text.split("extern") if "p_order" in s))  # nor at the row an ordered walk is at


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.__name__)
def test_a_program_drops_each_intermediate_after_the_last_kernel_that_uses_it(model, monkeypatch):
    """A running program holds only its live intermediates: each is dropped right after the
    last kernel that reads or writes it, and never a value that it returns."""
    from pigeon.runtime import launcher
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, tensors = _plans(model, g)
    intermediates = 0
    for program in (grad.forward, grad.backward):
        plans = lower(program, target="cpp")
        dead = launcher.dead_after(plans)
        dropped = [name for names in dead for name in names]
        assert len(dropped) == len(set(dropped))
        assert not set(dropped) & set(plans.outputs)
        stored = {w for k in plans.kernels for w in k.writes} - set(plans.outputs)
        assert stored <= set(dropped)
        intermediates += len(stored)
        for i, names in enumerate(dead):
            later = {r.name for k in plans.kernels[i + 1:] for r in k.reads} | \
                {w for k in plans.kernels[i + 1:] for w in k.writes}
            assert not set(names) & later, f"{plans.kernels[i].name} drops a value a later kernel uses"
    assert intermediates  # each model stores some value that it does not return
    # and the runtime holds no more than the live values while it runs
    plans = lower(grad.forward, target="cpp")
    program = cpp.CppProgram.from_plans(plans)
    held = []
    allocate = launcher.Launch.allocate_outputs

    def watched(self, memory):
        held.append(set(memory))
        allocate(self, memory)
    monkeypatch.setattr(launcher.Launch, "allocate_outputs", watched)
    program(g, *tensors)
    inputs = {n.name for n in plans.inputs}
    for i, names in enumerate(held):
        live = {r.name for k in plans.kernels[i:] for r in k.reads} | set(plans.outputs)
        assert names - inputs <= live, f"kernel {i} starts with dead values {sorted(names - inputs - live)}"


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.__name__)
def test_the_time_model_counts_atomics_where_the_generated_code_takes_them(model):
    """The cost model's atomic adds are the kernel's: positive exactly where its C++ adds with
    atomics to any row (not only at the ends of a thread's range in a walk in target order)."""
    from pigeon.codegen import render_module
    from pigeon.ir.cost import kernel_features
    from pigeon.runtime import layouts
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    stats = layouts.graph_stats(g)
    grad, _ = _plans(model, g)
    kinds = set()
    for program in (grad.forward, grad.backward):
        plans = lower(program, target="cpp")
        for plan, kernel in zip(plans.kernels, render_module(plans)[1]):
            lines = kernel.source.splitlines()
            anywhere = any("pg_atomic_" in line and "if (target == first_target" not in lines[i - 1]
                           for i, line in enumerate(lines))
            modelled = kernel_features(plan, stats)["atomic"] > 0
            assert modelled == anywhere, plan.name
            kinds.add(anywhere)
    assert kinds == {True, False} or model is rgcn.rgcn  # the attention models have both kinds


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.__name__)
def test_merging_independent_kernels_makes_no_reduction_atomic_in_cpp(model):
    """Horizontal merges in C++ keep every reduction as cheap as it was apart: an edge-parallel
    kernel's scatter along its walk order is not taken into a per-destination kernel, where it
    would add each element atomically (HGT's backward did, and ran 15-30% slower)."""
    from pigeon.ir.plans import cpu_atomic_reductions

    def atomic(plans):
        names = set()
        for k in plans.kernels:
            domains = {m.name: m.type.domain for m in k.reads + k.ops}
            names |= {n.name for n in cpu_atomic_reductions(k.strategy, k.ops, lambda n: domains[n.args[0]])}
        return names
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, _ = _plans(model, g)
    for program in (grad.forward, grad.backward):
        merged, apart = lower(program, target="cpp"), lower(program, horizontal=False, target="cpp")
        assert atomic(merged) <= atomic(apart)
        assert len(merged.kernels) <= len(apart.kernels)


def test_the_micro_kernel_rate_counts_latency_loads_and_spills():
    """A register tile's modelled rate: full at the default 8 x 16; lower with too few
    accumulators to cover an FMA's latency, with half-width vectors (more loads per FMA) and
    with more accumulators than registers (the generated micro-kernel as g++ compiles it)."""
    from pigeon.ir.cost import micro_kernel_efficiency as rate
    assert rate(8, 16) == rate(4, 16) == rate(8, 32) == 1.0
    assert rate(1, 16) < rate(2, 16) < rate(4, 16)
    assert rate(8, 8) < 1.0 and rate(8, 64) < 1.0
    assert rate(8, 32, "float64") < rate(8, 16, "float64")  # 32 doubles are four vectors a row


def test_a_typed_matmul_on_blas_costs_a_call_per_type_and_its_row_shuffles():
    """The blas=True schedule runs as torch ops: its modelled calls grow with the types, and it
    moves the rows into type order and back, which the generated kernel does not."""
    import dataclasses

    from pigeon.ir.cost import kernel_features
    from pigeon.runtime import layouts
    g = random_graph(num_nodes=60, num_edges=400, num_etypes=40, seed=3)
    many = layouts.graph_stats(g)
    few = dataclasses.replace(many, num_etypes=2)
    grad, _ = _plans(rgcn.rgcn, g)
    plan = next(p for p in lower(grad.forward, target="cpp").kernels if isinstance(p.schedule, CpuGemmSchedule))
    on_blas = dataclasses.replace(plan, schedule=dataclasses.replace(plan.schedule, blas=True))
    generated, blas = kernel_features(plan, many), kernel_features(on_blas, many)
    assert blas["byte"] > generated["byte"] and blas["gathered_byte"] > generated["gathered_byte"]
    assert blas["kernel"] - kernel_features(on_blas, few)["kernel"] >= 38


@pytest.mark.parametrize("model", [rgcn.rgcn, rgat.rgat, hgt.hgt], ids=lambda m: m.__name__)
def test_an_ordered_walk_takes_the_row_order_only_where_its_body_reads_at_a_row(model):
    """Where every graph array comes in walk order, the row id is dead: the kernel neither takes
    the order array nor computes the row from it."""
    import re

    from pigeon.codegen import render_module
    g = random_graph(num_nodes=40, num_edges=300, num_etypes=12, seed=3)
    grad, _ = _plans(model, g)
    ordered = 0
    for program in (grad.forward, grad.backward):
        for kernel in render_module(lower(program, target="cpp"))[1]:
            if "Rows in the order of the row they scatter to" not in kernel.source:
                continue
            ordered += 1
            body = kernel.source.split("for (long long position = lo; position < hi; ++position) {", 1)[1]
            code = "\n".join(line.split("//")[0] for line in body.splitlines()
                             if "const long long row = p_order[position];" not in line)
            takes_order = any(a.name == "p_order" for a in kernel.args)
            assert takes_order == bool(re.search(r"\brow\b|\bp_order\b", code)), kernel.name
    assert ordered
