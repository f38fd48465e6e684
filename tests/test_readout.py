"""Readouts: sum and mean of a value over every node or edge, taken outside the graph loops and
used inside them; every back end here against plain torch in float64, forward and backward."""
import pytest
import torch

import pigeon
from pigeon.lang import linear, max, mean, sum, tanh
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
