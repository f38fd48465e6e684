"""pigeon.lang.where and comparisons (of loop ids and of traced values): every back end that runs
here (the torch reference, the generated C++, the generated CUDA through the CUDA-on-CPU harness)
against plain-torch formulas in float64, forward and backward, on adversarial graphs."""
import shutil

import pytest
import torch

import pigeon
from pigeon.ir.lower import lower
from pigeon.lang import linear, max, relu, sum, where
from random_graphs import random_graph

HAS_GXX = shutil.which("g++") is not None


def no_edges():
    return pigeon.Graph.from_edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                   torch.zeros(0, dtype=torch.long), 6, torch.tensor([0, 1, 0, 1, 0, 1]),
                                   num_etypes=3, num_ntypes=2)


def hub():
    g = random_graph(num_nodes=30, num_edges=80, num_etypes=5, seed=7)
    gen = torch.Generator().manual_seed(8)
    src = torch.cat([g.src, torch.randint(0, 30, (600,), generator=gen)])
    dst = torch.cat([g.dst, torch.full((600,), 2)])
    etype = torch.cat([g.etype, torch.randint(0, 5, (600,), generator=gen)])
    return pigeon.Graph.from_edges(src, dst, etype, 30, g.ntype, num_etypes=5, num_ntypes=g.num_ntypes)


GRAPHS = {
    # most of 300 edge types empty, isolated nodes, self loops, multi-edges
    "many_etypes": lambda: random_graph(num_nodes=40, num_edges=240, num_etypes=300, seed=1),
    "block": lambda: random_graph(num_nodes=30, num_edges=150, num_etypes=6, seed=2, num_dst_nodes=12),
    "no_edges": no_edges,
    "hub": hub,
}


@pigeon.compile
def typed_branches(g, h, W, bias):
    """Per edge: the message of relation 0 as is, self loops doubled, other messages clipped
    below at -0.5 by a comparison of traced values; per node: a bias on node type 1 only."""
    for e in g.edges():
        m = linear(h[e.src], W[e.etype])
        e.m = where(e.etype == 0, m, where(e.src == e.dst, 2.0 * m, where(m > -0.5, m, -0.5)))
    for n in g.dst_nodes():
        agg = sum(e.m for e in n.incoming_edges())
        n.out = where(n.ntype == 1, agg + bias, relu(agg))
    return n.out


def typed_branches_formula(g, h, W, bias):
    src, dst, etype, ntype = g.src, g.dst, g.etype, g.ntype[: g.num_dst_nodes]
    m = torch.bmm(h[src].unsqueeze(1), W[etype]).squeeze(1)
    clipped = torch.where(m > -0.5, m, torch.full_like(m, -0.5))
    m = torch.where((etype == 0)[:, None], m, torch.where((src == dst)[:, None], 2 * m, clipped))
    agg = torch.zeros(g.num_dst_nodes, m.shape[1], dtype=m.dtype).index_add(0, dst, m)
    return torch.where((ntype == 1)[:, None], agg + bias, torch.relu(agg))


@pigeon.compile
def compared_scores(g, h, a):
    """Scores compared between the two ends of an edge, and the id order of the ends."""
    for e in g.edges():
        s, d = h[e.src] * a, h[e.dst] * a
        e.x = where(s >= d, s - d, where(e.src < e.dst, d, s * 3.0))
    for n in g.dst_nodes():
        n.out = max(e.x for e in n.incoming_edges())
    return n.out


def compared_scores_formula(g, h, a):
    src, dst = g.src, g.dst
    s, d = h[src] * a, h[dst] * a
    x = torch.where(s >= d, s - d, torch.where((src < dst)[:, None], d, s * 3.0))
    out = torch.full((g.num_dst_nodes, x.shape[1]), float("-inf"), dtype=x.dtype)
    out = out.scatter_reduce(0, dst[:, None].expand_as(x), x, "amax")
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)  # no incoming edge: 0


CASES = {
    "typed_branches": (typed_branches, typed_branches_formula,
                       lambda g: (torch.randn(g.num_nodes, 4), torch.randn(max(g.num_etypes, 1), 4, 3),
                                  torch.randn(3))),
    "compared_scores": (compared_scores, compared_scores_formula,
                        lambda g: (torch.randn(g.num_nodes, 5), torch.randn(5))),
}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("case", CASES)
def test_where_matches_the_formula(case, graph, backend):
    fn, formula, make = CASES[case]
    g = GRAPHS[graph]()
    torch.manual_seed(0)
    inputs = [x.double().requires_grad_() for x in make(g)]
    refs = [x.detach().clone().requires_grad_() for x in inputs]
    with pigeon.use_backend(backend):
        out = fn(g, *inputs)
    ref = formula(g, *refs)
    # float64 end to end: rounding differences of sums in another order only
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn_like(ref)
    grads = torch.autograd.grad((out * up).sum(), inputs, allow_unused=True)
    expected = torch.autograd.grad((ref * up).sum(), refs, allow_unused=True)
    for got, want, x in zip(grads, expected, inputs):
        got = torch.zeros_like(x) if got is None else got
        want = torch.zeros_like(x) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_where_with_infinite_numbers():
    @pigeon.compile
    def masked_max(g, h):
        for e in g.edges():
            e.x = where(e.etype == 1, h[e.src], float("-inf"))
        for n in g.dst_nodes():
            n.out = where(sum(where(e.etype == 1, 1.0, 0.0) for e in n.incoming_edges()) > 0,
                          max(e.x for e in n.incoming_edges()), float("inf"))
        return n.out

    g = random_graph(num_nodes=30, num_edges=100, num_etypes=4, seed=3)
    h = torch.randn(30, 2, dtype=torch.float64)
    x = torch.where((g.etype == 1)[:, None], h[g.src], torch.full((g.num_edges, 2), float("-inf"), dtype=torch.float64))
    best = torch.full((30, 2), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, g.dst[:, None].expand_as(x), x, "amax")
    has = torch.zeros(30, dtype=torch.float64).index_add(0, g.dst, (g.etype == 1).double())
    want = torch.where((has > 0)[:, None], best, torch.full_like(best, float("inf")))
    for name in ["reference"] + (["cpp"] if HAS_GXX else []):
        with pigeon.use_backend(name):
            torch.testing.assert_close(masked_max(g, h), want, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_where_kernels_compile_with_nvrtc(case):
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.codegen import render_module
    from pigeon.runtime import kernel_cache
    fn, _, make = CASES[case]
    g = GRAPHS["many_etypes"]()
    args = [x.double() for x in make(g)]
    exe = fn.executable(g, *args)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    for program in (grad.forward, grad.backward):
        source, kernels = render_module(lower(program))
        assert kernels and kernel_cache.compile_ptx(source, "compute_90", program.name).strip()
