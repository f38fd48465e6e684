"""``pigeon.nn`` layers: torch modules whose forward runs the DSL programs of ``pigeon.examples``.

Parameter names and shapes are part of the API (R edge types, T node types, H heads). A layer
takes any graph whose edge type ids are below its ``num_rels`` (and node type ids below its
``num_ntypes``): relations without edges, common in sampled blocks and splits, are fine.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pigeon.examples.hgt import hgt
from pigeon.examples.rgat import rgat
from pigeon.examples.rgcn import rgcn
from pigeon.runtime.graph import Graph, GraphError


def as_graph(g: Any) -> Graph:
    """A pigeon.Graph for ``g``: itself, or the conversion of a DGL graph."""
    if isinstance(g, Graph):
        return g
    if type(g).__module__.startswith("dgl"):
        from pigeon.dgl_adapter import from_dgl
        return from_dgl(g)
    if type(g).__module__.startswith("torch_geometric"):
        return Graph.from_pyg(g)
    raise TypeError(f"expected a pigeon.Graph, a dgl.DGLGraph or a torch_geometric Data / HeteroData, "
                    f"got {type(g).__name__}")


def _packed(g: Graph, h: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """Node features as one tensor in the graph's node order (a dict is keyed by node type)."""
    return g.pack(h) if isinstance(h, dict) else h


def _unpacked(g: Graph, out: torch.Tensor, h: Any) -> Any:
    """The output in the form the features came in: per node type if they were a dict."""
    return g.unpack(out) if isinstance(h, dict) else out


def _check_types(layer: nn.Module, g: Graph, num_rels: int | None = None, num_ntypes: int | None = None) -> None:
    """GraphError if an edge type id reaches ``num_rels`` or a node type id ``num_ntypes``."""
    name = type(layer).__name__
    if num_rels is not None and g.max_etype >= num_rels:
        raise GraphError(f"{name} was built for num_rels={num_rels} but the graph has an edge of type "
                         f"{g.max_etype}: edge type ids must be below num_rels")
    if num_ntypes is not None and g.max_ntype >= num_ntypes:
        raise GraphError(f"{name} was built for num_ntypes={num_ntypes} but the graph has a node of type "
                         f"{g.max_ntype}: node type ids must be below num_ntypes")


def _per_type(param: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """``param`` (one row per type) with one row per type of the graph: its first ``rows`` rows,
    or zero rows appended for the types the graph counts beyond the layer's, which no edge or
    node has (``_check_types``). Absent types' rows get zero gradient either way."""
    if param is None or param.shape[0] == rows:
        return param
    if param.shape[0] > rows:
        return param[:rows]
    return torch.cat([param, param.new_zeros((rows - param.shape[0],) + tuple(param.shape[1:]))])


class PigeonLayer(nn.Module):
    """A layer that runs a compiled DSL function; remembers what its latest call ran."""

    last_executable: Any = None  # the optimised program and configuration of the latest call

    def _run(self, fn: Any, g: Graph, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = fn(g, *args, **kwargs)
        self.last_executable = fn.last_executable
        return out

    def _set_output(self, out_feats: int, dropout: float, activation: Any, layer_norm: bool) -> None:
        """What every pigeon.nn layer may do to its output: layer norm, then activation, then dropout."""
        if activation is not None and not callable(activation):
            raise TypeError(f"activation must be callable (torch.relu, nn.ReLU(), ...), got {type(activation).__name__}")
        self.activation = activation
        self.norm = nn.LayerNorm(out_feats) if layer_norm else None
        self.dropout = nn.Dropout(dropout)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return self.dropout(out)


def _edge_weight(edge_weight: torch.Tensor | None, g: Graph) -> torch.Tensor | None:
    """One weight per edge as [E, 1] (from [E] or [E, 1]); a clear error otherwise."""
    if edge_weight is None:
        return None
    if edge_weight.dim() == 1:
        edge_weight = edge_weight.unsqueeze(-1)
    if tuple(edge_weight.shape) != (g.num_edges, 1):
        raise GraphError(f"edge_weight has shape {list(edge_weight.shape)}; expected "
                         f"[{g.num_edges}] or [{g.num_edges}, 1], one weight per edge")
    return edge_weight


class RGCNConv(PigeonLayer):
    """``out_v = sum_r AGG_{u in N_r(v)} h_u W_r + h_v loop_weight + bias``.

    ``aggr="mean"`` divides each message by the number of incoming edges of v of relation r;
    ``edge_weight`` (one value per edge, DGL's ``norm``) multiplies each message.
    """

    def __init__(self, in_feats: int, out_feats: int, num_rels: int, aggr: str = "mean",
                 self_loop: bool = True, bias: bool = True, dropout: float = 0.0, activation: Any = None,
                 layer_norm: bool = False):
        super().__init__()
        self._set_output(out_feats, dropout, activation, layer_norm)
        if aggr not in ("mean", "sum"):
            raise ValueError(f"aggr must be 'mean' or 'sum', got {aggr!r}")
        self.in_feats, self.out_feats, self.num_rels, self.aggr = in_feats, out_feats, num_rels, aggr
        self.weight = nn.Parameter(torch.empty(num_rels, in_feats, out_feats))
        self.loop_weight = nn.Parameter(torch.empty(in_feats, out_feats)) if self_loop else None
        self.bias = nn.Parameter(torch.zeros(out_feats)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_uniform_(self.weight, gain=gain)
        if self.loop_weight is not None:
            nn.init.xavier_uniform_(self.loop_weight, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, g: Any, h: Any, edge_weight: torch.Tensor | None = None) -> Any:
        """``h``: [num_nodes, in] features, or a dict of them per node type (the output follows)."""
        g = as_graph(g)
        _check_types(self, g, num_rels=self.num_rels)
        out = self._run(rgcn, g, _packed(g, h), _per_type(self.weight, g.num_etypes), self.loop_weight,
                        self.bias, _edge_weight(edge_weight, g), aggr=self.aggr)
        return _unpacked(g, self._finish(out), h)

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, num_rels={self.num_rels}, aggr={self.aggr!r}"


class RGATConv(PigeonLayer):
    """Relational graph attention with ``num_heads`` heads (see ``pigeon.examples.rgat``).

    Per edge u -> v of relation r: ``z = h_u W_r``, per-head score
    ``leaky_relu(attn_src[r] . z + attn_dst[r] . (h_v W_r))``, softmax over all incoming edges
    of v, ``out_v = concat_heads sum alpha z + bias``.
    """

    def __init__(self, in_feats: int, out_feats: int, num_rels: int, num_heads: int = 1,
                 negative_slope: float = 0.2, bias: bool = True, dropout: float = 0.0, activation: Any = None,
                 layer_norm: bool = False):
        super().__init__()
        self._set_output(num_heads * out_feats, dropout, activation, layer_norm)
        self.in_feats, self.out_feats, self.num_rels = in_feats, out_feats, num_rels
        self.num_heads, self.negative_slope = num_heads, negative_slope
        self.weight = nn.Parameter(torch.empty(num_rels, in_feats, num_heads * out_feats))
        self.attn_src = nn.Parameter(torch.empty(num_rels, num_heads, out_feats))
        self.attn_dst = nn.Parameter(torch.empty(num_rels, num_heads, out_feats))
        self.bias = nn.Parameter(torch.zeros(num_heads * out_feats)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        for p in (self.weight, self.attn_src, self.attn_dst):
            nn.init.xavier_normal_(p, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, g: Any, h: Any, edge_weight: torch.Tensor | None = None, return_attention: bool = False) -> Any:
        """``h``: [num_nodes, in] features, or a dict of them per node type (the output follows).
        ``edge_weight`` ([E] or [E, 1]) scales each edge's attention after the softmax;
        ``return_attention`` also returns the attention [E, H]."""
        g = as_graph(g)
        _check_types(self, g, num_rels=self.num_rels)
        r = g.num_etypes
        out = self._run(rgat, g, _packed(g, h), _per_type(self.weight, r), _per_type(self.attn_src, r),
                        _per_type(self.attn_dst, r), self.bias, negative_slope=self.negative_slope,
                        edge_weight=_edge_weight(edge_weight, g), return_attention=return_attention)
        out, attention = out if return_attention else (out, None)
        out = _unpacked(g, self._finish(out), h)
        return (out, attention) if return_attention else out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, num_rels={self.num_rels}, num_heads={self.num_heads}"


class HGTConv(PigeonLayer):
    """Heterogeneous graph transformer layer: DGL's ``HGTConv`` without dropout and layer norm.

    ``forward(g, h)`` returns [num_dst_nodes, num_heads * head_size]; node types come from ``g``.
    """

    def __init__(self, in_feats: int, head_size: int, num_heads: int, num_ntypes: int,
                 num_rels: int, use_skip: bool = True, dropout: float = 0.0, activation: Any = None,
                 layer_norm: bool = False):
        super().__init__()
        self._set_output(num_heads * head_size, dropout, activation, layer_norm)
        self.in_feats, self.head_size, self.num_heads = in_feats, head_size, num_heads
        self.num_ntypes, self.num_rels, self.use_skip = num_ntypes, num_rels, use_skip
        hd = num_heads * head_size
        self.k_weight = nn.Parameter(torch.empty(num_ntypes, in_feats, hd))
        self.q_weight = nn.Parameter(torch.empty(num_ntypes, in_feats, hd))
        self.v_weight = nn.Parameter(torch.empty(num_ntypes, in_feats, hd))
        self.relation_att = nn.Parameter(torch.empty(num_rels, num_heads, head_size, head_size))
        self.relation_msg = nn.Parameter(torch.empty(num_rels, num_heads, head_size, head_size))
        self.relation_pri = nn.Parameter(torch.ones(num_rels, num_heads))
        self.out_weight = nn.Parameter(torch.empty(num_ntypes, hd, hd))
        self.skip = nn.Parameter(torch.ones(num_ntypes)) if use_skip else None
        self.residual_w = nn.Parameter(torch.empty(in_feats, hd)) if use_skip and in_feats != hd else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.k_weight, self.q_weight, self.v_weight, self.out_weight):
            bound = 1.0 / math.sqrt(p.shape[1])
            nn.init.uniform_(p, -bound, bound)
        for p in (self.relation_att, self.relation_msg):
            bound = 1.0 / math.sqrt(self.head_size)
            nn.init.uniform_(p, -bound, bound)
        nn.init.ones_(self.relation_pri)
        if self.skip is not None:
            nn.init.ones_(self.skip)
        if self.residual_w is not None:
            nn.init.xavier_uniform_(self.residual_w)

    def forward(self, g: Any, h: Any, edge_weight: torch.Tensor | None = None, return_attention: bool = False) -> Any:
        """``h``: [num_nodes, in] features, or a dict of them per node type (the output follows).
        ``edge_weight`` ([E] or [E, 1]) scales each edge's attention after the softmax;
        ``return_attention`` also returns the attention [E, H]."""
        g = as_graph(g)
        _check_types(self, g, num_rels=self.num_rels, num_ntypes=self.num_ntypes)
        r, t = g.num_etypes, g.num_ntypes
        out = self._run(hgt, g, _packed(g, h), _per_type(self.k_weight, t), _per_type(self.q_weight, t),
                        _per_type(self.v_weight, t), _per_type(self.relation_att, r),
                        _per_type(self.relation_msg, r), _per_type(self.relation_pri, r),
                        _per_type(self.out_weight, t), _per_type(self.skip, t), self.residual_w,
                        edge_weight=_edge_weight(edge_weight, g), return_attention=return_attention)
        out, attention = out if return_attention else (out, None)
        out = _unpacked(g, self._finish(out), h)
        return (out, attention) if return_attention else out

    def extra_repr(self) -> str:
        return (f"{self.in_feats}, head_size={self.head_size}, num_heads={self.num_heads}, "
                f"num_ntypes={self.num_ntypes}, num_rels={self.num_rels}, use_skip={self.use_skip}")
