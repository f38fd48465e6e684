"""RGCN, RGAT and HGT in plain PyTorch, the way a PyTorch user writes them without a graph library.

The edges are grouped by relation once per graph (``group``). A layer call gathers the endpoint
features of every edge, splits them per relation and loops over the relations, multiplying each
one's rows by its matrix (a matmul, or a batched matmul over the heads); ``index_add_`` sums the
messages into the destinations and ``scatter_reduce`` takes the per-destination maximum of the
segment softmax. Per node-type linears loop over the node types the same way.

``dense_rgcn``, ``dense_rgat`` and ``dense_hgt`` are a different way to write the same formulas:
one einsum multiplies every node by every relation's matrix (a [nodes, relations, out] tensor) and
each edge picks its row. That is (nodes x relations) / edges times the needed work and memory, so
``dense_needed_bytes`` tells whether it fits before it runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ByType:
    """Rows grouped by their type: ``order`` gathers them type after type, ``sizes`` splits that
    per type (of ``types``, the types present), ``inverse`` puts the rows back in their order."""

    types: list[int]
    sizes: list[int]
    order: torch.Tensor
    inverse: torch.Tensor


def by_type(types: torch.Tensor) -> ByType:
    order = torch.argsort(types, stable=True)
    present, counts = torch.unique_consecutive(types[order], return_counts=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return ByType(present.tolist(), counts.tolist(), order, inverse)


@dataclass(frozen=True)
class Grouped:
    """A graph's edges grouped by relation and its nodes by node type, built once per graph."""

    relations: ByType  # the edges by relation
    src: torch.Tensor  # every edge's source, relation after relation
    dst: torch.Tensor  # ... and destination: the aggregation index
    nodes: ByType  # all nodes by node type
    dst_nodes: ByType  # the destination nodes by node type
    dst_ntype: torch.Tensor  # each destination node's type
    num_dst: int


def group(src: torch.Tensor, dst: torch.Tensor, etype: torch.Tensor, ntype: torch.Tensor, num_dst: int) -> Grouped:
    """The index lists the per-relation formulas walk, from a graph's edge and node arrays."""
    if src.numel() == 0:
        raise ValueError("group: src is empty; the per-relation formulas need a graph with edges")
    if not (src.shape == dst.shape == etype.shape):
        raise ValueError(f"group: src, dst and etype must have one entry per edge, got shapes "
                         f"{list(src.shape)}, {list(dst.shape)} and {list(etype.shape)}")
    relations = by_type(etype)
    return Grouped(relations, src[relations.order], dst[relations.order], by_type(ntype), by_type(ntype[:num_dst]),
                   ntype[:num_dst], num_dst)


# Each input is gathered once for all edges (or nodes) and split per type, and each parameter
# unbound once: indexing them per type instead makes every type's backward fill a zero tensor of
# the whole input or parameter, which costs types x size.

def per_type_linear(x: torch.Tensor, weight: torch.Tensor, nodes: ByType) -> torch.Tensor:
    """Each row of ``x`` times the matrix of its node type: ``weight[type]``."""
    w = weight.unbind(0)
    rows = x[nodes.order].split(nodes.sizes)
    return torch.cat([x_t @ w[t] for t, x_t in zip(nodes.types, rows)])[nodes.inverse]


def segment_softmax(score: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Softmax of each edge's score among the edges into the same destination."""
    index = dst.view(-1, *([1] * (score.dim() - 1))).expand_as(score)
    peak = torch.full((num_dst, *score.shape[1:]), -math.inf, dtype=score.dtype, device=score.device)
    # The maximum only keeps exp() in range; the softmax does not depend on it, so no gradient.
    peak = peak.scatter_reduce(0, index, score.detach(), "amax", include_self=True)
    e = torch.exp(score - peak[dst])
    total = torch.zeros_like(peak).index_add_(0, dst, e)
    return e / total[dst]


def rgcn(h, edges: Grouped, norm, weight, loop_weight, bias):
    """``norm``: per edge in ``edges.relations.order``, 1 / (incoming edges of its destination and relation)."""
    rel, w = edges.relations, weight.unbind(0)
    x = h[edges.src].split(rel.sizes)
    msg = torch.cat([x_r @ w[r] for r, x_r in zip(rel.types, x)])
    out = h.new_zeros(edges.num_dst, weight.shape[-1]).index_add_(0, edges.dst, msg * norm)
    return out + h[:edges.num_dst] @ loop_weight + bias


def rgat(h, edges: Grouped, weight, attn_src, attn_dst, bias, negative_slope: float = 0.2):
    heads, size = attn_src.shape[1:]
    rel, w, a_src, a_dst = edges.relations, weight.unbind(0), attn_src.unbind(0), attn_dst.unbind(0)
    messages, scores = [], []
    for r, x_src, x_dst in zip(rel.types, h[edges.src].split(rel.sizes), h[edges.dst].split(rel.sizes)):
        z = (x_src @ w[r]).view(-1, heads, size)
        z_dst = (x_dst @ w[r]).view(-1, heads, size)
        messages.append(z)
        scores.append((z * a_src[r]).sum(-1) + (z_dst * a_dst[r]).sum(-1))
    score = torch.nn.functional.leaky_relu(torch.cat(scores), negative_slope)
    alpha = segment_softmax(score, edges.dst, edges.num_dst)
    out = h.new_zeros(edges.num_dst, heads, size).index_add_(0, edges.dst, alpha.unsqueeze(-1) * torch.cat(messages))
    return out.reshape(edges.num_dst, heads * size) + bias


def hgt(h, edges: Grouped, k_weight, q_weight, v_weight, relation_att, relation_msg, relation_pri, out_weight, skip):
    heads, size = relation_att.shape[1], relation_att.shape[-1]
    nd, rel = edges.num_dst, edges.relations
    k = per_type_linear(h, k_weight, edges.nodes).view(-1, heads, size)
    v = per_type_linear(h, v_weight, edges.nodes).view(-1, heads, size)
    q = per_type_linear(h[:nd], q_weight, edges.dst_nodes).view(-1, heads, size)
    att, msg, pri = relation_att.unbind(0), relation_msg.unbind(0), relation_pri.unbind(0)
    messages, scores = [], []
    per_relation = zip(rel.types, k[edges.src].split(rel.sizes), v[edges.src].split(rel.sizes),
                       q[edges.dst].split(rel.sizes))
    for r, k_r, v_r, q_r in per_relation:
        # [edges, heads, size] times [heads, size, size]: one batched matmul over the heads
        key = torch.einsum("ehd,hdf->ehf", k_r, att[r])
        messages.append(torch.einsum("ehd,hdf->ehf", v_r, msg[r]))
        scores.append((key * q_r).sum(-1) * pri[r])
    alpha = segment_softmax(torch.cat(scores) / math.sqrt(size), edges.dst, nd)
    agg = h.new_zeros(nd, heads, size).index_add_(0, edges.dst, alpha.unsqueeze(-1) * torch.cat(messages))
    out = per_type_linear(agg.reshape(nd, heads * size), out_weight, edges.dst_nodes)
    gate = torch.sigmoid(skip[edges.dst_ntype]).unsqueeze(-1)
    return gate * out + (1 - gate) * h[:nd]


# ---- dense: every node times every relation's matrix ------------------------------------------------

def dense_needed_bytes(model: str, num_nodes: int, num_edges: int, num_rels: int, feats: int, element: int = 4) -> int:
    """The memory the dense formulas' largest intermediates take."""
    per_node = num_rels * feats * (2 if model == "hgt" else 1)
    return element * (num_nodes * per_node + 4 * num_edges * feats)


def dense_rgcn(h, src, dst, etype, norm, weight, loop_weight, bias, num_dst: int):
    """``norm``: per edge in the graph's order."""
    proj = torch.einsum("ni,rio->nro", h, weight)
    msg = proj[src, etype] * norm
    out = torch.zeros(num_dst, weight.shape[-1], dtype=h.dtype, device=h.device).index_add(0, dst, msg)
    return out + h[:num_dst] @ loop_weight + bias


def dense_rgat(h, src, dst, etype, weight, attn_src, attn_dst, bias, num_dst: int, negative_slope: float = 0.2):
    heads, size = attn_src.shape[1:]
    proj = torch.einsum("ni,rio->nro", h, weight)
    z = proj[src, etype].view(-1, heads, size)
    z_dst = proj[dst, etype].view(-1, heads, size)
    score = torch.nn.functional.leaky_relu((z * attn_src[etype]).sum(-1) + (z_dst * attn_dst[etype]).sum(-1),
                                           negative_slope)
    alpha = segment_softmax(score, dst, num_dst)
    out = torch.zeros(num_dst, heads, size, dtype=h.dtype, device=h.device).index_add(0, dst, alpha.unsqueeze(-1) * z)
    return out.reshape(num_dst, heads * size) + bias


def dense_hgt(h, src, dst, etype, ntype, k_weight, q_weight, v_weight, relation_att, relation_msg, relation_pri,
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
