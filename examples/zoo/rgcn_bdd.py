"""RGCN with block-diagonal decomposition (Schlichtkrull et al., 2018): W_r is block-diagonal,
made of B blocks Q_rb of [in/B, out/B], so each block of h_u only meets its own block:

    out_v = sum_r sum_{u in N_r(v)} (1 / |N_r(v)|) diag(Q_r1, ..., Q_rB) h_u  +  W_0 h_v"""
import torch

import pigeon
from pigeon.lang import linear, sum


def example_inputs(g, feats=16, heads=4, dtype=torch.float32):
    """``heads`` is the number of blocks; it divides ``feats``."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    size = feats // heads
    return rand(g.num_nodes, feats), rand(g.num_etypes, heads, size, size), rand(feats, feats)


@pigeon.compile(example_inputs=example_inputs)
def rgcn_bdd(g, h, blocks, loop_weight):
    num_blocks, size_in, size_out = blocks.shape[1:]
    for e in g.edges():
        per_block = linear(h[e.src].reshape(num_blocks, size_in), blocks[e.etype])  # one matrix per block
        e.msg = per_block.reshape(num_blocks * size_out) / e.dst_etype_degree
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges()) + linear(h[n], loop_weight)
    return n.out
