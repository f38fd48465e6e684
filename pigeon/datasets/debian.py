"""The Debian package-relation graph, read from the apt lists, the dpkg database or a Packages file.

Nodes are packages (one per package name; the first record of a name wins, e.g. for the
several architectures of a multi-arch package in the dpkg database). Edge type ``r`` goes from a
package to every package named in its field ``RELATIONS[r]``; every alternative of ``a | b`` is
an edge, and version constraints, ``:arch`` qualifiers, ``[arch]`` lists and ``<profile>`` parts are
dropped. Targets that name no package of the index:

- a virtual package (named in some package's ``Provides``) becomes one edge to each of its
  providers, except the source package itself (so ``Conflicts: mail-transport-agent`` of an MTA
  that provides it links to the other MTAs, not to itself);
- ``Provides`` edges exist only towards real packages of the index (a virtual name is no node);
- any other unknown name is dropped.
Repeated (package, relation, target) triples are merged into one edge.

Node types are the package ``Section`` (without the ``contrib/``/``non-free/`` prefix) or
``Priority`` ("unknown" where the field is missing), numbered alphabetically; nodes of a type
are contiguous. Labels are the section whatever the node types are: the ``num_classes - 1``
largest sections are classes 0.. in order of size, all other sections share the last class.
Features are seeded standard normal; the split is a seeded 60/20/20.
"""
from __future__ import annotations

import os
import re
import subprocess
import zlib
from typing import NamedTuple

import numpy as np
import torch

from pigeon.runtime.graph import Graph

from .dataset import Dataset, DatasetError, random_features, split_masks

RELATIONS = ("Depends", "Pre-Depends", "Recommends", "Suggests", "Breaks", "Conflicts",
             "Replaces", "Provides", "Enhances")
DPKG_STATUS = "/var/lib/dpkg/status"

# One match per field of interest; a value runs on over continuation lines (leading blank).
_FIELD = re.compile(r"^(Package|Section|Priority|Status|" + "|".join(RELATIONS)
                    + r"):[ \t]*(.*(?:\n[ \t].*)*)", re.M)
# A package name starts the field and follows each "," and "|"; version constraints, arch
# qualifiers and [arch]/<profile> lists hold neither separator, so they are simply skipped.
_TARGET = re.compile(r"(?:^|[,|])\s*([A-Za-z0-9][A-Za-z0-9+.\-]*)")
_RECORD_SEP = re.compile(r"\n[ \t]*\n")
# dpkg states of packages that are not (even partly) on the system
_ABSENT_STATES = {"not-installed", "config-files"}


class Package(NamedTuple):
    """One package record: its name, section, priority and the target names of each relation."""

    name: str
    section: str
    priority: str
    relations: dict[str, list[str]]


def parse_packages(text: str) -> list[Package]:
    """The package records of a Packages/status file, skipping packages dpkg lists as absent."""
    packages = []
    for record in _RECORD_SEP.split(text):
        fields = dict(_FIELD.findall(record))
        name = fields.get("Package", "").strip()
        if not name:
            continue
        state = fields.get("Status", "").split()[-1:]  # dpkg: "want flag state"
        if state and state[0] in _ABSENT_STATES:
            continue
        section = fields.get("Section", "").strip().rsplit("/", 1)[-1] or "unknown"
        priority = fields.get("Priority", "").strip() or "unknown"
        relations = {r: _TARGET.findall(fields[r]) for r in RELATIONS if r in fields}
        packages.append(Package(name, section, priority, relations))
    return packages


def debian(source: str = "apt", node_types: str = "section", feat_dim: int = 64,
           num_classes: int = 8, seed: int = 0, path: str | os.PathLike | None = None,
           dtype: torch.dtype = torch.float32) -> Dataset:
    """The Debian package graph from ``apt-cache dumpavail`` ("apt"), the dpkg database
    ("dpkg", installed packages only) or, if ``path`` is given, a Packages-format file."""
    if node_types not in ("section", "priority"):
        raise DatasetError(f"node_types must be 'section' or 'priority', got {node_types!r}")
    if num_classes < 1 or feat_dim < 1:
        raise DatasetError(f"feat_dim and num_classes must be positive, got {feat_dim}, {num_classes}")
    if path is not None:
        name, text = f"debian:{os.fspath(path)}", _read_file(path)
    elif source == "apt":
        name, text = "debian", _read_apt()
    elif source == "dpkg":
        name, text = "debian-dpkg", _read_file(DPKG_STATUS, " (source='dpkg' needs a Debian system)")
    else:
        raise DatasetError(f"source must be 'apt' or 'dpkg' (or pass path=), got {source!r}")
    packages = _unique(parse_packages(text))
    if not packages:
        raise DatasetError(f"{name}: no package records found")
    graph, order = _build_graph(packages, node_types)
    packages = [packages[i] for i in order]
    feat_ss, split_ss = np.random.SeedSequence([int(seed), zlib.crc32(b"debian")]).spawn(2)
    features = random_features(np.random.default_rng(feat_ss), graph.num_nodes, feat_dim).to(dtype)
    train, val, test = split_masks(np.random.default_rng(split_ss), graph.num_nodes)
    labels = _section_labels([p.section for p in packages], num_classes)
    return Dataset(name, graph, features, labels, train, val, test, num_classes,
                   node_names=tuple(p.name for p in packages))


def _read_apt() -> str:
    missing = ("the apt package lists do not exist (nothing under /var/lib/apt/lists); "
               "`apt-get update` (as root) creates them")
    try:
        out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, check=False,
                             encoding="utf-8", errors="replace")
    except OSError as exc:  # no apt-cache at all: not a Debian system
        raise DatasetError(f"cannot run apt-cache ({exc}); {missing}") from exc
    if out.returncode != 0 or not out.stdout.strip():
        detail = f" (apt-cache dumpavail: {out.stderr.strip()[:200]})" if out.stderr.strip() else ""
        raise DatasetError(missing + detail)
    return out.stdout


def _read_file(path: str | os.PathLike, hint: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read the package list {os.fspath(path)!r}{hint}: {exc}") from exc


def _unique(packages: list[Package]) -> list[Package]:
    seen: set[str] = set()
    out = []
    for p in packages:
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    return out


def _build_graph(packages: list[Package], node_types: str) -> tuple[Graph, np.ndarray]:
    """The graph, and the package index of each node (nodes sorted by node type)."""
    kinds = [p.section if node_types == "section" else p.priority for p in packages]
    ntype_names = sorted(set(kinds))
    ids = {k: i for i, k in enumerate(ntype_names)}
    type_of = np.array([ids[k] for k in kinds], dtype=np.int64)
    order = np.argsort(type_of, kind="stable")
    node_of = np.empty(len(packages), dtype=np.int64)
    node_of[order] = np.arange(len(packages))
    index = {p.name: int(node_of[i]) for i, p in enumerate(packages)}
    providers: dict[str, list[int]] = {}
    for p in packages:
        for target in p.relations.get("Provides", ()):
            if target not in index:
                providers.setdefault(target, []).append(index[p.name])
    n = len(packages)
    rel_id = {field: r for r, field in enumerate(RELATIONS)}
    keys: list[int] = []  # edge (r, s, d) as the int (r * n + s) * n + d, for np.unique
    for p in packages:
        s = index[p.name]
        for field, names in p.relations.items():
            base = (rel_id[field] * n + s) * n
            for target in names:
                d = index.get(target)
                if d is not None:
                    keys.append(base + d)
                elif field != "Provides":
                    keys.extend(base + v for v in providers.get(target, ()) if v != s)
    key = np.unique(np.array(keys, dtype=np.int64))
    graph = Graph.from_edges((key // n) % n, key % n, key // (n * n), n, type_of[order],
                             num_etypes=len(RELATIONS), etype_names=RELATIONS,
                             ntype_names=ntype_names)
    return graph, order


def _section_labels(sections: list[str], num_classes: int) -> torch.Tensor:
    """Class of each node: rank of its section by size, sections past num_classes - 1 folded into the last."""
    names, inverse, counts = np.unique(np.array(sections, dtype=str),
                                       return_inverse=True, return_counts=True)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.lexsort((names, -counts))] = np.arange(len(names))
    if len(names) > num_classes:
        rank = np.minimum(rank, num_classes - 1)
    return torch.from_numpy(rank[inverse].astype(np.int64))
