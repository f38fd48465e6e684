"""pigeon.Graph: construction, validation errors, derived layouts, feature packing."""
import numpy as np
import pytest
import torch

import pigeon
from pigeon.ir.types import Domain
from pigeon.runtime import layouts
from random_graphs import random_graph


def test_from_edges_accepts_lists_numpy_and_tensors():
    a = pigeon.Graph.from_edges([0, 1], [1, 2], [0, 1], 3)
    b = pigeon.Graph.from_edges(np.array([0, 1], dtype=np.int32), np.array([1, 2]), np.array([0, 1]), 3)
    c = pigeon.Graph.from_edges(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0, 1]), 3)
    for g in (a, b, c):
        assert g.src.dtype == torch.int64 and g.src.tolist() == [0, 1]
        assert (g.num_nodes, g.num_edges, g.num_etypes, g.num_ntypes) == (3, 2, 2, 1)


def test_graph_copies_its_inputs():
    src = torch.tensor([0, 1])
    g = pigeon.Graph.from_edges(src, [1, 2], None, 3)
    src[0] = 2
    assert g.src.tolist() == [0, 1]


@pytest.mark.parametrize("kwargs,message", [
    (dict(src=[0, 1], dst=[1], etype=[0, 0], num_nodes=3), "differ in length"),
    (dict(src=[0, -1], dst=[1, 2], etype=[0, 0], num_nodes=3), "negative id"),
    (dict(src=[0, 3], dst=[1, 2], etype=[0, 0], num_nodes=3), "src holds id 3, out of range for 3 nodes"),
    (dict(src=[0, 1], dst=[1, 7], etype=[0, 0], num_nodes=3), "dst holds id 7"),
    (dict(src=[0.0, 1.0], dst=[1, 2], etype=[0, 0], num_nodes=3), "src must hold integer ids"),
    (dict(src=[[0, 1]], dst=[1, 2], etype=[0, 0], num_nodes=3), "one-dimensional"),
    (dict(src=[0, 1], dst=[1, 2], etype=[0, 5], num_nodes=3, num_etypes=2), "etype holds id 5"),
    (dict(src=[0, 1], dst=[1, 2], etype=[0, 0], num_nodes=3, ntype=[0, 1]), "ntype has 2 entries"),
    (dict(src=[0, 1], dst=[1, 2], etype=[0, 0], num_nodes=-1), "num_nodes must be a non-negative int"),
    (dict(src=[0, 1], dst=[1, 2], etype=[0, 0], num_nodes=3, num_dst_nodes=2), "dst holds id 2, out of range for 2 destination"),
])
def test_from_edges_validation(kwargs, message):
    with pytest.raises(pigeon.GraphError, match=message):
        pigeon.Graph.from_edges(**kwargs)


def test_from_dict_numbers_types_and_offsets_nodes():
    g = pigeon.Graph.from_dict(
        {("user", "follows", "user"): ([0, 1], [1, 2]),
         ("user", "buys", "item"): ([2], [0]),
         ("item", "bought_by", "user"): ([1], [0])},
        num_nodes={"user": 3, "item": 2})
    assert g.ntype_names == ("user", "item") and g.etype_names == ("follows", "buys", "bought_by")
    assert g.canonical_etypes[1] == ("user", "buys", "item")
    assert g.ntype.tolist() == [0, 0, 0, 1, 1]
    assert g.src.tolist() == [0, 1, 2, 4] and g.dst.tolist() == [1, 2, 3, 0]
    assert g.etype.tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("edges,num_nodes,message", [
    ({("user", "r", "shop"): ([0], [0])}, {"user": 1}, "unknown node type 'shop'"),
    ({("user", "r", "user"): ([0], [1])}, {"user": 1}, "out of range for 1 'user' nodes"),
    ({("user", "r", "user"): ([0, 0], [0])}, {"user": 1}, "differ in length"),
    ({("user", "r"): ([0], [0])}, {"user": 1}, "must be \\(src_type, relation, dst_type\\)"),
])
def test_from_dict_validation(edges, num_nodes, message):
    with pytest.raises(pigeon.GraphError, match=message):
        pigeon.Graph.from_dict(edges, num_nodes)


def test_edges_by_etype_layout():
    g = random_graph(seed=3)
    order = layouts.edges_by_etype(g)
    et, dst = g.etype[order.perm], g.dst[order.perm]
    key = et * g.num_nodes + dst
    assert bool((key[1:] >= key[:-1]).all())
    assert sorted(order.perm.tolist()) == list(range(g.num_edges))
    for r in range(g.num_etypes):
        lo, hi = order.offsets[r], order.offsets[r + 1]
        assert bool((et[lo:hi] == r).all())
    assert int(order.offsets[-1]) == g.num_edges


def test_csr_layout():
    g = random_graph(seed=4, num_dst_nodes=20)
    c = layouts.csr(g)
    assert c.indptr.numel() == g.num_dst_nodes + 1
    for v in range(g.num_dst_nodes):
        eids = c.eids[c.indptr[v]:c.indptr[v + 1]]
        assert sorted(eids.tolist()) == sorted(torch.nonzero(g.dst == v).flatten().tolist())
        assert bool((g.etype[eids][1:] >= g.etype[eids][:-1]).all())


def test_compact_map_holds_each_src_etype_pair_once():
    g = random_graph(seed=5)
    cm = layouts.compact(g)
    pairs = set(zip(g.src.tolist(), g.etype.tolist()))
    assert cm.num_pairs == len(pairs)
    assert set(zip(cm.node.tolist(), cm.etype.tolist())) == pairs
    assert cm.node[cm.edge_to_compact].tolist() == g.src.tolist()
    assert cm.etype[cm.edge_to_compact].tolist() == g.etype.tolist()
    assert bool((cm.etype[1:] >= cm.etype[:-1]).all())
    assert cm.num_pairs < g.num_edges  # the test graph has repeated (src, etype) pairs


def test_compact_dst_map_holds_each_dst_etype_pair_once():
    g = random_graph(seed=5)
    cm = layouts.compact_dst(g)
    pairs = set(zip(g.dst.tolist(), g.etype.tolist()))
    assert cm.num_pairs == len(pairs) < g.num_edges
    assert cm.node[cm.edge_to_compact].tolist() == g.dst.tolist()
    assert cm.etype[cm.edge_to_compact].tolist() == g.etype.tolist()


@pytest.mark.parametrize("pairs_cached", [False, True], ids=["counted", "from_pairs"])
def test_degrees(pairs_cached):
    """Per-edge degrees, counted on their own or from the (node, etype) pair maps when those exist."""
    g = random_graph(seed=6)
    if pairs_cached:
        layouts.compact(g), layouts.compact_dst(g)
    for by, end in [("dst", g.dst), ("src", g.src)]:
        assert layouts.degree(g, by).tolist() == [int((end == v).sum()) for v in end.tolist()]
        d = layouts.degree(g, f"{by}_etype")
        assert [int(d[e]) for e in range(g.num_edges)] == [
            int(((end == end[e]) & (g.etype == g.etype[e])).sum()) for e in range(g.num_edges)]


def test_in_order_copies_keep_no_walk_order_or_degree_that_no_kernel_reads():
    """An in-order copy is the array gathered through its walk order; the walk order and the
    degree it was built from go once the program's launches are bound, unless a kernel reads them."""
    from pigeon.runtime import launcher
    g = random_graph(seed=6)
    copy = layouts.in_order(g, "degree", "dst_etype", "compact_dst", Domain.EDGE)
    walk = torch.argsort(layouts.compact_dst(g).edge_to_compact, stable=True)
    same = (g.dst[:, None] == g.dst[None, :]) & (g.etype[:, None] == g.etype[None, :])
    assert copy.tolist() == same.sum(1)[walk].tolist()
    launcher.bind([], g)
    assert ("index_order", "compact_dst", Domain.EDGE) not in g._cache
    assert ("degree", "dst_etype") not in g._cache
    kept = layouts.degree(g, "dst_etype")  # read by a kernel: cached, and the copy gathers from it
    assert layouts.in_order(g, "degree", "dst_etype", "src", Domain.EDGE).tolist() == \
        kept[torch.argsort(g.src, stable=True)].tolist()
    launcher.bind([], g)
    assert layouts.degree(g, "dst_etype") is kept


def test_graph_stats_count_pairs_without_keeping_the_maps():
    g = random_graph(seed=6)
    stats = layouts.graph_stats(g)
    assert "compact" not in g._cache and "compact_dst" not in g._cache
    assert stats.num_compact == len(set(zip(g.src.tolist(), g.etype.tolist())))
    assert stats.num_compact_dst == len(set(zip(g.dst.tolist(), g.etype.tolist())))


def test_segments_group_rows_by_type():
    g = random_graph(seed=7)
    for by, domain in [("etype", Domain.EDGE), ("src_ntype", Domain.EDGE), ("ntype", Domain.NODE),
                       ("etype", Domain.COMPACT)]:
        seg = layouts.segments(g, by, domain)
        types = layouts.index_array(g, by, domain)
        grouped = types if seg.perm is None else types[seg.perm]
        assert grouped.tolist() == sorted(types.tolist())
        assert sum(seg.counts) == types.numel()
        if seg.perm is not None:
            assert seg.perm[seg.inverse].tolist() == list(range(types.numel()))


def test_layouts_are_cached():
    g = random_graph(seed=8)
    assert layouts.compact(g) is layouts.compact(g)


def test_runtime_writes_into_the_owned_arrays_are_detected():
    g = random_graph(seed=9)
    layouts.csr(g)
    layouts.arrays(g).dst[0] = (layouts.arrays(g).dst[0] + 1) % g.num_nodes
    with pytest.raises(pigeon.GraphChangedError, match="modified in place"):
        layouts.csr(g)


def _owned_case_arrays():
    gen = torch.Generator().manual_seed(21)
    n, e = 30, 200
    src, dst = torch.randint(0, n, (e,), generator=gen), torch.randint(0, n, (e,), generator=gen)
    etype, ntype = torch.randint(0, 5, (e,), generator=gen), torch.randint(0, 3, (n,), generator=gen)
    graph_id = (torch.arange(n) >= n // 2).long()  # two graphs of a batch
    return n, {"src": src, "dst": dst, "etype": etype, "ntype": ntype, "graph_id": graph_id}


def _hgt_args(g):
    gen = torch.Generator().manual_seed(22)
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    t, rels, heads, size = g.num_ntypes, g.num_etypes, 2, 3
    return [r(g.num_nodes, 6), r(t, 6, 6), r(t, 6, 6), r(t, 6, 6), r(rels, heads, size, size),
            r(rels, heads, size, size), r(rels, heads), r(t, 6, 6), r(t), None]


def _mutate(t, how):
    """Put ids far out of range into ``t`` (in-place op, ``.data`` or ``.numpy()``)."""
    big = 10**6
    if how == "in_place":
        t.add_(big)
    elif how == "data":
        t.data[:] = big
    else:
        t.numpy()[:] = big


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("whose", ["caller", "returned"])
@pytest.mark.parametrize("how", ["in_place", "data", "numpy"])
def test_graph_cannot_change_under_the_compiler(backend, whose, how):
    """After layouts are cached, changing the caller's arrays or those the graph returns leaves
    the graph, its ids and its results (HGT, float64, forward and backward) those of the original."""
    from pigeon.examples import hgt

    import formulas

    n, given = _owned_case_arrays()
    original = {k: v.clone() for k, v in given.items()}
    g = pigeon.Graph.from_edges(given["src"], given["dst"], given["etype"], n, given["ntype"], graph_id=given["graph_id"])
    expected_graph = pigeon.Graph.from_edges(original["src"], original["dst"], original["etype"], n, original["ntype"],
                                             graph_id=original["graph_id"])
    args = _hgt_args(g)
    with pigeon.use_backend(backend):
        hgt.hgt(g, *args)  # layouts built and cached
        for name in given:
            _mutate(given[name] if whose == "caller" else getattr(g, name), how)
        ours = [a.clone().requires_grad_() if a is not None else None for a in args]
        out = hgt.hgt(g, *ours)
    theirs = [a.clone().requires_grad_() if a is not None else None for a in args]
    ref = formulas.hgt(expected_graph, *theirs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10, msg=f"gradient of argument {i}")
    for name, values in original.items():
        assert torch.equal(getattr(g, name), values), name
    assert int(g.src.max()) < n and int(g.etype.max()) < g.num_etypes and int(g.ntype.max()) < g.num_ntypes
    for name, array in layouts.arrays(g)._asdict().items():
        assert torch.equal(array, original[name]), name


def test_numpy_inputs_are_copied():
    src = np.array([0, 1, 2], dtype=np.int64)
    etype = np.array([0, 1, 1], dtype=np.int32)
    g = pigeon.Graph.from_edges(src, np.array([1, 2, 0]), etype, 3)
    layouts.csr(g)
    src[:] = 99
    etype[:] = 99
    assert g.src.tolist() == [0, 1, 2] and g.etype.tolist() == [0, 1, 1]
    readonly = np.array([0, 1])
    readonly.setflags(write=False)
    assert pigeon.Graph.from_edges(readonly, readonly, None, 2).dst.tolist() == [0, 1]


def test_graph_moved_to_a_device_keeps_its_types_and_owns_its_arrays():
    g = random_graph(seed=10)
    moved = g.to("meta")
    assert moved is not g and moved.device == torch.device("meta")
    assert (moved.num_etypes, moved.max_etype, moved.ntype_names) == (g.num_etypes, g.max_etype, g.ntype_names)
    assert g.to("cpu") is g


def test_max_type_ids():
    g = pigeon.Graph.from_edges([0, 1], [1, 0], [2, 0], 2, [1, 0], num_etypes=9, num_ntypes=4)
    assert (g.num_etypes, g.max_etype, g.num_ntypes, g.max_ntype) == (9, 2, 4, 1)
    empty = pigeon.Graph.from_edges([], [], [], 0)
    assert (empty.max_etype, empty.max_ntype) == (-1, -1)


def test_pack_and_unpack_round_trip():
    g = pigeon.Graph.from_edges([0], [1], [0], 5, ntype=[1, 0, 1, 0, 1], ntype_names=["a", "b"])
    feats = {"a": torch.tensor([[1.0], [2.0]]), "b": torch.tensor([[3.0], [4.0], [5.0]])}
    packed = g.pack(feats)
    assert packed.flatten().tolist() == [3.0, 1.0, 4.0, 2.0, 5.0]
    back = g.unpack(packed)
    assert set(back) == {"a", "b"}
    for k in feats:
        assert torch.equal(back[k], feats[k])


def test_pack_errors():
    g = pigeon.Graph.from_edges([0], [1], [0], 3, ntype=[0, 1, 1], ntype_names=["a", "b"])
    with pytest.raises(pigeon.GraphError, match="no features for node types \\['b'\\]"):
        g.pack({"a": torch.zeros(1, 2)})
    with pytest.raises(pigeon.GraphError, match="unknown node type 'c'"):
        g.pack({"a": torch.zeros(1, 2), "b": torch.zeros(2, 2), "c": torch.zeros(1, 2)})
    with pytest.raises(pigeon.GraphError, match="have shape \\[3, 2\\], expected \\[2, 2\\]"):
        g.pack({"a": torch.zeros(1, 2), "b": torch.zeros(3, 2)})
    with pytest.raises(pigeon.GraphError, match="expected 3 \\(or 3 destination\\) rows, got 4"):
        g.unpack(torch.zeros(4, 2))


@pytest.mark.parametrize("split", [False, True])
def test_dst_work_gives_every_destination_and_every_hub_edge_once(split):
    """Per-destination CUDA kernels: light destinations one per group, hubs a block each (or one
    block per rows_per_block * hub_degree edges when split), every edge range taken once."""
    gen = torch.Generator().manual_seed(0)
    dst = torch.cat([torch.randint(0, 50, (300,), generator=gen), torch.full((90,), 7), torch.full((41,), 9)])
    src = torch.randint(0, 50, (dst.numel(),), generator=gen)
    g = pigeon.Graph.from_edges(src, dst, torch.zeros_like(dst), 52)  # 50, 51: isolated
    rows_per_block, hub_degree = 4, 10
    work = layouts.dst_work(g, rows_per_block, hub_degree, split)
    blocks = work.rows.view(-1, rows_per_block)
    chunks = work.chunks.view(-1, 4)
    assert blocks.shape[0] == chunks.shape[0]
    degree = torch.bincount(dst, minlength=52)
    hubs = {7, 9} | {int(v) for v in torch.nonzero(degree > hub_degree).flatten()}
    light = [int(v) for v in blocks.flatten() if v >= 0 and int(v) not in hubs]
    assert sorted(light) == sorted(set(range(52)) - hubs)  # each light destination once
    for hub in hubs:
        mine = [b for b in range(blocks.shape[0]) if bool((blocks[b] == hub).all())]
        expected = -(-int(degree[hub]) // (rows_per_block * hub_degree)) if split else 1
        assert len(mine) == expected and sorted(int(chunks[b, 0]) for b in mine) == list(range(expected))
        assert {int(chunks[b, 1]) for b in mine} == {expected}
    split_hubs = [h for h in hubs if split and int(degree[h]) > rows_per_block * hub_degree]
    assert work.split_hubs == len(split_hubs)
    assert work.split_blocks == sum(-(-int(degree[h]) // (rows_per_block * hub_degree)) for h in split_hubs)
    firsts = sorted({(int(chunks[b, 2]), int(chunks[b, 3])) for b in range(chunks.shape[0]) if chunks[b, 1] > 1})
    counts = [-(-int(degree[h]) // (rows_per_block * hub_degree)) for h in sorted(split_hubs)]
    assert firsts == [(k, sum(counts[:k])) for k in range(len(counts))]  # hub numbers, their first blocks


@pytest.mark.parametrize("src, message", [(None, "src must be a tensor, array or list of integer ids, got NoneType"),
                                          ("01", "src must be a tensor, array or list of integer ids, got str"),
                                          (3, "src must be a tensor, array or list of integer ids, got int")])
def test_from_edges_names_a_missing_or_wrong_argument(src, message):
    with pytest.raises(pigeon.GraphError, match=message):
        pigeon.Graph.from_edges(src, [0], [0], 2)
