"""Graphs generated for the aggregation-order benchmark: RGCN sums ``h_u W_r`` over each
destination's edges of relation r, and which order is cheaper depends on where the edges pile up.

- ``dst-heavy``: many edges per (destination, relation): 2M edges from 200K nodes into 20K of
  them, 10 relations (sum per (dst, relation) first, then one product per pair, is cheaper);
- ``src-heavy``: the mirror image, many edges per (source, relation): 2M edges from 20K nodes
  into all 200K (one product per unique (src, relation) pair, then the sum, is cheaper).

Endpoints and relations are uniform, seeded; ``scale`` multiplies the node and edge counts.
"""
from __future__ import annotations

import torch

import pigeon

NAMES = ("dst-heavy", "src-heavy")
NODES, FEW, EDGES, RELATIONS = 200_000, 20_000, 2_000_000, 10


def order_graph(name: str, scale: float = 1.0, feats: int = 64, seed: int = 0) -> tuple[pigeon.Graph, torch.Tensor]:
    """The graph ``name`` (one of NAMES) and seeded random features [nodes, feats]."""
    if name not in NAMES:
        raise ValueError(f"unknown order graph {name!r}; expected one of {NAMES}")
    gen = torch.Generator().manual_seed(seed)
    nodes, few, edges = (max(int(n * scale), 1) for n in (NODES, FEW, EDGES))
    many_end = torch.randint(0, nodes, (edges,), generator=gen)
    few_end = torch.randint(0, few, (edges,), generator=gen)
    src, dst = (many_end, few_end) if name == "dst-heavy" else (few_end, many_end)
    etype = torch.randint(0, RELATIONS, (edges,), generator=gen)
    graph = pigeon.Graph.from_edges(src, dst, etype, nodes, num_etypes=RELATIONS)
    return graph, torch.randn(nodes, feats, generator=gen)
