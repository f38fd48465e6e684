"""Relational GAT in the loop DSL, with H heads of size D.

    z = h_u W_r,  score = leaky_relu(a_src[r] . z + a_dst[r] . (h_v W_r))   (per head)
    out_v = concat_heads sum_{e into v} softmax_v(score) z  +  bias
"""
import torch

import pigeon
from pigeon.lang import dot, leaky_relu, linear, softmax, sum


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    """Random arguments of ``rgat`` for graph ``g``: ``feats`` features in and out, in ``heads`` heads."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    r, size = g.num_etypes, feats // heads
    return (rand(g.num_nodes, feats), rand(r, feats, heads * size), rand(r, heads, size),
            rand(r, heads, size), rand(heads * size))


@pigeon.compile(example_inputs=example_inputs)
def rgat(g, h, weight, attn_src, attn_dst, bias=None, negative_slope=0.2, edge_weight=None,
         return_attention=False):
    """``edge_weight`` ([E, 1]) scales each edge's attention after the softmax (as DGL's GATConv);
    ``return_attention`` also returns the attention [E, H]."""
    heads, size = attn_src.shape[1:]
    for e in g.edges():
        z = linear(h[e.src], weight[e.etype]).reshape(heads, size)
        z_dst = linear(h[e.dst], weight[e.etype]).reshape(heads, size)
        e.score = leaky_relu(dot(z, attn_src[e.etype]) + dot(z_dst, attn_dst[e.etype]), negative_slope)
        e.msg = z
    for n in g.dst_nodes():
        if edge_weight is None:
            out = sum(softmax(e.score) * e.msg for e in n.incoming_edges())
        else:
            out = sum(softmax(e.score) * edge_weight[e] * e.msg for e in n.incoming_edges())
        out = out.reshape(heads * size)
        if bias is not None:
            out = out + bias
        n.out = out
    if return_attention:
        for e in g.edges():
            e.attention = softmax(e.score).reshape(heads)
        return n.out, e.attention
    return n.out
