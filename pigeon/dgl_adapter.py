"""Conversion of DGL graphs (``dgl.DGLGraph``) to ``pigeon.Graph``; needs DGL installed."""
from __future__ import annotations

from typing import Any

from pigeon.runtime.graph import Graph, GraphError


def _dgl() -> Any:
    try:
        import dgl
    except ImportError as err:
        raise ImportError("converting a DGL graph needs DGL: pip install 'pigeon-rgnn[dgl]'") from err
    return dgl


def from_dgl(g: Any, num_etypes: int | None = None, num_ntypes: int | None = None) -> Graph:
    """A pigeon.Graph with the nodes, edges and types of DGL graph ``g``.

    - a homogeneous graph takes its types from ``g.edata[dgl.ETYPE]`` / ``g.ndata[dgl.NTYPE]``
      (as made by ``dgl.to_homogeneous``), or has one type of each; DGL does not record how
      many types there are, so pass ``num_etypes``/``num_ntypes`` when the last types may have
      no edges or nodes (the default is the largest id + 1);
    - a heterograph becomes one graph with its node types numbered in ``g.ntypes`` order and
      its edge types in ``g.canonical_etypes`` order.
    """
    dgl = _dgl()
    if not isinstance(g, dgl.DGLGraph):
        raise TypeError(f"expected a dgl.DGLGraph, got {type(g).__name__}")
    if g.is_block:
        raise GraphError("sampled blocks are not supported by from_dgl yet; pass the full graph")
    if len(g.ntypes) == 1 and len(g.canonical_etypes) == 1:
        src, dst = g.edges()
        etype = g.edata[dgl.ETYPE] if dgl.ETYPE in g.edata else None
        ntype = g.ndata[dgl.NTYPE] if dgl.NTYPE in g.ndata else None
        # without type ids the graph has one node and one edge type: keep DGL's names for them
        # (a one-relation heterograph such as ("user", "follows", "user") lands here too)
        names: dict[str, Any] = {"num_etypes": num_etypes, "num_ntypes": num_ntypes}
        if etype is None:
            names["etype_names"] = [g.canonical_etypes[0][1]]
        if ntype is None:
            names["ntype_names"] = [g.ntypes[0]]
        if etype is None and ntype is None:
            names["canonical_etypes"] = [g.canonical_etypes[0]]
        return Graph.from_edges(src, dst, etype, g.num_nodes(), ntype, **names)
    edges = {cet: g.edges(etype=cet) for cet in g.canonical_etypes}
    graph = Graph.from_dict(edges, {nt: g.num_nodes(nt) for nt in g.ntypes})
    for given, actual, what in ((num_etypes, graph.num_etypes, "edge"), (num_ntypes, graph.num_ntypes, "node")):
        if given is not None and given != actual:
            raise GraphError(f"the heterograph has {actual} {what} types, not {given}")
    return graph
