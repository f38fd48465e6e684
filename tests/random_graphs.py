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


EDGE_CASES = ("one_node", "no_edges", "empty_relations", "isolated", "self_loops", "multi_edges", "hub",
              "thousand_relations", "block")


def edge_case_graph(kind: str, seed: int = 0) -> pigeon.Graph:
    """A small graph of one adversarial kind (one of EDGE_CASES), drawn with ``seed``:
    a single node (with or without a self loop), no edges, relations that have no edges,
    isolated nodes, only self loops, many copies of few edges, one hub with 40 to 200 incoming
    edges, 1,000 relations, or a bipartite block."""
    gen = torch.Generator().manual_seed(seed)

    def ints(high: int, count: int) -> torch.Tensor:
        return torch.randint(0, max(high, 1), (count,), generator=gen)

    if kind == "one_node":
        loops = int(ints(3, 1))
        return pigeon.Graph.from_edges([0] * loops, [0] * loops, ints(2, loops), 1, [0], num_etypes=2)
    if kind == "no_edges":
        n = 1 + int(ints(6, 1))
        return pigeon.Graph.from_edges([], [], [], n, ints(2, n), num_etypes=3, num_ntypes=2)
    if kind == "empty_relations":  # edges of types 0 and 5 only, out of 9
        n, e = 6, 14
        return pigeon.Graph.from_edges(ints(n, e), ints(n, e), ints(2, e) * 5, n, ints(2, n), num_etypes=9,
                                       num_ntypes=2)
    if kind == "isolated":  # nodes 5.. have no edges at all
        n, e = 9, 12
        return pigeon.Graph.from_edges(ints(5, e), ints(5, e), ints(3, e), n, ints(3, n), num_etypes=3, num_ntypes=3)
    if kind == "self_loops":
        n = 1 + int(ints(6, 1))
        nodes = torch.arange(n)
        return pigeon.Graph.from_edges(nodes, nodes, ints(2, n), n, ints(2, n), num_etypes=2, num_ntypes=2)
    if kind == "multi_edges":  # three distinct edges, each repeated up to eight times
        base_src, base_dst, base_type = ints(4, 3), ints(4, 3), ints(2, 3)
        copies = 1 + ints(8, 3)
        return pigeon.Graph.from_edges(base_src.repeat_interleave(copies), base_dst.repeat_interleave(copies),
                                       base_type.repeat_interleave(copies), 4, ints(2, 4), num_etypes=2, num_ntypes=2)
    if kind == "hub":  # node 0 receives 40 to 200 edges, a few light nodes around it
        n, heavy, light = 12, 40 + int(ints(161, 1)), 10
        src = torch.cat([ints(n, heavy), ints(n, light)])
        dst = torch.cat([torch.zeros(heavy, dtype=torch.long), 1 + ints(n - 1, light)])
        return pigeon.Graph.from_edges(src, dst, ints(4, heavy + light), n, ints(2, n), num_etypes=4, num_ntypes=2)
    if kind == "thousand_relations":
        n, e = 10, 25
        return pigeon.Graph.from_edges(ints(n, e), ints(n, e), ints(1000, e), n, ints(3, n), num_etypes=1000,
                                       num_ntypes=3)
    if kind == "block":  # 4 destination nodes, 10 nodes in all
        n, nd, e = 10, 4, 20
        return pigeon.Graph.from_edges(ints(n, e), ints(nd, e), ints(3, e), n, ints(2, n), num_etypes=3,
                                       num_ntypes=2, num_dst_nodes=nd)
    raise ValueError(f"unknown edge case {kind!r}; expected one of {EDGE_CASES}")
