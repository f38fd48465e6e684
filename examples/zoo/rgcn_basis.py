"""RGCN with basis decomposition (Schlichtkrull et al., 2018): every relation's weight is a
combination of B shared bases, W_r = sum_b a_rb V_b, and

    out_v = sum_r sum_{u in N_r(v)} (1 / |N_r(v)|) W_r h_u  +  W_0 h_v

applied here as "bases first, then combine per edge": each edge multiplies h_u by all B bases
once (``bases``: [in, out, B], so one GEMM gives every basis' output) and mixes them with its
relation's coefficients (``coeff``: [R, B])."""
import torch

import pigeon
from pigeon.lang import dot, linear, sum


def example_inputs(g, feats=16, heads=4, dtype=torch.float32):
    """``heads`` is the number of bases."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    return rand(g.num_nodes, feats), rand(feats, feats * heads), rand(g.num_etypes, heads), rand(feats, feats)


@pigeon.compile(example_inputs=example_inputs)
def rgcn_basis(g, h, bases, coeff, loop_weight):
    num_bases = coeff.shape[1]
    for e in g.edges():
        per_basis = linear(h[e.src], bases).reshape(bases.shape[1] // num_bases, num_bases)
        msg = dot(per_basis, coeff[e.etype].reshape(1, num_bases))  # sum_b a_rb (V_b h_u)
        e.msg = msg.reshape(bases.shape[1] // num_bases) / e.dst_etype_degree
    for n in g.dst_nodes():
        n.out = sum(e.msg for e in n.incoming_edges()) + linear(h[n], loop_weight)
    return n.out
