"""Drop-in replacements for PyG's relational layers: the same constructor arguments, ``forward``
signatures and parameter names as PyG 2.8, so that ``load_state_dict(pyg_layer.state_dict())``
works and the outputs match. Change ``from torch_geometric.nn import RGCNConv`` to
``from pigeon.nn.pyg import RGCNConv``; nothing else.

The graph is built from ``edge_index`` / ``edge_type`` on the first call and kept while they stay
the same (compared by value)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import pigeon
from pigeon.lang import concat, dropout, leaky_relu, linear, relu, softmax, sum
from pigeon.runtime.graph import Graph, GraphError

from .layers import PigeonLayer
from .relational import LastGraph, bases_order, relational_sum


def _glorot(p: torch.Tensor | None) -> None:
    """PyG's glorot: uniform in +-sqrt(6 / (fan_in + fan_out)) over the last two axes."""
    if p is not None:
        bound = math.sqrt(6.0 / (p.size(-2) + p.size(-1)))
        nn.init.uniform_(p, -bound, bound)


def graph_from_edge_index(edge_index: torch.Tensor, edge_type: torch.Tensor | None, num_nodes: int,
                          num_relations: int) -> Graph:
    """A pigeon.Graph of a PyG ``edge_index`` [2, E] (row 0: sources, row 1: targets)."""
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = list(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__
        raise GraphError(f"edge_index must be a [2, num_edges] tensor, got {shape}")
    if edge_type is None:
        if num_relations != 1:
            raise GraphError(f"edge_type is needed with num_relations={num_relations}")
    return Graph.from_edges(edge_index[0], edge_index[1], edge_type, num_nodes, num_etypes=num_relations)


class RGCNConv(PigeonLayer):
    """PyG's ``RGCNConv``: ``x'_i = root x_i + sum_r AGG_{j in N_r(i)} W_r x_j + bias``, with
    ``aggr`` "mean" (per relation, PyG's default) or "add"/"sum", ``num_bases`` (W_r = sum_b
    comp[r, b] weight[b]) or ``num_blocks`` (block-diagonal W_r). Node features must be floats
    (PyG's featureless mode, ``x=None`` or node indices, is not supported)."""

    def __init__(self, in_channels: int, out_channels: int, num_relations: int, num_bases: int | None = None,
                 num_blocks: int | None = None, aggr: str = "mean", root_weight: bool = True,
                 is_sorted: bool = False, bias: bool = True, **kwargs: Any):
        super().__init__()
        if num_bases is not None and num_blocks is not None:
            raise ValueError("Can not apply both basis-decomposition and block-diagonal-decomposition at the same time.")
        if aggr not in ("mean", "add", "sum"):
            raise ValueError(f"aggr must be 'mean', 'add' or 'sum' here, got {aggr!r} (per-relation max is not supported)")
        if kwargs:
            raise TypeError(f"unsupported arguments {sorted(kwargs)}")
        if not isinstance(in_channels, int):
            raise TypeError("in_channels must be an int here (bipartite (in_src, in_dst) pairs are not supported)")
        self.in_channels, self.out_channels, self.num_relations = in_channels, out_channels, num_relations
        self.num_bases, self.num_blocks, self.aggr, self.is_sorted = num_bases, num_blocks, aggr, is_sorted
        if num_bases is not None:
            self.weight = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
            self.comp = nn.Parameter(torch.empty(num_relations, num_bases))
        elif num_blocks is not None:
            if in_channels % num_blocks or out_channels % num_blocks:
                raise ValueError(f"num_blocks={num_blocks} must divide in_channels and out_channels")
            self.weight = nn.Parameter(torch.empty(num_relations, num_blocks, in_channels // num_blocks,
                                                   out_channels // num_blocks))
            self.register_parameter("comp", None)
        else:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, out_channels))
            self.register_parameter("comp", None)
        self.root = nn.Parameter(torch.empty(in_channels, out_channels)) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._graphs = LastGraph()
        self._orders: dict[tuple, str] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot(self.weight)
        _glorot(self.comp)
        _glorot(self.root)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor of node features, got "
                            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
        arrays = (edge_index,) if edge_type is None else (edge_index, edge_type)
        g = self._graphs.get(arrays, (x.size(0), self.num_relations), lambda: graph_from_edge_index(
            edge_index, edge_type, x.size(0), self.num_relations))
        kwargs = {"loop_weight": self.root, "bias": self.bias, "aggr": "mean" if self.aggr == "mean" else "sum"}
        order = None
        if self.comp is not None:
            key = (g.num_edges, g.num_nodes, x.dtype)
            if key not in self._orders:
                self._orders[key] = bases_order(g, x, self.weight, self.comp, **kwargs)
            order = self._orders[key]
        out = relational_sum(g, x, self.weight, self.comp, blocks=self.num_blocks is not None, order=order,
                             **kwargs)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, num_relations={self.num_relations})"


class FastRGCNConv(RGCNConv):
    """PyG's ``FastRGCNConv``: the same layer and parameters as ``RGCNConv`` (PyG computes it
    another way, with more memory); here both run the same generated kernels."""


@pigeon.compile
def film_program(g, x, lin, film, film_bias, lin_skip, film_skip, act=True):
    """PyG's FiLMConv with the weights stacked per relation ([R, in, out], [R, in, 2 out]):
    each relation's mean of act(gamma_{r,i} * lin_r x_j + beta_{r,i}), plus the skip term."""
    size = lin.shape[2]
    for e in g.edges():
        beta_gamma = linear(x[e.dst], film[e.etype]) + film_bias[e.etype]
        msg = beta_gamma[..., size:] * linear(x[e.src], lin[e.etype]) + beta_gamma[..., :size]
        e.msg = (relu(msg) if act else msg) / e.dst_etype_degree
    for n in g.dst_nodes():
        skip_beta_gamma = linear(x[n], film_skip)
        skip = skip_beta_gamma[..., size:] * linear(x[n], lin_skip) + skip_beta_gamma[..., :size]
        n.out = (relu(skip) if act else skip) + sum(e.msg for e in n.incoming_edges())
    return n.out


class FiLMConv(PigeonLayer):
    """PyG's ``FiLMConv`` (GNN-FiLM): ``lins``, ``films``, ``lin_skip`` and ``film_skip`` as in
    PyG; ``act`` is ReLU (PyG's default) or None; ``aggr`` "mean" (per relation, PyG's default)."""

    def __init__(self, in_channels: int, out_channels: int, num_relations: int = 1, nn: Any = None,
                 act: Any = "relu", aggr: str = "mean", **kwargs: Any):
        super().__init__()
        if nn is not None:
            raise TypeError("a custom FiLM network (nn=...) is not supported; the FiLM maps are linear")
        if act == "relu":
            act = torch.nn.ReLU()
        if act is not None and not isinstance(act, torch.nn.ReLU):
            raise TypeError(f"act must be ReLU (PyG's default) or None, got {type(act).__name__}")
        if aggr != "mean" or kwargs:
            raise TypeError(f"only aggr='mean' is supported here (got aggr={aggr!r}, other arguments {sorted(kwargs)})")
        if not isinstance(in_channels, int):
            raise TypeError("in_channels must be an int here (bipartite pairs are not supported)")
        self.in_channels, self.out_channels, self.num_relations = in_channels, out_channels, max(num_relations, 1)
        self.act = act
        self.lins = torch.nn.ModuleList(torch.nn.Linear(in_channels, out_channels, bias=False)
                                        for _ in range(self.num_relations))
        self.films = torch.nn.ModuleList(torch.nn.Linear(in_channels, 2 * out_channels)
                                         for _ in range(self.num_relations))
        self.lin_skip = torch.nn.Linear(in_channels, out_channels, bias=False)
        self.film_skip = torch.nn.Linear(in_channels, 2 * out_channels, bias=False)
        self._graphs = LastGraph()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor | None = None) -> torch.Tensor:
        if edge_type is None:
            edge_type = torch.zeros(edge_index.shape[1], dtype=torch.long, device=edge_index.device)
        if self.num_relations == 1:
            edge_type = torch.zeros_like(edge_type)  # PyG uses its one relation's maps for every edge
        g = self._graphs.get((edge_index, edge_type), (x.size(0), self.num_relations), lambda: graph_from_edge_index(
            edge_index, edge_type, x.size(0), self.num_relations))
        lin = torch.stack([m.weight.t() for m in self.lins])  # torch's Linear stores [out, in]
        film = torch.stack([m.weight.t() for m in self.films])
        film_bias = torch.stack([m.bias for m in self.films])
        return self._run(film_program, g, x, lin, film, film_bias, self.lin_skip.weight.t(),
                         self.film_skip.weight.t(), act=self.act is not None)


@pigeon.compile
def heat_program(g, x, edge_attr, node_weight, node_bias, etype_emb, attr_weight, att, msg_weight, msg_bias,
                 head_mean=None, root_weight=True, p=0.0, training=False):
    """PyG's HEATConv (torch's Linear weights given as [in, out]); ``head_mean`` ([H d, d], the
    mean over heads as a matrix) for concat=False."""
    heads, size = att.shape[1], msg_weight.shape[1]
    for n in g.nodes():
        n.x = linear(x[n], node_weight[n.ntype]) + node_bias[n.ntype]
    for e in g.edges():
        attr = leaky_relu(linear(edge_attr[e], attr_weight), 0.2)
        kind = leaky_relu(etype_emb[e.etype], 0.2)
        e.score = leaky_relu(linear(concat(e.dst.x, e.src.x, kind, attr), att), 0.2)
        e.msg = linear(concat(e.src.x, attr), msg_weight) + msg_bias
    for n in g.dst_nodes():
        agg = sum(dropout(softmax(e.score), p, training).reshape(heads, 1) * e.msg.reshape(1, size)
                  for e in n.incoming_edges())
        if head_mean is None:
            n.out = (agg + n.x.reshape(1, size) if root_weight else agg).reshape(heads * size)
        else:
            out = linear(agg.reshape(heads * size), head_mean)
            n.out = out + n.x if root_weight else out
    return n.out


class HEATConv(PigeonLayer):
    """PyG's ``HEATConv``: ``hetero_lin`` (per node type), ``edge_type_emb``, ``edge_attr_emb``,
    ``att`` and ``lin`` as in PyG; ``forward(x, edge_index, node_type, edge_type, edge_attr)``.
    The attention's leaky ReLU slope is 0.2 (PyG's default)."""

    def __init__(self, in_channels: int, out_channels: int, num_node_types: int, num_edge_types: int,
                 edge_type_emb_dim: int, edge_dim: int, edge_attr_emb_dim: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, root_weight: bool = True, bias: bool = True,
                 **kwargs: Any):
        super().__init__()
        if negative_slope != 0.2 or kwargs:
            raise TypeError(f"negative_slope must be 0.2 here (got {negative_slope}); other arguments {sorted(kwargs)}")
        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.negative_slope, self.dropout, self.root_weight = negative_slope, dropout, root_weight
        self.num_node_types, self.num_edge_types = num_node_types, num_edge_types
        self.hetero_lin = _HeteroLinear(in_channels, out_channels, num_node_types, bias)
        self.edge_type_emb = torch.nn.Embedding(num_edge_types, edge_type_emb_dim)
        self.edge_attr_emb = torch.nn.Linear(edge_dim, edge_attr_emb_dim, bias=False)
        self.att = torch.nn.Linear(2 * out_channels + edge_type_emb_dim + edge_attr_emb_dim, heads, bias=False)
        self.lin = torch.nn.Linear(out_channels + edge_attr_emb_dim, out_channels, bias=bias)
        self._graphs = LastGraph()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, node_type: torch.Tensor, edge_type: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        g = self._graphs.get((edge_index, edge_type, node_type), (x.size(0),), lambda: Graph.from_edges(
            edge_index[0], edge_index[1], edge_type, x.size(0), node_type, num_etypes=self.num_edge_types,
            num_ntypes=self.num_node_types))
        node_bias = self.hetero_lin.bias if self.hetero_lin.bias is not None else torch.zeros(
            self.num_node_types, self.out_channels, dtype=x.dtype)
        msg_bias = self.lin.bias if self.lin.bias is not None else torch.zeros(self.out_channels, dtype=x.dtype)
        head_mean = None
        if not self.concat:
            head_mean = torch.eye(self.out_channels, dtype=x.dtype).repeat(self.heads, 1) / self.heads
        return self._run(heat_program, g, x, edge_attr, self.hetero_lin.weight, node_bias, self.edge_type_emb.weight,
                         self.edge_attr_emb.weight.t(), self.att.weight.t(), self.lin.weight.t(), msg_bias, head_mean,
                         root_weight=self.root_weight, p=float(self.dropout), training=self.training)


class _HeteroLinear(torch.nn.Module):
    """PyG's ``HeteroLinear`` parameters: ``weight`` [types, in, out], ``bias`` [types, out]."""

    def __init__(self, in_channels: int, out_channels: int, num_types: int, bias: bool = True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(num_types, in_channels, out_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_types, out_channels)) if bias else None
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
