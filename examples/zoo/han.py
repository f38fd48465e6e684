"""HAN (Wang et al., 2019): attention over the neighbours of each metapath (here: each edge
type), then attention over the metapaths (one layer):

    z_v = M h_v                                                                (per head)
    alpha_e = softmax over the edges of type r into v ( leaky( a_r . [z_v || z_u] ) )
    Z_v^r = elu( sum_{e=(u,v) of type r} alpha_e z_u )
    w_r = mean over the nodes v with edges of type r of  q . tanh(W Z_v^r + b)
    out_v = sum_r beta_{v,r} Z_v^r,   beta_{v,r} = softmax over the edge types into v of w_r

(In the paper's metapath graphs every node is its own neighbour, so every node has every
metapath: the means and softmaxes above run over all of them.)"""
import torch

import pigeon
from pigeon.lang import dot, elu, leaky_relu, linear, mean, softmax, sum, tanh


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5
    size, hidden = feats // heads, 8
    return (rand(g.num_nodes, feats), rand(feats, feats), rand(g.num_etypes, heads, size),
            rand(g.num_etypes, heads, size), rand(feats, hidden), rand(hidden), rand(hidden))


@pigeon.compile(example_inputs=example_inputs)
def han(g, h, proj, attn_src, attn_dst, sem_weight, sem_bias, sem_query):
    heads, size = attn_src.shape[1:]
    for n in g.nodes():
        n.z = linear(h[n], proj).reshape(heads, size)
    for e in g.edges():
        e.score = leaky_relu(dot(e.src.z, attn_src[e.etype]) + dot(e.dst.z, attn_dst[e.etype]), 0.2)
    for r in g.dst_relations():  # node-level attention, within each metapath
        r.z = elu(sum(softmax(e.score) * e.src.z for e in r.incoming_edges()).reshape(heads * size))
    importance = mean((dot(tanh(linear(r.z, sem_weight) + sem_bias), sem_query) for r in g.dst_relations()),
                      by="etype")
    for n in g.dst_nodes():  # semantic attention, across the metapaths
        n.out = sum(softmax(importance[r.etype]) * r.z for r in n.relations())
    return n.out
