"""The systems compared, each building its version of a layer from Pigeon's layer (same weights
wherever the formulas share them) on one graph.

A system's ``build(bench, layer)`` returns a ``Peer``: ``forward()`` computes the layer's output on
the bench graph's features; its ``ties`` say which of its tensors hold which of Pigeon's
parameters, used to copy Pigeon's weights in and, in reverse, to read its gradients out in
Pigeon's names and layouts. ``formula`` is None where the system computes Pigeon's formula (its
output and gradients are checked), or says how it differs (they are not compared, and the table
marks it).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property, partial
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
    def grouped(self) -> formulas.Grouped:
        """The edges grouped by relation and the nodes by type, for the plain-PyTorch formulas."""
        g = self.graph
        return formulas.group(g.src, g.dst, g.etype, g.ntype, g.num_dst_nodes)

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
class Tie:
    """A peer's tensor that holds Pigeon's parameter ``name`` or a part of it: ``peer`` has the
    values of ``getattr(layer, name)[index]`` (transposed first if ``transpose``), reshaped."""

    name: str
    peer: torch.Tensor
    index: tuple = ()
    transpose: bool = False

    def _part(self, whole: torch.Tensor) -> torch.Tensor:
        part = whole[self.index]
        return part.t() if self.transpose else part


def tie(layer: torch.nn.Module, ties: list[Tie]) -> list[Tie]:
    """Copies Pigeon's weights into the peer's tensors; returns ``ties``."""
    with torch.no_grad():
        for t in ties:
            whole = getattr(layer, t.name)
            if t.peer is not whole:
                t.peer.copy_(t._part(whole).reshape(t.peer.shape))
    return ties


def own(layer: torch.nn.Module) -> list[Tie]:
    """The ties of a system that runs on Pigeon's own parameter tensors."""
    return [Tie(name, p) for name, p in layer.named_parameters()]


def gradients_as_pigeon(layer: torch.nn.Module, ties: list[Tie]) -> dict[str, torch.Tensor]:
    """The peer's parameter gradients in Pigeon's names and layouts: the weight copy of ``tie`` in
    reverse. A Pigeon parameter several peer tensors hold (one relation's weight shared by the
    node-type triples) gets the sum of their gradients; a peer tensor without one adds zero."""
    grads: dict[str, torch.Tensor] = {}
    for t in ties:
        whole = getattr(layer, t.name)
        total = grads.setdefault(t.name, torch.zeros_like(whole, memory_format=torch.contiguous_format))
        view = t._part(total)  # a view of total: adding to it adds to the right entries
        if t.peer.grad is not None:
            view += t.peer.grad.reshape(view.shape)
    return grads


@dataclass
class Peer:
    """One system's layer on one graph, with Pigeon's weights, ready to run."""

    forward: Forward
    differentiated: list[torch.Tensor]  # every tensor whose gradient training computes
    ties: list[Tie]  # the peer's tensors that hold Pigeon's parameters
    input: torch.Tensor | None  # the features whose gradient is compared with Pigeon's (None: not comparable)

    def gradients(self, layer: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The gradients of the input (as ``"input"``) and of Pigeon's parameters, in Pigeon's layouts."""
        grads = gradients_as_pigeon(layer, self.ties)
        if self.input is not None and self.input.grad is not None:
            grads["input"] = self.input.grad
        return grads


@dataclass(frozen=True)
class System:
    name: str
    model: str
    requires: tuple[str, ...]
    build: Callable[[BenchGraph, torch.nn.Module], Peer]
    formula: str | None = None  # how its formula differs from Pigeon's, or None
    compiled: bool = False  # torch.compile: slow to start, left out of quick runs

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)


def _leaf_copies(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-type features as leaves of their own, so that repeated backward calls do not go
    through the split of the packed features that made them."""
    return {t: v.detach().requires_grad_(v.requires_grad) for t, v in x.items()}


# ---- Pigeon ---------------------------------------------------------------------------------

def pigeon_layer(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    return Peer(lambda: layer(bench.graph, bench.features), list(layer.parameters()) + [bench.features],
                own(layer), bench.features)


def pigeon_torch_ops(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    """Pigeon's optimised programs run by its torch-op reference executor: the IR rewrites
    without generated code."""
    def forward() -> torch.Tensor:
        with pigeon.use_backend("reference"):
            return layer(bench.graph, bench.features)
    return Peer(forward, list(layer.parameters()) + [bench.features], own(layer), bench.features)


# ---- DGL --------------------------------------------------------------------------------------

def dgl_relgraphconv(presorted: bool):
    def build(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
        import dgl.nn
        conv = dgl.nn.RelGraphConv(layer.in_feats, layer.out_feats, layer.num_rels, regularizer=None,
                                   self_loop=True, bias=True).to(bench.device, bench.features.dtype)
        ties = tie(layer, [Tie("weight", conv.linear_r.W), Tie("loop_weight", conv.loop_weight),
                           Tie("bias", conv.h_bias)])
        if presorted:
            g, order = bench.dgl_sorted
            etype, norm = bench.graph.etype[order], bench.edge_norm[order]
        else:
            g, etype, norm = bench.dgl, bench.graph.etype, bench.edge_norm
        return Peer(lambda: conv(g, bench.features, etype, norm=norm, presorted=presorted),
                    list(conv.parameters()) + [bench.features], ties, bench.features)
    return build


def dgl_hgtconv(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    import dgl
    import dgl.nn
    conv = dgl.nn.HGTConv(layer.in_feats, layer.head_size, layer.num_heads, layer.num_ntypes, layer.num_rels,
                          dropout=0.0, use_norm=False).to(bench.device, bench.features.dtype)
    conv.eval()
    ties = [Tie("k_weight", conv.linear_k.W), Tie("q_weight", conv.linear_q.W), Tie("v_weight", conv.linear_v.W),
            Tie("out_weight", conv.linear_a.W), Tie("skip", conv.skip)]
    for i in range(layer.num_heads):  # DGL keeps one module per head; Pigeon one tensor with a head axis
        ties += [Tie("relation_att", conv.relation_att[i].W, (slice(None), i)),
                 Tie("relation_msg", conv.relation_msg[i].W, (slice(None), i)),
                 Tie("relation_pri", conv.relation_pri[i], (slice(None), i))]
    g = bench.dgl
    return Peer(lambda: conv(g, bench.features, g.ndata[dgl.NTYPE], g.edata[dgl.ETYPE]),
                list(conv.parameters()) + [bench.features], tie(layer, ties), bench.features)


class _DGLTypedRGAT(torch.nn.Module):
    """RGAT written with DGL's TypedLinear, edge_softmax and update_all: Pigeon's formula."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        import dgl.nn
        self.linear = dgl.nn.TypedLinear(layer.in_feats, layer.num_heads * layer.out_feats, layer.num_rels)
        self.attn_src = torch.nn.Parameter(torch.empty_like(layer.attn_src))
        self.attn_dst = torch.nn.Parameter(torch.empty_like(layer.attn_dst))
        self.bias = torch.nn.Parameter(torch.empty_like(layer.bias))
        self.heads, self.size, self.slope = layer.num_heads, layer.out_feats, layer.negative_slope

    def ties(self) -> list[Tie]:
        return [Tie("weight", self.linear.W), Tie("attn_src", self.attn_src), Tie("attn_dst", self.attn_dst),
                Tie("bias", self.bias)]

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


def dgl_typed_rgat(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    module = _DGLTypedRGAT(layer).to(bench.device, bench.features.dtype)
    ties = tie(layer, module.ties())
    return Peer(lambda: module(bench.dgl, bench.features), list(module.parameters()) + [bench.features], ties,
                bench.features)


def dgl_hetero_gat(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    import dgl.nn
    hg = bench.dgl_hetero
    _, names = bench.triples
    convs, ties = {}, [Tie("bias", layer.bias)]
    for name in names:
        r = int(name[1].split("~")[1])
        gat = dgl.nn.GATConv(layer.in_feats, layer.out_feats, layer.num_heads, negative_slope=layer.negative_slope,
                             allow_zero_in_degree=True, bias=False)
        # GATConv's fc is a torch Linear: its weight is [heads * size, in], Pigeon's W_r transposed
        ties += [Tie("weight", gat.fc.weight, (r,), transpose=True), Tie("attn_src", gat.attn_l, (r,)),
                 Tie("attn_dst", gat.attn_r, (r,))]
        convs[name[1]] = gat
    conv = dgl.nn.HeteroGraphConv(convs, aggregate="sum").to(bench.device, bench.features.dtype)
    tie(layer, ties)
    feats = _leaf_copies(bench.per_type(bench.features))

    def forward() -> torch.Tensor:
        out = conv(hg, feats)
        rows = {t: out[t].reshape(out[t].shape[0], -1) if t in out else
                torch.zeros(feats[t].shape[0], layer.num_heads * layer.out_feats, dtype=bench.features.dtype,
                            device=bench.device) for t in feats}
        return bench.graph.pack(rows) + layer.bias
    return Peer(forward, list(conv.parameters()) + [layer.bias, *feats.values()], ties, None)


# ---- PyG --------------------------------------------------------------------------------------

def pyg_rgcn(fast: bool):
    def build(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
        from torch_geometric.nn import FastRGCNConv, RGCNConv
        cls = FastRGCNConv if fast else RGCNConv
        conv = cls(layer.in_feats, layer.out_feats, layer.num_rels, aggr="mean", root_weight=True,
                   bias=True).to(bench.device, bench.features.dtype)
        ties = tie(layer, [Tie("weight", conv.weight), Tie("loop_weight", conv.root), Tie("bias", conv.bias)])
        edge_index = torch.stack([bench.graph.src, bench.graph.dst])
        return Peer(lambda: conv(bench.features, edge_index, bench.graph.etype),
                    list(conv.parameters()) + [bench.features], ties, bench.features)
    return build


def pyg_rgat(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    from torch_geometric.nn import RGATConv
    conv = RGATConv(layer.in_feats, layer.out_feats, layer.num_rels, heads=layer.num_heads, concat=True,
                    negative_slope=layer.negative_slope).to(bench.device, bench.features.dtype)
    ties = tie(layer, [Tie("weight", conv.weight)])
    edge_index = torch.stack([bench.graph.src, bench.graph.dst])
    return Peer(lambda: conv(bench.features, edge_index, bench.graph.etype),
                list(conv.parameters()) + [bench.features], ties, bench.features)


def pyg_hgt(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    from torch_geometric.nn import HGTConv
    g = bench.graph
    edges = bench.hetero_edges()
    metadata = (list(g.ntype_names), list(edges))
    conv = HGTConv(layer.in_feats, layer.num_heads * layer.head_size, metadata,
                   heads=layer.num_heads).to(bench.device, bench.features.dtype)
    x = _leaf_copies(bench.per_type(bench.features))
    edge_index = {k: torch.stack(v) for k, v in edges.items()}

    def forward() -> torch.Tensor:
        out = conv(x, edge_index)
        return g.pack({t: out[t] if out.get(t) is not None else torch.zeros_like(x[t]) for t in x})
    return Peer(forward, list(conv.parameters()) + list(x.values()), [], None)


# ---- plain PyTorch ------------------------------------------------------------------------------

def torch_per_relation(compiled: bool):
    """The layer as a PyTorch user writes it: a loop over the relations (``formulas``)."""
    def build(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
        edges, name = bench.grouped, type(layer).__name__
        if name == "RGCNConv":
            fn = formulas.rgcn
            args = (bench.edge_norm[edges.relations.order], layer.weight, layer.loop_weight, layer.bias)
        elif name == "RGATConv":
            fn = partial(formulas.rgat, negative_slope=layer.negative_slope)
            args = (layer.weight, layer.attn_src, layer.attn_dst, layer.bias)
        else:
            fn = formulas.hgt
            args = (layer.k_weight, layer.q_weight, layer.v_weight, layer.relation_att, layer.relation_msg,
                    layer.relation_pri, layer.out_weight, layer.skip)
        if compiled:
            fn = torch.compile(fn, dynamic=False)
        return Peer(lambda: fn(bench.features, edges, *args), list(layer.parameters()) + [bench.features],
                    own(layer), bench.features)
    return build


def _check_dense_fits(bench: BenchGraph, model: str) -> None:
    g = bench.graph
    # forward and backward keep the [nodes, relations, features] tensors and their gradients
    needed = 2 * formulas.dense_needed_bytes(model, g.num_nodes, g.num_edges, g.num_etypes, bench.features.shape[1],
                                             bench.features.element_size())
    if bench.device.type == "cuda":
        free = torch.cuda.mem_get_info(bench.device)[0]
    else:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    if needed > free:
        raise MemoryError(f"out of memory: the dense einsum needs about {needed / 2**30:.1f} GiB, "
                          f"{free / 2**30:.1f} GiB free")


def torch_dense(bench: BenchGraph, layer: torch.nn.Module) -> Peer:
    """Every node times every relation's matrix in one einsum, each edge picking its row."""
    g, h, name = bench.graph, bench.features, type(layer).__name__
    if name == "RGCNConv":
        _check_dense_fits(bench, "rgcn")
        fn, args = formulas.dense_rgcn, (bench.edge_norm, layer.weight, layer.loop_weight, layer.bias)
    elif name == "RGATConv":
        _check_dense_fits(bench, "rgat")
        fn = partial(formulas.dense_rgat, negative_slope=layer.negative_slope)
        args = (layer.weight, layer.attn_src, layer.attn_dst, layer.bias)
    else:
        _check_dense_fits(bench, "hgt")
        fn = formulas.dense_hgt
        args = (g.ntype, layer.k_weight, layer.q_weight, layer.v_weight, layer.relation_att, layer.relation_msg,
                layer.relation_pri, layer.out_weight, layer.skip)
    return Peer(lambda: fn(h, g.src, g.dst, g.etype, *args, num_dst=g.num_dst_nodes),
                list(layer.parameters()) + [h], own(layer), h)


TORCH_OPS = "Pigeon (torch ops)"  # not a peer: the gain of code generation over the rewrites alone
DENSE = "PyTorch dense einsum (nodes x relations)"
SYSTEMS: tuple[System, ...] = (
    System("Pigeon", "rgcn", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "rgcn", ("pigeon",), pigeon_torch_ops),
    System("DGL RelGraphConv (gather_mm)", "rgcn", ("dgl",), dgl_relgraphconv(presorted=False)),
    System("DGL RelGraphConv (segment_mm)", "rgcn", ("dgl",), dgl_relgraphconv(presorted=True)),
    System("PyG RGCNConv", "rgcn", ("torch_geometric",), pyg_rgcn(fast=False)),
    System("PyG FastRGCNConv", "rgcn", ("torch_geometric",), pyg_rgcn(fast=True)),
    System("PyTorch", "rgcn", (), torch_per_relation(compiled=False)),
    System("PyTorch + torch.compile", "rgcn", (), torch_per_relation(compiled=True), compiled=True),
    System(DENSE, "rgcn", (), torch_dense),
    System("Pigeon", "rgat", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "rgat", ("pigeon",), pigeon_torch_ops),
    System("DGL TypedLinear + edge_softmax", "rgat", ("dgl",), dgl_typed_rgat),
    System("DGL HeteroGraphConv(GATConv)", "rgat", ("dgl",), dgl_hetero_gat,
           formula="softmax over each relation's edges, not all incoming edges"),
    System("PyG RGATConv", "rgat", ("torch_geometric",), pyg_rgat,
           formula="RGAT paper's query/key attention, not Pigeon's"),
    System("PyTorch", "rgat", (), torch_per_relation(compiled=False)),
    System("PyTorch + torch.compile", "rgat", (), torch_per_relation(compiled=True), compiled=True),
    System(DENSE, "rgat", (), torch_dense),
    System("Pigeon", "hgt", ("pigeon",), pigeon_layer),
    System(TORCH_OPS, "hgt", ("pigeon",), pigeon_torch_ops),
    System("DGL HGTConv", "hgt", ("dgl",), dgl_hgtconv),
    System("PyG HGTConv", "hgt", ("torch_geometric",), pyg_hgt,
           formula="GELU before the output linear; per node-type and relation-triple parameters"),
    System("PyTorch", "hgt", (), torch_per_relation(compiled=False)),
    System("PyTorch + torch.compile", "hgt", (), torch_per_relation(compiled=True), compiled=True),
    System(DENSE, "hgt", (), torch_dense),
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
