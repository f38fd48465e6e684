"""GraphSAGE per relation (mean aggregator; as HeteroGraphConv of SAGEConv summed over
relations): each relation keeps its own neighbour weight,

    out_v = W_self h_v + sum_r W_r mean_{u in N_r(v)} h_u + b"""
import torch

import pigeon
from pigeon.lang import linear, sum


def example_inputs(g, feats=16, heads=1, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    return rand(g.num_nodes, feats), rand(feats, feats), rand(g.num_etypes, feats, feats), rand(feats)


@pigeon.compile(example_inputs=example_inputs)
def rsage(g, h, self_weight, neigh_weight, bias):
    for e in g.edges():
        e.msg = linear(h[e.src] / e.dst_etype_degree, neigh_weight[e.etype])
    for n in g.dst_nodes():
        n.out = linear(h[n], self_weight) + sum(e.msg for e in n.incoming_edges()) + bias
    return n.out
