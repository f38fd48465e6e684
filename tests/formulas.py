"""Plain-PyTorch formulas of RGCN, RGAT and HGT, written per edge and per node without any of
Pigeon's code: the independent oracle of the model tests."""
from __future__ import annotations

import math

import torch


def per_edge_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row e of x times its own matrix w[e]."""
    return torch.einsum("...i,...io->...o", x, w)


def dst_softmax(score: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Softmax of each edge's score among the edges into the same node, one node at a time."""
    out = torch.zeros_like(score)
    for v in range(num_dst):
        mask = dst == v
        if mask.any():
            out[mask] = torch.softmax(score[mask], dim=0)
    return out


def aggregate(msg: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Sum of the messages into each destination."""
    return msg.new_zeros((num_dst,) + tuple(msg.shape[1:])).index_add(0, dst, msg)


def rgcn(g, h, weight, loop_weight=None, bias=None, edge_weight=None, aggr="mean"):
    src, dst, et = g.src, g.dst, g.etype
    msg = per_edge_linear(h[src], weight[et])
    if edge_weight is not None:
        msg = msg * edge_weight.reshape(-1, 1)
    if aggr == "mean":
        _, pair, count = torch.unique(dst * g.num_etypes + et, return_inverse=True, return_counts=True)
        msg = msg / count[pair].reshape(-1, 1).to(msg.dtype)  # edges sharing the (dst, etype) pair
    out = aggregate(msg, dst, g.num_dst_nodes)
    if loop_weight is not None:
        out = out + h[: g.num_dst_nodes] @ loop_weight
    if bias is not None:
        out = out + bias
    return out


def rgat(g, h, weight, attn_src, attn_dst, bias=None, negative_slope=0.2, edge_weight=None, return_attention=False):
    src, dst, et = g.src, g.dst, g.etype
    heads, size = attn_src.shape[1:]
    z = per_edge_linear(h[src], weight[et]).reshape(-1, heads, size)
    z_dst = per_edge_linear(h[dst], weight[et]).reshape(-1, heads, size)
    score = (z * attn_src[et]).sum(-1) + (z_dst * attn_dst[et]).sum(-1)
    score = torch.nn.functional.leaky_relu(score, negative_slope)
    attention = dst_softmax(score, dst, g.num_dst_nodes)
    alpha = attention if edge_weight is None else attention * edge_weight.reshape(-1, 1)
    out = aggregate(alpha.unsqueeze(-1) * z, dst, g.num_dst_nodes).reshape(g.num_dst_nodes, heads * size)
    out = out + bias if bias is not None else out
    return (out, attention) if return_attention else out


def hgt(g, h, k_weight, q_weight, v_weight, relation_att, relation_msg, relation_pri, out_weight,
        skip=None, residual_w=None, edge_weight=None, return_attention=False):
    src, dst, et, nt = g.src, g.dst, g.etype, g.ntype
    heads, size = relation_att.shape[1], relation_att.shape[-1]
    k = per_edge_linear(h[src], k_weight[nt[src]]).reshape(-1, heads, size)
    v = per_edge_linear(h[src], v_weight[nt[src]]).reshape(-1, heads, size)
    q = per_edge_linear(h[dst], q_weight[nt[dst]]).reshape(-1, heads, size)
    key = per_edge_linear(k, relation_att[et])
    score = (key * q).sum(-1) * relation_pri[et] / math.sqrt(size)
    msg = per_edge_linear(v, relation_msg[et])
    attention = dst_softmax(score, dst, g.num_dst_nodes)
    alpha = attention if edge_weight is None else attention * edge_weight.reshape(-1, 1)
    agg = aggregate(alpha.unsqueeze(-1) * msg, dst, g.num_dst_nodes).reshape(g.num_dst_nodes, heads * size)
    nd = g.num_dst_nodes
    out = per_edge_linear(agg, out_weight[nt[:nd]])
    if skip is not None:
        gate = torch.sigmoid(skip[nt[:nd]]).unsqueeze(-1)
        x = h[:nd] if residual_w is None else h[:nd] @ residual_w
        out = gate * out + (1 - gate) * x
    return (out, attention) if return_attention else out
