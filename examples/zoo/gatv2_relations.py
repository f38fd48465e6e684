"""GATv2 per relation (Brody et al., 2022, as DGL's HeteroGraphConv of GATv2Conv summed over
relations): each edge type has its own weights and attention, normalised within the type:

    e_uv = a_r . leaky( W_r^src h_u + W_r^dst h_v )                           (per head)
    alpha_e = softmax over the edges of type r into v ( e_uv )
    out_v = sum_r sum_{u in N_r(v)} alpha_e W_r^src h_u + b"""
import torch

import pigeon
from pigeon.lang import dot, leaky_relu, linear, softmax, sum


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5
    size = feats // heads
    return (rand(g.num_nodes, feats), rand(g.num_etypes, feats, feats), rand(g.num_etypes, feats, feats),
            rand(g.num_etypes, heads, size), rand(feats))


@pigeon.compile(example_inputs=example_inputs)
def gatv2_relations(g, h, w_src, w_dst, attn, bias):
    heads, size = attn.shape[1:]
    for e in g.edges():
        z = linear(h[e.src], w_src[e.etype]).reshape(heads, size)
        e.score = dot(leaky_relu(z + linear(h[e.dst], w_dst[e.etype]).reshape(heads, size), 0.2), attn[e.etype])
        e.msg = z
    for r in g.dst_relations():
        r.out = sum(softmax(e.score) * e.msg for e in r.incoming_edges())
    for n in g.dst_nodes():
        n.out = sum(r.out for r in n.relations()).reshape(heads * size) + bias
    return n.out
