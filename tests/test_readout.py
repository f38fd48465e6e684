"""Readouts: sum and mean of a value over every node or edge, taken outside the graph loops and
used inside them; every back end here against plain torch in float64, forward and backward."""
import warnings

import pytest
import torch

import pigeon
from pigeon.codegen import FallbackWarning
from pigeon.lang import linear, max, mean, min, sum, tanh
from random_graphs import random_graph
from test_where import GRAPHS


@pigeon.compile
def centred(g, h, W, a):
    for n in g.nodes():
        n.z = tanh(linear(h[n], W))
    centre = mean(n.z for n in g.nodes())
    energy = sum(h[e.src] * h[e.dst] for e in g.edges())
    for n in g.dst_nodes():
        n.out = (n.z - centre) * a + sum(h[e.src] for e in n.incoming_edges()) * tanh(energy)
    return n.out


def centred_formula(g, h, W, a):
    z = torch.tanh(h @ W)
    centre = z.mean(0) if g.num_nodes else torch.zeros(z.shape[1], dtype=z.dtype)
    energy = (h[g.src] * h[g.dst]).sum(0)
    agg = torch.zeros(g.num_dst_nodes, h.shape[1], dtype=h.dtype).index_add(0, g.dst, h[g.src])
    return (z[: g.num_dst_nodes] - centre) * a + agg * torch.tanh(energy)


@pytest.mark.parametrize("graph", GRAPHS)
def test_readouts_match_the_formula(graph, backend):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen),
              torch.randn(4, 4, dtype=torch.float64, generator=gen), torch.randn(4, dtype=torch.float64, generator=gen)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with pigeon.use_backend(backend):
        out = centred(g, *ours)
    ref = centred_formula(g, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def refused(fn):
    with pytest.raises(pigeon.TraceError) as info:
        pigeon.compile(fn)(random_graph(num_etypes=4, seed=0), torch.randn(40, 4))
    return str(info.value)


def test_a_readout_inside_a_graph_loop_is_refused():
    def f(g, h):
        for n in g.nodes():
            n.out = h[n] - mean(h[m] for m in g.nodes())
        return n.out
    assert "is taken outside the graph loops" in refused(f)


def test_max_readout_is_the_largest_row():
    @pigeon.compile
    def f(g, h):
        top = max(h[m] for m in g.nodes())
        for n in g.nodes():
            n.out = h[n] - top
        return n.out
    g = random_graph(num_etypes=4, seed=0)
    h = torch.randn(40, 4, dtype=torch.float64)
    torch.testing.assert_close(f(g, h), h - h.max(0).values, rtol=0, atol=0)


@pigeon.compile
def typed_extremes(g, h, a):
    """Largest and smallest values per node type, per relation and over the whole graph."""
    top = max((tanh(h[n]) for n in g.nodes()), by="ntype")
    low = min((h[e.src] * a for e in g.edges()), by="etype")
    peak = max(h[n] for n in g.nodes())
    for e in g.edges():
        e.m = h[e.src] - low[e.etype]
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges()) + top[n.ntype] * peak
    return n.out


def per_row(x, index, rows, kind):
    """``kind`` of the rows of x that index sends to each of ``rows`` rows; 0 where none goes."""
    out = torch.zeros(rows, x.shape[1], dtype=x.dtype)
    for r in range(rows):
        chosen = x[index == r]
        if chosen.shape[0]:
            out[r] = chosen.amax(0) if kind == "max" else chosen.amin(0)
    return out


def typed_extremes_formula(g, h, a):
    top = per_row(torch.tanh(h), g.ntype, g.num_ntypes, "max")
    low = per_row(h[g.src] * a, g.etype, g.num_etypes, "min")
    peak = h.amax(0) if g.num_nodes else torch.zeros(h.shape[1], dtype=h.dtype)
    m = h[g.src] - low[g.etype]
    agg = torch.zeros(g.num_dst_nodes, h.shape[1], dtype=h.dtype).index_add(0, g.dst, m)
    return agg + top[g.ntype[: g.num_dst_nodes]] * peak


def with_empty_types():
    """A graph whose node type 3 has no nodes and most of whose relations have no edges."""
    g = random_graph(num_nodes=30, num_edges=120, num_etypes=12, num_ntypes=3, seed=5)
    return pigeon.Graph.from_edges(g.src, g.dst, g.etype, g.num_nodes, g.ntype, num_etypes=12, num_ntypes=4)


EXTREME_GRAPHS = {"empty_types": with_empty_types, **GRAPHS}


@pytest.mark.parametrize("graph", EXTREME_GRAPHS)
def test_typed_maxima_and_minima_match_the_formula(graph, backend):
    g = EXTREME_GRAPHS[graph]()
    gen = torch.Generator().manual_seed(1)
    leaves = [torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen),
              torch.randn(4, dtype=torch.float64, generator=gen)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # generated code, not torch ops
        with pigeon.use_backend(backend):
            out = typed_extremes(g, *ours)
        ref = typed_extremes_formula(g, *refs)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
        up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        got = torch.autograd.grad((out * up).sum(), ours, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad((ref * up).sum(), refs, allow_unused=True, materialize_grads=True)  # no edges: a unused
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_typed_maxima_in_lower_precision_on_cpp(dtype):
    g = with_empty_types()
    gen = torch.Generator().manual_seed(2)
    h, a = torch.randn(g.num_nodes, 4, generator=gen), torch.randn(4, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        with pigeon.use_backend("cpp"):
            out = typed_extremes(g, h.to(dtype), a.to(dtype))
    ref = typed_extremes_formula(g, h.to(dtype).double(), a.to(dtype).double())
    # maxima are exact; the sums round once per edge at the dtype's precision
    tolerance = {torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tolerance, atol=tolerance)


def test_typed_maxima_compile_with_nvrtc():
    """The CUDA kernels of typed_extremes (atomic maxima into types and into one global row),
    forward and backward, compile with NVRTC as rendered."""
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.codegen import render_module
    from pigeon.ir.lower import lower
    from pigeon.runtime import kernel_cache
    g = with_empty_types()
    gen = torch.Generator().manual_seed(3)
    exe = typed_extremes.executable(g, torch.randn(g.num_nodes, 4, generator=gen), torch.randn(4, generator=gen))
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    for phase, program in (("forward", grad.forward), ("backward", grad.backward)):
        source, kernels = render_module(lower(program))
        ptx = kernel_cache.compile_ptx(source, "compute_90", f"typed_extremes_{phase}")
        assert all(f".entry {k.name}(" in ptx for k in kernels)
        if phase == "forward":
            assert "pg_atomic_max(p_" in source
