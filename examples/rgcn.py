"""RGCN (Schlichtkrull et al.) in the loop DSL.

    out_v = sum_r AGG_{u in N_r(v)} h_u W_r  +  h_v W_loop  +  bias
"""
import torch

import pigeon
from pigeon.lang import linear, sum


def example_inputs(g, feats=16, heads=1, dtype=torch.float32):
    """Random arguments of ``rgcn`` for graph ``g``, ``feats`` features in and out (``heads`` is
    unused: every example takes the same arguments)."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)
    return (rand(g.num_nodes, feats), rand(g.num_etypes, feats, feats), rand(feats, feats), rand(feats))


@pigeon.compile(example_inputs=example_inputs)
def rgcn(g, h, weight, loop_weight=None, bias=None, edge_weight=None, aggr="mean"):
    for e in g.edges():
        msg = linear(h[e.src], weight[e.etype])
        if edge_weight is not None:  # a Python constant while tracing: no data-dependent branch
            msg = msg * edge_weight[e]
        if aggr == "mean":  # the mean over the incoming edges of v of relation r
            msg = msg / e.dst_etype_degree
        e.msg = msg
    for n in g.dst_nodes():
        out = sum(e.msg for e in n.incoming_edges())
        if loop_weight is not None:
            out = out + linear(h[n], loop_weight)
        if bias is not None:
            out = out + bias
        n.out = out
    return n.out
