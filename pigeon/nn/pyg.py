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
