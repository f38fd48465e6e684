"""RGCN, RGAT and HGT as plain PyTorch, the way one writes them without a graph library: every
typed linear is one einsum over all types (a [nodes, types, out] tensor), then gathered per edge.
Fast for few types and small graphs, and what torch.compile sees; memory grows with
nodes x types x features, which is why ``needed_bytes`` is checked before running them."""
from __future__ import annotations

import math

import torch


def needed_bytes(model: str, num_nodes: int, num_edges: int, num_rels: int, feats: int, element: int = 4) -> int:
    """The largest intermediate these formulas allocate."""
    per_node = num_rels * feats * (2 if model == "hgt" else 1)
    return element * (num_nodes * per_node + 4 * num_edges * feats)


def segment_softmax(score: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    index = dst.view(-1, *([1] * (score.dim() - 1))).expand_as(score)
    peak = torch.full((num_dst, *score.shape[1:]), -math.inf, dtype=score.dtype, device=score.device)
    peak = peak.scatter_reduce(0, index, score.detach(), "amax", include_self=True)
    e = torch.exp(score - peak[dst])
    total = torch.zeros_like(peak).index_add(0, dst, e)
    return e / total[dst]


def rgcn(h, src, dst, etype, norm, weight, loop_weight, bias, num_dst: int):
    proj = torch.einsum("ni,rio->nro", h, weight)
    msg = proj[src, etype] * norm
    out = torch.zeros(num_dst, weight.shape[-1], dtype=h.dtype, device=h.device).index_add(0, dst, msg)
    return out + h[:num_dst] @ loop_weight + bias


def rgat(h, src, dst, etype, weight, attn_src, attn_dst, bias, num_dst: int, negative_slope: float = 0.2):
    heads, size = attn_src.shape[1:]
    proj = torch.einsum("ni,rio->nro", h, weight)
    z = proj[src, etype].view(-1, heads, size)
    z_dst = proj[dst, etype].view(-1, heads, size)
    score = torch.nn.functional.leaky_relu((z * attn_src[etype]).sum(-1) + (z_dst * attn_dst[etype]).sum(-1),
                                           negative_slope)
    alpha = segment_softmax(score, dst, num_dst)
    out = torch.zeros(num_dst, heads, size, dtype=h.dtype, device=h.device).index_add(0, dst, alpha.unsqueeze(-1) * z)
    return out.reshape(num_dst, heads * size) + bias


def hgt(h, src, dst, etype, ntype, k_weight, q_weight, v_weight, relation_att, relation_msg, relation_pri,
        out_weight, skip, num_dst: int):
    heads, size = relation_att.shape[1], relation_att.shape[-1]

    def typed(x, w, types):  # one linear per node type: all types, then each node's own
        return torch.einsum("ni,tio->nto", x, w)[torch.arange(x.shape[0], device=x.device), types]

    k = typed(h, k_weight, ntype).view(-1, heads, size)
    v = typed(h, v_weight, ntype).view(-1, heads, size)
    q = typed(h[:num_dst], q_weight, ntype[:num_dst]).view(-1, heads, size)
    key = torch.einsum("nhd,rhde->nrhe", k, relation_att)[src, etype]
    msg = torch.einsum("nhd,rhde->nrhe", v, relation_msg)[src, etype]
    score = (key * q[dst]).sum(-1) * relation_pri[etype] / math.sqrt(size)
    alpha = segment_softmax(score, dst, num_dst)
    agg = torch.zeros(num_dst, heads, size, dtype=h.dtype, device=h.device).index_add(0, dst, alpha.unsqueeze(-1) * msg)
    out = typed(agg.reshape(num_dst, heads * size), out_weight, ntype[:num_dst])
    gate = torch.sigmoid(skip[ntype[:num_dst]]).unsqueeze(-1)
    return gate * out + (1 - gate) * h[:num_dst]
