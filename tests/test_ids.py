"""Integer arguments as ids: ``emb[t[e]]``, ``emb[t[n]]``, ``emb[t[e.src]]`` pick rows of a table
(categorical edge and node attributes); every back end here against plain torch in float64,
forward and backward, on adversarial graphs, and the errors for ids used otherwise."""
import pytest
import torch

import pigeon
from pigeon.lang import linear, sum, tanh
from random_graphs import random_graph
from test_where import GRAPHS


@pigeon.compile
def categorical(g, h, W, kind_emb, kind, color_emb, color):
    for e in g.edges():
        e.m = linear(h[e.src] + kind_emb[kind[e]], W[e.etype]) * tanh(color_emb[color[e.src]])
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges()) + color_emb[color[n]]
    return n.out


def categorical_formula(g, h, W, kind_emb, kind, color_emb, color):
    m = torch.bmm((h[g.src] + kind_emb[kind]).unsqueeze(1), W[g.etype]).squeeze(1) * torch.tanh(color_emb[color[g.src]])
    agg = torch.zeros(g.num_dst_nodes, m.shape[1], dtype=m.dtype).index_add(0, g.dst, m)
    return agg + color_emb[color[: g.num_dst_nodes]]


def arguments(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    floats = [torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen),
              torch.randn(g.num_etypes, 4, 4, dtype=torch.float64, generator=gen),
              torch.randn(7, 4, dtype=torch.float64, generator=gen),
              torch.randn(3, 4, dtype=torch.float64, generator=gen)]
    kind = torch.randint(0, 7, (g.num_edges,), generator=gen)
    color = torch.randint(0, 3, (g.num_nodes,), generator=gen)
    return floats, kind, color


@pytest.mark.parametrize("graph", GRAPHS)
def test_rows_picked_by_ids_match_the_formula(graph, backend):
    g = GRAPHS[graph]()
    (h, W, kind_emb, color_emb), kind, color = arguments(g)
    ours = [x.clone().requires_grad_() for x in (h, W, kind_emb, color_emb)]
    refs = [x.clone().requires_grad_() for x in (h, W, kind_emb, color_emb)]
    with pigeon.use_backend(backend):
        out = categorical(g, ours[0], ours[1], ours[2], kind, ours[3], color)
    ref = categorical_formula(g, refs[0], refs[1], refs[2], kind, refs[3], color)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_ids_do_not_key_the_trace_on_the_graph_size():
    for num_edges in (60, 90, 120):
        g = random_graph(num_nodes=20, num_edges=num_edges, num_etypes=3, seed=num_edges)
        (h, W, kind_emb, color_emb), kind, color = arguments(g)
        torch.testing.assert_close(categorical(g, h, W, kind_emb, kind, color_emb, color),
                                   categorical_formula(g, h, W, kind_emb, kind, color_emb, color))
    assert len([k for k in categorical._programs]) == 1


def call(fn, **changes):
    g = random_graph(num_nodes=20, num_edges=60, num_etypes=3, seed=1)
    (h, W, kind_emb, color_emb), kind, color = arguments(g)
    args = dict(h=h, W=W, kind_emb=kind_emb, kind=kind, color_emb=color_emb, color=color)
    args.update(changes)
    return fn(g, **args)


def test_ids_out_of_range_are_one_clear_error():
    with pytest.raises(ValueError, match="kind holds ids from 0 to 9; kind_emb has 7 rows"):
        call(categorical, kind=torch.arange(60) % 10)


def test_ids_of_the_wrong_length_are_one_clear_error():
    with pytest.raises(ValueError, match=r"kind has shape \[59\]; expected \[60\], one id per edge"):
        call(categorical, kind=torch.zeros(59, dtype=torch.long))


def test_ids_are_not_values():
    @pigeon.compile
    def arithmetic(g, h, kind):
        for e in g.edges():
            e.m = h[e.src] * kind[e]
        return e.m
    g = random_graph(num_nodes=20, num_edges=60, num_etypes=3, seed=1)
    with pytest.raises(pigeon.TraceError, match=r"kind\[e\] is an id of kind \(int64\), not floating point: it only picks"):
        arithmetic(g, torch.randn(20, 4), torch.zeros(60, dtype=torch.long))
