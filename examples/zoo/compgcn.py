"""CompGCN (Vashishth et al., 2020): a neighbour is composed with its relation's embedding
(``comp``: "sub" is h_u - z_r, "mult" is h_u * z_r), and the direction of the relation picks the
weight (W_O for original relations, ids below ``num_original``; W_I for their inverses); the node
itself is composed with the self-loop relation z_loop and W_S:

    out_v = tanh( mean_{(u, r) in N(v)} W_dir(r) phi(h_u, z_r)  +  W_S phi(h_v, z_loop) )

The relation embeddings are updated outside the graph (z_r' = W_rel z_r), a plain linear."""
import torch

import pigeon
from pigeon.lang import linear, mean, tanh, where


def example_inputs(g, feats=16, heads=1, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    return (rand(g.num_nodes, feats), rand(g.num_etypes, feats), rand(feats), rand(feats, feats),
            rand(feats, feats), rand(feats, feats), max(g.num_etypes // 2, 1))


def compose(x, z, comp):
    return x - z if comp == "sub" else x * z


@pigeon.compile(example_inputs=example_inputs)
def compgcn(g, h, rel, loop_rel, w_original, w_inverse, w_self, num_original, comp="sub"):
    for e in g.edges():
        c = compose(h[e.src], rel[e.etype], comp)
        e.msg = where(e.etype < num_original, linear(c, w_original), linear(c, w_inverse))
    for n in g.dst_nodes():
        n.out = tanh(mean(e.msg for e in n.incoming_edges()) + linear(compose(h[n], loop_rel, comp), w_self))
    return n.out
