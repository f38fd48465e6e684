"""HEAT (Mo et al., 2021), as PyG's HEATConv with concat=True: node-type specific transforms,
attention over the target, the source, a leaky-ReLU edge-type embedding and an embedded edge
attribute, and messages that carry the edge attribute:

    x_v = W_{t(v)} h_v + b_{t(v)};   a_e = leaky(E_a attr_e);   t_e = leaky(emb_{r(e)})
    alpha_e = softmax_v( leaky( A [x_v || x_u || t_e || a_e] ) )           (per head)
    out_v = x_v + sum_{e=(u,v)} alpha_e (L [x_u || a_e] + l)               (per head, concatenated)"""
import torch

import pigeon
from pigeon.lang import concat, leaky_relu, linear, softmax, sum


def example_inputs(g, feats=16, heads=2, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5
    edge_dim, emb_dim = 3, 4
    return (rand(g.num_nodes, feats), rand(g.num_edges, edge_dim), rand(g.num_ntypes, feats, feats),
            rand(g.num_ntypes, feats), rand(g.num_etypes, emb_dim), rand(edge_dim, emb_dim),
            rand(2 * feats + 2 * emb_dim, heads), rand(feats + emb_dim, feats), rand(feats))


@pigeon.compile(example_inputs=example_inputs)
def heat(g, h, edge_attr, node_weight, node_bias, etype_emb, attr_weight, att, msg_weight, msg_bias):
    heads, size = att.shape[1], msg_weight.shape[1]
    for n in g.nodes():
        n.x = linear(h[n], node_weight[n.ntype]) + node_bias[n.ntype]
    for e in g.edges():
        attr = leaky_relu(linear(edge_attr[e], attr_weight), 0.2)
        kind = leaky_relu(etype_emb[e.etype], 0.2)
        e.score = leaky_relu(linear(concat(e.dst.x, e.src.x, kind, attr), att), 0.2)  # [heads]
        e.msg = linear(concat(e.src.x, attr), msg_weight) + msg_bias
    for n in g.dst_nodes():
        agg = sum(softmax(e.score).reshape(heads, 1) * e.msg.reshape(1, size) for e in n.incoming_edges())
        n.out = (agg + n.x.reshape(1, size)).reshape(heads * size)
    return n.out
