"""Knowledge graphs for link prediction, read from the triple files that the ``pykeen`` package
ships (``pip install pigeon-rgnn[kg]``); nothing is downloaded.

    from pigeon.datasets import kg
    umls = kg("umls")                  # .train/.valid/.test [n, 3] int64 (head, relation, tail)
    umls.graph                         # the training triples and their inverses, 2R edge types

Entities and relations are numbered as PyKEEN's ``TriplesFactory`` numbers them: labels sorted
(relations by their name without an ``_inverse`` suffix), triples with a label unknown to the
training split dropped, and every split deduplicated and sorted (``np.unique``), so a model
trained here and one trained with PyKEEN see the same ids.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pigeon.runtime.graph import Graph

from .dataset import DatasetError

SHIPPED: tuple[str, ...] = ("umls", "kinships", "nations")
# PyKEEN knows these but downloads them at run time, which Pigeon never does
DOWNLOADED: tuple[str, ...] = ("fb15k237", "wn18rr", "fb15k", "wn18", "codexsmall", "yago310")
INSTALL_HINT = "pip install pigeon-rgnn[kg]"
_INVERSE_SUFFIX = "_inverse"


@dataclass(repr=False, eq=False)
class KnowledgeGraph:
    """A link-prediction data set: the three splits as [n, 3] int64 (head, relation, tail), the
    labels of entity and relation ids, and ``graph``, the training triples as a
    ``pigeon.Graph``: edge i < n_train is triple i (head -> tail, edge type r), edge n_train + i
    its inverse (tail -> head, edge type R + r), as the RGCN paper adds them."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    entity_names: tuple[str, ...]
    relation_names: tuple[str, ...]
    graph: Graph

    @property
    def num_entities(self) -> int:
        return len(self.entity_names)

    @property
    def num_relations(self) -> int:
        """Relations of the triples (the graph has twice as many edge types: their inverses)."""
        return len(self.relation_names)

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({self.name!r}, entities={self.num_entities}, relations={self.num_relations}, "
                f"train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)})")


def kg(name: str) -> KnowledgeGraph:
    """The knowledge graph ``name`` ("umls", "kinships" or "nations") from PyKEEN's files."""
    key = str(name).lower()
    if key not in SHIPPED:
        if key in DOWNLOADED:
            raise DatasetError(f"knowledge graph {name!r} is not shipped by any installed package (PyKEEN "
                               f"downloads it at run time, which pigeon.datasets.kg does not do); "
                               f"shipped: {', '.join(SHIPPED)}")
        raise DatasetError(f"unknown knowledge graph {name!r}; known: {', '.join(SHIPPED)}")
    folder = _pykeen_folder() / "datasets" / key
    labelled = {split: _read_triples(folder / f"{split}.txt") for split in ("train", "valid", "test")}
    train = labelled["train"]
    entities = sorted(set(train[:, 0]) | set(train[:, 2]))
    relations = sorted(set(train[:, 1]), key=lambda r: (re.sub(f"{_INVERSE_SUFFIX}$", "", r),
                                                        r.endswith(_INVERSE_SUFFIX)))
    entity_id = {label: i for i, label in enumerate(entities)}
    relation_id = {label: i for i, label in enumerate(relations)}
    mapped = {split: _map(triples, entity_id, relation_id) for split, triples in labelled.items()}
    return KnowledgeGraph(key, mapped["train"], mapped["valid"], mapped["test"], tuple(entities), tuple(relations),
                          training_graph(mapped["train"], len(entities), relations))


def training_graph(train: torch.Tensor, num_entities: int, relation_names: list[str] | tuple[str, ...]) -> Graph:
    """The graph of ``train`` with an inverse edge (type R + r) after the triples' own edges."""
    head, rel, tail = train.t()
    num_rels = len(relation_names)
    names = list(relation_names) + [f"{r}{_INVERSE_SUFFIX}" for r in relation_names]
    return Graph.from_edges(torch.cat([head, tail]), torch.cat([tail, head]), torch.cat([rel, rel + num_rels]),
                            num_entities, num_etypes=2 * num_rels, etype_names=names)


def _pykeen_folder() -> Path:
    spec = importlib.util.find_spec("pykeen")  # finds the files without importing PyKEEN (slow, heavy)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"pigeon.datasets.kg reads the triple files that PyKEEN ships: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_triples(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path} is missing from the installed pykeen package; reinstall it: {INSTALL_HINT}")
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    bad = next((i for i, row in enumerate(rows) if len(row) != 3), None)
    if bad is not None:
        raise DatasetError(f"{path}:{bad + 1}: expected three tab-separated columns, got {len(rows[bad])}")
    return np.array(rows, dtype=object).reshape(-1, 3)


def _map(triples: np.ndarray, entity_id: dict[str, int], relation_id: dict[str, int]) -> torch.Tensor:
    """Label triples to unique sorted id triples, dropping those with an unknown label (as PyKEEN)."""
    ids = np.array([[entity_id.get(h, -1), relation_id.get(r, -1), entity_id.get(t, -1)] for h, r, t in triples],
                   dtype=np.int64).reshape(-1, 3)
    ids = ids[(ids >= 0).all(axis=1)]
    return torch.from_numpy(np.unique(ids, axis=0))
