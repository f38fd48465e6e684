"""The drop-in layers (pigeon.nn.pyg, pigeon.nn.dgl) against PyG's and DGL's own classes: the
peer's state_dict loads into Pigeon's layer, and the outputs and the gradients of the input and
of every parameter match in float64, on graphs with relations without edges, isolated nodes,
self loops, multi-edges, a hub, no edges at all, and a DGL sampled block.
Runs in the DGL environment (``pytest -m dgl``)."""
from __future__ import annotations

import pytest
import torch

dgl = pytest.importorskip("dgl")
tg = pytest.importorskip("torch_geometric")
import dgl.nn  # noqa: E402
import torch_geometric.nn as pyg_nn  # noqa: E402

import pigeon  # noqa: E402
import pigeon.nn.dgl as pdgl  # noqa: E402
import pigeon.nn.pyg as ppyg  # noqa: E402
from pigeon.nn.relational import bases_order  # noqa: E402
from random_graphs import random_graph  # noqa: E402

pytestmark = pytest.mark.dgl


def graphs():
    g = random_graph(num_nodes=40, num_edges=240, num_etypes=12, seed=1)
    gen = torch.Generator().manual_seed(2)
    hub_src = torch.cat([g.src, torch.randint(0, 36, (500,), generator=gen)])
    hub_dst = torch.cat([g.dst, torch.full((500,), 5)])
    hub_etype = torch.cat([g.etype, torch.randint(0, 12, (500,), generator=gen)])
    return {
        "random": (g.src, g.dst, g.etype, 40),
        "hub": (hub_src, hub_dst, hub_etype, 40),
        "no_edges": (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                     torch.zeros(0, dtype=torch.long), 10),
    }


GRAPHS = graphs()


def randomise(module, gen):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=gen) * 0.5)


def compare(ours, theirs, ours_call, theirs_call, x):
    """Outputs and the gradients of the input and every parameter, float64 (rounding only)."""
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = ours_call(x_ours), theirs_call(x_theirs)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-10, atol=1e-10)
    up = torch.randn(out_theirs.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (out_ours * up).sum().backward()
    (out_theirs * up).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-10, atol=1e-10)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        want = theirs_params[name].grad
        want = torch.zeros_like(p) if want is None else want
        got = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)


PYG_CONFIGS = {
    "mean": {}, "add": {"aggr": "add"}, "bases": {"num_bases": 3}, "blocks": {"num_blocks": 2},
    "no_root_no_bias": {"root_weight": False, "bias": False},
}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("config", PYG_CONFIGS)
@pytest.mark.parametrize("cls", ["RGCNConv", "FastRGCNConv"])
def test_pyg_rgcn(cls, config, graph):
    src, dst, etype, n = GRAPHS[graph]
    kwargs = PYG_CONFIGS[config]
    theirs = getattr(pyg_nn, cls)(6, 4, 12, **kwargs).double()
    randomise(theirs, torch.Generator().manual_seed(3))
    ours = getattr(ppyg, cls)(6, 4, 12, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    edge_index = torch.stack([src, dst])
    x = torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    compare(ours, theirs, lambda v: ours(v, edge_index, etype), lambda v: theirs(v, edge_index, etype), x)


@pytest.mark.parametrize("order", ["compose", "bases"])
def test_both_basis_orders_give_the_same_numbers(order, monkeypatch):
    import pigeon.nn.pyg
    monkeypatch.setattr(pigeon.nn.pyg, "bases_order", lambda *a, **k: order)
    test_pyg_rgcn("RGCNConv", "bases", "hub")


def test_the_cost_model_picks_the_order():
    src, dst, etype, n = GRAPHS["random"]
    g = ppyg.graph_from_edge_index(torch.stack([src, dst]), etype, n, 12)
    x = torch.randn(n, 6, dtype=torch.float64)
    few = bases_order(g, x, torch.randn(2, 6, 4, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64))
    many = bases_order(g, x, torch.randn(2, 6, 4, dtype=torch.float64), torch.randn(100000, 2, dtype=torch.float64))
    assert {few, many} == {"compose", "bases"} and many == "bases"


def test_pyg_graph_is_rebuilt_when_edges_change():
    src, dst, etype, n = GRAPHS["random"]
    theirs = pyg_nn.RGCNConv(6, 4, 12).double()
    ours = ppyg.RGCNConv(6, 4, 12).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(n, 6, dtype=torch.float64)
    edge_index = torch.stack([src, dst])
    ours(x, edge_index, etype)
    edge_index[1] = edge_index[1].flip(0)  # the same tensor, changed in place
    torch.testing.assert_close(ours(x, edge_index, etype), theirs(x, edge_index, etype), rtol=1e-10, atol=1e-10)


DGL_CONFIGS = {
    "plain": {}, "basis": {"regularizer": "basis", "num_bases": 3}, "bdd": {"regularizer": "bdd", "num_bases": 2},
    "layer_norm": {"layer_norm": True, "activation": torch.relu}, "no_loop_no_bias": {"self_loop": False, "bias": False},
}


def dgl_cases():
    cases = {}
    for name, (src, dst, etype, n) in GRAPHS.items():
        cases[name] = (dgl.graph((src, dst), num_nodes=n), etype)
    g, etype = cases["hub"]
    seeds = torch.arange(12)
    block = dgl.to_block(dgl.in_subgraph(g, seeds), seeds)  # the in-edges of 12 seed nodes
    cases["block"] = (block, etype[block.edata[dgl.EID]])
    return cases


DGL_CASES = dgl_cases()


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("graph", DGL_CASES)
@pytest.mark.parametrize("config", DGL_CONFIGS)
def test_dgl_relgraphconv(config, graph, norm):
    g, etype = DGL_CASES[graph]
    theirs = dgl.nn.RelGraphConv(6, 4, 12, **DGL_CONFIGS[config]).double()
    randomise(theirs, torch.Generator().manual_seed(5))
    ours = pdgl.RelGraphConv(6, 4, 12, **DGL_CONFIGS[config]).double()
    ours.load_state_dict(theirs.state_dict())
    w = torch.rand(g.num_edges(), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) if norm else None
    x = torch.randn(g.num_src_nodes(), 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    compare(ours, theirs, lambda v: ours(g, v, etype, w), lambda v: theirs(g, v, etype, w), x)


@pytest.mark.parametrize("regularizer", [None, "basis", "bdd"])
def test_dgl_typed_linear(regularizer):
    kwargs = {"regularizer": regularizer, "num_bases": 2 if regularizer else None}
    theirs = dgl.nn.TypedLinear(6, 4, 5, **kwargs).double()
    randomise(theirs, torch.Generator().manual_seed(8))
    ours = pdgl.TypedLinear(6, 4, 5, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    types = torch.randint(0, 5, (30,), generator=torch.Generator().manual_seed(1))
    x = torch.randn(30, 6, dtype=torch.float64)
    compare(ours, theirs, lambda v: ours(v, types), lambda v: theirs(v, types), x)


FILM_CONFIGS = {"relations": {"num_relations": 12}, "one_relation": {"num_relations": 1},
                "no_act": {"num_relations": 12, "act": None}}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("config", FILM_CONFIGS)
def test_pyg_film(config, graph):
    src, dst, etype, n = GRAPHS[graph]
    kwargs = FILM_CONFIGS[config]
    theirs = pyg_nn.FiLMConv(6, 4, **kwargs).double()
    randomise(theirs, torch.Generator().manual_seed(3))
    ours = ppyg.FiLMConv(6, 4, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    edge_index = torch.stack([src, dst])
    x = torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    compare(ours, theirs, lambda v: ours(v, edge_index, etype), lambda v: theirs(v, edge_index, etype), x)


HEAT_CONFIGS = {"concat": {}, "mean_heads": {"concat": False}, "no_root_no_bias": {"root_weight": False, "bias": False}}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("config", HEAT_CONFIGS)
def test_pyg_heat(config, graph):
    src, dst, etype, n = GRAPHS[graph]
    gen = torch.Generator().manual_seed(5)
    node_type = torch.randint(0, 3, (n,), generator=gen)
    edge_attr = torch.randn(src.numel(), 2, dtype=torch.float64, generator=gen)
    args = (6, 4, 3, 12, 5, 2, 3)
    theirs = pyg_nn.HEATConv(*args, heads=2, **HEAT_CONFIGS[config]).double()
    randomise(theirs, torch.Generator().manual_seed(6))
    ours = ppyg.HEATConv(*args, heads=2, **HEAT_CONFIGS[config]).double()
    ours.load_state_dict(theirs.state_dict())
    edge_index = torch.stack([src, dst])
    x = torch.randn(n, 6, dtype=torch.float64, generator=gen)
    compare(ours, theirs, lambda v: ours(v, edge_index, node_type, etype, edge_attr),
            lambda v: theirs(v, edge_index, node_type, etype, edge_attr), x)


HGT_CONFIGS = {"plain": {"dropout": 0.0}, "norm": {"dropout": 0.0, "use_norm": True},
               "residual": {"dropout": 0.0, "in_size": 5}}


@pytest.mark.parametrize("graph", DGL_CASES)
@pytest.mark.parametrize("config", HGT_CONFIGS)
def test_dgl_hgt(config, graph):
    g, etype = DGL_CASES[graph]
    kwargs = dict(HGT_CONFIGS[config])
    in_size = kwargs.pop("in_size", 6)
    theirs = dgl.nn.HGTConv(in_size, 3, 2, 3, 12, **kwargs).double()
    randomise(theirs, torch.Generator().manual_seed(5))
    ours = pdgl.HGTConv(in_size, 3, 2, 3, 12, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    ntype = torch.randint(0, 3, (g.num_src_nodes(),), generator=torch.Generator().manual_seed(2))
    x = torch.randn(g.num_src_nodes(), in_size, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    compare(ours, theirs, lambda v: ours(g, v, ntype, etype), lambda v: theirs(g, v, ntype, etype), x)


def test_dgl_hgt_dropout_draws_as_dgl():
    g, etype = DGL_CASES["random"]
    theirs = dgl.nn.HGTConv(6, 3, 2, 3, 12, dropout=0.3).double()
    ours = pdgl.HGTConv(6, 3, 2, 3, 12, dropout=0.3).double()
    ours.load_state_dict(theirs.state_dict())
    ntype = torch.randint(0, 3, (g.num_src_nodes(),), generator=torch.Generator().manual_seed(2))
    x = torch.randn(g.num_src_nodes(), 6, dtype=torch.float64)
    torch.manual_seed(11)
    want = theirs(g, x, ntype, etype)
    torch.manual_seed(11)
    torch.testing.assert_close(ours(g, x, ntype, etype), want, rtol=1e-10, atol=1e-10)


def test_graph_from_pyg_data_and_hetero_data():
    from torch_geometric.data import Data, HeteroData
    src, dst, etype, n = GRAPHS["random"]
    ntype = torch.arange(n) % 3
    g = pigeon.Graph.from_pyg(Data(edge_index=torch.stack([src, dst]), edge_type=etype, node_type=ntype, num_nodes=n))
    assert torch.equal(g.src, src) and torch.equal(g.dst, dst) and torch.equal(g.etype, etype)
    assert torch.equal(g.ntype, ntype) and g.num_nodes == n

    hetero = HeteroData()
    hetero["author"].x = torch.randn(3, 4)
    hetero["paper"].x = torch.randn(5, 4)
    hetero["author", "writes", "paper"].edge_index = torch.tensor([[0, 1, 2], [4, 0, 0]])
    hetero["paper", "cites", "paper"].edge_index = torch.tensor([[1, 2], [3, 3]])
    g = pigeon.Graph.from_pyg(hetero)
    assert g.ntype_names == ("author", "paper") and g.etype_names == ("writes", "cites") and g.num_nodes == 8
    # paper i is node 3 + i; author i is node i
    assert sorted(zip(g.src.tolist(), g.dst.tolist(), g.etype.tolist())) == [(0, 7, 0), (1, 3, 0), (2, 3, 0), (4, 6, 1), (5, 6, 1)]
    x = g.pack({"author": hetero["author"].x, "paper": hetero["paper"].x})
    torch.testing.assert_close(g.unpack(x)["paper"], hetero["paper"].x)
