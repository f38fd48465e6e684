"""Aggregation within each relation, then across relations (``g.dst_relations()``,
``r.incoming_edges()``, ``n.relations()``, ``softmax(x, by="etype")``) and readouts by type:
every back end that runs here against plain-torch formulas in float64, forward and backward, on
adversarial graphs (most of 300 relations empty, a bipartite block, no edges, a hub)."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import pigeon
from pigeon.codegen import FallbackWarning
from pigeon.lang import dot, leaky_relu, linear, max, mean, min, softmax, sum, tanh
from random_graphs import random_graph
from test_where import GRAPHS


# ---- plain-torch pieces, written from the definitions -------------------------------------

def pairs(g):
    """The (destination, relation) pairs with edges: each edge's pair, and each pair's node and type."""
    key = g.dst * g.num_etypes + g.etype
    uniq, pair_of_edge = torch.unique(key, return_inverse=True)
    return pair_of_edge, uniq // g.num_etypes, uniq % g.num_etypes


def scatter(x, index, rows, kind="sum"):
    out = torch.zeros((rows,) + tuple(x.shape[1:]), dtype=x.dtype)
    if kind == "max":
        return out.scatter_reduce(0, index.view(-1, *[1] * (x.dim() - 1)).expand_as(x), x, "amax", include_self=False)
    total = out.index_add(0, index, x)
    if kind == "mean":
        count = torch.bincount(index, minlength=rows).clamp(min=1).to(x.dtype)
        return total / count.view(-1, *[1] * (x.dim() - 1))
    return total


def group_softmax(score, group, rows):
    peak = torch.full((rows,) + tuple(score.shape[1:]), float("-inf"), dtype=score.dtype)
    peak = peak.scatter_reduce(0, group.view(-1, *[1] * (score.dim() - 1)).expand_as(score), score, "amax")
    w = torch.exp(score - peak[group])
    return w / scatter(w, group, rows)[group]


# ---- within, then across relations --------------------------------------------------------

@pigeon.compile
def relational_attention(g, h, W, a, Wd):
    for e in g.edges():
        e.z = linear(h[e.src], W[e.etype])
        e.s = leaky_relu(dot(e.z, a[e.etype]), 0.2)
    for r in g.dst_relations():
        r.z = sum(softmax(e.s) * e.z for e in r.incoming_edges())
        r.spread = max(e.z for e in r.incoming_edges()) - min(e.z for e in r.incoming_edges())
        r.centre = mean(e.z for e in r.incoming_edges())
        r.w = dot(tanh(r.z + linear(h[r.dst], Wd)), a[r.etype])
    for n in g.dst_nodes():
        n.out = (sum(softmax(r.w) * r.z for r in n.relations()) + max(r.spread for r in n.relations())
                 - min(r.centre for r in n.relations()) + mean(r.centre for r in n.relations()))
    return n.out


def relational_attention_formula(g, h, W, a, Wd):
    pair, node, etype = pairs(g)
    num_pairs, rows = node.numel(), g.num_dst_nodes
    z = torch.bmm(h[g.src].unsqueeze(1), W[g.etype]).squeeze(1)
    s = F.leaky_relu((z * a[g.etype]).sum(-1, keepdim=True), 0.2)
    rz = scatter(group_softmax(s, pair, num_pairs) * z, pair, num_pairs)
    spread = scatter(z, pair, num_pairs, "max") + scatter(-z, pair, num_pairs, "max")
    centre = scatter(z, pair, num_pairs, "mean")
    w = (torch.tanh(rz + h[node] @ Wd) * a[etype]).sum(-1, keepdim=True)
    beta = group_softmax(w, node, rows)
    return (scatter(beta * rz, node, rows) + scatter(spread, node, rows, "max")
            + scatter(-centre, node, rows, "max") + scatter(centre, node, rows, "mean"))


@pigeon.compile
def gat_per_relation(g, h, W, a):
    """A softmax within each relation written in an edge loop (softmax(x, by="etype")), summed
    over the incoming edges: HeteroGraphConv of GATConv with aggregate="sum"."""
    for e in g.edges():
        z = linear(h[e.src], W[e.etype])
        e.alpha = softmax(leaky_relu(dot(z, a[e.etype]), 0.2), by="etype")
        e.msg = z
    for n in g.dst_nodes():
        n.out = sum(e.alpha * e.msg for e in n.incoming_edges())
    return n.out


def gat_per_relation_formula(g, h, W, a):
    pair, node, _ = pairs(g)
    z = torch.bmm(h[g.src].unsqueeze(1), W[g.etype]).squeeze(1)
    alpha = group_softmax(F.leaky_relu((z * a[g.etype]).sum(-1, keepdim=True), 0.2), pair, node.numel())
    return scatter(alpha * z, g.dst, g.num_dst_nodes)


def inputs(g, gen, feats=4):
    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=gen)
    return [rand(g.num_nodes, feats), rand(g.num_etypes, feats, feats), rand(g.num_etypes, feats), rand(feats, feats)]


CASES = {"relational_attention": (relational_attention, relational_attention_formula, 4),
         "gat_per_relation": (gat_per_relation, gat_per_relation_formula, 3)}


def check(fn, formula, leaves, g, backend):
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with pigeon.use_backend(backend):
        out = fn(g, *ours)
    ref = formula(g, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad((out * up).sum(), ours, allow_unused=True)
    want = torch.autograd.grad((ref * up).sum(), refs, allow_unused=True)
    for x, y, leaf in zip(got, want, leaves):
        x = torch.zeros_like(leaf) if x is None else x
        y = torch.zeros_like(leaf) if y is None else y
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("case", CASES)
def test_relations_match_the_formula(case, graph, backend):
    """Every kernel is generated (the within-relation maximum is an atomic maximum into pair rows):
    nothing falls back to torch ops."""
    fn, formula, num_inputs = CASES[case]
    g = GRAPHS[graph]()
    leaves = inputs(g, torch.Generator().manual_seed(0))[:num_inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        check(fn, formula, leaves, g, backend)


def test_float32_relations_on_cpp():
    g = GRAPHS["many_etypes"]()
    leaves = inputs(g, torch.Generator().manual_seed(2))
    with pigeon.use_backend("cpp"):
        out = relational_attention(g, *[x.float() for x in leaves])
    ref = relational_attention_formula(g, *leaves)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)  # float32 rounding


# ---- readouts by type ---------------------------------------------------------------------

@pigeon.compile
def typed_readouts(g, h, W, a):
    for e in g.edges():
        e.z = linear(h[e.src], W[e.etype])
    for r in g.dst_relations():
        r.z = sum(e.z for e in r.incoming_edges())
    per_relation = mean((tanh(r.z) for r in g.dst_relations()), by="etype")  # HAN's semantic score
    per_etype_top = max((e.z for e in g.edges()), by="etype")
    per_ntype = sum((h[n] for n in g.nodes()), by="ntype")
    lowest = min(h[n] for n in g.nodes())
    for r in g.dst_relations():
        r.w = dot(per_relation[r.etype], a[r.etype])
    for n in g.dst_nodes():
        n.out = (sum(softmax(r.w) * r.z for r in n.relations()) + per_ntype[n.ntype] * lowest
                 + max(per_etype_top[e.etype] for e in n.incoming_edges()))
    return n.out


def typed_readouts_formula(g, h, W, a):
    pair, node, etype = pairs(g)
    num_pairs, rows = node.numel(), g.num_dst_nodes
    z = torch.bmm(h[g.src].unsqueeze(1), W[g.etype]).squeeze(1)
    rz = scatter(z, pair, num_pairs)
    per_relation = scatter(torch.tanh(rz), etype, g.num_etypes, "mean")
    per_etype_top = scatter(z, g.etype, g.num_etypes, "max")
    per_ntype = scatter(h, g.ntype, g.num_ntypes)
    lowest = h.min(0).values if g.num_nodes else torch.zeros(h.shape[1], dtype=h.dtype)
    w = (per_relation[etype] * a[etype]).sum(-1, keepdim=True)
    beta = group_softmax(w, node, rows)
    return (scatter(beta * rz, node, rows) + per_ntype[g.ntype[:rows]] * lowest
            + scatter(per_etype_top[g.etype], g.dst, rows, "max"))


@pytest.mark.parametrize("graph", GRAPHS)
def test_readouts_by_type_match_the_formula(graph, backend):
    g = GRAPHS[graph]()
    leaves = inputs(g, torch.Generator().manual_seed(3))[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # max readouts into types are generated code too
        check(typed_readouts, typed_readouts_formula, leaves, g, backend)


# ---- what is refused -----------------------------------------------------------------------

def refused(fn, *extra):
    g = random_graph(num_etypes=4, seed=0)
    with pytest.raises(pigeon.TraceError) as info:
        pigeon.compile(fn)(g, torch.randn(40, 4), *extra)
    return str(info.value)


def test_relation_value_never_set():
    def f(g, h):
        for n in g.dst_nodes():
            n.out = sum(r.z for r in n.relations())
        return n.out
    assert "relation value r.z was never set in a g.dst_relations() loop" in refused(f)


def test_relations_need_an_aggregation():
    def f(g, h):
        for r in g.dst_relations():
            r.z = sum(h[e.src] for e in r.incoming_edges())
        for n in g.dst_nodes():
            for r in n.relations():
                n.out = r.z
        return n.out
    assert "n.relations() is traced once" in refused(f)


def test_a_relation_value_is_not_a_node_value():
    def f(g, h):
        for r in g.dst_relations():
            r.z = sum(h[e.src] for e in r.incoming_edges())
        for n in g.dst_nodes():
            n.out = h[n] + 0 * r.z
        return n.out
    assert "cannot be combined" in refused(f)


def test_edge_values_stored_on_a_relation_need_an_aggregation():
    def f(g, h):
        for e in g.edges():
            e.m = h[e.src]
        for r in g.dst_relations():
            r.z = e.m
        return r.z
    assert "aggregate it with sum/mean/max(... for e in r.incoming_edges())" in refused(f)


def test_softmax_by_must_be_etype():
    def f(g, h):
        for e in g.edges():
            e.a = softmax(h[e.src], by="ntype")
        return e.a
    assert "softmax's by must be None or 'etype'" in refused(f)


def test_by_is_for_readouts():
    def f(g, h):
        for n in g.dst_nodes():
            n.out = sum((h[e.src] for e in n.incoming_edges()), by="etype")
        return n.out
    assert "by=...) is for readouts" in refused(f)


def test_a_type_selector_reads_a_value_per_type_only():
    def f(g, h):
        for n in g.nodes():
            n.z = h[n]
        for e in g.edges():
            e.m = e.src.z[e.etype]
        return e.m
    assert "selects a row of a value per etype" in refused(f)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES)
def test_relation_kernels_compile_with_nvrtc(case, dtype):
    """The CUDA kernels of the forward and backward programs (the atomic maximum into pair rows
    among them) compile with NVRTC as rendered."""
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.codegen import render_module
    from pigeon.ir.lower import lower
    from pigeon.runtime import kernel_cache
    fn, _, num_inputs = CASES[case]
    g = GRAPHS["hub"]()
    args = [x.to(dtype) for x in inputs(g, torch.Generator().manual_seed(4))[:num_inputs]]
    exe = fn.executable(g, *args)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    calls = []
    for phase, program in (("forward", grad.forward), ("backward", grad.backward)):
        source, kernels = render_module(lower(program))
        ptx = kernel_cache.compile_ptx(source, "compute_90", f"{case}_{phase}")
        assert all(f".entry {k.name}(" in ptx for k in kernels)
        calls.append("pg_atomic_max(p_" in source)
    assert calls[0]  # the softmax within each relation takes its maximum into pair rows
