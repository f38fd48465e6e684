"""HGT (Hu et al.) in the loop DSL: DGL's HGTConv without dropout and layer norm.

    k = h_u K[t_u], q = h_v Q[t_v], v = h_u V[t_u]                         (H heads of size d)
    score = (k W_att[r]) . q * pri[r] / sqrt(d),  agg_v = sum softmax_v(score) (v W_msg[r])
    out_v = agg_v A[t_v];  with skip: s = sigmoid(skip[t_v]), out = s out + (1 - s) h_v
"""
import math

import torch

import pigeon
from pigeon.lang import dot, dropout, linear, sigmoid, softmax, sum


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    """Random arguments of ``hgt`` for graph ``g``: ``feats`` features in and out, in ``heads`` heads."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    t, r, size = g.num_ntypes, g.num_etypes, feats // heads
    hd = heads * size
    residual = rand(feats, hd) if feats != hd else None
    return (rand(g.num_nodes, feats), rand(t, feats, hd), rand(t, feats, hd), rand(t, feats, hd),
            rand(r, heads, size, size), rand(r, heads, size, size), rand(r, heads), rand(t, hd, hd),
            rand(t), residual)


@pigeon.compile(example_inputs=example_inputs)
def hgt(g, h, k_weight, q_weight, v_weight, relation_att, relation_msg, relation_pri,
        out_weight, skip=None, residual_w=None, p=0.0, training=False, edge_weight=None,
        return_attention=False):
    """``edge_weight`` ([E, 1]) scales each edge's attention after the softmax; ``return_attention``
    also returns the attention [E, H]."""
    heads, size = relation_att.shape[1], relation_att.shape[-1]
    for n in g.nodes():
        n.k = linear(h[n], k_weight[n.ntype]).reshape(heads, size)
        n.v = linear(h[n], v_weight[n.ntype]).reshape(heads, size)
    for n in g.dst_nodes():
        n.q = linear(h[n], q_weight[n.ntype]).reshape(heads, size)
    for e in g.edges():
        key = linear(e.src.k, relation_att[e.etype])  # one d x d matrix per relation and head
        prior = relation_pri[e.etype].reshape(heads, 1)
        e.score = dot(key, e.dst.q) * prior / math.sqrt(size)
        e.msg = linear(e.src.v, relation_msg[e.etype])
    for n in g.dst_nodes():
        if edge_weight is None:
            agg = sum(softmax(e.score) * e.msg for e in n.incoming_edges()).reshape(heads * size)
        else:
            agg = sum(softmax(e.score) * edge_weight[e] * e.msg for e in n.incoming_edges()).reshape(heads * size)
        out = dropout(linear(agg, out_weight[n.ntype]), p, training)  # as DGL's HGTConv: nothing without p
        if skip is not None:
            gate = sigmoid(skip[n.ntype])
            x = h[n] if residual_w is None else linear(h[n], residual_w)
            out = gate * out + (1 - gate) * x
        n.out = out
    if return_attention:
        for e in g.edges():
            e.attention = softmax(e.score).reshape(heads)
        return n.out, e.attention
    return n.out
