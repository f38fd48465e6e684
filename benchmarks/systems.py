"""The systems compared, each building its version of a layer from Pigeon's layer (same weights
wherever the formulas share them) on one graph.

A system's ``build(bench, layer)`` returns ``(forward, parameters)``: ``forward()`` computes the
layer's output on the bench graph's features; ``parameters`` are what training differentiates.
``formula`` is None where the system computes Pigeon's formula (its output is checked), or says
how it differs (its output is not compared, and the table marks it).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch

import pigeon
from pigeon.runtime import layouts

from . import formulas

Forward = Callable[[], torch.Tensor]


@dataclass
class BenchGraph:
    """One graph and its features, with each system's representation made on first use."""

    name: str
    graph: pigeon.Graph
    features: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.graph.device

    @cached_property
    def edge_norm(self) -> torch.Tensor:
        """1 / (incoming edges of the destination with the same edge type): RGCN's mean."""
        return 1.0 / layouts.degree(self.graph, "dst_etype").to(self.features.dtype).unsqueeze(-1)

    @cached_property
    def triples(self) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
        """Per edge, its (src type, relation, dst type) triple id, and the triples' names."""
        g = self.graph
        key = (g.ntype[g.src] * g.num_etypes + g.etype) * g.num_ntypes + g.ntype[g.dst]
        unique, inverse = torch.unique(key, return_inverse=True)
        names = []
        for k in unique.tolist():
            s, rest = divmod(k, g.num_etypes * g.num_ntypes)
            r, d = divmod(rest, g.num_ntypes)
            names.append((g.ntype_names[s], f"{g.etype_names[r]}~{r}~{len(names)}", g.ntype_names[d]))
        return inverse, names

    @cached_property
    def local_ids(self) -> torch.Tensor:
        """Each node's id among the nodes of its type."""
        g = self.graph
        local = torch.empty(g.num_nodes, dtype=torch.int64, device=g.device)
        for t in range(g.num_ntypes):
            nodes = g.nodes_of_type(t)
            local[nodes] = torch.arange(nodes.numel(), device=g.device)
        return local

    def hetero_edges(self) -> dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]]:
        g = self.graph
        triple, names = self.triples
        return {name: (self.local_ids[g.src[triple == i]], self.local_ids[g.dst[triple == i]])
                for i, name in enumerate(names)}

    def per_type(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.graph.unpack(x)

    @cached_property
    def dgl(self) -> Any:
        import dgl
        g = dgl.graph((self.graph.src, self.graph.dst), num_nodes=self.graph.num_nodes)
        g.edata[dgl.ETYPE] = self.graph.etype
        g.ndata[dgl.NTYPE] = self.graph.ntype
        return g

    @cached_property
    def dgl_sorted(self) -> tuple[Any, torch.Tensor]:
        """The DGL graph with its edges sorted by type (for segment_mm), and the order."""
        import dgl
        order = layouts.edges_by_etype(self.graph).perm
        g = dgl.graph((self.graph.src[order], self.graph.dst[order]), num_nodes=self.graph.num_nodes)
        g.edata[dgl.ETYPE] = self.graph.etype[order]
        return g, order

    @cached_property
    def dgl_hetero(self) -> Any:
        import dgl
        g = self.graph
        return dgl.heterograph(self.hetero_edges(), {n: int((g.ntype == t).sum()) for t, n in enumerate(g.ntype_names)})


@dataclass(frozen=True)
class System:
    name: str
    model: str
    requires: tuple[str, ...]
    build: Callable[[BenchGraph, torch.nn.Module], tuple[Forward, list[torch.Tensor]]]
    formula: str | None = None  # how its formula differs from Pigeon's, or None
    compiled: bool = False  # torch.compile: slow to start, left out of quick runs

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(source.reshape(target.shape))


# ---- Pigeon ---------------------------------------------------------------------------------

def pigeon_layer(bench: BenchGraph, layer: torch.nn.Module):
    return (lambda: layer(bench.graph, bench.features)), list(layer.parameters())


def pigeon_torch_ops(bench: BenchGraph, layer: torch.nn.Module):
    """Pigeon's optimised programs run by its torch-op reference executor: the IR rewrites
    without generated code."""
    def forward() -> torch.Tensor:
        with pigeon.use_backend("reference"):
            return layer(bench.graph, bench.features)
    return forward, list(layer.parameters())


# ---- DGL --------------------------------------------------------------------------------------

def dgl_relgraphconv(presorted: bool):
    def build(bench: BenchGraph, layer: torch.nn.Module):
        import dgl.nn
        conv = dgl.nn.RelGraphConv(layer.in_feats, layer.out_feats, layer.num_rels, regularizer=None,
                                   self_loop=True, bias=True).to(bench.device, bench.features.dtype)
        _copy(conv.linear_r.W, layer.weight)
        _copy(conv.loop_weight, layer.loop_weight)
        _copy(conv.h_bias, layer.bias)
        if presorted:
            g, order = bench.dgl_sorted
            etype, norm = bench.graph.etype[order], bench.edge_norm[order]
        else:
            g, etype, norm = bench.dgl, bench.graph.etype, bench.edge_norm
        return (lambda: conv(g, bench.features, etype, norm=norm, presorted=presorted)), list(conv.parameters())
    return build


def dgl_hgtconv(bench: BenchGraph, layer: torch.nn.Module):
    import dgl
    import dgl.nn
    conv = dgl.nn.HGTConv(layer.in_feats, layer.head_size, layer.num_heads, layer.num_ntypes, layer.num_rels,
                          dropout=0.0, use_norm=False).to(bench.device, bench.features.dtype)
    conv.eval()
    for ours, theirs in ((layer.k_weight, conv.linear_k.W), (layer.q_weight, conv.linear_q.W),
                         (layer.v_weight, conv.linear_v.W), (layer.out_weight, conv.linear_a.W), (layer.skip, conv.skip)):
        _copy(theirs, ours)
    for i in range(layer.num_heads):
        _copy(conv.relation_att[i].W, layer.relation_att[:, i])
        _copy(conv.relation_msg[i].W, layer.relation_msg[:, i])
        _copy(conv.relation_pri[i], layer.relation_pri[:, i])
    g = bench.dgl
    return (lambda: conv(g, bench.features, g.ndata[dgl.NTYPE], g.edata[dgl.ETYPE])), list(conv.parameters())


class _DGLTypedRGAT(torch.nn.Module):
    """RGAT written with DGL's TypedLinear, edge_softmax and update_all: Pigeon's formula."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        import dgl.nn
        self.linear = dgl.nn.TypedLinear(layer.in_feats, layer.num_heads * layer.out_feats, layer.num_rels)
        self.attn_src = torch.nn.Parameter(layer.attn_src.detach().clone())
        self.attn_dst = torch.nn.Parameter(layer.attn_dst.detach().clone())
        self.bias = torch.nn.Parameter(layer.bias.detach().clone())
        _copy(self.linear.W, layer.weight)
        self.heads, self.size, self.slope = layer.num_heads, layer.out_feats, layer.negative_slope

    def forward(self, g: Any, h: torch.Tensor) -> torch.Tensor:
        import dgl
        import dgl.function as fn
        src, dst = g.edges()
        etype = g.edata[dgl.ETYPE]
        z = self.linear(h[src], etype).view(-1, self.heads, self.size)
        z_dst = self.linear(h[dst], etype).view(-1, self.heads, self.size)
        score = torch.nn.functional.leaky_relu(
            (z * self.attn_src[etype]).sum(-1) + (z_dst * self.attn_dst[etype]).sum(-1), self.slope)
        with g.local_scope():
            g.edata["m"] = dgl.ops.edge_softmax(g, score).unsqueeze(-1) * z
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "out"))
            return g.dstdata["out"].reshape(g.num_dst_nodes(), -1) + self.bias


def dgl_typed_rgat(bench: BenchGraph, layer: torch.nn.Module):
    module = _DGLTypedRGAT(layer).to(bench.device, bench.features.dtype)
    return (lambda: module(bench.dgl, bench.features)), list(module.parameters())


def dgl_hetero_gat(bench: BenchGraph, layer: torch.nn.Module):
    import dgl.nn
    hg = bench.dgl_hetero
    _, names = bench.triples
    r_of = [int(name[1].split("~")[1]) for name in names]
    convs = {}
    for i, name in enumerate(names):
        gat = dgl.nn.GATConv(layer.in_feats, layer.out_feats, layer.num_heads, negative_slope=layer.negative_slope,
                             allow_zero_in_degree=True, bias=False)
        _copy(gat.fc.weight, layer.weight[r_of[i]].t())
        _copy(gat.attn_l, layer.attn_src[r_of[i]])
        _copy(gat.attn_r, layer.attn_dst[r_of[i]])
        convs[name[1]] = gat
    conv = dgl.nn.HeteroGraphConv(convs, aggregate="sum").to(bench.device, bench.features.dtype)
    feats = bench.per_type(bench.features)

    def forward() -> torch.Tensor:
        out = conv(hg, feats)
        rows = {t: out[t].reshape(out[t].shape[0], -1) if t in out else
                torch.zeros(feats[t].shape[0], layer.num_heads * layer.out_feats, dtype=bench.features.dtype,
                            device=bench.device) for t in feats}
        return bench.graph.pack(rows) + layer.bias
    return forward, list(conv.parameters())


# ---- PyG --------------------------------------------------------------------------------------

def pyg_rgcn(fast: bool):
    def build(bench: BenchGraph, layer: torch.nn.Module):
        from torch_geometric.nn import FastRGCNConv, RGCNConv
        cls = FastRGCNConv if fast else RGCNConv
        conv = cls(layer.in_feats, layer.out_feats, layer.num_rels, aggr="mean", root_weight=True,
                   bias=True).to(bench.device, bench.features.dtype)
        _copy(conv.weight, layer.weight)
        _copy(conv.root, layer.loop_weight)
        _copy(conv.bias, layer.bias)
        edge_index = torch.stack([bench.graph.src, bench.graph.dst])
        return (lambda: conv(bench.features, edge_index, bench.graph.etype)), list(conv.parameters())
    return build


def pyg_rgat(bench: BenchGraph, layer: torch.nn.Module):
    from torch_geometric.nn import RGATConv
    conv = RGATConv(layer.in_feats, layer.out_feats, layer.num_rels, heads=layer.num_heads, concat=True,
                    negative_slope=layer.negative_slope).to(bench.device, bench.features.dtype)
    _copy(conv.weight, layer.weight)
    edge_index = torch.stack([bench.graph.src, bench.graph.dst])
    return (lambda: conv(bench.features, edge_index, bench.graph.etype)), list(conv.parameters())


def pyg_hgt(bench: BenchGraph, layer: torch.nn.Module):
    from torch_geometric.nn import HGTConv
    g = bench.graph
    edges = bench.hetero_edges()
    metadata = (list(g.ntype_names), list(edges))
    conv = HGTConv(layer.in_feats, layer.num_heads * layer.head_size, metadata,
                   heads=layer.num_heads).to(bench.device, bench.features.dtype)
    x = bench.per_type(bench.features)
    edge_index = {k: torch.stack(v) for k, v in edges.items()}

    def forward() -> torch.Tensor:
        out = conv(x, edge_index)
        return g.pack({t: out[t] if out.get(t) is not None else torch.zeros_like(x[t]) for t in x})
    return forward, list(conv.parameters())


# ---- plain PyTorch ------------------------------------------------------------------------------

def torch_formula(compiled: bool):
    def build(bench: BenchGraph, layer: torch.nn.Module):
        g, h = bench.graph, bench.features
        name = type(layer).__name__
        if name == "RGCNConv":
            fn, args = formulas.rgcn, (bench.edge_norm, layer.weight, layer.loop_weight, layer.bias)
        elif name == "RGATConv":
            fn, args = formulas.rgat, (layer.weight, layer.attn_src, layer.attn_dst, layer.bias)
        else:
            fn = formulas.hgt
            args = (g.ntype, layer.k_weight, layer.q_weight, layer.v_weight, layer.relation_att, layer.relation_msg,
                    layer.relation_pri, layer.out_weight, layer.skip)
        if compiled:
            fn = torch.compile(fn, dynamic=False)
        extra = {"negative_slope": layer.negative_slope} if name == "RGATConv" else {}
        return (lambda: fn(h, g.src, g.dst, g.etype, *args, num_dst=g.num_dst_nodes, **extra)), list(layer.parameters())
    return build


TORCH_OPS = "Pigeon (torch ops)"  # not a peer: the gain of code generation over the rewrites alone
SYSTEMS: tuple[System, ...] = (
    System("Pigeon", "rgcn", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "rgcn", ("pigeon",), pigeon_torch_ops),
    System("DGL RelGraphConv (gather_mm)", "rgcn", ("dgl",), dgl_relgraphconv(presorted=False)),
    System("DGL RelGraphConv (segment_mm)", "rgcn", ("dgl",), dgl_relgraphconv(presorted=True)),
    System("PyG RGCNConv", "rgcn", ("torch_geometric",), pyg_rgcn(fast=False)),
    System("PyG FastRGCNConv", "rgcn", ("torch_geometric",), pyg_rgcn(fast=True)),
    System("PyTorch", "rgcn", (), torch_formula(compiled=False)),
    System("PyTorch + torch.compile", "rgcn", (), torch_formula(compiled=True), compiled=True),
    System("Pigeon", "rgat", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "rgat", ("pigeon",), pigeon_torch_ops),
    System("DGL TypedLinear + edge_softmax", "rgat", ("dgl",), dgl_typed_rgat),
    System("DGL HeteroGraphConv(GATConv)", "rgat", ("dgl",), dgl_hetero_gat,
           formula="softmax over each relation's edges, not all incoming edges"),
    System("PyG RGATConv", "rgat", ("torch_geometric",), pyg_rgat,
           formula="RGAT paper's query/key attention, not Pigeon's"),
    System("PyTorch", "rgat", (), torch_formula(compiled=False)),
    System("PyTorch + torch.compile", "rgat", (), torch_formula(compiled=True), compiled=True),
    System("Pigeon", "hgt", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "hgt", ("pigeon",), pigeon_torch_ops),
    System("DGL HGTConv", "hgt", ("dgl",), dgl_hgtconv),
    System("PyG HGTConv", "hgt", ("torch_geometric",), pyg_hgt,
           formula="GELU before the output linear; per node-type and relation-triple parameters"),
    System("PyTorch", "hgt", (), torch_formula(compiled=False)),
    System("PyTorch + torch.compile", "hgt", (), torch_formula(compiled=True), compiled=True),
)


def layer_for(model: str, graph: pigeon.Graph, feats: int, heads: int = 4, seed: int = 0) -> torch.nn.Module:
    """Pigeon's layer with seeded random weights: the weights every system gets."""
    import pigeon.nn as pnn
    torch.manual_seed(seed)
    if model == "rgcn":
        layer = pnn.RGCNConv(feats, feats, graph.num_etypes)
    elif model == "rgat":
        layer = pnn.RGATConv(feats, feats // heads, graph.num_etypes, num_heads=heads)
    else:
        layer = pnn.HGTConv(feats, feats // heads, heads, graph.num_ntypes, graph.num_etypes)
    with torch.no_grad():  # biases and gates away from their zero/one initial values
        for name, p in layer.named_parameters():
            if name in ("bias", "skip", "relation_pri"):
                p.uniform_(0.5, 1.5)
    return layer
