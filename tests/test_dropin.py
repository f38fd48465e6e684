"""The drop-in layers (pigeon.nn.pyg, pigeon.nn.dgl) against PyG's and DGL's own classes: the
peer's state_dict loads into Pigeon's layer, and the outputs and the gradients of the input and
of every parameter match in float64, on graphs with relations without edges, isolated nodes,
self loops, multi-edges, a hub, no edges at all, and a DGL sampled block.
Runs in the DGL environment (``pytest -m dgl``)."""
from __future__ import annotations

import itertools

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
from random_graphs import EDGE_CASES, edge_case_graph, random_graph  # noqa: E402

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
    compare_outputs(ours, theirs, ours_call(x_ours), theirs_call(x_theirs), [(x_ours, x_theirs)])


def compare_outputs(ours, theirs, out_ours, out_theirs, inputs):
    """Outputs (a tensor or a dict of them) and the gradients of ``inputs`` (pairs of leaves:
    ours, theirs) and of every parameter, float64; both layers have the same parameter names."""
    if isinstance(out_theirs, dict):
        assert list(out_ours) == list(out_theirs)
        out_ours, out_theirs = list(out_ours.values()), list(out_theirs.values())
    else:
        out_ours, out_theirs = [out_ours], [out_theirs]
    gen = torch.Generator().manual_seed(9)
    loss_ours = loss_theirs = 0
    for a, b in zip(out_ours, out_theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        up = torch.randn(b.shape, dtype=torch.float64, generator=gen)
        loss_ours, loss_theirs = loss_ours + (a * up).sum(), loss_theirs + (b * up).sum()
    loss_ours.backward()
    loss_theirs.backward()
    for mine, peer in inputs:
        torch.testing.assert_close(mine.grad, peer.grad, rtol=1e-10, atol=1e-10)
    theirs_params = dict(theirs.named_parameters())
    assert set(theirs_params) == {name for name, _ in ours.named_parameters()}
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


def peer_and_ours(module, cls_name, *args, seed=3, **kwargs):
    theirs = getattr(pyg_nn, cls_name)(*args, **kwargs).double()
    randomise(theirs, torch.Generator().manual_seed(seed))
    ours = getattr(module, cls_name)(*args, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


FEATURELESS_CASES = [(config, "none", "hub") for config in ("mean", "add", "bases", "no_root_no_bias")] + [
    ("mean", "indices", "hub"), ("bases", "indices", "random"), ("bases", "none", "no_edges")]


@pytest.mark.parametrize("config, nodes, graph", FEATURELESS_CASES)
@pytest.mark.parametrize("cls", ["RGCNConv", "FastRGCNConv"])
def test_pyg_rgcn_featureless(cls, config, nodes, graph):
    """x=None or node indices: the weights' rows are the nodes' embeddings (FastRGCNConv takes a
    message's rows at the source's position, as PyG's does)."""
    src, dst, etype, n = GRAPHS[graph]
    ours, theirs = peer_and_ours(ppyg, cls, n, 4, 12, **PYG_CONFIGS[config])
    x = None if nodes == "none" else torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(4))
    edge_index = torch.stack([src, dst])
    compare_outputs(ours, theirs, ours(x, edge_index, etype), theirs(x, edge_index, etype), [])


def test_pyg_rgcn_featureless_refuses_blocks():
    conv = ppyg.RGCNConv(6, 4, 2, num_blocks=2)
    with pytest.raises(ValueError, match="Block-diagonal"):
        conv(None, torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 1]))


RGAT_CONFIGS = {
    "additive": {},
    "heads_mean": {"heads": 2, "concat": False},
    "multiplicative": {"attention_mode": "multiplicative-self-attention", "dim": 2, "heads": 2},
    "multiplicative_mean": {"attention_mode": "multiplicative-self-attention", "dim": 2, "heads": 2, "concat": False},
    "bases": {"num_bases": 3, "heads": 2},
    "blocks": {"num_blocks": 2, "heads": 2},
    "edge_attr": {"edge_dim": 3, "heads": 2},
    "edge_attr_multiplicative": {"edge_dim": 3, "attention_mode": "multiplicative-self-attention", "dim": 2},
    "mod_additive": {"mod": "additive", "heads": 2},
    "mod_scaled": {"mod": "scaled", "heads": 2, "attention_mode": "multiplicative-self-attention", "dim": 2},
    "mod_f_additive": {"mod": "f-additive", "heads": 2},
    "mod_f_scaled": {"mod": "f-scaled", "heads": 2, "concat": False},
    "no_bias_slope": {"bias": False, "negative_slope": 0.1},
    "within": {"attention_mechanism": "within-relation", "heads": 2},
    "within_multiplicative": {"attention_mechanism": "within-relation", "dim": 2, "mod": "f-scaled",
                              "attention_mode": "multiplicative-self-attention"},
}


def check_rgat(config, src, dst, etype, n, num_relations):
    kwargs = RGAT_CONFIGS[config]
    ours, theirs = peer_and_ours(ppyg, "RGATConv", 6, 4, num_relations, **kwargs)
    gen = torch.Generator().manual_seed(4)
    edge_index = torch.stack([src, dst])
    edge_attr = torch.randn(src.numel(), 3, dtype=torch.float64, generator=gen) if "edge_dim" in kwargs else None
    x = torch.randn(n, 6, dtype=torch.float64, generator=gen)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, (index_ours, alpha_ours) = ours(x_ours, edge_index, etype, edge_attr, return_attention_weights=True)
    out_theirs, (_, alpha_theirs) = theirs(x_theirs, edge_index, etype, edge_attr, return_attention_weights=True)
    assert index_ours is edge_index
    torch.testing.assert_close(alpha_ours, alpha_theirs, rtol=1e-10, atol=1e-10)
    compare_outputs(ours, theirs, out_ours, out_theirs, [(x_ours, x_theirs)])


RGAT_CASES = [(config, "random") for config in RGAT_CONFIGS] + [
    (config, "hub") for config in ("additive", "multiplicative_mean", "edge_attr", "mod_scaled", "within")] + [
    (config, "no_edges") for config in ("heads_mean", "mod_f_scaled")]


@pytest.mark.parametrize("config, graph", RGAT_CASES)
def test_pyg_rgat(config, graph):
    check_rgat(config, *GRAPHS[graph], 12)


@pytest.mark.parametrize("kind, config", zip(EDGE_CASES, itertools.cycle(
    ["multiplicative_mean", "mod_scaled", "within", "edge_attr", "heads_mean", "within_multiplicative", "blocks"])))
def test_pyg_rgat_adversarial(kind, config):
    g = edge_case_graph(kind, seed=1)
    check_rgat(config, g.src, g.dst, g.etype, g.num_nodes, g.num_etypes)


@pytest.mark.parametrize("mode", ["additive-self-attention", "multiplicative-self-attention"])
def test_pyg_rgat_dropout_draws_as_pyg(mode):
    src, dst, etype, n = GRAPHS["random"]
    ours, theirs = peer_and_ours(ppyg, "RGATConv", 6, 4, 12, heads=2, dropout=0.4, attention_mode=mode,
                                 dim=1 if mode.startswith("additive") else 2)
    x, edge_index = torch.randn(n, 6, dtype=torch.float64), torch.stack([src, dst])
    torch.manual_seed(11)
    want = theirs(x, edge_index, etype)
    torch.manual_seed(11)
    torch.testing.assert_close(ours(x, edge_index, etype), want, rtol=1e-10, atol=1e-10)


def test_pyg_rgat_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="attention mechanism"):
        ppyg.RGATConv(6, 4, 3, attention_mechanism="within")
    with pytest.raises(ValueError, match="mod must be None with dropout"):
        ppyg.RGATConv(6, 4, 3, mod="scaled", dropout=0.2)
    with pytest.raises(TypeError, match="aggr"):
        ppyg.RGATConv(6, 4, 3, aggr="mean")
    conv = ppyg.RGATConv(6, 4, 3)
    x, edge_index, edge_type = torch.randn(3, 6), torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="edge_dim"):
        conv(x, edge_index, edge_type, torch.randn(2, 2))
    with pytest.raises(ValueError, match="size"):
        conv(x, edge_index, edge_type, size=(3, 2))
    assert conv(x, edge_index, edge_type, size=(3, 3)).shape == (3, 4)


HGT_METADATA = (["author", "paper", "term"],
                [("author", "writes", "paper"), ("paper", "cites", "paper"), ("paper", "written_by", "author"),
                 ("term", "describes", "paper")])  # term has no incoming edge type: no output


def hetero_graph(kind, sizes={"author": 7, "paper": 9, "term": 4}, seed=1):
    """x_dict sizes and an edge_index_dict: random, a hub paper, one edge type left out, or no edges."""
    gen = torch.Generator().manual_seed(seed)
    edges = {}
    for edge_type in HGT_METADATA[1]:
        count = 0 if kind == "no_edges" else 15
        src = torch.randint(0, sizes[edge_type[0]], (count,), generator=gen)
        dst = torch.randint(0, sizes[edge_type[2]], (count,), generator=gen)
        if kind == "hub" and edge_type[2] == "paper":
            dst[:10] = 2
        edges[edge_type] = torch.stack([src, dst])
    if kind == "missing_type":
        del edges[("paper", "written_by", "author")]  # authors get no messages, but an output
    return sizes, edges


def check_hgt(in_channels, sizes, edges, metadata=HGT_METADATA, heads=2):
    ours, theirs = peer_and_ours(ppyg, "HGTConv", in_channels, 6, metadata, heads=heads)
    gen = torch.Generator().manual_seed(4)
    width = in_channels if isinstance(in_channels, dict) else {t: in_channels for t in metadata[0]}
    x = {t: torch.randn(n, width[t], dtype=torch.float64, generator=gen) for t, n in sizes.items()}
    x_ours = {t: v.clone().requires_grad_() for t, v in x.items()}
    x_theirs = {t: v.clone().requires_grad_() for t, v in x.items()}
    out_ours, out_theirs = ours(x_ours, edges), theirs(x_theirs, edges)
    used = [t for t in x if t in out_theirs or any(t == e[0] for e in edges)]
    compare_outputs(ours, theirs, out_ours, out_theirs, [(x_ours[t], x_theirs[t]) for t in used])
    return out_ours


HGT_IN_CHANNELS = {"skip": 6, "no_skip": 5, "mixed": {"author": 6, "paper": 3, "term": 8}}


@pytest.mark.parametrize("channels, graph", [(channels, graph) for channels in ("skip", "mixed") for graph in (
    "random", "hub", "missing_type", "no_edges")] + [("no_skip", "random")])
def test_pyg_hgt(channels, graph):
    out = check_hgt(HGT_IN_CHANNELS[channels], *hetero_graph(graph))
    assert list(out) == ["author", "paper"]  # no output for term, which no edge type reaches


def test_pyg_hgt_from_hetero_data():
    from torch_geometric.data import HeteroData
    sizes, edges = hetero_graph("random")
    data = HeteroData()
    for t, n in sizes.items():
        data[t].x = torch.randn(n, 6, dtype=torch.float64)
    for edge_type, edge_index in edges.items():
        data[edge_type].edge_index = edge_index
    ours, theirs = peer_and_ours(ppyg, "HGTConv", 6, 6, data.metadata(), heads=3)
    x_dict, edge_index_dict = data.x_dict, data.edge_index_dict
    compare_outputs(ours, theirs, ours(x_dict, edge_index_dict), theirs(x_dict, edge_index_dict), [])


@pytest.mark.parametrize("kind", EDGE_CASES)
def test_pyg_hgt_adversarial(kind):
    """The adversarial graphs as heterographs: node type t<k> per node, one edge type per
    (source type, relation, destination type) that occurs."""
    g = edge_case_graph(kind, seed=1)
    ntype, src, dst, etype = g.ntype, g.src, g.dst, g.etype
    names = [f"t{i}" for i in range(g.num_ntypes)]
    local = torch.zeros_like(ntype)
    for t in range(g.num_ntypes):
        local[ntype == t] = torch.arange(int((ntype == t).sum()))
    edges = {}
    for s, r, d in sorted(set(zip(ntype[src].tolist(), etype.tolist(), ntype[dst].tolist()))):
        mask = (ntype[src] == s) & (etype == r) & (ntype[dst] == d)
        edges[(names[s], f"r{r}", names[d])] = torch.stack([local[src[mask]], local[dst[mask]]])
    if not edges:  # PyG needs one edge type in the call (it concatenates them), empty is fine
        edges[(names[0], "r0", names[0])] = torch.zeros(2, 0, dtype=torch.long)
    metadata = (names, list(edges))
    sizes = {t: int((ntype == i).sum()) for i, t in enumerate(names)}
    check_hgt(6, sizes, edges, metadata)


def test_pyg_hgt_state_dict_keys_match_pyg_with_dotted_names():
    metadata = (["a", "b"], [("a", "to", "b"), ("b", "back.x", "a")])  # p_rel stores "b__back#x__a"
    theirs = pyg_nn.HGTConv(4, 4, metadata)
    ours = ppyg.HGTConv(4, 4, metadata)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())


def test_the_dropin_benchmark_checks_every_layer_before_timing(tmp_path, capsys):
    """`pigeon bench dropin`: every drop-in layer is built beside its peer's class, checked equal
    and timed in both modes; a geometric mean is printed for each."""
    import json

    from pigeon.cli import main
    out = tmp_path / "dropin.json"
    assert main(["bench", "dropin", "--datasets", "aifb", "--scale", "0.05", "--repeat", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    layers = {r["layer"] for r in rows}
    assert {"PyG RGCNConv (num_bases)", "PyG HEATConv", "DGL RelGraphConv (bdd, 4 blocks)", "DGL HGTConv",
            "DGL HeteroGraphConv (SAGEConv)", "DGL HeteroGraphConv (GATConv)"} <= layers
    for row in rows:
        assert row["status"] == "ok" and row["check"] == "same output and gradients", row
        assert row["pigeon_ms"] > 0 and row["peer_ms"] > 0
    assert {(r["layer"], r["mode"]) for r in rows} == {(name, m) for name in layers for m in ("infer", "train")}
    assert "geometric mean speed-up, train" in capsys.readouterr().out


def test_the_dropin_benchmark_runs_cases_in_fresh_processes(tmp_path):
    """With --timeout each (graph, layer) runs in its own process; one that runs too long is a
    result, and the run goes on."""
    import json

    from pigeon.benchmarks.dropin import main
    out = tmp_path / "dropin.json"
    common = ["--datasets", "aifb", "--scale", "0.05", "--repeat", "1", "--warmup", "0", "--json", str(out)]
    assert main([*common, "--layers", "HEATConv", "--timeout", "600"]) == 0
    rows = json.loads(out.read_text())
    assert [(r["layer"], r["mode"], r["status"]) for r in rows] == [
        ("PyG HEATConv", "infer", "ok"), ("PyG HEATConv", "train", "ok")]
    assert all(r["check"] == "same output and gradients" and r["graph"] == "aifb" for r in rows)
    assert main([*common, "--layers", "FiLMConv", "--timeout", "1"]) == 0  # importing torch takes longer
    statuses = [r["status"] for r in json.loads(out.read_text())]
    # a fast machine may reach the first stage within the second; the status then names it
    assert len(statuses) == 2 and all(s in ("timeout after 1 s", "timeout after 1 s (loading the graph)")
                                      for s in statuses), statuses


def test_a_case_stopped_for_time_keeps_what_finished_and_says_which_side_was_slow():
    import json

    from pigeon.benchmarks.dropin import _partial
    failed = [{"layer": "L", "mode": m, "graph": "am"} for m in ("infer", "train")]
    infer = {"layer": "L", "mode": "infer", "status": "ok", "check": "same output and gradients",
             "pigeon_ms": 1.0, "peer_ms": 3.0, "speedup": 3.0}
    output = "\n".join(["stage: loading the graph", "stage: timing Pigeon (inference)", "row: " + json.dumps(infer),
                        "stage: timing Pigeon (training)", "stage: timing the peer (training)"])
    rows = _partial(output.encode(), failed, "timeout after 240 s")
    assert rows == [{**infer, "graph": "am"},
                    {"layer": "L", "mode": "train", "graph": "am",
                     "status": "timeout after 240 s (timing the peer (training))"}]
    assert [r["status"] for r in _partial(None, failed, "OOM (killed)")] == ["OOM (killed)"] * 2


def test_a_float32_difference_that_vanishes_in_float64_is_summation_order(monkeypatch):
    """`pigeon bench dropin` checks again in float64 what differs in float32: a difference that
    shrinks with the precision is rounding, noted as such; a wrong formula stays a mismatch."""
    import dataclasses

    from pigeon.benchmarks import case as bench_case
    from pigeon.benchmarks import dropin
    data = pigeon.datasets.load("aifb", scale=0.05, seed=0, feat_dim=16)
    d = dropin.inputs_of(data.graph)
    layer = next(c for c in dropin.drop_ins(16, 4) if c.name == "PyG RGCNConv (num_bases)")
    strict = lambda dtype: 1e-3 * torch.finfo(dtype).eps  # noqa: E731  (float32 sums now differ)
    monkeypatch.setattr(bench_case, "tolerance", strict)
    monkeypatch.setattr(dropin, "tolerance", strict)
    (row, _) = dropin.compare(layer, d, data.features, warmup=0, repeat=1)
    assert row["check"].startswith("same output and gradients in float64 (float32 differs by summation order")

    def wrong_peer(graph):  # a formula off by 0.1%: its inputs scaled
        peer = layer.peer(graph)
        peer.register_forward_pre_hook(lambda module, args: (args[0] * 1.001, *args[1:]))
        return peer
    (row, _) = dropin.compare(dataclasses.replace(layer, peer=wrong_peer), d, data.features, warmup=0, repeat=1)
    assert row["check"].startswith("MISMATCH"), row["check"]
    # a gradient that is zero on one side is never rounding
    assert dropin._relative_error(torch.zeros(3), torch.ones(3)) == float("inf")
    assert dropin._relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
