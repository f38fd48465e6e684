"""Seeded synthetic graphs with the published shape of a benchmark data set and heavy tails.

Structure (all vectorised numpy, no per-edge or per-node Python loops):

- node-type sizes: mag uses its real sizes; the others get sizes proportional to
  ``(k + 1) ** -NTYPE_SKEW`` for type ``t<k>`` (at least ``MIN_NODES_PER_TYPE`` each);
- relation sizes: mag uses its real relation sizes; the others a Zipf law
  ``(r + 1) ** -RELATION_SKEW`` (at least one edge each), shuffled over the relation ids;
- each relation gets a (source type, destination type) pair (mag: its real schema; others:
  drawn with probability ~ sqrt(type size), every node type the destination of at least one
  relation when there are enough relations);
- endpoints: within a node type, node popularity follows a continuous power law over ranks,
  sampled by its closed-form inverse CDF; each relation and role rotates the ranks by its own
  random offset so that relations have different hubs. Degrees are heavy-tailed, and
  isolated nodes, self loops and duplicate edges occur and are kept.

Labels are the argmax of a hidden random relational layer, ``x_v P s_self + mean_{u -> v} x_u P
s_r`` (a random projection ``P``; random signs ``s_r`` per relation, so what a neighbour says
depends on the edge's type): a 2-layer RGNN learns them from the features and the typed edges.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from pigeon.runtime.graph import Graph

from .dataset import Dataset, DatasetError, random_features, split_masks
from .shapes import SHAPES, GraphShape

NTYPE_SKEW = 1.5
RELATION_SKEW = 1.0
SRC_SKEW = 0.9   # out-degree popularity exponent
DST_SKEW = 1.1   # in-degree popularity exponent (in-degrees are the more skewed in RDF/KG data)
MIN_NODES_PER_TYPE = 3


def synthetic(name: str, scale: float = 1.0, seed: int = 0, feat_dim: int = 64,
              num_classes: int = 8, dtype: torch.dtype = torch.float32) -> Dataset:
    """A seeded graph with the shape of ``SHAPES[name]``, node and edge counts times ``scale``.

    Same arguments give identical tensors. The graph depends only on (name, scale, seed).
    """
    key = name.lower()
    if key not in SHAPES:
        raise DatasetError(f"unknown synthetic data set {name!r} (known: {sorted(SHAPES)})")
    if not scale > 0:
        raise DatasetError(f"scale must be positive, got {scale!r}")
    if feat_dim < 1 or num_classes < 1:
        raise DatasetError(f"feat_dim and num_classes must be positive, got {feat_dim}, {num_classes}")
    shape = SHAPES[key]
    # Independent streams so that e.g. feat_dim does not change the graph.
    graph_ss, feat_ss, label_ss, split_ss = np.random.SeedSequence(
        [int(seed), zlib.crc32(key.encode())]).spawn(4)
    graph = synthetic_graph(shape, scale, np.random.default_rng(graph_ss))
    features = random_features(np.random.default_rng(feat_ss), graph.num_nodes, feat_dim)
    labels = _labels(graph, features.numpy(), num_classes, np.random.default_rng(label_ss))
    train, val, test = split_masks(np.random.default_rng(split_ss), graph.num_nodes)
    return Dataset(key, graph, features.to(dtype), labels, train, val, test, num_classes)


def synthetic_graph(shape: GraphShape, scale: float, rng: np.random.Generator) -> Graph:
    """The graph part of :func:`synthetic`, drawn from ``rng``."""
    ntype_names, sizes = _ntype_sizes(shape, scale)
    num_edges = max(int(round(shape.num_edges * scale)), 1)
    rel_src, rel_dst, rel_sizes = _relations(shape, num_edges, sizes, rng)
    rel_of_edge = np.repeat(np.arange(len(rel_sizes)), rel_sizes)
    src = _endpoints(sizes[rel_src], rel_of_edge, SRC_SKEW, rng)
    dst = _endpoints(sizes[rel_dst], rel_of_edge, DST_SKEW, rng)
    bounds = np.concatenate([[0], np.cumsum(rel_sizes)])
    rel_names = ([r for _, r, _ in shape.relations] if shape.relations is not None
                 else [f"r{i}" for i in range(len(rel_sizes))])
    edges = {(ntype_names[s], rel_names[i], ntype_names[d]): (src[bounds[i]:bounds[i + 1]],
                                                              dst[bounds[i]:bounds[i + 1]])
             for i, (s, d) in enumerate(zip(rel_src, rel_dst))}
    return Graph.from_dict(edges, num_nodes={n: int(c) for n, c in zip(ntype_names, sizes)})


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integers >= minimum, summing to max(total, minimum * len), ~ proportional to weights.

    Exact (largest-remainder) proportions where no entry falls below the minimum, so mag at
    scale 1 gets its real sizes.
    """
    total = max(total, minimum * len(weights))
    share = weights / weights.sum() * total
    out = np.floor(share).astype(np.int64)
    out[np.argsort(out - share, kind="stable")[:total - int(out.sum())]] += 1
    missing = int(np.maximum(minimum - out, 0).sum())
    out = np.maximum(out, minimum)
    while missing:  # at most len(weights) rounds: take the raised units back from the largest
        k = int(np.argmax(out))
        take = min(missing, int(out[k]) - minimum)
        out[k] -= take
        missing -= take
    return out


def _ntype_sizes(shape: GraphShape, scale: float) -> tuple[list[str], np.ndarray]:
    total = int(round(shape.num_nodes * scale))
    if shape.ntype_sizes is not None:
        names = list(shape.ntype_sizes)
        weights = np.array([shape.ntype_sizes[n] for n in names], dtype=np.float64)
    else:
        names = [f"t{k}" for k in range(shape.num_ntypes)]
        weights = (np.arange(shape.num_ntypes) + 1.0) ** -NTYPE_SKEW
    return names, _allocate(total, weights, MIN_NODES_PER_TYPE)


def _relations(shape: GraphShape, num_edges: int, sizes: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per relation: source node type, destination node type, edge count."""
    num_rels = min(shape.num_etypes, num_edges)
    if shape.relations is not None:
        index = {n: i for i, n in enumerate(shape.ntype_sizes or {})}
        rels = shape.relations[:num_rels]
        src = np.array([index[s] for s, _, _ in rels])
        dst = np.array([index[d] for _, _, d in rels])
        weights = np.array(shape.relation_sizes[:num_rels], dtype=np.float64)
        return src, dst, _allocate(num_edges, weights, 1)
    weights = (np.arange(num_rels) + 1.0) ** -RELATION_SKEW
    rel_sizes = rng.permutation(_allocate(num_edges, weights, 1))
    p = np.sqrt(sizes) / np.sqrt(sizes).sum()
    src = rng.choice(len(sizes), size=num_rels, p=p)
    dst = rng.choice(len(sizes), size=num_rels, p=p)
    if num_rels >= len(sizes):  # no node type left out of the schema
        dst[rng.permutation(num_rels)[:len(sizes)]] = np.arange(len(sizes))
    return src, dst, rel_sizes


def _endpoints(rel_n: np.ndarray, rel_of_edge: np.ndarray, skew: float,
               rng: np.random.Generator) -> np.ndarray:
    """Per-type local ids for one role of every edge: power-law ranks, rotated per relation.

    Rank ``k`` in [0, n) has density ~ (k + 1) ** -skew (continuous approximation, sampled by
    its inverse CDF), so ranks 0, 1, ... are the hubs.
    """
    n = rel_n[rel_of_edge].astype(np.float64)
    u = rng.random(len(rel_of_edge))
    if abs(skew - 1.0) < 1e-9:
        x = (n + 1.0) ** u
    else:
        a = 1.0 - skew
        x = (1.0 + u * ((n + 1.0) ** a - 1.0)) ** (1.0 / a)
    ranks = np.minimum(x.astype(np.int64) - 1, n.astype(np.int64) - 1)
    offsets = rng.integers(0, rel_n)  # one rotation per relation
    return (ranks + offsets[rel_of_edge]) % rel_n[rel_of_edge]


def _labels(graph: Graph, x: np.ndarray, num_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """argmax(x_v P s_self + mean over the incoming edges u -> v of x_u P s_r): a hidden random
    relational layer whose relation-r weight is W_r = P diag(s_r), for a random projection P and
    random signs s_r per relation (and s_self for the node itself)."""
    proj = rng.standard_normal((x.shape[1], num_classes)).astype(np.float32)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(graph.num_etypes + 1, num_classes))
    xp = x @ proj
    src, dst, etype = graph.src.numpy(), graph.dst.numpy(), graph.etype.numpy()
    deg = np.maximum(np.bincount(dst, minlength=graph.num_nodes), 1)
    xp_t = np.ascontiguousarray(xp.T)  # gathering from contiguous rows is ~2x faster
    signs_t = np.ascontiguousarray(signs.T)
    agg = np.stack([np.bincount(dst, weights=xp_t[c][src] * signs_t[c][etype], minlength=graph.num_nodes)
                    for c in range(num_classes)], axis=1)
    return torch.from_numpy(np.argmax(xp * signs[-1] + agg / deg[:, None], axis=1).astype(np.int64))
