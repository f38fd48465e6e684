"""Random typed multigraphs for tests: many edge types (most of them empty), isolated nodes,
self loops and multi-edges."""
from __future__ import annotations

import torch

import pigeon


def random_graph(num_nodes: int = 40, num_edges: int = 240, num_etypes: int = 300, num_ntypes: int = 3,
                 seed: int = 0, num_isolated: int = 4, num_dst_nodes: int | None = None) -> pigeon.Graph:
    """A graph whose last ``num_isolated`` nodes have no edges, with at least a few self loops
    and duplicated edges; ``num_dst_nodes`` makes a bipartite block."""
    gen = torch.Generator().manual_seed(seed)
    active = num_nodes - num_isolated
    ndst = active if num_dst_nodes is None else num_dst_nodes
    src = torch.randint(0, active, (num_edges,), generator=gen)
    dst = torch.randint(0, ndst, (num_edges,), generator=gen)
    # a few popular relations and a long tail, so most of the edge types stay empty
    weights = 1.0 / torch.arange(1, num_etypes + 1, dtype=torch.float64) ** 1.2
    etype = torch.multinomial(weights, num_edges, replacement=True, generator=gen)
    loops = torch.arange(0, min(8, ndst))
    src[: loops.numel()] = loops
    dst[: loops.numel()] = loops
    src[-6:], dst[-6:], etype[-6:] = src[:6].clone(), dst[:6].clone(), etype[:6].clone()  # multi-edges
    ntype = torch.randint(0, num_ntypes, (num_nodes,), generator=gen)
    ntype[:num_ntypes] = torch.arange(num_ntypes)
    return pigeon.Graph.from_edges(src, dst, etype, num_nodes, ntype, num_etypes=num_etypes,
                                   num_ntypes=num_ntypes, num_dst_nodes=num_dst_nodes)
