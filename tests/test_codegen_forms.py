"""Layer forms beyond RGCN, RGAT and HGT, written as a user would, through every configuration
of the kernel plans (segmented or atomic destination reductions, horizontal fusion on or off,
the rewrites on or off) on the C++ back end and the CUDA-on-CPU harness: forward and the gradient
of every input against a plain-PyTorch formula in float64. Also: a kernel that no template can
express runs with torch ops (the per-kernel fallback), and zero-width features."""
import dataclasses
import itertools
import shutil
import warnings
import zlib

import pytest
import torch

import pigeon
from formulas import aggregate, dst_softmax, per_edge_linear
from pigeon.codegen import CodegenError, FallbackWarning, InterpretedKernel, render_module
from pigeon.codegen.traversal import TraversalKernel
from pigeon.ir.lower import lower
from pigeon.ir.plans import GemmSchedule, PlanProgram
from pigeon.lang import concat, dot, leaky_relu, linear, mean, relu, sigmoid, softmax, sum, tanh, where
from pigeon.runtime import cpp_compiler
from pigeon.runtime.executable import Executable
from pigeon.runtime.layouts import graph_stats
from pigeon.runtime.tuning import Config
from random_graphs import random_graph

BACKENDS = []
if cpp_compiler.find_compiler() is not None:
    BACKENDS.append("cpp")
if shutil.which("g++") is not None:
    BACKENDS.append("harness")
if not BACKENDS:
    pytest.skip("generated kernels need a C++ compiler", allow_module_level=True)

REWRITES = frozenset({"linear_reorder", "horizontal_fusion", "aggregation_order", "compact"})
CONFIGS = {f"{reductions}{'' if horizontal else '-separate'}{'-unoptimised' if off else ''}":
           Config(disabled=REWRITES if off else frozenset(), dst_reductions=reductions, horizontal=horizontal)
           for reductions, horizontal, off in itertools.product(("segmented", "atomic"), (True, False), (False, True))}


# ---- the forms, in the DSL ---------------------------------------------------------------------

@pigeon.compile
def edge_gate(g, h, weight, gate_weight):
    """A gated message (R-GIN style): a gate of width 1 from a typed linear scales the message."""
    for e in g.edges():
        gate = sigmoid(linear(h[e.src], gate_weight[e.etype]))
        e.msg = gate * linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def gin_gate(g, h, weight, gate_weight, eps):
    """R-GIN's (1 + eps) self term, and a per-node gate of width 1 between it and the input."""
    for e in g.edges():
        e.msg = linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        agg = sum(e.msg for e in n.incoming_edges()) + (1 + eps) * h[n]
        gate = sigmoid(linear(h[n], gate_weight))
        n.out = gate * relu(agg) + (1 - gate) * h[n]
    return n.out


@pigeon.compile
def simple_hgn(g, h, weight, attn_src, attn_dst, attn_edge, rel_emb, rel_weight):
    """Simple-HGN's attention: global attention vectors, edge-type embeddings in the score."""
    for e in g.edges():
        z = linear(h[e.src], weight)
        r = linear(rel_emb[e.etype], rel_weight)
        e.score = leaky_relu(dot(z, attn_src) + dot(linear(h[e.dst], weight), attn_dst) + dot(r, attn_edge), 0.2)
        e.msg = z
    for n in g.dst_nodes():
        n.out = sum(softmax(e.score) * e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def single_dot(g, h, weight, attn):
    """A single-head attention: dot of a typed linear with a per-relation vector."""
    for e in g.edges():
        z = linear(h[e.src], weight[e.etype])
        e.score = leaky_relu(dot(z, attn[e.etype]), 0.2)
        e.msg = z
    for n in g.dst_nodes():
        n.out = sum(softmax(e.score) * e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def sage(g, h, weight):
    """GraphSAGE: a linear of the node's features joined with the mean of its neighbours'."""
    for e in g.edges():
        e.msg = h[e.src]
    for n in g.dst_nodes():
        n.out = linear(concat(h[n], mean(e.msg for e in n.incoming_edges())), weight)
    return n.out


@pigeon.compile
def sage_edge(g, h, weight):
    """A typed linear of both ends of an edge, joined."""
    for e in g.edges():
        e.msg = linear(concat(h[e.src], h[e.dst]), weight[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def head_scale_node(g, h, weight, basis):
    """[H, 1] x [1, F] in a GEMM's epilogue: one scale per head times a shared row."""
    heads, size = weight.shape[-1], basis.shape[-1]
    for n in g.nodes():
        n.z = linear(h[n], weight[n.ntype]).reshape(heads, 1) * basis
    for e in g.edges():
        e.msg = e.src.z
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges()).reshape(heads * size)
    return n.out


@pigeon.compile
def head_scale_edge(g, h, weight, basis):
    """[H, 1] x [1, F] per edge, the row chosen by the relation."""
    heads, size = weight.shape[-1], basis.shape[-1]
    for e in g.edges():
        e.msg = linear(h[e.src], weight[e.etype]).reshape(heads, 1) * basis[e.etype]
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges()).reshape(heads * size)
    return n.out


@pigeon.compile
def mean_rgcn(g, h, weight):
    """Mean aggregation (in atomic mode: each edge adds its share of its destination's mean)."""
    for e in g.edges():
        e.msg = linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        n.out = mean(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def gate_output(g, h, weight, skip):
    """A per-type gate scales a typed linear, and is returned too (stored once per row)."""
    for n in g.dst_nodes():
        gate = sigmoid(skip[n.ntype])
        n.out = gate * linear(h[n], weight[n.ntype])
        n.gate = gate
    return n.out, n.gate


@pigeon.compile
def empty_input(g, h, weight, h_empty, weight_empty):
    """A message with a part from a 0-column input (which adds nothing)."""
    for e in g.edges():
        e.msg = linear(h[e.src], weight[e.etype]) + linear(h_empty[e.src], weight_empty[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def empty_output(g, h, weight):
    """A layer of 0 output columns."""
    for e in g.edges():
        e.msg = relu(linear(h[e.src], weight[e.etype]))
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def empty_middle(g, h, weight_in, weight_out, weight):
    """A typed linear to 0 columns and back (which adds nothing), beside an ordinary one."""
    for e in g.edges():
        e.msg = linear(linear(h[e.src], weight_in[e.etype]), weight_out[e.etype]) + linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def empty_dot(g, h, weight, attn):
    """Attention whose score is a dot product over 0 features: every score 0, a plain mean."""
    for e in g.edges():
        e.score = dot(linear(h[e.src], weight[e.etype]), attn[e.etype])
        e.msg = h[e.src]
    for n in g.dst_nodes():
        n.out = sum(softmax(e.score) * e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def unused_input(g, h, unused, weight):
    """An input that reaches no output: its gradient is zero."""
    for e in g.edges():
        e.ignored = tanh(unused[e.dst])
        e.msg = linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def threshold_input(g, h, c):
    """An input read only by a comparison: its gradient is zero."""
    for e in g.edges():
        e.msg = where(h[e.src] > c, 1.0, h[e.dst])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pigeon.compile
def pair_value_per_edge(g, h):
    """A value of (source, relation) pairs returned per edge (computed once per pair)."""
    for e in g.edges():
        e.out = tanh(h[e.src])
    return e.out


@pigeon.compile
def global_value_per_node(g, h, c):
    """A global value returned on every destination, beside a per-node one."""
    for n in g.dst_nodes():
        n.out = sigmoid(c)
        n.other = h[n] * 2.0
    return n.out, n.other


@pigeon.compile
def edge_output_beside_softmax(g, h, t, x):
    """An edge output in the per-destination kernel that a softmax (dead code without dce) brings."""
    for e in g.edges():
        e.kept = t[e.dst.ntype] * 0.5
        e.dead = softmax(h[e.src])
    for n in g.dst_nodes():
        n.out = tanh(x[n])
    return n.out, e.kept


# ---- their formulas, in plain PyTorch ----------------------------------------------------------

def _mean(msg, g):
    count = torch.bincount(g.dst, minlength=g.num_dst_nodes).clamp(min=1).to(msg.dtype)
    return aggregate(msg, g.dst, g.num_dst_nodes) / count.reshape(-1, *[1] * (msg.dim() - 1))


def _attention(score, msg, g):
    return aggregate(dst_softmax(score, g.dst, g.num_dst_nodes).unsqueeze(-1) * msg, g.dst, g.num_dst_nodes)


def f_edge_gate(g, h, weight, gate_weight):
    gate = torch.sigmoid(per_edge_linear(h[g.src], gate_weight[g.etype]))
    return aggregate(gate * per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes)


def f_gin_gate(g, h, weight, gate_weight, eps):
    x = h[: g.num_dst_nodes]
    agg = aggregate(per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes) + (1 + eps) * x
    gate = torch.sigmoid(x @ gate_weight)
    return gate * torch.relu(agg) + (1 - gate) * x


def f_simple_hgn(g, h, weight, attn_src, attn_dst, attn_edge, rel_emb, rel_weight):
    z = h[g.src] @ weight
    r = rel_emb[g.etype] @ rel_weight
    score = (z * attn_src).sum(-1) + ((h[g.dst] @ weight) * attn_dst).sum(-1) + (r * attn_edge).sum(-1)
    score = torch.nn.functional.leaky_relu(score, 0.2)
    return _attention(score, z, g)


def f_single_dot(g, h, weight, attn):
    z = per_edge_linear(h[g.src], weight[g.etype])
    score = torch.nn.functional.leaky_relu((z * attn[g.etype]).sum(-1), 0.2)
    return _attention(score, z, g)


def f_sage(g, h, weight):
    return torch.cat([h[: g.num_dst_nodes], _mean(h[g.src], g)], -1) @ weight


def f_sage_edge(g, h, weight):
    return aggregate(per_edge_linear(torch.cat([h[g.src], h[g.dst]], -1), weight[g.etype]), g.dst, g.num_dst_nodes)


def f_head_scale_node(g, h, weight, basis):
    z = per_edge_linear(h, weight[g.ntype]).unsqueeze(-1) * basis
    return aggregate(z[g.src], g.dst, g.num_dst_nodes).flatten(1)


def f_head_scale_edge(g, h, weight, basis):
    msg = per_edge_linear(h[g.src], weight[g.etype]).unsqueeze(-1) * basis[g.etype]
    return aggregate(msg, g.dst, g.num_dst_nodes).flatten(1)


def f_mean_rgcn(g, h, weight):
    return _mean(per_edge_linear(h[g.src], weight[g.etype]), g)


def f_gate_output(g, h, weight, skip):
    nt = g.ntype[: g.num_dst_nodes]
    gate = torch.sigmoid(skip[nt])
    return gate.unsqueeze(-1) * per_edge_linear(h[: g.num_dst_nodes], weight[nt]), gate


def f_empty_input(g, h, weight, h_empty, weight_empty):
    return aggregate(per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes)


def f_empty_output(g, h, weight):
    return aggregate(torch.relu(per_edge_linear(h[g.src], weight[g.etype])), g.dst, g.num_dst_nodes)


def f_empty_middle(g, h, weight_in, weight_out, weight):
    return aggregate(per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes)


def f_empty_dot(g, h, weight, attn):
    return _mean(h[g.src], g)


def f_unused_input(g, h, unused, weight):
    return aggregate(per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes)


def f_threshold_input(g, h, c):
    msg = torch.where(h[g.src] > c, torch.ones_like(h[g.src]), h[g.dst])
    return aggregate(msg, g.dst, g.num_dst_nodes)


def f_pair_value_per_edge(g, h):
    return torch.tanh(h[g.src])


def f_global_value_per_node(g, h, c):
    return torch.sigmoid(c).expand(g.num_dst_nodes, -1), h[: g.num_dst_nodes] * 2.0


def f_edge_output_beside_softmax(g, h, t, x):
    return torch.tanh(x[: g.num_dst_nodes]), t[g.ntype[g.dst]] * 0.5


def arguments(name, g, feats=5, heads=3):
    """Seeded float64 arguments of form ``name`` on ``g``."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=gen)

    n, r, t, f = g.num_nodes, g.num_etypes, g.num_ntypes, feats
    return {
        "edge_gate": (rand(n, f), rand(r, f, f), rand(r, f, 1)),
        "gin_gate": (rand(n, f), rand(r, f, f), rand(f, 1), rand(1)),
        "simple_hgn": (rand(n, f), rand(f, f), rand(f), rand(f), rand(f), rand(r, 4), rand(4, f)),
        "single_dot": (rand(n, f), rand(r, f, f), rand(r, f)),
        "sage": (rand(n, f), rand(2 * f, f)),
        "sage_edge": (rand(n, f), rand(r, 2 * f, f)),
        "head_scale_node": (rand(n, f), rand(t, f, heads), rand(1, f)),
        "head_scale_edge": (rand(n, f), rand(r, f, heads), rand(r, 1, f)),
        "mean_rgcn": (rand(n, f), rand(r, f, f)),
        "gate_output": (rand(n, f), rand(t, f, f), rand(t)),
        "empty_input": (rand(n, f), rand(r, f, f), rand(n, 0), rand(r, 0, f)),
        "empty_output": (rand(n, f), rand(r, f, 0)),
        "empty_middle": (rand(n, f), rand(r, f, 0), rand(r, 0, f), rand(r, f, f)),
        "empty_dot": (rand(n, f), rand(r, f, 0), rand(r, 0)),
        "unused_input": (rand(n, f), rand(n, 2), rand(r, f, f)),
        "pair_value_per_edge": (rand(n, f),),
        "threshold_input": (rand(n, f), rand(f)),
        "global_value_per_node": (rand(n, f), rand(2)),
        "edge_output_beside_softmax": (rand(n, 2), rand(t, 2), rand(n, 3)),
    }[name]


FORMS = {fn.name: (fn, formula) for fn, formula in [
    (edge_gate, f_edge_gate), (gin_gate, f_gin_gate), (simple_hgn, f_simple_hgn), (single_dot, f_single_dot),
    (sage, f_sage), (sage_edge, f_sage_edge), (head_scale_node, f_head_scale_node),
    (head_scale_edge, f_head_scale_edge), (mean_rgcn, f_mean_rgcn), (gate_output, f_gate_output),
    (empty_input, f_empty_input),
    (empty_output, f_empty_output)]}
DEFAULT_ONLY_FORMS = {fn.name: (fn, formula) for fn, formula in [
    (empty_middle, f_empty_middle), (empty_dot, f_empty_dot), (unused_input, f_unused_input),
    (threshold_input, f_threshold_input),
    (pair_value_per_edge, f_pair_value_per_edge), (global_value_per_node, f_global_value_per_node),
    (edge_output_beside_softmax, f_edge_output_beside_softmax)]}


# ---- running them ------------------------------------------------------------------------------

_HARNESS: dict[str, object] = {}


def harness_runner(config):
    """Runs level-1 programs through the CUDA-on-CPU harness, lowered with ``config``'s choices
    (CUDA plans, strict: a kernel that cannot be rendered fails the test)."""
    from cuda_cpu.runner import HarnessProgram

    def run(program, g, *tensors):
        plans = lower(program, config.dst_reductions, config.horizontal)
        key = plans.format()
        if key not in _HARNESS:
            _HARNESS[key] = HarnessProgram(plans)
        return _HARNESS[key](g, *tensors)
    return run


def executable(fn, g, args, config, backend):
    if backend in ("cpp", "reference"):
        with pigeon.use_backend(backend):
            return fn.executable(g, *args, config=config)
    exe = Executable(fn.program(g, *args), graph_stats(g), config, "reference")
    exe.run = harness_runner(config)
    return exe


def check(name, g, config, backend):
    """Forward and the gradient of every input, in float64, against the form's formula. Kernels
    are rendered strictly: a fallback to torch ops fails the check."""
    fn, formula = {**FORMS, **DEFAULT_ONLY_FORMS}[name]
    args = arguments(name, g)
    ours = [a.clone().requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    exe = executable(fn, g, ours, config, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        outs = exe(g, ours)
    outs = outs if isinstance(outs, tuple) else (outs,)
    expected = formula(g, *theirs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    gen = torch.Generator().manual_seed(1)
    upstream = [torch.randn(e.shape, dtype=torch.float64, generator=gen) for e in expected]
    for i, (out, want) in enumerate(zip(outs, expected, strict=True)):
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10, msg=f"{name}: output {i}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        torch.autograd.backward(outs, upstream)
    torch.autograd.backward(expected, upstream)
    for node, a, b in zip(exe.forward.inputs, ours, theirs):
        assert a.grad is not None and a.grad.shape == a.shape, f"{name}: no gradient of {node.name}"
        torch.testing.assert_close(a.grad, b.grad if b.grad is not None else torch.zeros_like(b), rtol=1e-10,
                                   atol=1e-10, msg=f"{name}: gradient of {node.name}")


def graph():
    """Empty relations, isolated nodes, self loops and multi-edges."""
    return random_graph(num_nodes=30, num_edges=160, num_etypes=12, num_ntypes=3, seed=11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", FORMS)
def test_form_in_every_configuration(name, config, backend):
    check(name, graph(), CONFIGS[config], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FORMS)
def test_form_on_a_block_and_without_edges(name, backend):
    """A bipartite block (fewer destinations than sources), and a graph without edges."""
    check(name, random_graph(num_nodes=30, num_edges=120, num_etypes=8, seed=12, num_dst_nodes=11),
          Config(), backend)
    check(name, pigeon.Graph.from_edges([], [], [], 5, [0, 1, 2, 0, 1], num_etypes=3, num_ntypes=3), Config(), backend)


@pytest.mark.parametrize("name", FORMS)
def test_form_kernels_compile_with_nvrtc(name):
    """Every CUDA kernel of the form, forward and backward, in every configuration (float32)."""
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra")
    from pigeon.codegen import kernel_name
    from pigeon.runtime import kernel_cache

    g = graph()
    fn = FORMS[name][0]
    args = [a.float().requires_grad_() for a in arguments(name, g)]
    unique = {}
    for config in CONFIGS.values():
        with pigeon.use_backend("reference"):
            exe = fn.executable(g, *args, config=config)
        grad = exe.gradient(tuple(n.name for n, a in zip(exe.forward.inputs, args) if a.numel()))
        for program in (grad.forward, grad.backward):
            unique.update((kernel_name(k), k) for k in lower(program, config.dst_reductions, config.horizontal).kernels)
    source, kernels = render_module(list(unique.values()))
    ptx = kernel_cache.compile_ptx(source, "compute_80", f"forms_{name}")
    assert kernels and all(f".entry {k.name}(" in ptx for k in kernels)


# ---- the per-kernel fallback -------------------------------------------------------------------

def _refusing_traversals(monkeypatch, strategy="dst_parallel"):
    """Make every traversal of ``strategy`` unrenderable, as a form no template covers would be."""
    build = TraversalKernel.build

    def refuse(self):
        if self.plan.strategy.value == strategy:
            raise CodegenError(f"{self.plan.name}: refused by the test")
        return build(self)
    monkeypatch.setattr(TraversalKernel, "build", refuse)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_that_cannot_be_rendered_runs_with_torch_ops(monkeypatch, backend):
    _refusing_traversals(monkeypatch)
    g = graph()
    fn, formula = FORMS["single_dot"]
    args = arguments("single_dot", g)
    ours = [a.clone().requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    config = Config(disabled=frozenset({"horizontal_fusion"}))  # a configuration no other test compiled
    exe = executable(fn, g, ours, config, backend)
    if backend == "harness":  # the harness's runner is strict: let it fall back as the runtimes do
        from cuda_cpu.runner import HarnessProgram

        def run(program, g, *tensors):
            return HarnessProgram(lower(program, config.dst_reductions, config.horizontal), fallback=True)(g, *tensors)
        exe.run = run
    with pytest.warns(FallbackWarning) as caught:
        out = exe(g, ours)
    messages = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
    assert len(messages) == 1 and "dst_parallel" in messages[0] and "refused by the test" in messages[0]
    assert "runs with torch ops" in messages[0]
    expected = formula(g, *theirs)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.warns(FallbackWarning):
        out.backward(upstream)
    expected.backward(upstream)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


def test_fallback_keeps_the_other_kernels_generated(monkeypatch):
    _refusing_traversals(monkeypatch)
    g = graph()
    program = FORMS["single_dot"][0].program(g, *arguments("single_dot", g))
    plans = lower(program, target="cpp")
    with pytest.warns(FallbackWarning):
        source, kernels = render_module(plans, fallback=True)
    interpreted = [k.name for k in kernels if isinstance(k, InterpretedKernel)]
    generated = [k.name for k in kernels if not isinstance(k, InterpretedKernel)]
    assert interpreted and all("dst_parallel" in k for k in interpreted)
    assert generated and all(k in source for k in generated)
    with pytest.raises(CodegenError, match="refused by the test"):
        render_module(plans)  # without the fallback the error stands


def test_schedule_that_cannot_run_falls_back_to_the_default_schedule():
    g = graph()
    program = FORMS["mean_rgcn"][0].program(g, *arguments("mean_rgcn", g))
    plans = lower(program)
    bad = GemmSchedule(tile_rows=16, thread_rows=3)  # tiles not multiples of the thread tiles
    kernels = tuple(dataclasses.replace(k, schedule=bad) if isinstance(k.schedule, GemmSchedule) else k
                    for k in plans.kernels)
    with pytest.warns(FallbackWarning, match="runs with its default schedule"):
        _, rendered = render_module(PlanProgram(plans.name, plans.inputs, kernels, plans.outputs), fallback=True)
    assert not any(isinstance(k, InterpretedKernel) for k in rendered)
    assert all(k.plan.schedule == GemmSchedule() for k in rendered if isinstance(k.plan.schedule, GemmSchedule))


# ---- zero-width features -----------------------------------------------------------------------

@pigeon.compile
def empty_concat(g, h, h_empty, weight):
    for e in g.edges():
        e.msg = linear(concat(h[e.src], h_empty[e.src]), weight[e.etype])
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges())
    return n.out


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_zero_width_concat_part_works(backend):
    """Forward: the empty part adds nothing. Backward: the others' gradients, and an empty one."""
    g = graph()
    gen = torch.Generator().manual_seed(3)
    h, empty, weight = (torch.randn(*s, dtype=torch.float64, generator=gen)
                        for s in ((g.num_nodes, 4), (g.num_nodes, 0), (g.num_etypes, 4, 3)))
    expected = aggregate(per_edge_linear(h[g.src], weight[g.etype]), g.dst, g.num_dst_nodes)
    if backend == "harness":
        exe = executable(empty_concat, g, (h, empty, weight), Config(), backend)
        (out,) = exe(g, [h, empty, weight])
    else:
        with pigeon.use_backend(backend):
            out = empty_concat(g, h, empty, weight)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    ours = [t.clone().requires_grad_() for t in (h, empty, weight)]
    if backend == "harness":
        exe = executable(empty_concat, g, ours, Config(), backend)
        out = exe(g, ours)
    else:
        with pigeon.use_backend(backend):
            out = empty_concat(g, *ours)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    out.backward(upstream)
    theirs = [h.clone().requires_grad_(), weight.clone().requires_grad_()]
    aggregate(per_edge_linear(theirs[0][g.src], theirs[1][g.etype]), g.dst, g.num_dst_nodes).backward(upstream)
    torch.testing.assert_close(ours[0].grad, theirs[0].grad, rtol=1e-10, atol=1e-10)
    assert ours[1].grad.shape == (g.num_nodes, 0)
    torch.testing.assert_close(ours[2].grad, theirs[1].grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
@pytest.mark.parametrize("name", ["empty_input", "empty_output", "empty_middle", "empty_dot"])
def test_zero_width_features(name, backend):
    """0 columns in, out, in the middle, and in a dot product: a 0-element input's gradient is an
    empty tensor (no backward program is built for it)."""
    check(name, graph(), Config(), backend)


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
@pytest.mark.parametrize("name", ["unused_input", "threshold_input", "pair_value_per_edge", "global_value_per_node"])
def test_outputs_at_other_rows_and_unused_inputs(name, backend):
    """Outputs read through a gather from a kernel over other rows (pairs, one global row) are
    copied by a kernel of their own rows; an input that reaches no output, or only through a
    comparison, gets a zero gradient."""
    check(name, graph(), Config(), backend)
    check(name, graph(), Config(disabled=REWRITES), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_output_stored_beside_an_online_softmax(backend):
    """Without dce (nor compaction) the dead softmax keeps a per-destination kernel; the edge
    output it also computes is stored in a pass of its own (the softmax's pass is online)."""
    check("edge_output_beside_softmax", graph(), Config(disabled=REWRITES | {"dce", "cse"}), backend)
