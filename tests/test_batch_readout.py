"""Readouts per graph of a batch (``by="graph"`` over nodes, read back as ``x[n.graph]``) and
``Graph.batch``: every back end here against plain torch in float64, forward and backward."""
import pytest
import torch

import pigeon
from pigeon.lang import linear, max, mean, sum, tanh
from random_graphs import random_graph


@pigeon.compile
def graph_readouts(g, h, W, scale):
    for n in g.nodes():
        n.z = tanh(linear(h[n], W))
    centre = mean((n.z for n in g.nodes()), by="graph")
    top = max((h[n] for n in g.nodes()), by="graph")
    size = sum((h[n] * 0.0 + 1.0 for n in g.nodes()), by="graph")
    for n in g.dst_nodes():
        n.out = (n.z - centre[n.graph]) * scale[n.graph] + sum(h[e.src] for e in n.incoming_edges()) * top[n.graph] / size[n.graph]
    return n.out


def graph_readouts_formula(g, h, W, scale):
    z = torch.tanh(h @ W)
    gid, rows = g.graph_id, g.num_graphs
    count = torch.bincount(gid, minlength=rows).to(h.dtype).unsqueeze(1)
    centre = torch.zeros(rows, z.shape[1], dtype=z.dtype).index_add(0, gid, z) / count.clamp(min=1)
    top = torch.zeros(rows, h.shape[1], dtype=h.dtype).scatter_reduce(
        0, gid.unsqueeze(1).expand_as(h), h, "amax", include_self=False)
    agg = torch.zeros(g.num_dst_nodes, h.shape[1], dtype=h.dtype).index_add(0, g.dst, h[g.src])
    return (z - centre[gid]) * scale[gid] + agg * top[gid] / count[gid]


def batch():
    parts = [random_graph(num_nodes=12, num_edges=40, num_etypes=3, seed=s, num_isolated=2) for s in range(3)]
    lonely = pigeon.Graph.from_edges(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                     torch.zeros(0, dtype=torch.long), 3, num_etypes=3)  # a graph without edges
    return pigeon.Graph.batch(parts + [lonely])


def test_batch_numbers_the_graphs():
    g = batch()
    assert g.num_graphs == 4 and g.num_nodes == 39
    assert g.graph_id.tolist() == [0] * 12 + [1] * 12 + [2] * 12 + [3] * 3
    assert int(g.src[40:80].min()) >= 12 and int(g.src[40:80].max()) < 24


def test_per_graph_readouts_match_the_formula(backend):
    import warnings
    from pigeon.codegen import FallbackWarning
    g = batch()
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen),
              torch.randn(4, 4, dtype=torch.float64, generator=gen), torch.randn(g.num_graphs, 1, dtype=torch.float64, generator=gen)]
    ours = [x.clone().requires_grad_() for x in leaves]
    refs = [x.clone().requires_grad_() for x in leaves]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # the max readout runs as generated code too
        with pigeon.use_backend(backend):
            out = graph_readouts(g, *ours)
        ref = graph_readouts_formula(g, *refs)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
        up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        got = torch.autograd.grad((out * up).sum(), ours)
    for x, y in zip(got, torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_graph_ids_are_checked():
    with pytest.raises(pigeon.GraphError, match="graph_id has 3 entries but num_nodes is 4"):
        pigeon.Graph.from_edges([0], [1], [0], 4, graph_id=[0, 0, 1])
    with pytest.raises(pigeon.GraphError, match="graph_id holds id 2, out of range for 2 graphs"):
        pigeon.Graph.from_edges([0], [1], [0], 4, graph_id=[0, 0, 1, 2], num_graphs=2)


def test_a_pyg_batch_gives_every_node_its_graph():
    data = pytest.importorskip("torch_geometric.data")
    parts = [data.Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3),
             data.Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)]
    g = pigeon.Graph.from_pyg(data.Batch.from_data_list(parts))
    assert g.num_graphs == 2 and g.graph_id.tolist() == [0, 0, 0, 1, 1]
    assert pigeon.Graph.from_pyg(parts[0]).num_graphs == 1
