"""``Dataset``: a graph with node features, labels and a train/val/test split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pigeon.runtime.graph import Graph


class DatasetError(ValueError):
    """A data set is unknown or its source cannot be read."""


@dataclass(repr=False, eq=False)
class Dataset:
    """A node-classification data set over one ``pigeon.Graph``.

    ``features`` is [num_nodes, feat_dim]; ``labels`` int64 [num_nodes] in [0, num_classes);
    the three boolean masks split the nodes. ``node_names`` is set where nodes have names
    (the Debian graph: package names, in global id order).
    """

    name: str
    graph: Graph
    features: torch.Tensor
    labels: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    node_names: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        g = self.graph
        return (f"Dataset({self.name!r}, nodes={g.num_nodes}, edges={g.num_edges}, "
                f"ntypes={g.num_ntypes}, etypes={g.num_etypes}, feat_dim={self.features.shape[1]}, "
                f"classes={self.num_classes})")

    def summary(self) -> str:
        """A few lines on the graph's size and skew (relation sizes, degrees, isolated nodes)."""
        g = self.graph
        rel = torch.bincount(g.etype, minlength=g.num_etypes)
        indeg = torch.bincount(g.dst, minlength=g.num_nodes)
        outdeg = torch.bincount(g.src, minlength=g.num_nodes)
        isolated = int(((indeg + outdeg) == 0).sum())
        return "\n".join([
            repr(self),
            f"  edges per relation: max {int(rel.max())}, median {int(rel.median())}, min {int(rel.min())}",
            f"  in-degree: max {int(indeg.max())}, mean {indeg.float().mean():.2f}; "
            f"out-degree max {int(outdeg.max())}; isolated nodes {isolated}",
            f"  split: train {int(self.train_mask.sum())}, val {int(self.val_mask.sum())}, "
            f"test {int(self.test_mask.sum())}",
        ])


def random_features(rng: np.random.Generator, num_nodes: int, feat_dim: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal node features [num_nodes, feat_dim]."""
    x = rng.standard_normal((num_nodes, feat_dim), dtype=np.float32)
    return torch.from_numpy(x).to(dtype)


def split_masks(rng: np.random.Generator, num_nodes: int, fractions: tuple[float, float] = (0.6, 0.2),
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint random train/val/test boolean masks (default 60/20/20) covering all nodes."""
    perm = torch.from_numpy(rng.permutation(num_nodes))
    n_train = int(round(fractions[0] * num_nodes))
    n_val = int(round(fractions[1] * num_nodes))
    masks = []
    for lo, hi in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, num_nodes)):
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[perm[lo:hi]] = True
        masks.append(m)
    return masks[0], masks[1], masks[2]
