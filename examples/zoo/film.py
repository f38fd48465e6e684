"""GNN-FiLM (Brockschmidt, 2020), as PyG's FiLMConv: the target node modulates each relation's
message with a feature-wise affine map of its own features,

    beta_{r,v}, gamma_{r,v} = B_r h_v + b_r, G_r h_v + c_r
    out_v = relu(gamma_{s,v} * W_s h_v + beta_{s,v})
            + sum_r mean_{u in N_r(v)} relu(gamma_{r,v} * W_r h_u + beta_{r,v})

(gamma_s, beta_s: the skip connection's own modulation, without bias)."""
import torch

import pigeon
from pigeon.lang import linear, relu, sum


def example_inputs(g, feats=16, heads=1, dtype=torch.float32):
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype) * 0.5
    r = g.num_etypes
    return (rand(g.num_nodes, feats), rand(r, feats, feats), rand(r, feats, feats), rand(r, feats),
            rand(r, feats, feats), rand(r, feats), rand(feats, feats), rand(feats, feats), rand(feats, feats))


@pigeon.compile(example_inputs=example_inputs)
def film(g, h, weight, beta_weight, beta_bias, gamma_weight, gamma_bias, skip_weight, skip_beta, skip_gamma):
    for e in g.edges():
        beta = linear(h[e.dst], beta_weight[e.etype]) + beta_bias[e.etype]
        gamma = linear(h[e.dst], gamma_weight[e.etype]) + gamma_bias[e.etype]
        e.msg = relu(gamma * linear(h[e.src], weight[e.etype]) + beta) / e.dst_etype_degree
    for n in g.dst_nodes():
        skip = relu(linear(h[n], skip_gamma) * linear(h[n], skip_weight) + linear(h[n], skip_beta))
        n.out = skip + sum(e.msg for e in n.incoming_edges())
    return n.out
