"""``pigeon.Graph``: a typed multigraph with global node ids and cached derived layouts."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

TensorLike = Any  # torch.Tensor, numpy array or sequence of ints


class GraphError(ValueError):
    """A graph was built from inconsistent arrays or used with data that does not fit it."""


class GraphChangedError(RuntimeError):
    """An array a graph owns was modified in place after layouts were derived from it (only
    code reaching into the runtime's index arrays can do that: users only see copies)."""


def _as_index(values: TensorLike, name: str, copy: bool = True) -> torch.Tensor:
    """``values`` as a one-dimensional int64 tensor: a copy of its own (made once) unless
    ``copy`` is False, when it may share memory with ``values``."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise GraphError(f"{name} must hold integer ids, got dtype {values.dtype}")
        if values.ndim != 1:
            raise GraphError(f"{name} must be one-dimensional, got shape {list(values.shape)}")
        return torch.from_numpy(values.astype(np.int64, copy=copy))
    if isinstance(values, torch.Tensor):
        t = values
    else:
        if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise GraphError(f"{name} must be a tensor, array or list of integer ids, got {type(values).__name__}")
        seq = list(values)
        try:
            t = torch.tensor(seq) if seq else torch.zeros(0, dtype=torch.int64)
        except (TypeError, ValueError) as err:
            raise GraphError(f"{name} must be a sequence of integer ids: {err}") from None
        copy = False  # a new tensor already
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise GraphError(f"{name} must hold integer ids, got dtype {t.dtype}")
    if t.dim() != 1:
        raise GraphError(f"{name} must be one-dimensional, got shape {list(t.shape)}")
    return t.detach().to(torch.int64, copy=copy)


def _check_range(ids: torch.Tensor, limit: int, name: str, what: str) -> int:
    """The highest id (-1 if none); GraphError if any id is negative or not below ``limit``."""
    if ids.numel() == 0:
        return -1
    low, high = int(ids.min()), int(ids.max())
    if low < 0:
        raise GraphError(f"{name} holds a negative id ({low})")
    if high >= limit:
        raise GraphError(f"{name} holds id {high}, out of range for {limit} {what}")
    return high


class Graph:
    """Nodes with node types and edges ``src -> dst`` with edge types.

    Node ids are global; nodes of one type need not be contiguous. A bipartite block (as in
    DGL's sampled minibatches) has ``num_dst_nodes < num_nodes``: its destination nodes are the
    first ``num_dst_nodes`` nodes and every ``dst`` id is below that.

    The graph owns its index arrays: it copies them when built, and ``src``, ``dst``, ``etype``
    and ``ntype`` return copies. Nothing done to the caller's tensors or to the returned ones
    (in-place ops, ``.data``, ``.numpy()``) changes the graph, so its derived layouts (edges
    sorted by type, CSR, the compact (src, etype) map), built on first use and cached, never go
    stale and no id leaves its range.
    """

    def __init__(self, src: TensorLike, dst: TensorLike, etype: TensorLike | None, num_nodes: int,
                 ntype: TensorLike | None = None, *, num_etypes: int | None = None,
                 num_ntypes: int | None = None, etype_names: Sequence[str] | None = None,
                 ntype_names: Sequence[str] | None = None,
                 canonical_etypes: Sequence[tuple[str, str, str]] | None = None,
                 num_dst_nodes: int | None = None, graph_id: TensorLike | None = None,
                 num_graphs: int | None = None):
        if not isinstance(num_nodes, (int, np.integer)) or isinstance(num_nodes, bool) or num_nodes < 0:
            raise GraphError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
        self._num_nodes = int(num_nodes)
        self._num_dst_nodes = self._num_nodes if num_dst_nodes is None else int(num_dst_nodes)
        if not 0 <= self._num_dst_nodes <= self._num_nodes:
            raise GraphError(f"num_dst_nodes={num_dst_nodes} must lie in [0, num_nodes={num_nodes}]")
        self._src = _as_index(src, "src")
        self._dst = _as_index(dst, "dst").to(self._src.device)
        if etype is None:
            etype = torch.zeros(self._src.numel(), dtype=torch.int64)
        self._etype = _as_index(etype, "etype").to(self._src.device)
        if not (self._src.numel() == self._dst.numel() == self._etype.numel()):
            raise GraphError(f"src, dst and etype differ in length ({self._src.numel()}, "
                             f"{self._dst.numel()}, {self._etype.numel()})")
        if ntype is None:
            ntype = torch.zeros(self._num_nodes, dtype=torch.int64)
        self._ntype = _as_index(ntype, "ntype").to(self._src.device)
        if self._ntype.numel() != self._num_nodes:
            raise GraphError(f"ntype has {self._ntype.numel()} entries but num_nodes is {self._num_nodes}")
        if graph_id is None:
            graph_id = torch.zeros(self._num_nodes, dtype=torch.int64)
        self._graph_id = _as_index(graph_id, "graph_id").to(self._src.device)
        if self._graph_id.numel() != self._num_nodes:
            raise GraphError(f"graph_id has {self._graph_id.numel()} entries but num_nodes is {self._num_nodes}")
        self._num_graphs = self._count(num_graphs, None, self._graph_id, "graph")
        _check_range(self._graph_id, self._num_graphs, "graph_id", "graphs")
        self._num_etypes = self._count(num_etypes, etype_names, self._etype, "etype")
        self._num_ntypes = self._count(num_ntypes, ntype_names, self._ntype, "ntype")
        _check_range(self._src, self._num_nodes, "src", "nodes")
        _check_range(self._dst, self._num_dst_nodes, "dst", "destination nodes")
        self._max_etype = _check_range(self._etype, self._num_etypes, "etype", "edge types")
        self._max_ntype = _check_range(self._ntype, self._num_ntypes, "ntype", "node types")
        self.etype_names = tuple(etype_names) if etype_names is not None else tuple(map(str, range(self._num_etypes)))
        self.ntype_names = tuple(ntype_names) if ntype_names is not None else tuple(map(str, range(self._num_ntypes)))
        self.canonical_etypes = tuple(canonical_etypes) if canonical_etypes is not None else None
        if self.canonical_etypes is not None and len(self.canonical_etypes) != self._num_etypes:
            raise GraphError(f"{len(self.canonical_etypes)} canonical edge types for {self._num_etypes} edge types")
        self._cache: dict[Any, Any] = {}
        self._scratch: dict[Any, Any] = {}
        self._versions = self._array_versions()

    @staticmethod
    def _count(given: int | None, names: Sequence[str] | None, ids: torch.Tensor, what: str) -> int:
        if names is not None:
            if given is not None and given != len(names):
                raise GraphError(f"num_{what}s={given} but {len(names)} {what}_names were given")
            given = len(names)
        if given is None:
            return int(ids.max()) + 1 if ids.numel() else 1
        if given < 1:
            raise GraphError(f"num_{what}s must be at least 1, got {given}")
        return int(given)

    # construction -----------------------------------------------------------------------

    @classmethod
    def from_edges(cls, src: TensorLike, dst: TensorLike, etype: TensorLike | None, num_nodes: int,
                   ntype: TensorLike | None = None, **kwargs: Any) -> Graph:
        """A graph from PyG-style arrays: edge ``i`` goes ``src[i] -> dst[i]`` with type ``etype[i]``."""
        return cls(src, dst, etype, num_nodes, ntype, **kwargs)

    @classmethod
    def batch(cls, graphs: Sequence[Graph]) -> Graph:
        """Several graphs as one, node ids shifted, each node's ``graph_id`` the position of its
        graph (for readouts per graph: ``mean((x for n in g.nodes()), by="graph")``)."""
        graphs = list(graphs)
        if not graphs or not all(isinstance(g, Graph) for g in graphs):
            raise GraphError("Graph.batch takes a non-empty list of pigeon.Graph")
        if any(g.is_block for g in graphs):
            raise GraphError("Graph.batch takes whole graphs, not sampled blocks")
        offsets = [0]
        for g in graphs:
            offsets.append(offsets[-1] + g.num_nodes)
        device = graphs[0].device
        return cls(torch.cat([g._src.to(device) + o for g, o in zip(graphs, offsets)]),
                   torch.cat([g._dst.to(device) + o for g, o in zip(graphs, offsets)]),
                   torch.cat([g._etype.to(device) for g in graphs]), offsets[-1],
                   torch.cat([g._ntype.to(device) for g in graphs]),
                   num_etypes=max(g.num_etypes for g in graphs), num_ntypes=max(g.num_ntypes for g in graphs),
                   graph_id=torch.repeat_interleave(torch.arange(len(graphs)),
                                                    torch.tensor([g.num_nodes for g in graphs])),
                   num_graphs=len(graphs))

    @classmethod
    def from_dict(cls, edges: Mapping[tuple[str, str, str], tuple[TensorLike, TensorLike]],
                  num_nodes: Mapping[str, int]) -> Graph:
        """A graph from DGL-style per-relation arrays of per-type node ids.

        ``edges[(src_type, rel, dst_type)] = (src_ids, dst_ids)``; node types are numbered in
        the order of ``num_nodes`` and their nodes get consecutive global ids in that order.
        """
        ntype_names = list(num_nodes)
        offsets: dict[str, int] = {}
        total = 0
        for name in ntype_names:
            count = num_nodes[name]
            if not isinstance(count, (int, np.integer)) or count < 0:
                raise GraphError(f"num_nodes[{name!r}] must be a non-negative int, got {count!r}")
            offsets[name] = total
            total += int(count)
        srcs, dsts, etypes, canonical = [], [], [], []
        for r, key in enumerate(edges):
            if not (isinstance(key, tuple) and len(key) == 3):
                raise GraphError(f"edge type keys must be (src_type, relation, dst_type), got {key!r}")
            s_type, _, d_type = key
            for t in (s_type, d_type):
                if t not in offsets:
                    raise GraphError(f"edge type {key}: unknown node type {t!r} (known: {ntype_names})")
            pair = edges[key]
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise GraphError(f"edges[{key}] must be a (src, dst) pair of id arrays")
            # read only: the offsets below make new arrays, and the graph copies those once
            s, d = _as_index(pair[0], f"src of {key}", copy=False), _as_index(pair[1], f"dst of {key}", copy=False)
            if s.numel() != d.numel():
                raise GraphError(f"edge type {key}: src and dst differ in length ({s.numel()}, {d.numel()})")
            _check_range(s, num_nodes[s_type], f"src of {key}", f"{s_type!r} nodes")
            _check_range(d, num_nodes[d_type], f"dst of {key}", f"{d_type!r} nodes")
            srcs.append(s + offsets[s_type])
            dsts.append(d + offsets[d_type])
            etypes.append(torch.full_like(s, r))
            canonical.append(key)
        ntype = torch.cat([torch.full((int(num_nodes[n]),), t, dtype=torch.int64)
                           for t, n in enumerate(ntype_names)]) if ntype_names else torch.zeros(0, dtype=torch.int64)
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64)  # noqa: E731
        return cls(cat(srcs), cat(dsts), cat(etypes), total, ntype,
                   num_etypes=len(canonical) or 1,
                   etype_names=[k[1] for k in canonical] if canonical else None,
                   ntype_names=ntype_names or None,
                   canonical_etypes=canonical or None)

    @classmethod
    def from_dgl(cls, g: Any, num_etypes: int | None = None, num_ntypes: int | None = None) -> Graph:
        """A graph from a ``dgl.DGLGraph`` (see ``pigeon.dgl_adapter.from_dgl``)."""
        from pigeon.dgl_adapter import from_dgl

        return from_dgl(g, num_etypes, num_ntypes)

    @classmethod
    def from_pyg(cls, data: Any) -> Graph:
        """A graph from PyG's ``Data`` (``edge_index``, optional ``edge_type`` and ``node_type``;
        a ``Batch``'s ``batch`` gives every node's graph) or ``HeteroData`` (node types numbered in ``data.node_types`` order, edge types in
        ``data.edge_types`` order, nodes type by type as ``HeteroData.to_homogeneous`` numbers
        them, so ``graph.pack(x_dict)`` and ``graph.unpack(out)`` map PyG's per-type tensors)."""
        if hasattr(data, "node_types") and hasattr(data, "edge_types") and hasattr(data, "to_homogeneous"):
            homo = data.to_homogeneous(add_node_type=True, add_edge_type=True)
            return cls.from_edges(homo.edge_index[0], homo.edge_index[1], homo.edge_type, int(homo.num_nodes),
                                  homo.node_type, num_etypes=len(data.edge_types), num_ntypes=len(data.node_types),
                                  etype_names=[rel for _, rel, _ in data.edge_types], ntype_names=list(data.node_types),
                                  canonical_etypes=list(data.edge_types))
        edge_index = getattr(data, "edge_index", None)
        if not isinstance(edge_index, torch.Tensor):
            raise GraphError(f"expected a torch_geometric Data or HeteroData with an edge_index, got {type(data).__name__}")
        num_nodes = data.num_nodes
        if num_nodes is None:
            raise GraphError("the Data has no num_nodes (nor node features to count them by)")
        batch = getattr(data, "batch", None)  # a torch_geometric Batch: the graph of every node
        return cls.from_edges(edge_index[0], edge_index[1], getattr(data, "edge_type", None), int(num_nodes),
                              getattr(data, "node_type", None), graph_id=batch,
                              num_graphs=getattr(data, "num_graphs", None) if batch is not None else None)

    # sizes and arrays -------------------------------------------------------------------

    @property
    def src(self) -> torch.Tensor:
        """A copy of the source node of every edge (the graph keeps its own)."""
        return self._src.clone()

    @property
    def dst(self) -> torch.Tensor:
        """A copy of the destination node of every edge."""
        return self._dst.clone()

    @property
    def etype(self) -> torch.Tensor:
        """A copy of the edge type of every edge."""
        return self._etype.clone()

    @property
    def ntype(self) -> torch.Tensor:
        """A copy of the node type of every node."""
        return self._ntype.clone()

    @property
    def graph_id(self) -> torch.Tensor:
        """A copy of the graph of every node, in a batch of graphs (all 0 for one graph)."""
        return self._graph_id.clone()

    @property
    def num_graphs(self) -> int:
        return self._num_graphs

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def num_dst_nodes(self) -> int:
        return self._num_dst_nodes

    @property
    def num_edges(self) -> int:
        return self._src.numel()

    @property
    def num_etypes(self) -> int:
        return self._num_etypes

    @property
    def num_ntypes(self) -> int:
        return self._num_ntypes

    @property
    def max_etype(self) -> int:
        """The highest edge type id of any edge (-1 without edges); ``num_etypes`` may be larger."""
        return self._max_etype

    @property
    def max_ntype(self) -> int:
        """The highest node type id of any node (-1 without nodes); ``num_ntypes`` may be larger."""
        return self._max_ntype

    @property
    def is_block(self) -> bool:
        return self._num_dst_nodes != self._num_nodes

    @property
    def device(self) -> torch.device:
        return self._src.device

    def to(self, device: torch.device | str) -> Graph:
        """This graph on another device (self if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = object.__new__(Graph)  # the same validated graph: its arrays copied once, to the device
        moved.__dict__.update(self.__dict__)
        for name in ("_src", "_dst", "_etype", "_ntype", "_graph_id"):
            setattr(moved, name, getattr(self, name).to(device))
        moved._cache = {}
        moved._scratch = {}
        moved._versions = moved._array_versions()
        return moved

    def __repr__(self) -> str:
        block = f", num_dst_nodes={self._num_dst_nodes}" if self.is_block else ""
        return (f"Graph(num_nodes={self._num_nodes}{block}, num_edges={self.num_edges}, "
                f"num_ntypes={self._num_ntypes}, num_etypes={self._num_etypes}, device={self.device})")

    # node-type feature dicts ------------------------------------------------------------

    def ntype_id(self, ntype: str | int) -> int:
        """The id of a node type given by name or id; GraphError if unknown."""
        if isinstance(ntype, (int, np.integer)) and not isinstance(ntype, bool):
            if 0 <= ntype < self._num_ntypes:
                return int(ntype)
        elif ntype in self.ntype_names:
            return self.ntype_names.index(ntype)
        raise GraphError(f"unknown node type {ntype!r} (known: {list(self.ntype_names)})")

    def nodes_of_type(self, ntype: str | int) -> torch.Tensor:
        """Global ids of the nodes of one type, ascending (a copy)."""
        return self._nodes_of_type(ntype).clone()

    def _nodes_of_type(self, ntype: str | int) -> torch.Tensor:
        t = self.ntype_id(ntype)
        return self.cached(("nodes_of_type", t), lambda: torch.nonzero(self._ntype == t).flatten())

    def pack(self, feats: Mapping[str | int, torch.Tensor]) -> torch.Tensor:
        """One [num_nodes, ...] tensor from per-node-type rows (each in ascending global id order)."""
        ids = {self.ntype_id(k): v for k, v in feats.items()}
        missing = [self.ntype_names[t] for t in range(self._num_ntypes) if t not in ids]
        if missing:
            raise GraphError(f"pack: no features for node types {missing}")
        first = next(iter(ids.values()))
        out = first.new_zeros((self._num_nodes,) + tuple(first.shape[1:]))
        for t, x in ids.items():
            rows = self._nodes_of_type(t).to(x.device)
            if tuple(x.shape) != (rows.numel(),) + tuple(first.shape[1:]):
                raise GraphError(f"pack: features of node type {self.ntype_names[t]!r} have shape "
                                 f"{list(x.shape)}, expected {[rows.numel()] + list(first.shape[1:])}")
            out = out.index_copy(0, rows, x.to(out.dtype))
        return out

    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-node-type rows of a [num_nodes, ...] tensor (or of a [num_dst_nodes, ...] one,
        such as a layer's output on a block), keyed by node type name."""
        if x.shape[0] not in (self._num_nodes, self._num_dst_nodes):
            raise GraphError(f"unpack: expected {self._num_nodes} (or {self._num_dst_nodes} destination) "
                             f"rows, got {x.shape[0]}")
        out = {}
        for t, name in enumerate(self.ntype_names):
            rows = self._nodes_of_type(t)
            if x.shape[0] != self._num_nodes:
                rows = rows[rows < self._num_dst_nodes]
            out[name] = x.index_select(0, rows.to(x.device))
        return out

    # cached derived data ----------------------------------------------------------------

    def _array_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in (self._src, self._dst, self._etype, self._ntype, self._graph_id))

    def check_unchanged(self) -> None:
        """Raise GraphChangedError if an array the graph owns was modified in place since
        construction: a guard against runtime code writing into the index arrays it reads."""
        if self._array_versions() != self._versions:
            raise GraphChangedError(
                "the graph's own src/dst/etype/ntype arrays were modified in place after it was built; "
                "its cached layouts no longer match. Build a new Graph from the new arrays.")

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per key for this graph (layouts, index arrays, degrees)."""
        self.check_unchanged()
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def scratch(self, key: Any, build: Callable[[], Any]) -> Any:
        """The cached entry ``key`` if there is one, else ``build()`` kept only until
        ``release_scratch``: for arrays needed only to build other layouts (a walk order that the
        in-order copies are gathered through), so that they do not stay as long as the graph."""
        self.check_unchanged()
        if key in self._cache:
            return self._cache[key]
        if key not in self._scratch:
            self._scratch[key] = build()
        return self._scratch[key]

    def release_scratch(self) -> None:
        """Drop what ``scratch`` built."""
        self._scratch.clear()
