"""Aggregation over a node's outgoing edges and the source degrees (e.src_degree,
e.src_etype_degree): every back end here against plain torch in float64, forward and backward,
and the forms that are refused."""
import pytest
import torch

import pigeon
from pigeon.lang import linear, max, mean, softmax, sum
from random_graphs import random_graph
from test_where import GRAPHS


@pigeon.compile
def out_and_in(g, h, W):
    """GCN's symmetric norm 1/sqrt(d_src d_dst), messages sent back to the sources, and the
    mean over a source's outgoing edges of its relation."""
    for e in g.edges():
        m = linear(h[e.dst], W[e.etype])
        e.m = m / (e.src_degree * e.dst_degree) ** 0.5
        e.r = m / e.src_etype_degree
    for n in g.nodes():
        n.out = sum(e.m for e in n.outgoing_edges()) + 2.0 * mean(e.r for e in n.outgoing_edges())
    return n.out


def out_and_in_formula(g, h, W):
    src, dst, etype = g.src, g.dst, g.etype
    n = g.num_nodes
    out_degree = torch.bincount(src, minlength=n).double()
    in_degree = torch.bincount(dst, minlength=n).double()
    key = src * g.num_etypes + etype
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    m = torch.bmm(h[dst].unsqueeze(1), W[etype]).squeeze(1)
    first = torch.zeros(n, m.shape[1], dtype=m.dtype).index_add(0, src, m / (out_degree[src] * in_degree[dst]).sqrt()[:, None])
    r = m / counts[inverse][:, None]
    mean_out = torch.zeros(n, m.shape[1], dtype=m.dtype).index_add(0, src, r / out_degree[src][:, None])
    return first + 2.0 * mean_out


@pytest.mark.parametrize("graph", GRAPHS)
def test_outgoing_aggregation_matches_the_formula(graph, backend):
    g = GRAPHS[graph]()
    torch.manual_seed(0)
    h = torch.randn(g.num_nodes, 4, dtype=torch.float64, requires_grad=True)
    W = torch.randn(max(g.num_etypes, 1), 4, 3, dtype=torch.float64, requires_grad=True)
    with pigeon.use_backend(backend):
        out = out_and_in(g, h, W)
    h_ref, W_ref = h.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    ref = out_and_in_formula(g, h_ref, W_ref)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad((out * up).sum(), (h, W)),
                         torch.autograd.grad((ref * up).sum(), (h_ref, W_ref))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def refused(fn):
    g = random_graph(num_etypes=4, seed=0)
    with pytest.raises(pigeon.TraceError) as info:
        pigeon.compile(fn)(g, torch.randn(40, 4))
    return str(info.value)


def test_max_over_outgoing_edges_is_refused():
    def f(g, h):
        for n in g.nodes():
            n.out = max(h[e.dst] for e in n.outgoing_edges())
        return n.out
    assert "max over n.outgoing_edges() is not supported" in refused(f)


def test_softmax_inside_an_outgoing_aggregation_is_refused():
    def f(g, h):
        for e in g.edges():
            e.s = h[e.src]
        for n in g.nodes():
            n.out = sum(softmax(e.s) for e in n.outgoing_edges())
        return n.out
    assert "normalises over each destination's incoming edges" in refused(f)


def test_outgoing_edges_need_a_node_of_the_whole_graph():
    def f(g, h):
        for n in g.dst_nodes():
            n.out = sum(h[e.dst] for e in n.outgoing_edges())
        return n.out
    assert "loop over g.nodes()" in refused(f)
