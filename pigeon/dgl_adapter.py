"""Conversion of DGL graphs (``dgl.DGLGraph``) to ``pigeon.Graph``; needs DGL installed."""
from __future__ import annotations

from typing import Any

import torch

from pigeon.runtime.graph import Graph, GraphError


def _dgl() -> Any:
    try:
        import dgl
    except ImportError as err:
        raise ImportError("converting a DGL graph needs DGL: pip install 'pigeon-rgnn[dgl]'") from err
    return dgl


def from_dgl(g: Any, num_etypes: int | None = None, num_ntypes: int | None = None) -> Graph:
    """A pigeon.Graph with the nodes, edges and types of DGL graph ``g``.

    - a homogeneous graph (or sampled block) takes its types from ``edata[dgl.ETYPE]`` and
      ``ndata``/``srcdata[dgl.NTYPE]`` (as made by ``dgl.to_homogeneous``), or has one type of
      each; DGL does not record how many types there are, so pass ``num_etypes``/``num_ntypes``
      when the last types may have no edges or nodes (the default is the largest id + 1);
    - a heterograph (or heterogeneous block) becomes one graph with its node types numbered in
      ``g.srctypes`` order and its edge types in ``g.canonical_etypes`` order. Destination nodes
      come first (every type's, in type order), then the other source nodes, so that
      ``graph.pack({ntype: srcdata})`` and ``graph.unpack(out)`` map DGL's per-type tensors.

    A block's destination nodes are the first ``num_dst_nodes`` nodes, as in DGL.
    """
    dgl = _dgl()
    if not isinstance(g, dgl.DGLGraph):
        raise TypeError(f"expected a dgl.DGLGraph, got {type(g).__name__}")
    if len(g.srctypes) == 1 and len(g.canonical_etypes) == 1:
        return _homogeneous(dgl, g, num_etypes, num_ntypes)
    graph = _heterogeneous(g)
    for given, actual, what in ((num_etypes, graph.num_etypes, "edge"), (num_ntypes, graph.num_ntypes, "node")):
        if given is not None and given != actual:
            raise GraphError(f"the heterograph has {actual} {what} types, not {given}")
    return graph


def _homogeneous(dgl: Any, g: Any, num_etypes: int | None, num_ntypes: int | None) -> Graph:
    src, dst = g.edges()
    etype = g.edata[dgl.ETYPE] if dgl.ETYPE in g.edata else None
    ntype = g.srcdata[dgl.NTYPE] if dgl.NTYPE in g.srcdata else None
    # without type ids the graph has one node and one edge type: keep DGL's names for them
    # (a one-relation heterograph such as ("user", "follows", "user") lands here too)
    names: dict[str, Any] = {"num_etypes": num_etypes, "num_ntypes": num_ntypes}
    if etype is None:
        names["etype_names"] = [g.canonical_etypes[0][1]]
    if ntype is None:
        names["ntype_names"] = [g.srctypes[0]]
    if etype is None and ntype is None:
        names["canonical_etypes"] = [g.canonical_etypes[0]]
    return Graph.from_edges(src, dst, etype, g.num_src_nodes(), ntype, num_dst_nodes=g.num_dst_nodes(), **names)


def _heterogeneous(g: Any) -> Graph:
    ntypes = list(g.srctypes)
    if g.is_block and list(g.dsttypes) != ntypes:
        raise GraphError(f"a block's source and destination node types differ ({ntypes} and {list(g.dsttypes)})")
    num_src = {t: g.num_src_nodes(t) for t in ntypes}
    num_dst = {t: g.num_dst_nodes(t) for t in ntypes}
    dst_offset, rest_offset, total_dst = {}, {}, sum(num_dst.values())
    at, rest = 0, total_dst
    for t in ntypes:
        dst_offset[t], rest_offset[t] = at, rest
        at += num_dst[t]
        rest += num_src[t] - num_dst[t]

    def global_src(t: str, local: torch.Tensor) -> torch.Tensor:
        return torch.where(local < num_dst[t], local + dst_offset[t], local - num_dst[t] + rest_offset[t])

    srcs, dsts, etypes = [], [], []
    for r, (s_type, _, d_type) in enumerate(g.canonical_etypes):
        s, d = g.edges(etype=(s_type, _, d_type))
        srcs.append(global_src(s_type, s.long()))
        dsts.append(d.long() + dst_offset[d_type])
        etypes.append(torch.full_like(s.long(), r))
    ntype = torch.empty(rest, dtype=torch.int64)
    for i, t in enumerate(ntypes):
        ntype[global_src(t, torch.arange(num_src[t]))] = i
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64)  # noqa: E731
    return Graph.from_edges(cat(srcs), cat(dsts), cat(etypes), rest, ntype, num_dst_nodes=total_dst,
                            num_etypes=len(g.canonical_etypes), num_ntypes=len(ntypes),
                            etype_names=[c[1] for c in g.canonical_etypes], ntype_names=ntypes,
                            canonical_etypes=list(g.canonical_etypes))
