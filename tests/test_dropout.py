"""pigeon.lang.dropout: the mask is torch's (drawn as F.dropout draws it, so a seeded run equals
F.dropout's), one mask serves forward and backward, and nothing is dropped outside training."""
import pytest
import torch
import torch.nn.functional as F

import pigeon
from pigeon.lang import dropout, linear, sum
from test_where import GRAPHS


@pigeon.compile
def dropped(g, h, W, training=True):
    for n in g.nodes():
        n.z = dropout(linear(h[n], W), 0.3, training)
    for e in g.edges():
        e.m = dropout(e.src.z * e.dst.z, 0.5, training)
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges())
    return n.out


def dropped_formula(g, h, W, training=True):
    z = F.dropout(h @ W, 0.3, training)
    m = F.dropout(z[g.src] * z[g.dst], 0.5, training)
    return torch.zeros(g.num_dst_nodes, W.shape[1], dtype=h.dtype).index_add(0, g.dst, m)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("graph", ["many_etypes", "hub", "no_edges"])
def test_dropout_equals_torchs(graph, training, backend):
    g = GRAPHS[graph]()
    gen = torch.Generator().manual_seed(1)
    leaves = [torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen),
              torch.randn(4, 3, dtype=torch.float64, generator=gen)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    torch.manual_seed(7)
    with pigeon.use_backend(backend):
        out = dropped(g, *ours, training=training)
    torch.manual_seed(7)
    ref = dropped_formula(g, *refs, training=training)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), ours), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_every_call_draws_a_new_mask():
    g = GRAPHS["many_etypes"]()
    h, W = torch.randn(g.num_nodes, 4, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    assert not torch.equal(dropped(g, h, W), dropped(g, h, W))
    torch.testing.assert_close(dropped(g, h, W, training=False), dropped(g, h, W, training=False), rtol=0, atol=0)


def test_a_bad_probability_is_refused():
    @pigeon.compile
    def f(g, h):
        for n in g.nodes():
            n.out = dropout(h[n], 1.5)
        return n.out
    with pytest.raises(pigeon.TraceError, match=r"p must be a number in \[0, 1\], got 1.5"):
        f(GRAPHS["many_etypes"](), torch.randn(40, 2))
