"""Relational GIN (R-GIN, as in Schlichtkrull-style GIN layers for multi-relational graphs): the
relation-typed neighbour sum goes through GIN's two-layer MLP with a learnable self weight:

    out_v = W_2 relu(W_1 ((1 + eps) W_0 h_v + sum_r sum_{u in N_r(v)} W_r h_u) + b_1) + b_2"""
import torch

import pigeon
from pigeon.lang import linear, relu, sum


def example_inputs(g, feats=16, heads=1, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    return (rand(g.num_nodes, feats), rand(g.num_etypes, feats, feats), rand(feats, feats), rand(1),
            rand(feats, feats), rand(feats), rand(feats, feats), rand(feats))


@pigeon.compile(example_inputs=example_inputs)
def rgin(g, h, weight, self_weight, eps, w1, b1, w2, b2):
    for e in g.edges():
        e.msg = linear(h[e.src], weight[e.etype])
    for n in g.dst_nodes():
        total = (1.0 + eps) * linear(h[n], self_weight) + sum(e.msg for e in n.incoming_edges())
        n.out = linear(relu(linear(total, w1) + b1), w2) + b2
    return n.out
