"""pigeon.nn layers' options: edge weights and returned attention on RGAT and HGT, and layer norm,
activation and dropout on every layer, against the formulas in float64 (forward and gradients)."""
import pytest
import torch
import torch.nn.functional as F

import formulas
import pigeon
import pigeon.nn as pnn
from test_where import GRAPHS


def layer_and_formula(name, g):
    if name == "rgat":
        layer = pnn.RGATConv(6, 3, g.num_etypes, num_heads=2)
        return layer, lambda h, w, att: formulas.rgat(g, h, *layer.parameters(), edge_weight=w, return_attention=att)
    layer = pnn.HGTConv(6, 3, 2, g.num_ntypes, g.num_etypes)
    return layer, lambda h, w, att: formulas.hgt(g, h, *layer.parameters(), edge_weight=w, return_attention=att)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("name", ["rgat", "hgt"])
def test_edge_weight_and_attention(name, graph, backend):
    g = GRAPHS[graph]()
    torch.manual_seed(0)
    layer, formula = layer_and_formula(name, g)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    h = torch.randn(g.num_nodes, 6, dtype=torch.float64, requires_grad=True)
    w = torch.rand(g.num_edges, dtype=torch.float64, requires_grad=True)
    with pigeon.use_backend(backend):
        out, attention = layer(g, h, edge_weight=w, return_attention=True)
    ref, ref_attention = formula(h, w, True)
    # float64 end to end: rounding only
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(attention, ref_attention, rtol=1e-10, atol=1e-10)
    up, up_att = torch.randn_like(ref), torch.randn_like(ref_attention)
    leaves = [h, w, *layer.parameters()]
    got = torch.autograd.grad((out * up).sum() + (attention * up_att).sum(), leaves, allow_unused=True)
    want = torch.autograd.grad((ref * up).sum() + (ref_attention * up_att).sum(), leaves, allow_unused=True)
    for x, y, leaf in zip(got, want, leaves):
        torch.testing.assert_close(torch.zeros_like(leaf) if x is None else x,
                                   torch.zeros_like(leaf) if y is None else y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
def test_layer_norm_activation_and_dropout(name):
    g = GRAPHS["many_etypes"]()
    options = {"layer_norm": True, "activation": torch.tanh, "dropout": 0.4}
    layer = {"rgcn": lambda: pnn.RGCNConv(6, 6, g.num_etypes, **options),
             "rgat": lambda: pnn.RGATConv(6, 3, g.num_etypes, num_heads=2, **options),
             "hgt": lambda: pnn.HGTConv(6, 3, 2, g.num_ntypes, g.num_etypes, **options)}[name]().double()
    plain = {"rgcn": lambda: pnn.RGCNConv(6, 6, g.num_etypes),
             "rgat": lambda: pnn.RGATConv(6, 3, g.num_etypes, num_heads=2),
             "hgt": lambda: pnn.HGTConv(6, 3, 2, g.num_ntypes, g.num_etypes)}[name]().double()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("norm.")})
    h = torch.randn(g.num_nodes, 6, dtype=torch.float64)
    torch.manual_seed(3)
    out = layer(g, h)
    torch.manual_seed(3)
    want = F.dropout(torch.tanh(layer.norm(plain(g, h))), 0.4, True)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    layer.eval()
    torch.testing.assert_close(layer(g, h), torch.tanh(layer.norm(plain(g, h))), rtol=1e-12, atol=1e-12)
