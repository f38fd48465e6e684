"""Layouts derived from a Graph, each built once and cached on it.

- ``edges_by_etype``: edge ids sorted by (etype, dst) and per-etype offsets;
- ``csr``: incoming edges of each destination, sorted by (dst, etype);
- ``compact``: the unique (src, etype) pairs sorted by (etype, src), per-etype offsets, and
  for every edge the index of its pair; ``compact_dst`` the same for (dst, etype) pairs;
- ``index_array``: the array behind every index of ``pigeon.ir.indices``;
- ``segments``: rows of a domain grouped by the type that selects a typed linear's weight.

Layouts read the arrays the graph owns (``arrays``), never the copies its properties return.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from pigeon.ir.cost import GraphStats
from pigeon.ir.types import Domain

from .graph import Graph


@dataclass(frozen=True)
class EdgeOrder:
    perm: torch.Tensor  # edge ids in sorted order
    offsets: torch.Tensor  # [num_etypes + 1], into perm


@dataclass(frozen=True)
class CSR:
    indptr: torch.Tensor  # [num_dst_nodes + 1]
    eids: torch.Tensor  # edge ids, grouped by destination, then by etype


@dataclass(frozen=True)
class CompactMap:
    node: torch.Tensor  # [C] the node (source, or destination for compact_dst) of each pair
    etype: torch.Tensor  # [C]
    offsets: torch.Tensor  # [num_etypes + 1], pairs are sorted by (etype, node)
    edge_to_compact: torch.Tensor  # [E]

    @property
    def num_pairs(self) -> int:
        return self.node.numel()


@dataclass(frozen=True)
class Segments:
    """Rows grouped by type: ``perm`` (None if rows are already grouped) and type offsets."""

    perm: torch.Tensor | None
    inverse: torch.Tensor | None  # position of each row in the grouped order
    offsets: torch.Tensor  # [num_types + 1] on the CPU
    counts: tuple[int, ...]


class GraphArrays(NamedTuple):
    src: torch.Tensor
    dst: torch.Tensor
    etype: torch.Tensor
    ntype: torch.Tensor
    graph_id: torch.Tensor


def arrays(g: Graph) -> GraphArrays:
    """The index arrays ``g`` owns, not copies: for the runtime to read, never to write (a write
    that torch sees raises GraphChangedError on the graph's next use)."""
    return GraphArrays(g._src, g._dst, g._etype, g._ntype, g._graph_id)  # the graph's companion module: no copies


def _offsets(type_ids: torch.Tensor, num_types: int) -> torch.Tensor:
    counts = torch.bincount(type_ids, minlength=num_types)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _lexsort(major: torch.Tensor, minor: torch.Tensor) -> torch.Tensor:
    """Stable order sorting by ``major`` then ``minor``."""
    order = torch.argsort(minor, stable=True)
    return order[torch.argsort(major[order], stable=True)]


def edges_by_etype(g: Graph) -> EdgeOrder:
    def build() -> EdgeOrder:
        a = arrays(g)
        perm = _lexsort(a.etype, a.dst)
        return EdgeOrder(perm, _offsets(a.etype, g.num_etypes))
    return g.cached("edges_by_etype", build)


def csr(g: Graph) -> CSR:
    def build() -> CSR:
        a = arrays(g)
        eids = _lexsort(a.dst, a.etype)
        return CSR(_offsets(a.dst, g.num_dst_nodes), eids)
    return g.cached("csr", build)


def _pairs(g: Graph, node: torch.Tensor) -> CompactMap:
    n = max(g.num_nodes, 1)
    unique, inverse = torch.unique(arrays(g).etype * n + node, sorted=True, return_inverse=True)
    etype = unique // n
    return CompactMap(unique % n, etype, _offsets(etype, g.num_etypes), inverse)


def compact(g: Graph) -> CompactMap:
    """The unique (src, etype) pairs."""
    return g.cached("compact", lambda: _pairs(g, arrays(g).src))


def compact_dst(g: Graph) -> CompactMap:
    """The unique (dst, etype) pairs."""
    return g.cached("compact_dst", lambda: _pairs(g, arrays(g).dst))


def num_rows(g: Graph, domain: Domain) -> int:
    """Rows of a value of ``domain`` on this graph (GLOBAL values have no row axis: 0)."""
    if domain == Domain.COMPACT:
        return compact(g).num_pairs
    if domain == Domain.COMPACT_DST:
        return compact_dst(g).num_pairs
    return {Domain.NODE: g.num_nodes, Domain.DST: g.num_dst_nodes, Domain.EDGE: g.num_edges,
            Domain.ETYPE: g.num_etypes, Domain.NTYPE: g.num_ntypes, Domain.GRAPH: g.num_graphs,
            Domain.GLOBAL: 0}[domain]


class DstWork(NamedTuple):
    """The destinations each block of a per-destination CUDA kernel takes (see ``dst_work``)."""

    rows: torch.Tensor  # [blocks * rows_per_block] destination ids, -1 for padding
    chunks: torch.Tensor  # [blocks, 4]: this block's chunk of its hub's edges, chunks, hub, first block
    split_hubs: int  # hubs split over several blocks
    split_blocks: int  # the blocks those hubs take


def dst_work(g: Graph, rows_per_block: int, hub_degree: int, split: bool = False) -> DstWork:
    """The destinations each block takes, ``rows_per_block`` entries per block: a destination with
    more than ``hub_degree`` incoming edges fills a block alone (its id in every entry: the
    block's groups split its edges); the others follow in order, one per group, padded with -1.
    With ``split``, a hub takes one block per ``rows_per_block * hub_degree`` of its edges; block
    ``c`` of ``n`` takes the ``c``-th of ``n`` equal ranges of them (row ``c, n, hub number, number
    of its first block among the split hubs' blocks`` of ``chunks``)."""
    def build() -> DstWork:
        indptr = csr(g).indptr
        counts = (indptr[1:] - indptr[:-1]).cpu()
        rows = torch.arange(g.num_dst_nodes)
        hub = counts > hub_degree if rows_per_block > 1 else torch.zeros_like(counts, dtype=torch.bool)
        light, hubs = rows[~hub], rows[hub]
        light = torch.cat([light, light.new_full(((-light.numel()) % rows_per_block,), -1)])
        per_hub = (-(-counts[hub] // (rows_per_block * hub_degree))).clamp(min=1) if split else torch.ones_like(hubs)
        hub_blocks = hubs.repeat_interleave(per_hub)
        light_blocks = light.numel() // rows_per_block
        chunks = torch.zeros(light_blocks + hub_blocks.numel(), 4, dtype=torch.int64)
        chunks[:, 1] = 1
        if hub_blocks.numel():
            first = torch.cumsum(per_hub, 0) - per_hub
            own = torch.repeat_interleave(torch.arange(hubs.numel()), per_hub)
            chunks[light_blocks:, 0] = torch.arange(hub_blocks.numel()) - first[own]
            chunks[light_blocks:, 1] = per_hub[own]
            is_split = per_hub > 1
            split_number = torch.cumsum(is_split.long(), 0) - 1
            split_first = torch.cumsum(per_hub * is_split, 0) - per_hub * is_split
            chunks[light_blocks:, 2] = split_number[own]
            chunks[light_blocks:, 3] = split_first[own]
        split_hubs = int((per_hub > 1).sum()) if hubs.numel() else 0
        split_blocks = int(per_hub[per_hub > 1].sum()) if hubs.numel() else 0
        work = torch.cat([light, hub_blocks.repeat_interleave(rows_per_block)])
        return DstWork(work.to(g.device), chunks.reshape(-1).to(g.device), split_hubs, split_blocks)
    return g.cached(("dst_work", rows_per_block, hub_degree, split), build)


DEGREES = ("dst", "dst_etype", "src", "src_etype")


def degree(g: Graph, by: str) -> torch.Tensor:
    """Per edge, the number of incoming edges of its destination ('dst'), or of outgoing edges
    of its source ('src'); of the edge's own type for 'dst_etype' / 'src_etype'."""
    if by not in DEGREES:
        raise ValueError(f"unknown degree {by!r}; expected one of {DEGREES}")
    return g.cached(("degree", by), lambda: _degree(g, by))


def _degree(g: Graph, by: str) -> torch.Tensor:
    a = arrays(g)
    end, rows = (a.dst, g.num_dst_nodes) if by.startswith("dst") else (a.src, g.num_nodes)
    if not by.endswith("_etype"):
        return torch.bincount(end, minlength=rows)[end]
    pairs = g._cache.get("compact_dst" if by.startswith("dst") else "compact")
    if pairs is not None:  # the edges of each (node, etype) pair are counted already
        return torch.bincount(pairs.edge_to_compact, minlength=pairs.num_pairs)[pairs.edge_to_compact]
    _, inverse, counts = torch.unique(end * g.num_etypes + a.etype, return_inverse=True, return_counts=True)
    return counts[inverse]


def index_array(g: Graph, index: str, target: Domain) -> torch.Tensor | None:
    """For each row of ``target``, the row it reads through ``index`` (None: all rows, broadcast)."""
    def build() -> torch.Tensor | None:
        pairs = {Domain.COMPACT: compact, Domain.COMPACT_DST: compact_dst}
        a = arrays(g)
        if index == "all":
            return None
        if index in ("src", "dst"):
            return a.src if index == "src" else a.dst
        if index == "compact":
            return compact(g).edge_to_compact
        if index == "compact_dst":
            return compact_dst(g).edge_to_compact
        if index == "compact_src":
            return compact(g).node
        if index == "compact_dst_node":
            return compact_dst(g).node
        if index == "to_dst":
            return torch.arange(g.num_dst_nodes, device=g.device)
        if target in (Domain.ETYPE, Domain.NTYPE, Domain.GRAPH):  # a selector on its own parameter domain
            return torch.arange(num_rows(g, target), device=g.device)
        if index == "etype":
            return pairs[target](g).etype if target in pairs else a.etype
        if index == "src_ntype":
            return a.ntype[compact(g).node] if target == Domain.COMPACT else a.ntype[a.src]
        if index == "dst_ntype":
            return a.ntype[compact_dst(g).node] if target == Domain.COMPACT_DST else a.ntype[a.dst]
        if index == "ntype":
            return a.ntype[: g.num_dst_nodes] if target == Domain.DST else a.ntype
        if index == "graph":
            return a.graph_id[: g.num_dst_nodes] if target == Domain.DST else a.graph_id
        raise ValueError(f"unknown index {index!r}")
    return g.cached(("index", index, target), build)


def index_order(g: Graph, index: str, domain: Domain) -> torch.Tensor:
    """The rows of ``domain`` sorted (stably) by the row ``index`` sends them to: a kernel that
    scatters along ``index`` walks them in this order, so rows of one target are neighbours."""
    return g.cached(("index_order", index, domain), lambda: _index_order(g, index, domain))


def _index_order(g: Graph, index: str, domain: Domain) -> torch.Tensor:
    targets = index_array(g, index, domain)
    if targets is None:
        return torch.arange(num_rows(g, domain), device=g.device)
    return torch.argsort(targets, stable=True)


def in_order(g: Graph, kind: str, key: Any, by: str, domain: Domain) -> torch.Tensor:
    """A graph array over ``domain``'s rows (``kind`` "index" with ``key`` (index, domain), or
    "degree" with ``key`` its ``by``) in the order ``index_order(g, by, domain)`` walks them
    (``by`` "csr": the edges in CSR order): a kernel walking that order reads it front to back
    instead of at random rows. The walk order and a degree array are scratch (``Graph.scratch``)
    unless a kernel reads them as they are."""
    def build() -> torch.Tensor:
        if kind == "index":
            array = index_array(g, *key)
        else:
            array = g.scratch(("degree", key), lambda: _degree(g, key))
        if by == "csr":
            order = csr(g).eids
        else:
            order = g.scratch(("index_order", by, domain), lambda: _index_order(g, by, domain))
        return order.clone() if array is None else array[order].contiguous()
    return g.cached(("in_order", kind, key, by, domain), build)


def segments(g: Graph, by: str, domain: Domain) -> Segments:
    """Rows of ``domain`` grouped by the parameter row ``by`` selects for them."""
    def build() -> Segments:
        if by == "etype" and domain == Domain.EDGE:
            order = edges_by_etype(g)
            perm, offsets = order.perm, order.offsets
        elif by == "etype" and domain in (Domain.COMPACT, Domain.COMPACT_DST):
            pairs = compact(g) if domain == Domain.COMPACT else compact_dst(g)
            perm, offsets = None, pairs.offsets  # pairs are sorted by etype already
        else:
            types = index_array(g, by, domain)
            num_types = g.num_etypes if by == "etype" else g.num_ntypes
            perm = torch.argsort(types, stable=True)
            offsets = _offsets(types, num_types)
            if bool((types[1:] >= types[:-1]).all()):
                perm = None
        offsets = offsets.cpu()
        inverse = None if perm is None else torch.argsort(perm)
        return Segments(perm, inverse, offsets, tuple((offsets[1:] - offsets[:-1]).tolist()))
    return g.cached(("segments", by, domain), build)


def graph_stats(g: Graph) -> GraphStats:
    """The row counts of every domain on ``g``, for the cost model."""
    return g.cached("stats", lambda: GraphStats(
        g.num_nodes, g.num_dst_nodes, g.num_edges, _num_pairs(g, "compact"), _num_pairs(g, "compact_dst"),
        g.num_etypes, g.num_ntypes, g.num_graphs))


def _num_pairs(g: Graph, kind: str) -> int:
    """The number of (node, etype) pairs, without keeping the map: the cost model counts both
    kinds of pairs, and a program usually walks one."""
    if kind in g._cache:
        return g._cache[kind].num_pairs
    a = arrays(g)
    node = a.src if kind == "compact" else a.dst
    return torch.unique(a.etype * max(g.num_nodes, 1) + node).numel()


def order(g: Graph, by: str, domain: Domain) -> torch.Tensor:
    """The rows of ``domain`` grouped by the type ``by`` selects (identity if already grouped)."""
    def build() -> torch.Tensor:
        seg = segments(g, by, domain)
        return seg.perm if seg.perm is not None else torch.arange(num_rows(g, domain), device=g.device)
    return g.cached(("order", by, domain), build)


def type_offsets(g: Graph, by: str, domain: Domain) -> torch.Tensor:
    """Offsets into ``order(g, by, domain)`` of each type's rows (on the graph's device)."""
    if by == "all":
        return g.cached(("offsets_all", domain), lambda: torch.tensor(
            [0, max(num_rows(g, domain), 1) if domain == Domain.GLOBAL else num_rows(g, domain)], device=g.device))
    return g.cached(("offsets", by, domain), lambda: segments(g, by, domain).offsets.to(g.device))


def gemm_tiles(g: Graph, by: str, domain: Domain, tile_rows: int) -> torch.Tensor:
    """A [tiles, 3] table (type, first, end) of row tiles that never mix two types."""
    def build() -> torch.Tensor:
        offsets = type_offsets(g, by, domain).cpu().tolist()
        rows = []
        for t in range(len(offsets) - 1):
            for start in range(offsets[t], offsets[t + 1], tile_rows):
                rows.append((t, start, min(start + tile_rows, offsets[t + 1])))
        return torch.tensor(rows, dtype=torch.int64, device=g.device).reshape(-1, 3)
    return g.cached(("tiles", by, domain, tile_rows), build)
