"""Simple-HGN (Lv et al., 2021): GAT whose attention also sees a learned embedding of the edge
type, with a residual connection (one layer; the residual attention across layers is left out):

    z_v = W h_v;   r_e = W_r emb_{r(e)}                                       (per head)
    alpha_e = softmax_v( leaky( a_dst . z_v + a_src . z_u + a_rel . r_e ) )
    out_v = elu( sum_{e=(u,v)} alpha_e z_u ) + W_res h_v"""
import torch

import pigeon
from pigeon.lang import dot, elu, leaky_relu, linear, softmax, sum


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5
    size, emb = feats // heads, 4
    return (rand(g.num_nodes, feats), rand(feats, feats), rand(g.num_etypes, emb), rand(emb, heads * emb),
            rand(heads, size), rand(heads, size), rand(heads, emb), rand(feats, feats))


@pigeon.compile(example_inputs=example_inputs)
def simple_hgn(g, h, weight, rel_emb, rel_weight, a_dst, a_src, a_rel, res_weight):
    heads, size = a_dst.shape
    for n in g.nodes():
        n.z = linear(h[n], weight).reshape(heads, size)
    for e in g.edges():
        r = linear(rel_emb[e.etype], rel_weight).reshape(heads, a_rel.shape[1])
        e.score = leaky_relu(dot(e.dst.z, a_dst) + dot(e.src.z, a_src) + dot(r, a_rel), 0.05)
    for n in g.dst_nodes():
        agg = sum(softmax(e.score) * e.src.z for e in n.incoming_edges())
        n.out = elu(agg.reshape(heads * size)) + linear(h[n], res_weight)
    return n.out
