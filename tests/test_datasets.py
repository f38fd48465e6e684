"""pigeon.datasets: synthetic graphs of published shapes and the Debian package graph."""
import importlib
import os
import subprocess

import pytest
import torch

from pigeon.datasets import SHAPES, Dataset, DatasetError, debian, load, synthetic
from pigeon.runtime.graph import Graph

# the module, not the function of the same name that pigeon.datasets exports
debian_mod = importlib.import_module("pigeon.datasets.debian")


def _small_scale(name: str) -> float:
    return min(1.0, 20_000 / SHAPES[name].num_edges)


def _same(a: Dataset, b: Dataset) -> bool:
    ga, gb = a.graph, b.graph
    return all(torch.equal(x, y) for x, y in [
        (ga.src, gb.src), (ga.dst, gb.dst), (ga.etype, gb.etype), (ga.ntype, gb.ntype),
        (a.features, b.features), (a.labels, b.labels), (a.train_mask, b.train_mask)])


@pytest.fixture(scope="module")
def aifb() -> Dataset:
    return synthetic("aifb")


# shapes and synthetic graphs ------------------------------------------------------------

def test_shapes_table():
    assert list(SHAPES) == ["aifb", "mutag", "bgs", "am", "biokg", "fb15k", "wikikg2", "mag"]
    aifb = SHAPES["aifb"]
    assert (aifb.num_nodes, aifb.num_edges, aifb.num_ntypes, aifb.num_etypes) == (8285, 66371, 7, 104)
    mag = SHAPES["mag"]
    assert sum(mag.ntype_sizes.values()) == mag.num_nodes
    assert sum(mag.relation_sizes) == mag.num_edges
    assert ("author", "writes", "paper") in mag.relations


def test_synthetic_is_deterministic():
    a = synthetic("mutag", scale=0.05, seed=1)
    assert _same(a, synthetic("mutag", scale=0.05, seed=1))
    assert not torch.equal(a.graph.src, synthetic("mutag", scale=0.05, seed=2).graph.src)


def test_graph_does_not_depend_on_feature_size():
    a = synthetic("aifb", scale=0.1, feat_dim=16, num_classes=4)
    b = synthetic("aifb", scale=0.1, feat_dim=32, num_classes=4, dtype=torch.float64)
    assert torch.equal(a.graph.src, b.graph.src) and torch.equal(a.graph.dst, b.graph.dst)
    assert a.features.shape == (a.graph.num_nodes, 16) and b.features.dtype == torch.float64


@pytest.mark.parametrize("name", list(SHAPES))
def test_small_scale_keeps_the_shape(name):
    shape, scale = SHAPES[name], _small_scale(name)
    ds = synthetic(name, scale=scale)
    g = ds.graph
    assert abs(g.num_edges - shape.num_edges * scale) <= 1
    assert abs(g.num_nodes - shape.num_nodes * scale) <= max(1, 3 * shape.num_ntypes)
    assert (g.num_etypes, g.num_ntypes) == (shape.num_etypes, shape.num_ntypes)
    assert torch.bincount(g.etype, minlength=g.num_etypes).min() >= 1
    assert torch.bincount(g.ntype, minlength=g.num_ntypes).min() >= 3
    # nodes of a type are contiguous and every edge joins the node types of its relation
    assert torch.all(g.ntype[1:] >= g.ntype[:-1])
    src_t = torch.tensor([g.ntype_names.index(s) for s, _, _ in g.canonical_etypes])
    dst_t = torch.tensor([g.ntype_names.index(d) for _, _, d in g.canonical_etypes])
    assert torch.equal(g.ntype[g.src], src_t[g.etype]) and torch.equal(g.ntype[g.dst], dst_t[g.etype])
    if name == "mag":
        assert g.canonical_etypes == SHAPES["mag"].relations
        assert g.ntype_names == tuple(SHAPES["mag"].ntype_sizes)


def test_tiny_scale_keeps_one_edge_per_type():
    g = synthetic("wikikg2", scale=1e-5).graph
    assert g.num_etypes == g.num_edges == round(SHAPES["wikikg2"].num_edges * 1e-5)
    g = synthetic("bgs", scale=1e-9).graph
    assert g.num_edges == g.num_etypes == 1 and g.num_ntypes == 27 and g.num_nodes == 81


def test_full_aifb_is_heavy_tailed(aifb):
    g = aifb.graph
    assert (g.num_nodes, g.num_edges) == (8285, 66371)
    rel = torch.bincount(g.etype, minlength=g.num_etypes).float()
    assert rel.max() > 20 * rel.median()
    indeg = torch.bincount(g.dst, minlength=g.num_nodes).float()
    outdeg = torch.bincount(g.src, minlength=g.num_nodes).float()
    assert indeg.max() > 50 * indeg.mean() and outdeg.max() > 20 * outdeg.mean()
    assert int(((indeg + outdeg) == 0).sum()) > 0  # isolated nodes
    assert int((g.src == g.dst).sum()) > 0  # self loops are kept
    keys = (g.etype * g.num_nodes + g.src) * g.num_nodes + g.dst
    assert torch.unique(keys).numel() < g.num_edges  # and so are duplicate edges


def test_labels_and_masks(aifb):
    n = aifb.graph.num_nodes
    assert aifb.features.shape == (n, 64) and aifb.features.dtype == torch.float32
    assert aifb.labels.shape == (n,) and aifb.labels.dtype == torch.int64
    assert 0 <= int(aifb.labels.min()) and int(aifb.labels.max()) < aifb.num_classes
    assert torch.bincount(aifb.labels).min() > n / (4 * aifb.num_classes)  # no class vanishes
    masks = torch.stack([aifb.train_mask, aifb.val_mask, aifb.test_mask]).int()
    assert masks.dtype == torch.int32 and torch.all(masks.sum(0) == 1)
    assert abs(int(aifb.train_mask.sum()) - 0.6 * n) <= 1
    assert "aifb" in repr(aifb) and "isolated" in aifb.summary()


def test_unknown_names_and_bad_arguments():
    with pytest.raises(DatasetError, match="aifb.*debian"):
        load("no-such-graph")
    with pytest.raises(DatasetError, match="unknown"):
        synthetic("no-such-graph")
    with pytest.raises(DatasetError, match="scale"):
        synthetic("aifb", scale=0)
    with pytest.raises(DatasetError, match="node_types"):
        debian(node_types="maintainer")


def test_load_dispatches():
    assert _same(load("AIFB", scale=0.02, seed=3), synthetic("aifb", scale=0.02, seed=3))


# the Debian package graph -----------------------------------------------------------------

PACKAGES = """\
Package: alpha
Version: 1.0
Section: contrib/utils
Priority: optional
Depends: beta (>= 1.0), beta (<< 3), gamma:any | delta [amd64], libfoo (<< 2) [!i386] <!nocheck>, missing-pkg
Pre-Depends: beta
Recommends: mta
Description: first line
 Depends: not-a-field
 .

Package: beta
Section: libs
Priority: required
Provides: mta, gamma (= 1.0)
Breaks: alpha (<< 0.5)

Package: gamma
Section: non-free/libs
Priority: optional
Conflicts: mta
Provides: mta

Package: delta
Section: utils
Priority: optional
Suggests: alpha,
 beta

Package: libfoo
Depends: libfoo, not-a-package | nothing-either

Package: removed
Status: deinstall ok config-files
Section: libs
Depends: alpha
"""


def _edges(ds: Dataset) -> set[tuple[str, str, str]]:
    g, names = ds.graph, ds.node_names
    return {(names[s], g.etype_names[r], names[d])
            for s, r, d in zip(g.src.tolist(), g.etype.tolist(), g.dst.tolist())}


def test_debian_parser_on_a_packages_file(tmp_path):
    path = tmp_path / "Packages"
    path.write_text(PACKAGES)
    ds = debian(path=path, num_classes=2, feat_dim=8)
    g = ds.graph
    assert sorted(ds.node_names) == ["alpha", "beta", "delta", "gamma", "libfoo"]  # "removed" is not installed
    assert g.ntype_names == ("libs", "unknown", "utils") and g.num_etypes == 9
    assert [g.ntype_names[t] for t in g.ntype.tolist()] == ["libs", "libs", "unknown", "utils", "utils"]
    assert _edges(ds) == {
        ("alpha", "Depends", "beta"), ("alpha", "Depends", "gamma"), ("alpha", "Depends", "delta"),
        ("alpha", "Depends", "libfoo"), ("alpha", "Pre-Depends", "beta"),
        ("alpha", "Recommends", "beta"), ("alpha", "Recommends", "gamma"),  # virtual -> providers
        ("beta", "Provides", "gamma"), ("beta", "Breaks", "alpha"),
        ("gamma", "Conflicts", "beta"),  # the other provider of mta, not gamma itself
        ("delta", "Suggests", "alpha"), ("delta", "Suggests", "beta"),
        ("libfoo", "Depends", "libfoo"),
    }
    assert g.num_edges == 13  # the two "Depends: beta" constraints give one edge
    labels = dict(zip(ds.node_names, ds.labels.tolist()))
    assert labels == {"beta": 0, "gamma": 0, "libfoo": 1, "alpha": 1, "delta": 1}  # libs largest
    assert ds.features.shape == (5, 8)
    by_priority = debian(path=path, node_types="priority")
    assert by_priority.graph.ntype_names == ("optional", "required", "unknown")
    assert _edges(by_priority) == _edges(ds)


def test_debian_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        debian(path=tmp_path / "nothing-here")


@pytest.mark.skipif(not os.path.exists(debian_mod.DPKG_STATUS), reason="no dpkg database")
def test_debian_dpkg_status():
    ds = load("debian-dpkg")
    g = ds.graph
    assert g.num_nodes > 10 and g.num_etypes == 9 and len(set(ds.node_names)) == g.num_nodes
    assert int((g.etype == g.etype_names.index("Depends")).sum()) > 0
    assert ds.labels.shape == (g.num_nodes,) and int(ds.labels.max()) < ds.num_classes


def test_debian_apt_lists_or_a_clear_error():
    try:
        ds = debian()
    except DatasetError as exc:
        assert "apt-get update" in str(exc)
    else:
        assert ds.graph.num_nodes > 1000 and ds.graph.num_edges > ds.graph.num_nodes


def test_debian_apt_without_lists(monkeypatch):
    def empty(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout="", stderr="")
    monkeypatch.setattr(debian_mod.subprocess, "run", empty)
    with pytest.raises(DatasetError, match=r"do not exist.*apt-get update"):
        debian()


# labels: a hidden random relational layer that the example models learn ---------------------

def test_labels_are_a_hidden_relational_layer():
    import numpy as np
    synthetic_mod = importlib.import_module("pigeon.datasets.synthetic")
    gen = torch.Generator().manual_seed(3)
    src, dst, etype = torch.randint(0, 40, (300,), generator=gen), torch.randint(0, 40, (300,), generator=gen), \
        torch.randint(0, 5, (300,), generator=gen)
    src[:4], dst[:4] = torch.tensor([0, 1, 7, 7]), torch.tensor([0, 1, 7, 7])  # self loops, a multi-edge
    g = Graph.from_edges(src, dst, etype, 45)  # nodes 40..44: no edges at all
    x = torch.randn(45, 6, generator=gen)
    labels = synthetic_mod._labels(g, x.numpy(), 3, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    proj = torch.from_numpy(rng.standard_normal((6, 3))).to(torch.float64)
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=(6, 3))).to(torch.float64)  # R + 1 = 6 rows
    xp = x.double() @ proj
    agg = torch.zeros(45, 3, dtype=torch.float64).index_add_(0, dst, xp[src] * signs[etype])
    deg = torch.bincount(dst, minlength=45).clamp(min=1).unsqueeze(1)
    assert torch.equal(labels, (xp * signs[5] + agg / deg).argmax(1))
    other = Graph.from_edges(src, dst, (etype + 1) % 5, 45)  # the same edges with other types
    assert not torch.equal(labels, synthetic_mod._labels(other, x.numpy(), 3, np.random.default_rng(11)))


@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_each_example_model_beats_chance_on_a_small_graph(model):
    from pigeon.examples.train import Net, accuracy, with_self_loops
    data = synthetic("mutag", scale=0.02, feat_dim=8, num_classes=4)
    g = data.graph if model == "rgcn" else with_self_loops(data.graph)
    net = Net(model, 8, 16, data.num_classes, g.num_etypes, g.num_ntypes)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(25):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(g, data.features)[data.train_mask], data.labels[data.train_mask])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        test_acc = accuracy(net(g, data.features), data.labels, data.test_mask)
    assert test_acc > 1.5 / data.num_classes, f"{model}: test accuracy {test_acc:.3f}, chance {1 / data.num_classes}"
