"""pigeon.nn.pyg.HANConv against PyG's own HANConv: PyG's state_dict loads into Pigeon's layer, and
the outputs, the semantic attention weights and the gradients of every input and parameter match
in float64, on random heterographs and adversarial ones (an edge type without edges, a node type
whose edge types all lack edges, isolated nodes, self loops, multi-edges, a hub, a node type that
is only a source, a node type without nodes, many edge types), on the reference and C++ back ends.
Runs in the DGL environment (``pytest -m dgl``), which has PyG."""
from __future__ import annotations

import itertools

import pytest
import torch

tg = pytest.importorskip("torch_geometric")
import torch_geometric.nn as pyg_nn  # noqa: E402

import pigeon  # noqa: E402
import pigeon.nn.pyg as ppyg  # noqa: E402

pytestmark = pytest.mark.dgl

BACKENDS = pytest.mark.parametrize("backend", ["reference", "cpp"], indirect=True)
TOL = dict(rtol=1e-10, atol=1e-10)  # float64: summation order only

SIZES = {"author": 7, "paper": 9, "term": 4}
EDGE_TYPES = [("author", "writes", "paper"), ("paper", "cites", "paper"), ("paper", "written_by", "author"),
              ("term", "describes", "paper")]  # term is only a source: its output is None


def edge_index(src_nodes, dst_nodes, count, gen):
    return torch.stack([torch.randint(0, src_nodes, (count,), generator=gen),
                        torch.randint(0, dst_nodes, (count,), generator=gen)])


def hetero_graph(kind, seed=1):
    """(metadata, x_dict sizes, edge_index_dict) of one kind of heterograph."""
    gen = torch.Generator().manual_seed(seed)
    sizes, edge_types = dict(SIZES), list(EDGE_TYPES)
    edges = {key: edge_index(sizes[key[0]], sizes[key[2]], 15, gen) for key in edge_types}
    if kind == "empty_relation":  # an edge type without edges still takes part in paper's softmax
        edge_types.append(("author", "reviews", "paper"))
        edges[("author", "reviews", "paper")] = torch.zeros(2, 0, dtype=torch.long)
    elif kind == "all_empty_into":  # author's only edge type has no edges: outputs 0, attention 1
        edges[("paper", "written_by", "author")] = torch.zeros(2, 0, dtype=torch.long)
    elif kind == "missing_type":  # in metadata, not in the call: not in paper's softmax
        del edges[("term", "describes", "paper")]
    elif kind == "isolated":  # papers 4.. and authors 3.. have no incoming edges
        edges = {key: edge_index(sizes[key[0]], 4 if key[2] == "paper" else 3, 15, gen) for key in edge_types}
    elif kind == "self_loops":
        loops = torch.arange(sizes["paper"]).repeat(2, 1)
        edges[("paper", "cites", "paper")] = torch.cat([loops, loops[:, :3]], dim=1)  # and three doubled
    elif kind == "multi_edges":  # three distinct edges per type, each repeated up to six times
        copies = 1 + torch.randint(0, 6, (3,), generator=gen)
        edges = {key: edge_index(sizes[key[0]], sizes[key[2]], 3, gen).repeat_interleave(copies, dim=1)
                 for key in edge_types}
    elif kind == "hub":
        edges[("author", "writes", "paper")][1, :12] = 2
        edges[("paper", "cites", "paper")][1, :] = 2
    elif kind == "unused_type":  # a node type of x_dict that no edge type of the call touches
        del edges[("term", "describes", "paper")]
        edge_types.remove(("term", "describes", "paper"))
    elif kind == "no_nodes":  # a destination type without nodes: an empty output, no attention
        sizes["venue"] = 0
        edge_types.append(("paper", "published_in", "venue"))
        edges[("paper", "published_in", "venue")] = torch.zeros(2, 0, dtype=torch.long)
    elif kind == "no_edges":
        edges = {key: torch.zeros(2, 0, dtype=torch.long) for key in edge_types}
    elif kind == "many_types":  # 24 edge types between two node types, some without edges
        sizes = {"u": 6, "v": 5}
        edge_types = [(s, f"r{i}", d) for i, (s, d) in enumerate(itertools.islice(
            itertools.cycle([("u", "v"), ("v", "u"), ("v", "v"), ("u", "u")]), 24))]
        edges = {key: edge_index(sizes[key[0]], sizes[key[2]], [0, 1, 4, 9][i % 4], gen)
                 for i, key in enumerate(edge_types)}
    elif kind == "one_node":
        sizes = {"n": 1}
        edge_types = [("n", "loop", "n"), ("n", "none", "n")]
        edges = {edge_types[0]: torch.zeros(2, 2, dtype=torch.long),
                 edge_types[1]: torch.zeros(2, 0, dtype=torch.long)}
    elif kind == "reordered":  # x_dict and edge_index_dict in other orders than metadata
        sizes = dict(reversed(list(sizes.items())))
        edges = dict(reversed(list(edges.items())))
    elif kind != "random":
        raise ValueError(kind)
    return (list(SIZES if kind == "reordered" else sizes), edge_types), sizes, edges


def peer_and_ours(in_channels, out_channels, metadata, seed=3, **kwargs):
    theirs = pyg_nn.HANConv(in_channels, out_channels, metadata, **kwargs).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=gen) * 0.5)
    ours = ppyg.HANConv(in_channels, out_channels, metadata, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def widths(in_channels, metadata):
    if in_channels == "dict":
        return {t: 3 + i % 4 for i, t in enumerate(metadata[0])}
    return in_channels


def assert_same_dicts(ours, theirs):
    assert list(ours) == list(theirs)
    for t in theirs:
        assert (ours[t] is None) == (theirs[t] is None), t
        if theirs[t] is not None:
            torch.testing.assert_close(ours[t], theirs[t], **TOL, msg=t)


def check(kind, heads=2, in_channels=5, semantic=True, out_channels=6, backend=None, **kwargs):
    """Forward and backward of Pigeon's HANConv and PyG's on one heterograph, float64 (on
    ``backend``, where given)."""
    metadata, sizes, edges = hetero_graph(kind)
    in_channels = widths(in_channels, metadata)
    ours, theirs = peer_and_ours(in_channels, out_channels, metadata, heads=heads, **kwargs)
    width = in_channels if isinstance(in_channels, dict) else {t: in_channels for t in sizes}
    gen = torch.Generator().manual_seed(4)
    x = {t: torch.randn(n, width[t], dtype=torch.float64, generator=gen) for t, n in sizes.items()}
    x_ours = {t: v.clone().requires_grad_() for t, v in x.items()}
    x_theirs = {t: v.clone().requires_grad_() for t, v in x.items()}
    torch.manual_seed(11)  # the same dropout masks, where there is dropout
    with pigeon.use_backend(backend):
        out_ours = ours(x_ours, edges, return_semantic_attention_weights=semantic)
    if backend is not None and ours.last_executable is not None:
        assert ours.last_executable.backend == backend
    torch.manual_seed(11)
    out_theirs = theirs(x_theirs, edges, return_semantic_attention_weights=semantic)
    if semantic:
        (out_ours, attn_ours), (out_theirs, attn_theirs) = out_ours, out_theirs
        assert_same_dicts(attn_ours, attn_theirs)
    else:
        attn_ours = attn_theirs = {}
    assert_same_dicts(out_ours, out_theirs)
    loss_ours = loss_theirs = 0.0
    pairs = [(ours_dict[t], theirs_dict[t]) for ours_dict, theirs_dict in ((out_ours, out_theirs),
                                                                         (attn_ours, attn_theirs))
             for t in theirs_dict if theirs_dict[t] is not None]
    for a, b in pairs:
        up = torch.randn(b.shape, dtype=torch.float64, generator=gen)
        loss_ours, loss_theirs = loss_ours + (a * up).sum(), loss_theirs + (b * up).sum()
    if not isinstance(loss_theirs, torch.Tensor) or not loss_theirs.requires_grad:
        return out_ours
    loss_ours.backward()
    loss_theirs.backward()

    def grad(p):
        return torch.zeros_like(p) if p.grad is None else p.grad
    for t in x:
        torch.testing.assert_close(grad(x_ours[t]), grad(x_theirs[t]), **TOL, msg=f"x_dict[{t!r}]")
    theirs_params = dict(theirs.named_parameters())
    assert set(theirs_params) == {name for name, _ in ours.named_parameters()}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(grad(p), grad(theirs_params[name]), **TOL, msg=name)
    return out_ours


KINDS = ["empty_relation", "all_empty_into", "missing_type", "isolated", "self_loops", "multi_edges", "hub",
         "unused_type", "no_nodes", "no_edges", "many_types", "one_node", "reordered"]
CONFIGS = [dict(heads=heads, in_channels=in_channels, semantic=semantic)
           for heads, in_channels, semantic in itertools.product([1, 3], [5, "dict"], [True, False])]


@BACKENDS
@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_han_matches_pyg(config, backend):
    check("random", backend=backend, **CONFIGS[config])


@BACKENDS
@pytest.mark.parametrize("kind, config", list(zip(KINDS, itertools.cycle(range(len(CONFIGS))))))
def test_han_matches_pyg_on_adversarial_graphs(kind, config, backend):
    check(kind, backend=backend, **CONFIGS[config])


def test_outputs_of_edgeless_types_and_sources():
    out = check("all_empty_into")
    assert list(out) == ["author", "paper", "term"] and out["term"] is None  # term is only a source
    assert torch.equal(out["author"], torch.zeros_like(out["author"]))  # relu(0) weighted by attention 1


@BACKENDS
@pytest.mark.parametrize("p", [0.4, 1.0])
def test_han_dropout_draws_as_pyg(p, backend):
    """In training PyG draws one mask per edge type (on a CPU): the same numbers and gradients."""
    out = check("empty_relation", heads=2, dropout=p, backend=backend)
    if p < 1.0:  # the dropout happened: other numbers than without it
        no_dropout = check("empty_relation", heads=2)
        assert not torch.allclose(out["paper"], no_dropout["paper"])


def test_han_dropout_is_off_in_eval_mode():
    metadata, sizes, edges = hetero_graph("random")
    ours, theirs = peer_and_ours(5, 6, metadata, heads=2, dropout=0.5)
    ours.eval(), theirs.eval()
    x = {t: torch.randn(n, 5, dtype=torch.float64) for t, n in sizes.items()}
    assert_same_dicts(ours(x, edges), theirs(x, edges))


def test_han_without_edge_types_returns_none():
    metadata, sizes, _ = hetero_graph("random")
    ours, theirs = peer_and_ours(5, 6, metadata)
    x = {t: torch.randn(n, 5, dtype=torch.float64) for t, n in sizes.items()}
    out, attn = ours(x, {}, return_semantic_attention_weights=True)
    assert out == {t: None for t in x} and attn == {t: None for t in x}
    assert_same_dicts(out, theirs(x, {}))


def test_han_graph_is_rebuilt_when_edges_change():
    metadata, sizes, edges = hetero_graph("random")
    ours, theirs = peer_and_ours(5, 6, metadata, heads=2)
    x = {t: torch.randn(n, 5, dtype=torch.float64) for t, n in sizes.items()}
    assert_same_dicts(ours(x, edges), theirs(x, edges))
    edges[("paper", "cites", "paper")][1].fill_(0)  # in place: the same tensor, other values
    assert_same_dicts(ours(x, edges), theirs(x, edges))


def test_han_from_hetero_data():
    from torch_geometric.data import HeteroData
    metadata, sizes, edges = hetero_graph("random")
    data = HeteroData()
    for t, n in sizes.items():
        data[t].x = torch.randn(n, 5, dtype=torch.float64)
    for key, index in edges.items():
        data[key].edge_index = index
    ours, theirs = peer_and_ours(5, 6, data.metadata(), heads=2)
    assert_same_dicts(ours(data.x_dict, data.edge_index_dict), theirs(data.x_dict, data.edge_index_dict))


def test_han_state_dict_and_repr_match_pyg():
    metadata = (["a", "b"], [("a", "to", "b"), ("b", "back", "a")])
    theirs, ours = pyg_nn.HANConv({"a": 3, "b": 4}, 8, metadata, heads=2), ppyg.HANConv({"a": 3, "b": 4}, 8,
                                                                                       metadata, heads=2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs) == "HANConv(8, heads=2)"


def test_han_refuses_what_it_cannot_compute():
    metadata = (["a"], [("a", "to", "a")])
    with pytest.raises(ValueError, match="divisible"):
        ppyg.HANConv(4, 6, metadata, heads=4)
    with pytest.raises(ValueError, match="lazy"):
        ppyg.HANConv(-1, 6, metadata)
    with pytest.raises(TypeError, match="unsupported"):
        ppyg.HANConv(4, 6, metadata, aggr="mean")
    conv = ppyg.HANConv(4, 6, metadata)
    x, edges = {"a": torch.randn(3, 4)}, {("a", "to", "a"): torch.tensor([[0, 1], [1, 2]])}
    with pytest.raises(KeyError, match="node type 'b'"):
        conv({**x, "b": torch.randn(2, 4)}, edges)
    with pytest.raises(KeyError, match="not in the layer's metadata"):
        conv(x, {("a", "other", "a"): torch.tensor([[0], [1]])})
    with pytest.raises(pigeon.GraphError, match="out of range"):
        conv(x, {("a", "to", "a"): torch.tensor([[0], [3]])})


@pytest.mark.parametrize("backend", ["cuda_harness"], indirect=True)
def test_han_generated_cuda_on_the_cpu_harness(backend):
    """The generated CUDA kernels, run by the CUDA-on-CPU harness, on a small graph with an edge
    type without edges and a source-only node type."""
    check("empty_relation", heads=2, backend=backend)
