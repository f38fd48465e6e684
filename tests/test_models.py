"""RGCN, RGAT and HGT (DSL programs and pigeon.nn layers) against the plain-PyTorch formulas in
float64, forward and the gradients of the input and of every parameter."""
import pytest
import torch

import formulas
import pigeon
import pigeon.nn as pnn
from pigeon.examples import hgt, rgat, rgcn
from random_graphs import random_graph

@pytest.fixture(autouse=True, params=["optimised", "unoptimised"])
def pipeline(request):
    """Every model test runs with the whole pass pipeline and with every pass switched off."""
    if request.param == "optimised":
        yield
    else:
        with pigeon.disable_passes(*pigeon.PASS_NAMES):
            yield


GRAPHS = {
    "many_etypes": lambda: random_graph(num_nodes=40, num_edges=240, num_etypes=300, seed=1),
    "block": lambda: random_graph(num_nodes=30, num_edges=150, num_etypes=40, seed=2, num_dst_nodes=12),
    "no_edges": lambda: pigeon.Graph.from_edges([], [], [], 5, [0, 1, 0, 1, 1], num_etypes=3),
    # many edges per (node, edge type) pair: every rewrite pays here (see test_rewrites_apply)
    "dense": lambda: random_graph(num_nodes=30, num_edges=1200, num_etypes=6, seed=3),
}


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def assert_same_forward_and_grads(fn, formula, g, args, kwargs=None):
    """fn and formula agree on the output and on the gradient of every tensor argument."""
    kwargs = kwargs or {}
    ours = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    theirs = [a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(g, *ours, **kwargs)
    ref = formula(g, *theirs, **kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(ref)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(a, torch.Tensor):
            assert a.grad is not None, f"argument {i} got no gradient"
            expected = b.grad if b.grad is not None else torch.zeros_like(b)  # None: no path, zero gradient
            torch.testing.assert_close(a.grad, expected, rtol=1e-10, atol=1e-10, msg=f"gradient of argument {i}")


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("aggr", ["mean", "sum"])
@pytest.mark.parametrize("with_edge_weight", [False, True])
def test_rgcn_program(graph, aggr, with_edge_weight):
    g = GRAPHS[graph]()
    args = [rand(g.num_nodes, 6), rand(g.num_etypes, 6, 5), rand(6, 5), rand(5),
            rand(g.num_edges, 1) if with_edge_weight else None]
    assert_same_forward_and_grads(rgcn.rgcn, formulas.rgcn, g, args, {"aggr": aggr})


def test_rgcn_program_without_self_loop_and_bias():
    g = GRAPHS["many_etypes"]()
    args = [rand(g.num_nodes, 6), rand(g.num_etypes, 6, 5), None, None, None]
    assert_same_forward_and_grads(rgcn.rgcn, formulas.rgcn, g, args)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("heads", [1, 3])
def test_rgat_program(graph, heads):
    g = GRAPHS[graph]()
    r = g.num_etypes
    args = [rand(g.num_nodes, 7), rand(r, 7, heads * 4), rand(r, heads, 4), rand(r, heads, 4), rand(heads * 4)]
    assert_same_forward_and_grads(rgat.rgat, formulas.rgat, g, args, {"negative_slope": 0.1})


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("in_feats,skip", [(8, True), (5, True), (8, False)])
def test_hgt_program(graph, in_feats, skip):
    g = GRAPHS[graph]()
    t, r, heads, size = g.num_ntypes, g.num_etypes, 2, 4
    hd = heads * size
    args = [rand(g.num_nodes, in_feats), rand(t, in_feats, hd), rand(t, in_feats, hd), rand(t, in_feats, hd),
            rand(r, heads, size, size), rand(r, heads, size, size), rand(r, heads), rand(t, hd, hd),
            rand(t) if skip else None, rand(in_feats, hd) if skip and in_feats != hd else None]
    assert_same_forward_and_grads(hgt.hgt, formulas.hgt, g, args)


LAYER_PARAMETERS = {  # each layer's parameters in the order its formula takes them
    "rgcn": ["weight", "loop_weight", "bias"],
    "rgat": ["weight", "attn_src", "attn_dst", "bias"],
    "hgt": ["k_weight", "q_weight", "v_weight", "relation_att", "relation_msg", "relation_pri", "out_weight",
            "skip", "residual_w"]}


def _layer_case(name, g):
    if name == "rgcn":
        layer = pnn.RGCNConv(6, 5, g.num_etypes, aggr="mean")
        return layer, lambda gg, h, *p: formulas.rgcn(gg, h, *p, aggr="mean"), 6
    if name == "rgat":
        layer = pnn.RGATConv(6, 4, g.num_etypes, num_heads=2, negative_slope=0.3)
        return layer, lambda gg, h, *p: formulas.rgat(gg, h, *p, negative_slope=0.3), 6
    layer = pnn.HGTConv(6, 4, 2, g.num_ntypes, g.num_etypes)
    return layer, formulas.hgt, 6


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
def test_layer_matches_formula(name):
    g = GRAPHS["many_etypes"]()
    layer, formula, in_feats = _layer_case(name, g)
    layer = layer.double()
    with torch.no_grad():  # not the default init: every parameter matters
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    h = rand(g.num_nodes, in_feats).requires_grad_()
    out = layer(g, h)
    params = dict(layer.named_parameters())
    ref_params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    h_ref = h.detach().clone().requires_grad_()
    ref = formula(g, h_ref, *[ref_params.get(k) for k in LAYER_PARAMETERS[name]])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(ref)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-10, atol=1e-10)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, ref_params[k].grad, rtol=1e-10, atol=1e-10, msg=f"gradient of {k}")


def test_layer_parameter_shapes():
    rgcn_layer = pnn.RGCNConv(10, 7, 4)
    assert {k: tuple(v.shape) for k, v in rgcn_layer.named_parameters()} == {
        "weight": (4, 10, 7), "loop_weight": (10, 7), "bias": (7,)}
    rgat_layer = pnn.RGATConv(10, 7, 4, num_heads=3)
    assert {k: tuple(v.shape) for k, v in rgat_layer.named_parameters()} == {
        "weight": (4, 10, 21), "attn_src": (4, 3, 7), "attn_dst": (4, 3, 7), "bias": (21,)}
    hgt_layer = pnn.HGTConv(10, 4, 2, 3, 5)
    assert {k: tuple(v.shape) for k, v in hgt_layer.named_parameters()} == {
        "k_weight": (3, 10, 8), "q_weight": (3, 10, 8), "v_weight": (3, 10, 8),
        "relation_att": (5, 2, 4, 4), "relation_msg": (5, 2, 4, 4), "relation_pri": (5, 2),
        "out_weight": (3, 8, 8), "skip": (3,), "residual_w": (10, 8)}
    assert "residual_w" not in dict(pnn.HGTConv(8, 4, 2, 3, 5).named_parameters())
    assert "skip" not in dict(pnn.HGTConv(8, 4, 2, 3, 5, use_skip=False).named_parameters())


def _sparse_types_graph(num_etypes=None, num_ntypes=None):
    """Edge types 0..6 and node types 0..1 only: the higher ids of a layer have no edges or nodes."""
    gen = torch.Generator().manual_seed(31)
    n, e = 25, 160
    src, dst = torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)
    etype, ntype = torch.randint(0, 7, (e,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    etype[:7], ntype[:2] = torch.arange(7), torch.arange(2)
    return pigeon.Graph.from_edges(src, dst, etype, n, ntype, num_etypes=num_etypes, num_ntypes=num_ntypes)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("declared", [None, 12], ids=["counted", "declared_beyond_the_layer"])
@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
def test_layer_takes_a_graph_without_its_highest_types(name, declared, backend):
    """num_rels=9 and num_ntypes=4 on a graph with edge types 0..6 and node types 0..1, counted
    from the ids (7 and 2) or declared beyond the layer's (12): the formula's output and
    gradients, and zero gradient rows for the absent types."""
    g = _sparse_types_graph(declared, declared)
    layer, formula, in_feats = {
        "rgcn": lambda: (pnn.RGCNConv(6, 5, 9), lambda gg, h, *p: formulas.rgcn(gg, h, *p, aggr="mean"), 6),
        "rgat": lambda: (pnn.RGATConv(6, 4, 9, num_heads=2), formulas.rgat, 6),
        "hgt": lambda: (pnn.HGTConv(6, 4, 2, 4, 9), formulas.hgt, 6)}[name]()
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    h = rand(g.num_nodes, in_feats).requires_grad_()
    with pigeon.use_backend(backend):
        out = layer(g, h)
    params = dict(layer.named_parameters())
    ref_params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    h_ref = h.detach().clone().requires_grad_()
    ref = formula(g, h_ref, *[ref_params.get(k) for k in LAYER_PARAMETERS[name]])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(ref)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-10, atol=1e-10)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, ref_params[k].grad, rtol=1e-10, atol=1e-10, msg=f"gradient of {k}")
        if p.dim() and p.shape[0] in (9, 4) and k not in ("bias", "residual_w"):
            present = 7 if p.shape[0] == 9 else 2
            assert torch.count_nonzero(p.grad[present:]) == 0, k
            assert torch.count_nonzero(p.grad[:present]) > 0, k


def test_layer_rejects_type_ids_beyond_its_own():
    g = GRAPHS["many_etypes"]()
    message = f"num_rels=5 but the graph has an edge of type {g.max_etype}: edge type ids must be below num_rels"
    with pytest.raises(pigeon.GraphError, match=message):
        pnn.RGCNConv(6, 5, 5)(g, torch.randn(g.num_nodes, 6))
    for layer in (pnn.RGATConv(6, 4, 9), pnn.HGTConv(6, 4, 2, 4, 9)):
        with pytest.raises(pigeon.GraphError, match="num_rels=9 but the graph has an edge of type 10"):
            layer(pigeon.Graph.from_edges([0, 1], [1, 0], [10, 3], 2), torch.randn(2, 6))
    with pytest.raises(pigeon.GraphError, match="num_ntypes=2 but the graph has a node of type 2: node type ids"):
        pnn.HGTConv(6, 4, 2, 2, g.num_etypes)(g, torch.randn(g.num_nodes, 6))


def test_layer_rejects_bad_edge_weight():
    g = GRAPHS["many_etypes"]()
    with pytest.raises(pigeon.GraphError, match="edge_weight has shape"):
        pnn.RGCNConv(6, 5, g.num_etypes)(g, torch.randn(g.num_nodes, 6), torch.randn(g.num_edges + 1))


def test_isolated_nodes_get_zero_aggregation():
    g = GRAPHS["many_etypes"]()
    h = torch.randn(g.num_nodes, 6)
    out = pnn.RGCNConv(6, 5, g.num_etypes, self_loop=False, bias=False)(g, h)
    assert torch.count_nonzero(out[-4:]) == 0
    assert torch.count_nonzero(out[:-4]) > 0

