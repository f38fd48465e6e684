"""Drop-in replacements for DGL's relational layers: the same constructor arguments, calls and
parameter names as DGL 2.1, so that ``load_state_dict(dgl_layer.state_dict())`` works and the
outputs match. Change ``from dgl.nn import RelGraphConv`` to ``from pigeon.nn.dgl import
RelGraphConv``; nothing else.

The pigeon graph is built from the DGL graph and the edge types on the first call and kept while
they stay the same (compared by value)."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from pigeon.runtime.graph import Graph, GraphError

from .layers import PigeonLayer
from .relational import LastGraph, bases_order, relational_sum


def _graph(cache: LastGraph, g: Any, etypes: Any, num_rels: int) -> Graph:
    src, dst = g.edges()
    etypes = torch.as_tensor(etypes, device=src.device)
    if etypes.shape != src.shape:
        raise GraphError(f"etypes has shape {list(etypes.shape)}; expected [{src.numel()}], one type per edge")
    return cache.get((src, dst, etypes), (g.num_src_nodes(), g.num_dst_nodes(), num_rels), lambda: Graph.from_edges(
        src, dst, etypes, g.num_src_nodes(), num_dst_nodes=g.num_dst_nodes(), num_etypes=num_rels))


class TypedLinear(nn.Module):
    """DGL's ``TypedLinear``: ``x_i W_{type(i)}`` with ``regularizer`` None, "basis" (W_t = sum_b
    coeff[t, b] W[b]) or "bdd" (block-diagonal W_t, stored flat as [T, B * in/B * out/B])."""

    def __init__(self, in_size: int, out_size: int, num_types: int, regularizer: str | None = None,
                 num_bases: int | None = None):
        super().__init__()
        self.in_size, self.out_size, self.num_types = in_size, out_size, num_types
        if regularizer is None:
            self.W = nn.Parameter(torch.empty(num_types, in_size, out_size))
        elif regularizer == "basis":
            if num_bases is None:
                raise ValueError('Missing "num_bases" for basis regularization.')
            self.W = nn.Parameter(torch.empty(num_bases, in_size, out_size))
            self.coeff = nn.Parameter(torch.empty(num_types, num_bases))
            self.num_bases = num_bases
        elif regularizer == "bdd":
            if num_bases is None:
                raise ValueError('Missing "num_bases" for bdd regularization.')
            if in_size % num_bases != 0 or out_size % num_bases != 0:
                raise ValueError("Input and output sizes must be divisible by num_bases.")
            self.submat_in, self.submat_out = in_size // num_bases, out_size // num_bases
            self.W = nn.Parameter(torch.empty(num_types, num_bases * self.submat_in * self.submat_out))
            self.num_bases = num_bases
        else:
            raise ValueError(f'Supported regularizer options: "basis", "bdd", but got {regularizer}')
        self.regularizer = regularizer
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            fan = self.submat_in if self.regularizer == "bdd" else self.in_size
            nn.init.uniform_(self.W, -1 / math.sqrt(fan), 1 / math.sqrt(fan))
            if self.regularizer == "basis":
                nn.init.xavier_uniform_(self.coeff, gain=nn.init.calculate_gain("relu"))

    def relation_weight(self) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """(weight, coeff, blocks) in the form ``relational_sum`` takes."""
        if self.regularizer == "basis":
            return self.W, self.coeff, False
        if self.regularizer == "bdd":
            return self.W.view(self.num_types, self.num_bases, self.submat_in, self.submat_out), None, True
        return self.W, None, False

    def forward(self, x: torch.Tensor, x_type: torch.Tensor, sorted_by_type: bool = False) -> torch.Tensor:
        """Row i of ``x`` times the weight of type ``x_type[i]`` (a plain torch op: rows are not
        a graph; inside RelGraphConv the same weights run fused in the generated kernels)."""
        weight, coeff, blocks = self.relation_weight()
        if blocks:
            w = weight.index_select(0, x_type)  # [N, B, in/B, out/B]
            return torch.einsum("nbi,nbio->nbo", x.view(x.shape[0], self.num_bases, self.submat_in), w).reshape(
                x.shape[0], self.out_size)
        if coeff is not None:
            weight = (coeff @ weight.view(self.num_bases, -1)).view(self.num_types, self.in_size, self.out_size)
        return torch.bmm(x.unsqueeze(1), weight.index_select(0, x_type)).squeeze(1)


class RelGraphConv(PigeonLayer):
    """DGL's ``RelGraphConv``: ``h_v = act(norm(sum_{(u, r) -> v} e_uv W_r h_u) + bias + W_0 h_v)``
    then dropout, called as ``conv(g, feat, etypes, norm=None, presorted=False)``."""

    def __init__(self, in_feat: int, out_feat: int, num_rels: int, regularizer: str | None = None,
                 num_bases: int | None = None, bias: bool = True, activation: Callable | None = None,
                 self_loop: bool = True, dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        if regularizer is not None and num_bases is None:
            num_bases = num_rels
        self.linear_r = TypedLinear(in_feat, out_feat, num_rels, regularizer, num_bases)
        self.num_rels = num_rels
        self.bias, self.activation, self.self_loop, self.layer_norm = bias, activation, self_loop, layer_norm
        if self.bias:
            self.h_bias = nn.Parameter(torch.zeros(out_feat))
        if self.layer_norm:
            self.layer_norm_weight = nn.LayerNorm(out_feat, elementwise_affine=True)
        if self.self_loop:
            self.loop_weight = nn.Parameter(torch.empty(in_feat, out_feat))
            nn.init.xavier_uniform_(self.loop_weight, gain=nn.init.calculate_gain("relu"))
        self.dropout = nn.Dropout(dropout)
        self._graphs = LastGraph()
        self._orders: dict[tuple, str] = {}

    def forward(self, g: Any, feat: torch.Tensor, etypes: Any, norm: torch.Tensor | None = None, *,
                presorted: bool = False) -> torch.Tensor:
        graph = _graph(self._graphs, g, etypes, self.num_rels)
        weight, coeff, blocks = self.linear_r.relation_weight()
        if norm is not None:
            norm = norm.reshape(graph.num_edges, 1)
        # with layer norm, DGL normalises the sum alone: bias and self-loop come after it
        fused = not self.layer_norm
        kwargs = {"loop_weight": self.loop_weight if self.self_loop and fused else None,
                  "bias": self.h_bias if self.bias and fused else None, "edge_weight": norm, "aggr": "sum"}
        order = None
        if coeff is not None:
            key = (graph.num_edges, graph.num_nodes, feat.dtype)
            if key not in self._orders:
                self._orders[key] = bases_order(graph, feat, weight, coeff, **kwargs)
            order = self._orders[key]
        h = relational_sum(graph, feat, weight, coeff, blocks=blocks, order=order, **kwargs)
        if self.layer_norm:
            h = self.layer_norm_weight(h)
            if self.bias:
                h = h + self.h_bias
            if self.self_loop:
                h = h + feat[: graph.num_dst_nodes] @ self.loop_weight
        if self.activation:
            h = self.activation(h)
        return self.dropout(h)


class HGTConv(PigeonLayer):
    """DGL's ``HGTConv``: ``linear_k``, ``linear_q``, ``linear_v``, ``linear_a`` (TypedLinear per
    node type), ``relation_pri``, ``relation_att``, ``relation_msg`` (per head), ``skip``,
    ``residual_w`` (when in_size != heads x head_size) and ``norm`` (``use_norm``), called as
    ``conv(g, x, ntype, etype, presorted=False)``; dropout after ``linear_a``, as DGL's."""

    def __init__(self, in_size: int, head_size: int, num_heads: int, num_ntypes: int, num_etypes: int,
                 dropout: float = 0.2, use_norm: bool = False):
        super().__init__()
        self.in_size, self.head_size, self.num_heads = in_size, head_size, num_heads
        self.num_ntypes, self.num_etypes, self.use_norm = num_ntypes, num_etypes, use_norm
        width = head_size * num_heads
        self.linear_k = TypedLinear(in_size, width, num_ntypes)
        self.linear_q = TypedLinear(in_size, width, num_ntypes)
        self.linear_v = TypedLinear(in_size, width, num_ntypes)
        self.linear_a = TypedLinear(width, width, num_ntypes)
        self.relation_pri = nn.ParameterList([nn.Parameter(torch.ones(num_etypes)) for _ in range(num_heads)])
        self.relation_att = nn.ModuleList(TypedLinear(head_size, head_size, num_etypes) for _ in range(num_heads))
        self.relation_msg = nn.ModuleList(TypedLinear(head_size, head_size, num_etypes) for _ in range(num_heads))
        self.skip = nn.Parameter(torch.ones(num_ntypes))
        self.drop = nn.Dropout(dropout)
        if use_norm:
            self.norm = nn.LayerNorm(width)
        if in_size != width:
            self.residual_w = nn.Parameter(torch.empty(in_size, width))
            nn.init.xavier_uniform_(self.residual_w)
        self._graphs = LastGraph()

    def forward(self, g: Any, x: torch.Tensor, ntype: torch.Tensor, etype: torch.Tensor, *,
                presorted: bool = False) -> torch.Tensor:
        from pigeon.examples.hgt import hgt

        src, dst = g.edges()
        ntype, etype = torch.as_tensor(ntype), torch.as_tensor(etype)
        graph = self._graphs.get((src, dst, etype, ntype), (g.num_src_nodes(), g.num_dst_nodes()), lambda: Graph.from_edges(
            src, dst, etype, g.num_src_nodes(), ntype, num_dst_nodes=g.num_dst_nodes(), num_etypes=self.num_etypes,
            num_ntypes=self.num_ntypes))
        relation_att = torch.stack([m.W for m in self.relation_att], 1)  # [R, H, d, d]: one matrix per head
        relation_msg = torch.stack([m.W for m in self.relation_msg], 1)
        relation_pri = torch.stack(list(self.relation_pri), 1)  # [R, H]
        h = self._run(hgt, graph, x, self.linear_k.W, self.linear_q.W, self.linear_v.W, relation_att, relation_msg,
                      relation_pri, self.linear_a.W, self.skip, getattr(self, "residual_w", None),
                      p=float(self.drop.p), training=self.training)
        return self.norm(h) if self.use_norm else h
