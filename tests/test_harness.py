"""Every generated kernel, run on the CPU through the CUDA-on-CPU harness (tests/cuda_cpu) and
compared with the level-1 reference: float64 to rounding, float32 and 16-bit floats to stated
tolerances, forward and backward, all three example models; and the autograd glue end to end."""
import dataclasses
import shutil

import pytest
import torch

import formulas
import pigeon
import pigeon.nn as pnn
from pigeon.codegen import render, render_module, schedule_variants
from pigeon.examples import hgt, rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.plans import PlanProgram
from pigeon.runtime.reference import execute
from random_graphs import random_graph

if shutil.which("g++") is None:
    pytest.skip("the CUDA-on-CPU harness needs g++", allow_module_level=True)

from cuda_cpu.runner import HarnessProgram  # noqa: E402

MODELS = [rgcn.rgcn, rgat.rgat, hgt.hgt]
GRAPHS = {
    # more edge types than a block has threads, most of them empty; isolated nodes, self loops, multi-edges
    "many_etypes": lambda: random_graph(num_nodes=40, num_edges=240, num_etypes=300, seed=1),
    "block": lambda: random_graph(num_nodes=30, num_edges=150, num_etypes=40, seed=2, num_dst_nodes=12),
    "dense": lambda: random_graph(num_nodes=30, num_edges=400, num_etypes=6, seed=3),
    "hub": lambda: hub_graph(),
}


def hub_graph():
    """Two destinations with more edges than the default hub degree (one of them a self loop
    hub), beside many light ones."""
    g = random_graph(num_nodes=60, num_edges=200, num_etypes=12, seed=4)
    gen = torch.Generator().manual_seed(5)
    src = torch.cat([g.src, torch.randint(0, 56, (700,), generator=gen), torch.full((300,), 7)])
    dst = torch.cat([g.dst, torch.full((700,), 3), torch.full((300,), 7)])
    etype = torch.cat([g.etype, torch.randint(0, 12, (1000,), generator=gen)])
    return pigeon.Graph.from_edges(src, dst, etype, 60, g.ntype, num_etypes=12, num_ntypes=g.num_ntypes)
# (rtol, atol relative to the largest reference magnitude)
TOLERANCE = {torch.float64: (1e-11, 1e-12), torch.float32: (1e-4, 1e-5),
             torch.float16: (3e-2, 1e-2), torch.bfloat16: (1e-1, 4e-2)}


def _close(ours, reference, dtype, what):
    rtol, atol = TOLERANCE[dtype]
    for a, b in zip(ours, reference):
        scale = max(b.abs().max().item(), 1.0) if b.numel() else 1.0
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol * scale, msg=what)


def _programs(model, g, dtype):
    args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g)]
    exe = model.executable(g, *args)
    params = dict(model._bind(g, args, {}))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    return grad, [params[n.name] for n in exe.forward.inputs]


def check(model, g, dtype, dst_reductions="segmented", variant=None):
    """Forward (with residuals) and backward kernels against the reference of the same programs;
    16-bit programs are checked against the float32 reference of the same inputs."""
    torch.manual_seed(0)  # seeded inputs: 16-bit storage errors depend on them
    grad, tensors = _programs(model, g, dtype)
    exact = dtype in (torch.float64, torch.float32)
    ref_grad, ref_tensors = (grad, tensors) if exact else _programs(model, g, torch.float32)
    ref_tensors = ref_tensors if exact else [t.float() for t in tensors]

    def plans(program):
        p = lower(program, dst_reductions)
        if variant is not None:
            p = PlanProgram(p.name, p.inputs, tuple(variant(k) for k in p.kernels), p.outputs)
        return p

    forward = HarnessProgram(plans(grad.forward))(g, *tensors)
    expected = execute(ref_grad.forward, g, *ref_tensors)
    _close(forward, expected, dtype, f"{model.name} forward")
    upstream = [torch.randn(o.shape, dtype=torch.float64).to(dtype) for o in forward[: grad.num_outputs]]
    backward_inputs = [*forward[grad.num_outputs:], *upstream]
    backward = HarnessProgram(plans(grad.backward))(g, *backward_inputs)
    expected = execute(ref_grad.backward, g, *[t.float() if not exact else t for t in backward_inputs])
    _close(backward, expected, dtype, f"{model.name} backward")


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_float64_kernels_match_to_rounding(model, graph):
    check(model, GRAPHS[graph](), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_lower_precision_kernels(model, dtype):
    check(model, GRAPHS["dense"](), dtype)


def test_kernels_on_a_graph_without_edges():
    g = pigeon.Graph.from_edges([], [], [], 5, [0, 1, 0, 1, 1], num_etypes=3)
    for model in MODELS:
        check(model, g, torch.float64)


@pytest.mark.parametrize("model", [rgcn.rgcn, hgt.hgt], ids=lambda m: m.name)
def test_atomic_destination_reductions(model):
    check(model, GRAPHS["many_etypes"](), torch.float64, dst_reductions="atomic")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_hubs_split_over_blocks(model):
    """Destinations of 700 and 300 edges over 22 and 10 blocks (hub degree 4, 8 groups a block);
    the last block of each combines the others' sums, or maxima and rescaled softmax sums."""
    def apply(kernel):
        if "hub_degree" not in kernel.schedule.CHOICES:
            return kernel
        return dataclasses.replace(kernel, schedule=dataclasses.replace(kernel.schedule, hub_degree=4))
    g = GRAPHS["hub"]()
    check(model, g, torch.float64, variant=apply)
    torch.manual_seed(0)
    args = model.example_inputs(g, dtype=torch.float64)
    with pigeon.disable_passes("aggregation_order"):  # RGCN's sum per destination, not per (dst, etype) pair
        inference = model.executable(g, *args).forward  # one pass over the edges: split over blocks
    params = dict(model._bind(g, args, {}))
    tensors = [params[n.name] for n in inference.inputs]
    plans = lower(inference)
    plans = PlanProgram(plans.name, plans.inputs, tuple(apply(k) for k in plans.kernels), plans.outputs)
    assert "pg_last_block(" in render_module(plans)[0].split("pg_last_block(int*")[1]
    _close(HarnessProgram(plans)(g, *tensors), execute(inference, g, *tensors), torch.float64, "inference")


@pytest.mark.parametrize("model", [rgat.rgat, hgt.hgt], ids=lambda m: m.name)
def test_many_heads_with_hubs(model):
    """16 heads: the per-edge scores are spread over the lanes and gathered for the online
    softmax; hubs split over blocks (inference) and shared by a block (training)."""
    g = GRAPHS["hub"]()
    torch.manual_seed(0)
    args = model.example_inputs(g, feats=32, heads=16, dtype=torch.float64)
    exe = model.executable(g, *args)
    params = dict(model._bind(g, args, {}))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))

    def hubs(program):
        plans = lower(program)
        return PlanProgram(plans.name, plans.inputs, tuple(
            dataclasses.replace(k, schedule=dataclasses.replace(k.schedule, hub_degree=4))
            if "hub_degree" in k.schedule.CHOICES else k for k in plans.kernels), plans.outputs)
    for program in (exe.forward, grad.forward):
        tensors = [params[n.name] for n in program.inputs]
        _close(HarnessProgram(hubs(program))(g, *tensors), execute(program, g, *tensors), torch.float64,
               program.name)
    forward = execute(grad.forward, g, *[params[n.name] for n in grad.forward.inputs])
    upstream = [torch.randn(o.shape, dtype=torch.float64) for o in forward[: grad.num_outputs]]
    inputs = [*forward[grad.num_outputs:], *upstream]
    _close(HarnessProgram(hubs(grad.backward))(g, *inputs), execute(grad.backward, g, *inputs), torch.float64,
           "backward")


def _split_weight_gradients(kernel):
    if "split_rows" not in kernel.schedule.CHOICES:
        return kernel
    return dataclasses.replace(kernel, schedule=dataclasses.replace(kernel.schedule, split_rows=8))


@pytest.mark.parametrize("case", ["rgcn destination sums", "hgt weight gradients"])
def test_a_missing_atomic_is_caught(case):
    """Blocks run at once: with the atomic adds of a program made plain adds (their read and
    write apart), the harness sees lost updates."""
    g = GRAPHS["hub"]()
    torch.manual_seed(0)
    if case.startswith("rgcn"):
        grad, tensors = _programs(rgcn.rgcn, g, torch.float64)
        program, inputs, plans = grad.forward, tensors, lower(grad.forward, "atomic")
    else:
        grad, tensors = _programs(hgt.hgt, g, torch.float64)
        forward = execute(grad.forward, g, *tensors)
        upstream = [torch.randn(o.shape, dtype=torch.float64) for o in forward[: grad.num_outputs]]
        program, inputs = grad.backward, [*forward[grad.num_outputs:], *upstream]
        plans = lower(program)
        plans = PlanProgram(plans.name, plans.inputs, tuple(_split_weight_gradients(k) for k in plans.kernels),
                            plans.outputs)
    source, _ = render_module(plans)
    assert "pg_atomic_add(p_" in source
    expected = execute(program, g, *inputs)
    # the kernels' calls (on p_ arguments), not the helpers' definitions
    racy = HarnessProgram(plans, edit=lambda s: s.replace("pg_atomic_add(p_", "pg_racy_add(p_"))(g, *inputs)
    assert any(not torch.allclose(a, b, rtol=1e-9, atol=1e-9) for a, b in zip(racy, expected))
    _close(HarnessProgram(plans)(g, *inputs), expected, torch.float64, "atomic adds kept")


VARIANTS = {
    "one_thread_per_row": dict(threads_per_row=1, rows_per_block=16),
    "four_threads_two_wide": dict(threads_per_row=4, vector_width=2),
    "two_rows_per_thread": dict(edges_per_thread=2, rows_per_block=2),
    "small_gemm_tiles": dict(tile_rows=16, tile_cols=16, tile_k=8, thread_rows=2, thread_cols=2),
    "hubs_shared_by_a_block": dict(hub_degree=4),
    "weight_gradients_split_in_chunks": dict(split_rows=8),
    "hubs_split_over_blocks": dict(hub_degree=1),
    "hubs_shared_by_narrow_groups": dict(hub_degree=2, threads_per_row=4, vector_width=2, rows_per_block=16),
    "vector_loads_of_four": dict(threads_per_row=8, vector_width=4),
    "wide_gemm_vectors": dict(tile_rows=32, tile_cols=32, tile_k=32, thread_rows=8, thread_cols=1),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_knobs_keep_the_numbers(variant):
    knobs = VARIANTS[variant]

    def apply(kernel):
        fits = {k: v for k, v in knobs.items() if k in kernel.schedule.CHOICES}
        return dataclasses.replace(kernel, schedule=dataclasses.replace(kernel.schedule, **fits)) if fits else kernel

    for model in MODELS:
        check(model, GRAPHS["many_etypes"](), torch.float64, variant=apply)


def test_schedule_variants_cover_every_listed_knob():
    """Every knob has values that change some kernel's code (edges_per_thread: only kernels that
    run per edge: RGCN's with atomic destination reductions; tensor_cores: only GEMMs of 16-bit
    storage, or of float32 with TF32 allowed)."""
    g = GRAPHS["dense"]()
    grad, _ = _programs(rgat.rgat, g, torch.float64)
    rgcn_grad, _ = _programs(rgcn.rgcn, g, torch.float64)
    half_grad, _ = _programs(rgcn.rgcn, g, torch.float16)
    kernels = (lower(grad.backward).kernels + lower(rgcn_grad.forward, "atomic").kernels
               + lower(half_grad.backward).kernels)
    seen = {knob for k in kernels for v in schedule_variants(k) for knob, value in v.schedule.knobs().items()
            if value != getattr(k.schedule, knob)}
    assert seen == {knob for k in kernels for knob in k.schedule.CHOICES}


def test_schedule_variants_render_distinct_code():
    g = GRAPHS["dense"]()
    grad, _ = _programs(hgt.hgt, g, torch.float64)
    for kernel in lower(grad.backward).kernels:
        variants = [kernel, *schedule_variants(kernel)]
        bodies = {render(v).source.split("level-1 ops:")[1].replace(render(v).name, "") for v in variants}
        assert len(bodies) == len(variants), kernel.name


@pytest.fixture
def harness_backend(monkeypatch):
    """Compiled functions run their programs' kernels through the harness (CPU tensors)."""
    from pigeon.runtime import executable

    cache = {}

    def run(program, g, *tensors):
        if id(program) not in cache:
            cache[id(program)] = (program, HarnessProgram(lower(program)))
        return cache[id(program)][1](g, *tensors)

    monkeypatch.setattr(executable, "runner", lambda backend, config=None: run)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
def test_layers_train_through_generated_kernels(name, harness_backend):
    g = GRAPHS["dense"]()
    layer = {"rgcn": pnn.RGCNConv(6, 5, g.num_etypes), "rgat": pnn.RGATConv(6, 4, g.num_etypes, num_heads=2),
             "hgt": pnn.HGTConv(6, 4, 2, g.num_ntypes, g.num_etypes)}[name].double()
    formula = {"rgcn": lambda h, *p: formulas.rgcn(g, h, *p),
               "rgat": lambda h, *p: formulas.rgat(g, h, *p),
               "hgt": lambda h, *p: formulas.hgt(g, h, *p)}[name]
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    h = torch.randn(g.num_nodes, 6, dtype=torch.float64, requires_grad=True)
    out = layer(g, h)
    params = list(layer.parameters())
    refs = [p.detach().clone().requires_grad_() for p in params]
    h_ref = h.detach().clone().requires_grad_()
    ref = formula(h_ref, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn_like(ref)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-10, atol=1e-10)
    for p, r in zip(params, refs):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-10, atol=1e-10)
