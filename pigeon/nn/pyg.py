"""Drop-in replacements for PyG's relational layers: the same constructor arguments, ``forward``
signatures and parameter names as PyG 2.8, so that ``load_state_dict(pyg_layer.state_dict())``
works and the outputs match. Change ``from torch_geometric.nn import RGCNConv`` to
``from pigeon.nn.pyg import RGCNConv``; nothing else.

The graph is built from ``edge_index`` / ``edge_type`` on the first call and kept while they stay
the same (compared by value)."""
from __future__ import annotations

import builtins
import itertools
import math
from typing import Any

import torch
from torch import nn

import pigeon
from pigeon.lang import (concat, dot, dropout, exp, gelu, leaky_relu, linear, maximum, relu, sigmoid, softmax, sum,
                         tanh, where)
from pigeon.lang import max as max_of
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

    _messages_by_position = False  # featureless messages: rows x[j] (RGCNConv) or j (FastRGCNConv)

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

    def forward(self, x: torch.Tensor | None, edge_index: torch.Tensor,
                edge_type: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: [num_nodes, in_channels] features, or (PyG's featureless mode) None or node
        indices [num_nodes], which pick rows of the weights as the nodes' embeddings."""
        if x is None or (isinstance(x, torch.Tensor) and x.dim() == 1 and not x.is_floating_point()):
            return self._featureless(x, edge_index, edge_type)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor of node features, node indices or None, got "
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

    def _featureless(self, x: torch.Tensor | None, edge_index: torch.Tensor,
                     edge_type: torch.Tensor | None) -> torch.Tensor:
        """Node j's input is row x_j of the weights (j itself for x=None), as PyG's: with bases
        every edge mixes its source's rows of the bases; without, the rows of every relation
        (bases = relations, mixed by the identity)."""
        if self.num_blocks is not None:
            raise ValueError("Block-diagonal decomposition not supported for non-continuous input features.")
        ids = torch.arange(self.in_channels, device=self.weight.device) if x is None else x
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.in_channels:
            raise GraphError(f"x holds node indices, which must lie in [0, in_channels={self.in_channels})")
        # PyG's FastRGCNConv takes each message's rows at the source's position, not at x[source]
        message_ids = torch.arange(ids.numel(), device=ids.device) if self._messages_by_position else ids
        if self._messages_by_position and ids.numel() > self.in_channels:
            raise GraphError(f"{ids.numel()} nodes but in_channels={self.in_channels}: FastRGCNConv takes "
                             f"node j's message from row j of the weights")
        arrays = (edge_index,) if edge_type is None else (edge_index, edge_type)
        g = self._graphs.get(arrays, (ids.numel(), self.num_relations), lambda: graph_from_edge_index(
            edge_index, edge_type, ids.numel(), self.num_relations))
        if self.comp is not None:
            coeff = self.comp
        else:
            coeff = torch.eye(self.num_relations, dtype=self.weight.dtype, device=self.weight.device)
        rows = self.weight.index_select(1, message_ids).permute(1, 2, 0)  # [N, out, bases]
        root = None if self.root is None else self.root.index_select(0, ids)
        return self._run(rgcn_featureless_program, g, rows.reshape(ids.numel(), -1), coeff, root, self.bias,
                         aggr="mean" if self.aggr == "mean" else "sum")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, num_relations={self.num_relations})"


@pigeon.compile
def rgcn_featureless_program(g, node_bases, coeff, root=None, bias=None, aggr="mean"):
    """RGCN on embeddings taken from the weights: ``node_bases`` [N, out * B] holds each node's
    row of every basis (column o * B + b of node j: V_b[j, o]), ``coeff`` [R, B] mixes them per
    relation, ``root`` [N, out] is each node's row of the root weight."""
    num_bases = coeff.shape[1]
    size = node_bases.shape[1] // num_bases
    for e in g.edges():
        msg = dot(node_bases[e.src].reshape(size, num_bases), coeff[e.etype].reshape(1, num_bases)).reshape(size)
        e.msg = msg / e.dst_etype_degree if aggr == "mean" else msg
    for n in g.dst_nodes():
        out = sum(e.msg for e in n.incoming_edges())
        if root is not None:
            out = out + root[n]
        if bias is not None:
            out = out + bias
        n.out = out
    return n.out


class FastRGCNConv(RGCNConv):
    """PyG's ``FastRGCNConv``: the same layer and parameters as ``RGCNConv`` (PyG computes it
    another way, with more memory); here both run the same generated kernels. With node indices
    as ``x``, PyG's FastRGCNConv (unlike its RGCNConv) takes each message from the weights' row
    at the source's position and the root term from row x[i]; so does this one."""

    _messages_by_position = True


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


def _parameter_key(key: str | tuple[str, ...]) -> str:
    """The name PyG's ``ParameterDict`` stores ``key`` under (so state_dict keys match): a tuple
    as ``<a___b>``, a name that is an attribute of ParameterDict as ``<name>``, dots as ``#``."""
    if isinstance(key, tuple):
        key = f"<{'___'.join(key)}>"
    if key in _PARAMETER_DICT_ATTRS:
        key = f"<{key}>"
    return key.replace(".", "#")


_PARAMETER_DICT_ATTRS = frozenset(dir(torch.nn.ParameterDict))


class _HeteroDictLinear(torch.nn.Module):
    """PyG's ``HeteroDictLinear`` parameters: ``lins[key]`` a Linear (weight [out, in], bias [out]) per key."""

    def __init__(self, in_channels: dict[str, int], out_channels: int):
        super().__init__()
        self.lins = torch.nn.ModuleDict({key: torch.nn.Linear(size, out_channels) for key, size in in_channels.items()})


@pigeon.compile
def hgt_program(g, x, kqv_weight, kqv_bias, k_rel, v_rel, p_rel, out_weight, out_bias, skip=None, skip_mask=None):
    """PyG's HGTConv on one graph of every node type: ``kqv_weight`` [T, in, 3 F] (K, Q, V side by
    side), ``k_rel``, ``v_rel`` [R, H, D, D], ``p_rel`` [R, H], ``out_weight`` [T, F, F]; the skip gate
    ``skip`` [T] where ``skip_mask`` [T] is 1 (node types whose input size is F; None: all of them).
    ``x`` may be wider than F (node types of other input sizes, zero-padded): the skip reads its
    first F columns."""
    heads, size = k_rel.shape[1], k_rel.shape[-1]
    width = heads * size
    for n in g.nodes():
        kqv = linear(x[n], kqv_weight[n.ntype]) + kqv_bias[n.ntype]
        n.k = kqv[..., 0:width].reshape(heads, size)
        n.q = kqv[..., width:2 * width].reshape(heads, size)
        n.v = kqv[..., 2 * width:3 * width].reshape(heads, size)
    for e in g.edges():
        e.score = dot(linear(e.src.k, k_rel[e.etype]), e.dst.q) * p_rel[e.etype].reshape(heads, 1) / math.sqrt(size)
        e.msg = linear(e.src.v, v_rel[e.etype])
    for n in g.dst_nodes():
        agg = sum(softmax(e.score) * e.msg for e in n.incoming_edges()).reshape(width)
        out = linear(gelu(agg), out_weight[n.ntype]) + out_bias[n.ntype]
        if skip is not None:
            gate = sigmoid(skip[n.ntype])
            if skip_mask is not None:  # gate 1 (the output alone) where the node type has no skip
                gate = gate * skip_mask[n.ntype] + (1.0 - skip_mask[n.ntype])
            residual = x[n] if x.shape[1] == width else x[n][..., 0:width]
            out = gate * out + (1.0 - gate) * residual
        n.out = out
    return n.out


class HGTConv(PigeonLayer):
    """PyG's ``HGTConv``: ``kqv_lin`` and ``out_lin`` (a Linear per node type), ``k_rel`` and ``v_rel``
    (one D x D matrix per head and edge type, numbered head * R + edge type), ``skip`` (per node
    type) and ``p_rel`` (per edge type, [1, heads]) as in PyG; ``forward(x_dict, edge_index_dict)``
    returns the outputs of the node types that are a destination of some edge type of
    ``metadata`` (and present in ``x_dict``), in ``x_dict`` order, as PyG does."""

    def __init__(self, in_channels: int | dict[str, int], out_channels: int, metadata: tuple[list, list],
                 heads: int = 1, **kwargs: Any):
        super().__init__()
        if kwargs:
            raise TypeError(f"unsupported arguments {sorted(kwargs)} (HGTConv aggregates with 'add', as PyG's)")
        if out_channels % heads != 0:
            raise ValueError(f"'out_channels' (got {out_channels}) must be divisible by the number of heads "
                             f"(got {heads})")
        node_types, edge_types = list(metadata[0]), [tuple(t) for t in metadata[1]]
        if not isinstance(in_channels, dict):
            in_channels = {node_type: in_channels for node_type in node_types}
        bad = {t: c for t, c in in_channels.items() if not isinstance(c, int) or c < 1}
        if bad:
            raise ValueError(f"in_channels must be positive sizes (lazy initialisation with -1 is not "
                             f"supported), got {bad}")
        if set(in_channels) != set(node_types):
            raise ValueError(f"in_channels has sizes for {sorted(in_channels)}; expected one for each node type "
                             f"of metadata, {sorted(node_types)}")
        if not edge_types:
            raise ValueError("metadata has no edge types: HGTConv needs at least one")
        self.in_channels, self.out_channels, self.heads = dict(in_channels), out_channels, heads
        self.node_types, self.edge_types = node_types, edge_types
        self.edge_types_map = {edge_type: i for i, edge_type in enumerate(edge_types)}
        self.dst_node_types = {key[-1] for key in edge_types}
        dim = out_channels // heads
        self.kqv_lin = _HeteroDictLinear(self.in_channels, 3 * out_channels)
        self.out_lin = _HeteroDictLinear({t: out_channels for t in node_types}, out_channels)
        self.k_rel = _HeteroLinear(dim, dim, heads * len(edge_types), bias=False)
        self.v_rel = _HeteroLinear(dim, dim, heads * len(edge_types), bias=False)
        self.skip = torch.nn.ParameterDict({_parameter_key(t): nn.Parameter(torch.ones(1)) for t in node_types})
        self.p_rel = torch.nn.ParameterDict({_parameter_key("__".join(t)): nn.Parameter(torch.ones(1, heads))
                                             for t in edge_types})
        for rel in (self.k_rel, self.v_rel):
            bound = 1.0 / math.sqrt(dim)  # PyG's HeteroLinear init: kaiming_uniform(a=sqrt(5)) with fan = in
            nn.init.uniform_(rel.weight, -bound, bound)
        self._graphs = LastGraph()

    def _graph(self, types: list[str], sizes: list[int], edge_index_dict: dict) -> Graph:
        """One graph of every node type in ``types`` and every edge type of ``edge_index_dict``
        (node and edge types numbered as in metadata)."""
        for key in edge_index_dict:
            if tuple(key) not in self.edge_types_map:
                raise GraphError(f"edge type {tuple(key)} of edge_index_dict is not in the layer's metadata")
        return _hetero_graph(types, sizes, edge_index_dict, self.edge_types_map,
                             {t: self.node_types.index(t) for t in types}, len(self.node_types))

    def forward(self, x_dict: dict[str, torch.Tensor], edge_index_dict: dict) -> dict[str, torch.Tensor]:
        types = [t for t in x_dict if t in self.kqv_lin.lins]  # as PyG: other keys are ignored
        if not types:
            raise ValueError(f"x_dict has no features of the layer's node types {self.node_types}")
        for t in types:
            if x_dict[t].dim() != 2 or x_dict[t].shape[1] != self.in_channels[t]:
                raise ValueError(f"x_dict[{t!r}] has shape {list(x_dict[t].shape)}; expected "
                                 f"[num_nodes, {self.in_channels[t]}]")
        sizes = [x_dict[t].shape[0] for t in types]
        g = self._graphs.get(tuple(edge_index_dict.values()), (tuple(types), tuple(sizes), tuple(edge_index_dict)),
                             lambda: self._graph(types, sizes, edge_index_dict))
        # one feature width for all node types: narrower ones are zero-padded, as are their weights
        in_max = max(self.in_channels.values())
        x = torch.cat([nn.functional.pad(x_dict[t], (0, in_max - x_dict[t].shape[1])) for t in types])
        kqv_weight = torch.stack([nn.functional.pad(self.kqv_lin.lins[t].weight.t(),
                                                    (0, 0, 0, in_max - self.in_channels[t])) for t in self.node_types])
        kqv_bias = torch.stack([self.kqv_lin.lins[t].bias for t in self.node_types])
        heads, dim = self.heads, self.out_channels // self.heads
        k_rel = self.k_rel.weight.view(heads, -1, dim, dim).transpose(0, 1)  # [R, H, D, D]
        v_rel = self.v_rel.weight.view(heads, -1, dim, dim).transpose(0, 1)
        p_rel = torch.cat([self.p_rel[_parameter_key("__".join(t))] for t in self.edge_types])
        out_weight = torch.stack([self.out_lin.lins[t].weight.t() for t in self.node_types])
        out_bias = torch.stack([self.out_lin.lins[t].bias for t in self.node_types])
        has_skip = [self.in_channels[t] == self.out_channels for t in self.node_types]  # PyG: same size in and out
        skip = torch.cat([self.skip[_parameter_key(t)] for t in self.node_types]) if any(has_skip) else None
        skip_mask = None if all(has_skip) or skip is None else torch.tensor(has_skip, dtype=x.dtype)
        out = self._run(hgt_program, g, x, kqv_weight, kqv_bias, k_rel, v_rel, p_rel, out_weight, out_bias, skip,
                        skip_mask)
        parts = dict(zip(types, torch.split(out, sizes)))
        return {t: parts[t] for t in types if t in self.dst_node_types}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(-1, {self.out_channels}, heads={self.heads})"


@pigeon.compile
def rgat_program(g, x, weight, q, k, bias=None, edge_attr=None, lin_edge=None, e=None, w=None, l1=None, b1=None,
                 l2=None, b2=None, heads=1, dim=1, blocks=False, multiplicative=False, within_relation=False,
                 mod=None, concat=True, negative_slope=0.2, p=0.0, training=False, return_attention=False):
    """PyG's RGATConv, with the softmax over all incoming edges of a node or (``within_relation``)
    over those of each relation: ``weight`` [R, in, H C] (or blocks [R, B, in / B, H C / B]),
    ``q``, ``k`` [H C, H dim] mixing all heads; ``lin_edge`` [edge_dim, H C] and ``e`` [H C, H dim]
    for edge attributes; ``mod`` one of PyG's cardinality preservation options (``w``, ``l1``,
    ``b1``, ``l2``, ``b2`` as [C], [C], [C], [C, C], [C]). Heads x dim attention values per edge."""
    width = q.shape[0]
    size = width // heads
    for edge in g.edges():
        if blocks:
            num_blocks, block_in = weight.shape[1], weight.shape[2]
            out_i = linear(x[edge.dst].reshape(num_blocks, block_in), weight[edge.etype]).reshape(width)
            out_j = linear(x[edge.src].reshape(num_blocks, block_in), weight[edge.etype]).reshape(width)
        else:
            out_i = linear(x[edge.dst], weight[edge.etype])
            out_j = linear(x[edge.src], weight[edge.etype])
        q_i, k_j = linear(out_i, q), linear(out_j, k)
        attr = None if edge_attr is None else linear(linear(edge_attr[edge], lin_edge), e)
        if multiplicative:
            score = q_i * k_j if attr is None else q_i * k_j * attr
        else:
            score = leaky_relu(q_i + k_j if attr is None else q_i + k_j + attr, negative_slope)
        edge.score = score
        edge.msg = out_j.reshape(heads, 1, size)

    def attention(edge):
        return softmax(edge.score, by="etype") if within_relation else softmax(edge.score)

    def message(edge):
        alpha = attention(edge)
        if mod == "f-additive":
            alpha = where(alpha > 0, alpha + 1.0, alpha)
        elif mod == "f-scaled":
            alpha = alpha * edge.dst_degree
        elif mod is None:
            alpha = dropout(alpha, p, training)
        msg = alpha.reshape(heads, dim, 1) * edge.msg  # [H, dim, C]
        if mod == "additive":
            msg = msg + w * edge.msg
        elif mod == "scaled":
            degree = linear(relu(edge.dst_degree * l1 + b1), l2) + b2
            msg = msg * degree
        return msg

    block = dim * size
    for n in g.dst_nodes():
        agg = sum(message(edge) for edge in n.incoming_edges()).reshape(heads * block)
        if not concat:  # the mean over heads
            mean_agg = agg[..., 0:block]
            for head in range(1, heads):
                mean_agg = mean_agg + agg[..., head * block:(head + 1) * block]
            agg = mean_agg / heads
        n.out = agg if bias is None else agg + bias
    if return_attention:
        for edge in g.edges():
            edge.attention = attention(edge).reshape(heads * dim)
        return n.out, edge.attention
    return n.out


class RGATConv(PigeonLayer):
    """PyG's ``RGATConv``, both attention mechanisms and both modes: ``q``,
    ``k``, ``weight`` (or ``basis`` and ``att`` with ``num_bases``; blocks with ``num_blocks``),
    ``bias``, ``lin_edge`` and ``e`` (with ``edge_dim``), ``w``, ``l1``, ``b1``, ``l2``, ``b2`` (the
    ``mod`` options) as in PyG; ``forward(x, edge_index, edge_type, edge_attr=None, size=None,
    return_attention_weights=None)``."""

    def __init__(self, in_channels: int, out_channels: int, num_relations: int, num_bases: int | None = None,
                 num_blocks: int | None = None, mod: str | None = None, attention_mechanism: str = "across-relation",
                 attention_mode: str = "additive-self-attention", heads: int = 1, dim: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, edge_dim: int | None = None, bias: bool = True,
                 **kwargs: Any):
        super().__init__()
        if kwargs.pop("aggr", "add") not in ("add", "sum") or kwargs:
            raise TypeError(f"unsupported arguments {sorted(kwargs) or ['aggr']} (RGATConv aggregates with 'add' here)")
        if attention_mechanism not in ("within-relation", "across-relation"):
            raise ValueError('attention mechanism must either be "within-relation" or "across-relation"')
        if attention_mode not in ("additive-self-attention", "multiplicative-self-attention"):
            raise ValueError('attention mode must either be "additive-self-attention" or '
                             '"multiplicative-self-attention"')
        if attention_mode == "additive-self-attention" and dim > 1:
            raise ValueError('"additive-self-attention" mode cannot be applied when value of d is greater than 1. '
                             'Use "multiplicative-self-attention" instead.')
        if mod not in (None, "additive", "scaled", "f-additive", "f-scaled"):
            raise ValueError(f"mod must be None, 'additive', 'scaled', 'f-additive' or 'f-scaled', got {mod!r}")
        if dropout > 0.0 and mod is not None:
            raise ValueError("mod must be None with dropout value greater than 0 in order to sample attention "
                             "coefficients stochastically")
        if num_bases is not None and num_blocks is not None:
            raise ValueError("Can not apply both basis-decomposition and block-diagonal-decomposition "
                             "at the same time.")
        if not isinstance(in_channels, int):
            raise TypeError("in_channels must be an int here (bipartite (in_src, in_dst) pairs are not supported)")
        self.in_channels, self.out_channels, self.num_relations = in_channels, out_channels, num_relations
        self.num_bases, self.num_blocks, self.mod = num_bases, num_blocks, mod
        self.attention_mechanism, self.attention_mode = attention_mechanism, attention_mode
        self.heads, self.dim, self.concat = heads, dim, concat
        self.negative_slope, self.dropout, self.edge_dim = negative_slope, dropout, edge_dim
        width = heads * out_channels
        self.q = nn.Parameter(torch.empty(width, heads * dim))
        self.k = nn.Parameter(torch.empty(width, heads * dim))
        if bias:
            self.bias = nn.Parameter(torch.empty(heads * dim * out_channels if concat else dim * out_channels))
        else:
            self.register_parameter("bias", None)
        if edge_dim is not None:
            self.lin_edge = torch.nn.Linear(edge_dim, width, bias=False)
            self.e = nn.Parameter(torch.empty(width, heads * dim))
        else:
            self.lin_edge = None
            self.register_parameter("e", None)
        if num_bases is not None:
            self.att = nn.Parameter(torch.empty(num_relations, num_bases))
            self.basis = nn.Parameter(torch.empty(num_bases, in_channels, width))
        elif num_blocks is not None:
            if in_channels % num_blocks or width % num_blocks:
                raise ValueError("both 'in_channels' and 'heads * out_channels' must be multiple of 'num_blocks' used")
            self.weight = nn.Parameter(torch.empty(num_relations, num_blocks, in_channels // num_blocks,
                                                   width // num_blocks))
        else:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, width))
        self.w = nn.Parameter(torch.ones(out_channels))
        self.l1 = nn.Parameter(torch.empty(1, out_channels))
        self.b1 = nn.Parameter(torch.empty(1, out_channels))
        self.l2 = nn.Parameter(torch.empty(out_channels, out_channels))
        self.b2 = nn.Parameter(torch.empty(1, out_channels))
        self._graphs = LastGraph()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.num_bases is not None:
            _glorot(self.basis)
            _glorot(self.att)
        else:
            _glorot(self.weight)
        _glorot(self.q)
        _glorot(self.k)
        with torch.no_grad():
            if self.bias is not None:
                self.bias.zero_()
            self.l1.fill_(1.0)
            self.b1.zero_()
            self.l2.fill_(1.0 / self.out_channels)  # PyG means this (its torch.full is a no-op: l2 stays unset)
            self.b2.zero_()
        if self.lin_edge is not None:
            _glorot(self.lin_edge.weight)
            _glorot(self.e)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None, size: tuple[int, int] | None = None,
                return_attention_weights: bool | None = None) -> Any:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor of node features, got "
                            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
        if size is not None and tuple(size) != (x.size(0), x.size(0)):
            raise ValueError(f"size={tuple(size)} must be (num_nodes, num_nodes) = {(x.size(0),) * 2} here "
                             f"(x is one tensor, so PyG reads both ends of an edge from it)")
        arrays = (edge_index,) if edge_type is None else (edge_index, edge_type)
        g = self._graphs.get(arrays, (x.size(0), self.num_relations), lambda: graph_from_edge_index(
            edge_index, edge_type, x.size(0), self.num_relations))
        lin_edge = e = None
        if edge_attr is not None:
            if self.lin_edge is None:
                raise ValueError("Please set 'edge_dim = edge_attr.size(-1)' while calling the RGATConv layer")
            edge_attr = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
            if tuple(edge_attr.shape) != (g.num_edges, self.edge_dim):
                raise GraphError(f"edge_attr has shape {list(edge_attr.shape)}; expected [{g.num_edges}, "
                                 f"{self.edge_dim}], one row per edge")
            lin_edge, e = self.lin_edge.weight.t(), self.e
        if self.num_bases is not None:  # composed per relation, as PyG does
            weight = (self.att @ self.basis.view(self.num_bases, -1)).view(self.num_relations, self.in_channels, -1)
        else:
            weight = self.weight
        scaled = self.mod == "scaled"
        out = self._run(rgat_program, g, x, weight, self.q, self.k, self.bias, edge_attr, lin_edge, e,
                        self.w if self.mod == "additive" else None, self.l1.view(-1) if scaled else None,
                        self.b1.view(-1) if scaled else None, self.l2 if scaled else None,
                        self.b2.view(-1) if scaled else None, heads=self.heads, dim=self.dim,
                        blocks=self.num_blocks is not None,
                        multiplicative=self.attention_mode == "multiplicative-self-attention",
                        within_relation=self.attention_mechanism == "within-relation", mod=self.mod,
                        concat=self.concat, negative_slope=self.negative_slope, p=float(self.dropout),
                        training=self.training, return_attention=isinstance(return_attention_weights, bool))
        if isinstance(return_attention_weights, bool):
            out, alpha = out
            return out, (edge_index, alpha)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"


def _hetero_graph(types: list[str], sizes: list[int], edge_index_dict: dict, etype_of: dict,
                  ntype_of: dict | None = None, num_ntypes: int | None = None) -> Graph:
    """One graph of the node types ``types`` (consecutive ids, in that order; node type
    ``ntype_of[t]``, by default its position) and the edge types of ``edge_index_dict`` (edge type
    ``etype_of[key]``, ``len(etype_of)`` of them; edges in the dict's order)."""
    ntype_of = ntype_of if ntype_of is not None else {t: i for i, t in enumerate(types)}
    offsets = dict(zip(types, [0] + list(itertools.accumulate(sizes))[:-1]))
    counts = dict(zip(types, sizes))
    src, dst, etype = [], [], []
    for key, edge_index in edge_index_dict.items():
        key = tuple(key)
        if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise GraphError(f"edge_index_dict[{key}] must be a [2, num_edges] tensor")
        for end, node_type in ((0, key[0]), (1, key[-1])):
            if node_type not in offsets:
                raise GraphError(f"edge type {key} needs the features of node type {node_type!r} in x_dict")
            ids = edge_index[end]
            if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < counts[node_type]:
                raise GraphError(f"edge_index_dict[{key}] has a node id out of range for the "
                                 f"{counts[node_type]} nodes of type {node_type!r}")
        src.append(edge_index[0] + offsets[key[0]])
        dst.append(edge_index[1] + offsets[key[-1]])
        etype.append(torch.full_like(edge_index[0], etype_of[key]))
    ntype = [torch.full((n,), ntype_of[t], dtype=torch.long) for t, n in zip(types, sizes)]
    empty = torch.zeros(0, dtype=torch.long)
    return Graph.from_edges(torch.cat(src) if src else empty, torch.cat(dst) if dst else empty,
                            torch.cat(etype) if etype else empty, int(builtins.sum(sizes)),
                            torch.cat(ntype) if ntype else empty, num_etypes=len(etype_of),
                            num_ntypes=num_ntypes if num_ntypes is not None else len(types))


@pigeon.compile
def han_program(g, x, proj_weight, proj_bias, lin_src, lin_dst, k_weight, k_bias, q, inv_nodes, inv_dsts,
                idle_etypes, ceiling, mask=None, negative_slope=0.2, return_key_sums=False):
    """PyG's HANConv on one graph of every node type: ``proj_weight`` [T, in, C] (``x`` zero-padded
    to the widest input), ``lin_src``, ``lin_dst`` [R, H, D], ``k_weight`` [C, C], ``q`` [C]. Per edge
    type, ``inv_nodes`` is 1 / the number of nodes of its destination type and ``inv_dsts`` 1 / its
    number of distinct destinations; per node type, ``idle_etypes`` counts its edge types without
    edges (1 for a type that no edge type reaches, so that its unused outputs stay finite).
    ``ceiling`` exceeds every semantic score; ``mask`` [E, H, 1] is the attention's dropout mask.

    Each edge type r into node type t scores s_r = q . mean over all nodes v of t of tanh(k(o_vr)),
    where o_vr = 0 for a node without edges of r. Only the (destination, edge type) pairs with edges
    are visited, so s_r = q . (sum over the pairs of [tanh(k(o_vr)) - tanh(k_b)]) / N_t + q . tanh(k_b),
    and the softmax over t's edge types takes each of them once: exp(s_r) / (number of destinations
    of r) summed over t's pairs, plus one exp(q . tanh(k_b)) per edge type without edges."""
    heads, size = lin_src.shape[1], lin_src.shape[2]
    width = heads * size
    for n in g.nodes():
        n.z = linear(x[n], proj_weight[n.ntype]) + proj_bias[n.ntype]
    for e in g.edges():
        z_src = e.src.z.reshape(heads, size)
        e.score = leaky_relu(dot(z_src, lin_src[e.etype]) + dot(e.dst.z.reshape(heads, size), lin_dst[e.etype]),
                             negative_slope)
        e.msg = z_src

    def attention(e):
        alpha = softmax(e.score)  # [H, 1], within the relation: the edges of one type into one node
        return alpha if mask is None else alpha * mask[e]

    for r in g.dst_relations():
        r.out = relu(sum(attention(e) * e.msg for e in r.incoming_edges()).reshape(width))
        r.key = tanh(linear(r.out, k_weight) + k_bias) - tanh(k_bias)
    key_sums = sum((r.key for r in g.dst_relations()), by="etype")
    idle_score = dot(tanh(k_bias), q)  # the score of an edge type without edges

    def score(r):
        return dot(key_sums[r.etype], q) * inv_nodes[r.etype] + idle_score

    # the softmax is shifted by each node type's largest score (a node without edges offers -ceiling)
    for n in g.dst_nodes():
        best = max_of(score(r) + ceiling for r in n.relations()) - ceiling
        n.top = maximum(best, where(idle_etypes[n.ntype] > 0.0, idle_score, -ceiling))
    top = max_of((n.top for n in g.dst_nodes()), by="ntype")
    for n in g.dst_nodes():
        n.part = sum(exp(score(r) - top[r.dst.ntype]) * inv_dsts[r.etype] for r in n.relations())
    total = sum((n.part for n in g.dst_nodes()), by="ntype")
    for n in g.dst_nodes():
        norm = total[n.ntype] + idle_etypes[n.ntype] * exp(idle_score - top[n.ntype])
        n.out = sum(exp(score(r) - top[r.dst.ntype]) * r.out for r in n.relations()) / norm
    if return_key_sums:
        return n.out, key_sums
    return n.out


class HANConv(PigeonLayer):
    """PyG's ``HANConv``: ``proj`` (a Linear per node type), ``lin_src`` and ``lin_dst`` (per edge type,
    [1, heads, out / heads]), ``k_lin`` and ``q`` as in PyG; ``forward(x_dict, edge_index_dict,
    return_semantic_attention_weights=False)`` returns every node type of ``x_dict``: its output, or
    None where no edge type of ``edge_index_dict`` reaches it (and, if asked, the semantic attention
    over its edge types, in ``edge_index_dict`` order), as PyG does. The attention's dropout draws
    PyG's masks on a CPU (one per edge type, from torch's generator); on a GPU PyG's fused dropout
    draws others."""

    def __init__(self, in_channels: int | dict[str, int], out_channels: int, metadata: tuple[list, list],
                 heads: int = 1, negative_slope: float = 0.2, dropout: float = 0.0, **kwargs: Any):
        super().__init__()
        if kwargs:
            raise TypeError(f"unsupported arguments {sorted(kwargs)} (HANConv aggregates with 'add', as PyG's)")
        if out_channels % heads != 0:
            raise ValueError(f"'out_channels' (got {out_channels}) must be divisible by the number of heads "
                             f"(got {heads})")
        if not isinstance(in_channels, dict):
            in_channels = {node_type: in_channels for node_type in metadata[0]}
        bad = {t: c for t, c in in_channels.items() if not isinstance(c, int) or c < 1}
        if bad:
            raise ValueError(f"in_channels must be positive sizes (lazy initialisation with -1 is not "
                             f"supported), got {bad}")
        self.heads, self.in_channels, self.out_channels = heads, dict(in_channels), out_channels
        self.negative_slope, self.metadata, self.dropout = negative_slope, metadata, dropout
        self.k_lin = nn.Linear(out_channels, out_channels)
        self.q = nn.Parameter(torch.empty(1, out_channels))
        self.proj = nn.ModuleDict({t: nn.Linear(size, out_channels) for t, size in self.in_channels.items()})
        dim = out_channels // heads
        names = ["__".join(edge_type) for edge_type in metadata[1]]
        self.lin_src = nn.ParameterDict({name: nn.Parameter(torch.empty(1, heads, dim)) for name in names})
        self.lin_dst = nn.ParameterDict({name: nn.Parameter(torch.empty(1, heads, dim)) for name in names})
        self._graphs = LastGraph()
        self._counts: tuple[Graph | None, tuple[torch.Tensor, ...]] = (None, ())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.proj.values():
            lin.reset_parameters()
        for p in itertools.chain(self.lin_src.values(), self.lin_dst.values()):
            _glorot(p)
        self.k_lin.reset_parameters()
        _glorot(self.q)

    def forward(self, x_dict: dict[str, torch.Tensor], edge_index_dict: dict,
                return_semantic_attention_weights: bool = False) -> Any:
        for t, x in x_dict.items():
            if t not in self.proj:
                raise KeyError(f"x_dict has node type {t!r}, for which the layer has no projection "
                               f"(in_channels covers {sorted(self.proj)})")
            if x.dim() != 2 or x.shape[1] != self.in_channels[t]:
                raise ValueError(f"x_dict[{t!r}] has shape {list(x.shape)}; expected [num_nodes, "
                                 f"{self.in_channels[t]}]")
        keys = [tuple(key) for key in edge_index_dict]
        for key in keys:
            if "__".join(key) not in self.lin_src:
                raise KeyError(f"edge type {key} of edge_index_dict is not in the layer's metadata")
        into = {t: [i for i, key in enumerate(keys) if key[-1] == t] for t in x_dict}
        out_dict: dict[str, torch.Tensor | None] = {t: None for t in x_dict}
        attn_dict: dict[str, torch.Tensor | None] = {t: None for t in x_dict}
        types = [t for t in x_dict if any(t in (key[0], key[-1]) for key in keys)]
        if types:
            out, key_sums = self._propagate(x_dict, edge_index_dict, keys, types, return_semantic_attention_weights)
            parts = dict(zip(types, torch.split(out, [x_dict[t].shape[0] for t in types])))
            for t in types:
                if into[t]:
                    out_dict[t] = parts[t]
                    if return_semantic_attention_weights and parts[t].shape[0]:
                        attn_dict[t] = self._semantic_attention(key_sums, into[t], parts[t].shape[0])
        if return_semantic_attention_weights:
            return out_dict, attn_dict
        return out_dict

    def _propagate(self, x_dict: dict, edge_index_dict: dict, keys: list[tuple], types: list[str],
                   return_key_sums: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The outputs of every node of ``types`` (in that order) and, if asked, each edge type's
        sum of [tanh(k(o)) - tanh(k_b)] over its destinations."""
        sizes = [x_dict[t].shape[0] for t in types]
        arrays = tuple(edge_index_dict[key] for key in edge_index_dict)
        g = self._graphs.get(arrays, (tuple(types), tuple(sizes), tuple(keys)), lambda: _hetero_graph(
            types, sizes, edge_index_dict, {key: i for i, key in enumerate(keys)}))
        like = x_dict[types[0]]
        in_max = max(self.in_channels[t] for t in types)
        x = torch.cat([nn.functional.pad(x_dict[t], (0, in_max - x_dict[t].shape[1])) for t in types])
        proj_weight = torch.stack([nn.functional.pad(self.proj[t].weight.t(), (0, 0, 0, in_max - self.in_channels[t]))
                                   for t in types])
        proj_bias = torch.stack([self.proj[t].bias for t in types])
        lin_src = torch.cat([self.lin_src["__".join(key)] for key in keys])
        lin_dst = torch.cat([self.lin_dst["__".join(key)] for key in keys])
        inv_nodes, inv_dsts, idle_etypes = self._graph_counts(g, edge_index_dict, keys, types, sizes, like)
        q = self.q.view(-1)
        ceiling = q.detach().abs().sum() + 1.0  # |score| <= |q|_1, as |tanh| <= 1
        out = self._run(han_program, g, x, proj_weight, proj_bias, lin_src, lin_dst, self.k_lin.weight.t(),
                        self.k_lin.bias, q, inv_nodes, inv_dsts, idle_etypes, ceiling,
                        self._dropout_mask(edge_index_dict, like), negative_slope=float(self.negative_slope),
                        return_key_sums=return_key_sums)
        return out if return_key_sums else (out, None)

    def _graph_counts(self, g: Graph, edge_index_dict: dict, keys: list[tuple], types: list[str], sizes: list[int],
                      like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per edge type 1 / the nodes of its destination type and 1 / its distinct destinations;
        per node type the number of its edge types without edges (1 for a type no edge type reaches)."""
        if self._counts[0] is not g:
            count = dict(zip(types, sizes))
            dsts = [int(torch.unique(edge_index_dict[key][1]).numel()) for key in edge_index_dict]
            inv_nodes = [1.0 / count[key[-1]] if count[key[-1]] else 0.0 for key in keys]
            inv_dsts = [1.0 / d if d else 0.0 for d in dsts]
            idle = [float(builtins.sum(1 for key, d in zip(keys, dsts) if key[-1] == t and not d)
                          if any(key[-1] == t for key in keys) else 1) for t in types]
            self._counts = (g, tuple(torch.tensor(v, dtype=torch.float64) for v in (inv_nodes, inv_dsts, idle)))
        return tuple(v.to(dtype=like.dtype, device=like.device) for v in self._counts[1])

    def _dropout_mask(self, edge_index_dict: dict, like: torch.Tensor) -> torch.Tensor | None:
        """The attention's dropout mask [E, heads, 1], drawn per edge type in edge_index_dict order as
        PyG's F.dropout draws it (no draw for an edge type without edges), or None."""
        p = float(self.dropout)
        if not self.training or p == 0.0:
            return None
        masks = []
        for edge_index in edge_index_dict.values():
            mask = like.new_empty(edge_index.shape[1], self.heads)
            if p == 1.0:
                masks.append(mask.zero_())
            else:
                masks.append(mask.bernoulli_(1.0 - p).div_(1.0 - p) if mask.numel() else mask)
        return torch.cat(masks).unsqueeze(-1)

    def _semantic_attention(self, key_sums: torch.Tensor, etypes: list[int], num_nodes: int) -> torch.Tensor:
        """The softmax over one node type's edge types (a handful of numbers, so in torch)."""
        q = self.q.view(-1)
        scores = key_sums[etypes] @ q / num_nodes + torch.tanh(self.k_lin.bias) @ q
        return torch.softmax(scores, dim=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.out_channels}, heads={self.heads})"
