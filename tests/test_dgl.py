"""Checks against DGL (run in the DGL environment: ``pytest -m dgl tests/test_dgl.py``).

- ``pigeon.Graph.from_dgl`` on homogeneous graphs (with and without type ids), heterographs
  and blocks;
- ``pigeon.nn.RGCNConv`` against ``dgl.nn.RelGraphConv`` and ``pigeon.nn.HGTConv`` against
  ``dgl.nn.HGTConv`` given the same weights: forward outputs and the gradients w.r.t. the input
  features and every parameter, in float64, on random graphs with several node types, many edge
  types (some without edges), self loops, multi-edges and isolated nodes.
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch

dgl = pytest.importorskip("dgl")
import dgl.nn  # noqa: E402

import pigeon  # noqa: E402
import pigeon.nn  # noqa: E402
from pigeon.dgl_adapter import from_dgl  # noqa: E402

pytestmark = pytest.mark.dgl

DTYPE = torch.float64

# node types (DGL numbers them in sorted order: author, lonely, paper, venue); "lonely" nodes
# have no edges, and the last node of every other type is never drawn either (isolated nodes)
NUM_NODES = {"author": 7, "paper": 9, "venue": 4, "lonely": 3}
# (src type, relation, dst type) -> number of random edges; 0: an edge type without edges.
# The last type in DGL's sorted order, ("venue", "hosts", "paper"), has edges, so a graph from
# dgl.to_homogeneous still shows every edge type id.
RELATIONS = {
    ("author", "writes", "paper"): 14,
    ("paper", "written_by", "author"): 12,
    ("paper", "cites", "paper"): 16,       # + self loops below
    ("author", "knows", "author"): 0,
    ("author", "self", "author"): 0,       # self loops only (below)
    ("paper", "in", "venue"): 6,
    ("venue", "empty", "author"): 0,
    ("lonely", "nothing", "paper"): 0,
    ("venue", "hosts", "paper"): 5,
}


def _random_edges(gen: torch.Generator, rel: tuple[str, str, str], count: int):
    s_type, _, d_type = rel
    # never draw the last node of a type: it stays isolated
    src = torch.randint(0, NUM_NODES[s_type] - 1, (count,), generator=gen)
    dst = torch.randint(0, NUM_NODES[d_type] - 1, (count,), generator=gen)
    if count:  # multi-edges: repeat a few edges
        dup = torch.randint(0, count, (max(2, count // 4),), generator=gen)
        src, dst = torch.cat([src, src[dup]]), torch.cat([dst, dst[dup]])
    if s_type == d_type and rel[1] in ("cites", "self"):  # self loops, one of them twice
        loops = torch.tensor([0, 1, 2, 2])
        src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
    if src.numel():  # edge ids in random order
        perm = torch.randperm(src.numel(), generator=gen)
        src, dst = src[perm], dst[perm]
    return src, dst


def random_heterograph(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    data = {rel: _random_edges(gen, rel, count) for rel, count in RELATIONS.items()}
    hg = dgl.heterograph(data, num_nodes_dict=NUM_NODES)
    assert hg.num_edges(hg.canonical_etypes[-1]) > 0
    assert any(hg.num_edges(c) == 0 for c in hg.canonical_etypes)
    return hg


def shuffled_homogeneous(hg, seed: int = 1):
    """``dgl.to_homogeneous(hg)`` with its nodes relabelled and its edges reordered at random
    (types interleaved), as a plain ``dgl.graph`` carrying ``dgl.NTYPE``/``dgl.ETYPE``."""
    g = dgl.to_homogeneous(hg)
    gen = torch.Generator().manual_seed(seed)
    node_perm = torch.randperm(g.num_nodes(), generator=gen)  # old id -> new id
    edge_perm = torch.randperm(g.num_edges(), generator=gen)  # new edge i = old edge edge_perm[i]
    src, dst = g.edges()
    out = dgl.graph((node_perm[src[edge_perm]], node_perm[dst[edge_perm]]), num_nodes=g.num_nodes())
    ntype = torch.empty_like(g.ndata[dgl.NTYPE])
    ntype[node_perm] = g.ndata[dgl.NTYPE]
    out.ndata[dgl.NTYPE] = ntype
    out.edata[dgl.ETYPE] = g.edata[dgl.ETYPE][edge_perm]
    return out


def _graphs(kind: str):
    """(DGL homogeneous graph for DGL's layer, graph for ours, number of node/edge types)."""
    hg = random_heterograph()
    if kind == "sorted":  # to_homogeneous for DGL, the heterograph itself for pigeon
        return dgl.to_homogeneous(hg), hg, len(hg.ntypes), len(hg.canonical_etypes)
    g = shuffled_homogeneous(hg)  # ours converts the same DGL graph
    return g, g, len(hg.ntypes), len(hg.canonical_etypes)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * scale,
                               msg=lambda m: f"{what}: {m}")


def compare(ours_fn, dgl_fn, h: torch.Tensor, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]],
            seed: int = 3) -> None:
    """Forward outputs of ``ours_fn(h)``/``dgl_fn(h)`` and the gradients w.r.t. ``h`` and each
    (ours, DGL's) parameter pair for one random upstream gradient."""
    h_ours = h.detach().clone().requires_grad_(True)
    h_dgl = h.detach().clone().requires_grad_(True)
    out_ours, out_dgl = ours_fn(h_ours), dgl_fn(h_dgl)
    assert_close(out_ours, out_dgl, "forward")
    upstream = torch.randn(out_dgl.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
    names = list(pairs)
    grads_ours = torch.autograd.grad(out_ours, [h_ours] + [pairs[n][0] for n in names], upstream,
                                     allow_unused=True)
    grads_dgl = torch.autograd.grad(out_dgl, [h_dgl] + [pairs[n][1] for n in names], upstream,
                                    allow_unused=True)
    for name, go, gd in zip(["h"] + names, grads_ours, grads_dgl):
        go = torch.zeros_like(pairs[name][0] if name != "h" else h) if go is None else go
        gd = torch.zeros_like(go) if gd is None else gd
        assert_close(go, gd.reshape(go.shape), f"grad of {name}")


# --------------------------------------------------------------------------------------
# graph adapter
# --------------------------------------------------------------------------------------


def test_from_dgl_is_graph_from_dgl():
    hg = random_heterograph()
    for g in (hg, dgl.to_homogeneous(hg)):
        a, b = pigeon.Graph.from_dgl(g), from_dgl(g)
        assert isinstance(a, pigeon.Graph) and isinstance(b, pigeon.Graph)
        for name in ("src", "dst", "etype", "ntype"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        assert (a.num_nodes, a.num_etypes, a.num_ntypes) == (b.num_nodes, b.num_etypes, b.num_ntypes)


def test_from_dgl_homogeneous_with_type_ids():
    hg = random_heterograph()
    g = dgl.to_homogeneous(hg)
    pg = pigeon.Graph.from_dgl(g)
    src, dst = g.edges()
    assert torch.equal(pg.src, src) and torch.equal(pg.dst, dst)
    assert torch.equal(pg.etype, g.edata[dgl.ETYPE])
    assert torch.equal(pg.ntype, g.ndata[dgl.NTYPE])
    assert pg.num_nodes == pg.num_dst_nodes == g.num_nodes() == sum(NUM_NODES.values())
    assert pg.num_edges == g.num_edges() == hg.num_edges()
    assert pg.num_etypes == len(hg.canonical_etypes)
    assert pg.num_ntypes == len(hg.ntypes)
    assert not pg.is_block
    # the same on a graph whose nodes and edges are not sorted by type
    g = shuffled_homogeneous(hg)
    pg = pigeon.Graph.from_dgl(g)
    src, dst = g.edges()
    assert torch.equal(pg.src, src) and torch.equal(pg.dst, dst)
    assert torch.equal(pg.etype, g.edata[dgl.ETYPE]) and torch.equal(pg.ntype, g.ndata[dgl.NTYPE])
    assert (pg.num_etypes, pg.num_ntypes) == (len(hg.canonical_etypes), len(hg.ntypes))


def test_from_dgl_plain_homogeneous():
    # self loops (0->0 twice), multi-edges (1->2 three times), isolated nodes 5 and 6
    src = torch.tensor([0, 0, 1, 1, 1, 3, 4, 2])
    dst = torch.tensor([0, 0, 2, 2, 2, 1, 3, 4])
    g = dgl.graph((src, dst), num_nodes=7)
    pg = pigeon.Graph.from_dgl(g)
    assert torch.equal(pg.src, src) and torch.equal(pg.dst, dst)
    assert torch.equal(pg.etype, torch.zeros(8, dtype=torch.int64))
    assert torch.equal(pg.ntype, torch.zeros(7, dtype=torch.int64))
    assert (pg.num_nodes, pg.num_edges, pg.num_etypes, pg.num_ntypes) == (7, 8, 1, 1)
    # DGL's names of the single types
    assert tuple(pg.ntype_names) == tuple(g.ntypes) == ("_N",)
    assert tuple(pg.etype_names) == tuple(g.etypes) == ("_E",)
    assert tuple(pg.canonical_etypes) == tuple(g.canonical_etypes)
    # no edges at all
    pg = pigeon.Graph.from_dgl(dgl.graph(([], []), num_nodes=3))
    assert (pg.num_nodes, pg.num_edges, pg.num_etypes, pg.num_ntypes) == (3, 0, 1, 1)


def test_from_dgl_heterograph():
    hg = random_heterograph()
    pg = pigeon.Graph.from_dgl(hg)
    offsets, total = {}, 0
    for nt in hg.ntypes:  # global id = offset of the node type (in g.ntypes order) + local id
        offsets[nt] = total
        total += hg.num_nodes(nt)
    srcs, dsts, etypes = [], [], []
    for r, (s_type, rel, d_type) in enumerate(hg.canonical_etypes):
        s, d = hg.edges(etype=(s_type, rel, d_type))
        srcs.append(s + offsets[s_type])
        dsts.append(d + offsets[d_type])
        etypes.append(torch.full_like(s, r))
    assert torch.equal(pg.src, torch.cat(srcs)) and torch.equal(pg.dst, torch.cat(dsts))
    assert torch.equal(pg.etype, torch.cat(etypes))
    assert torch.equal(pg.ntype, torch.cat([torch.full((hg.num_nodes(nt),), t, dtype=torch.int64)
                                            for t, nt in enumerate(hg.ntypes)]))
    assert pg.num_nodes == hg.num_nodes() and pg.num_edges == hg.num_edges()
    assert pg.num_etypes == len(hg.canonical_etypes) == len(RELATIONS)
    assert pg.num_ntypes == len(hg.ntypes) == len(NUM_NODES)
    assert tuple(pg.ntype_names) == tuple(hg.ntypes)
    assert tuple(pg.etype_names) == tuple(rel for _, rel, _ in hg.canonical_etypes)
    assert tuple(pg.canonical_etypes) == tuple(hg.canonical_etypes)
    # edge types without edges keep their ids
    counts = torch.bincount(pg.etype, minlength=pg.num_etypes)
    assert [int(c) for c in counts] == [hg.num_edges(c) for c in hg.canonical_etypes]
    # the same numbering as dgl.to_homogeneous
    g = dgl.to_homogeneous(hg)
    src, dst = g.edges()
    assert torch.equal(pg.src, src) and torch.equal(pg.dst, dst)
    assert torch.equal(pg.etype, g.edata[dgl.ETYPE]) and torch.equal(pg.ntype, g.ndata[dgl.NTYPE])
    # per-type features: pack / unpack by DGL's node type names
    feats = {nt: torch.randn(hg.num_nodes(nt), 3, dtype=DTYPE) for nt in hg.ntypes}
    packed = pg.pack(feats)
    assert torch.equal(packed, torch.cat([feats[nt] for nt in hg.ntypes]))
    unpacked = pg.unpack(packed)
    assert list(unpacked) == list(hg.ntypes)
    assert all(torch.equal(unpacked[nt], feats[nt]) for nt in hg.ntypes)


def test_from_dgl_single_relation_heterograph_keeps_names():
    hg = dgl.heterograph({("user", "follows", "user"): (torch.tensor([0, 1, 1, 2]), torch.tensor([1, 2, 2, 2]))},
                         num_nodes_dict={"user": 4})
    pg = pigeon.Graph.from_dgl(hg)
    assert torch.equal(pg.src, torch.tensor([0, 1, 1, 2])) and torch.equal(pg.dst, torch.tensor([1, 2, 2, 2]))
    assert (pg.num_nodes, pg.num_edges, pg.num_etypes, pg.num_ntypes) == (4, 4, 1, 1)
    assert tuple(pg.ntype_names) == ("user",)
    assert tuple(pg.etype_names) == ("follows",)
    assert tuple(pg.canonical_etypes) == (("user", "follows", "user"),)
    x = torch.randn(4, 2, dtype=DTYPE)
    assert torch.equal(pg.pack({"user": x}), x)


def test_from_dgl_homogeneous_block():
    hg = random_heterograph()
    g = dgl.to_homogeneous(hg)
    seeds = torch.tensor([0, 1, 2, 5, 9])
    block = dgl.to_block(dgl.in_subgraph(g, seeds), dst_nodes=seeds)
    pg = from_dgl(block, num_etypes=len(hg.canonical_etypes))
    assert pg.is_block and (pg.num_nodes, pg.num_dst_nodes) == (block.num_src_nodes(), block.num_dst_nodes())
    src, dst = block.edges()
    assert torch.equal(pg.src, src.long()) and torch.equal(pg.dst, dst.long())
    assert torch.equal(pg.etype, block.edata[dgl.ETYPE].long())
    assert torch.equal(pg.ntype, block.srcdata[dgl.NTYPE].long())


def test_from_dgl_heterogeneous_block_puts_destinations_first():
    hg = random_heterograph()
    seeds = {"paper": torch.tensor([0, 1, 4]), "author": torch.tensor([2])}
    block = dgl.to_block(dgl.in_subgraph(hg, seeds), dst_nodes=seeds)
    pg = from_dgl(block)
    assert pg.num_dst_nodes == sum(block.num_dst_nodes(t) for t in block.dsttypes)
    assert pg.num_nodes == sum(block.num_src_nodes(t) for t in block.srctypes)
    assert pg.num_edges == block.num_edges()
    feats = {t: torch.randn(block.num_src_nodes(t), 2, dtype=DTYPE) for t in block.srctypes}
    packed = pg.pack(feats)
    for t, rows in pg.unpack(packed).items():  # the per-type order of DGL's srcdata is kept
        assert torch.equal(rows, feats[t])
    dst_rows = pg.unpack(packed[: pg.num_dst_nodes])
    for t in block.dsttypes:  # a block's destinations are the first source nodes of each type
        assert torch.equal(dst_rows[t], feats[t][: block.num_dst_nodes(t)])


def test_from_dgl_rejects_other_objects():
    with pytest.raises(TypeError):
        from_dgl((torch.tensor([0]), torch.tensor([1])))


# --------------------------------------------------------------------------------------
# RGCNConv vs dgl.nn.RelGraphConv
# --------------------------------------------------------------------------------------


def _rgcn_pair(in_feats: int, out_feats: int, num_rels: int, aggr: str, seed: int = 0):
    torch.manual_seed(seed)
    ours = pigeon.nn.RGCNConv(in_feats, out_feats, num_rels, aggr=aggr, self_loop=True, bias=True).to(DTYPE)
    ref = dgl.nn.RelGraphConv(in_feats, out_feats, num_rels, regularizer=None, bias=True,
                              self_loop=True).to(DTYPE)
    with torch.no_grad():
        ours.bias.normal_()  # a non-zero bias
        ref.linear_r.W.copy_(ours.weight)
        ref.loop_weight.copy_(ours.loop_weight)
        ref.h_bias.copy_(ours.bias)
    pairs = {"weight": (ours.weight, ref.linear_r.W), "loop_weight": (ours.loop_weight, ref.loop_weight),
             "bias": (ours.bias, ref.h_bias)}
    return ours, ref, pairs


@pytest.mark.parametrize("kind", ["sorted", "shuffled"])
@pytest.mark.parametrize("with_norm", [False, True], ids=["no_norm", "edge_weight"])
def test_rgcn_sum_matches_relgraphconv(kind, with_norm):
    g, g_ours, _, num_rels = _graphs(kind)
    ours, ref, pairs = _rgcn_pair(5, 4, num_rels, "sum")
    etype = g.edata[dgl.ETYPE]
    h = torch.randn(g.num_nodes(), 5, dtype=DTYPE)
    norm = torch.rand(g.num_edges(), 1, dtype=DTYPE) + 0.5 if with_norm else None
    compare(lambda x: ours(g_ours, x, edge_weight=norm),
            lambda x: ref(g, x, etype, norm=norm, presorted=False), h, pairs)
    if with_norm:  # a 1-D edge_weight means the same
        out = ours(g_ours, h, edge_weight=norm.flatten())
        assert_close(out, ours(g_ours, h, edge_weight=norm), "1-D edge_weight")


@pytest.mark.parametrize("kind", ["sorted", "shuffled"])
def test_rgcn_mean_matches_relgraphconv_with_degree_norm(kind):
    g, g_ours, _, num_rels = _graphs(kind)
    ours, ref, pairs = _rgcn_pair(6, 3, num_rels, "mean")
    src, dst = g.edges()
    etype = g.edata[dgl.ETYPE]
    count = Counter(zip(dst.tolist(), etype.tolist()))
    norm = torch.tensor([1.0 / count[(int(d), int(r))] for d, r in zip(dst, etype)], dtype=DTYPE).unsqueeze(-1)
    h = torch.randn(g.num_nodes(), 6, dtype=DTYPE)
    compare(lambda x: ours(g_ours, x), lambda x: ref(g, x, etype, norm=norm), h, pairs)


# --------------------------------------------------------------------------------------
# HGTConv vs dgl.nn.HGTConv
# --------------------------------------------------------------------------------------


def _hgt_pair(in_feats: int, head_size: int, num_heads: int, num_ntypes: int, num_rels: int, seed: int = 0):
    torch.manual_seed(seed)
    ours = pigeon.nn.HGTConv(in_feats, head_size, num_heads, num_ntypes, num_rels, use_skip=True).to(DTYPE)
    ref = dgl.nn.HGTConv(in_feats, head_size, num_heads, num_ntypes, num_rels, dropout=0.0,
                         use_norm=False).to(DTYPE)
    ref.eval()
    with torch.no_grad():  # non-trivial priors and skip gates
        ours.relation_pri.uniform_(0.5, 1.5)
        ours.skip.normal_()
        ref.linear_k.W.copy_(ours.k_weight)
        ref.linear_q.W.copy_(ours.q_weight)
        ref.linear_v.W.copy_(ours.v_weight)
        ref.linear_a.W.copy_(ours.out_weight)
        ref.skip.copy_(ours.skip)
        for i in range(num_heads):
            ref.relation_att[i].W.copy_(ours.relation_att[:, i])
            ref.relation_msg[i].W.copy_(ours.relation_msg[:, i])
            ref.relation_pri[i].copy_(ours.relation_pri[:, i])
        if in_feats != head_size * num_heads:
            assert ours.residual_w is not None
            ref.residual_w.copy_(ours.residual_w)
        else:
            assert ours.residual_w is None and not hasattr(ref, "residual_w")
    pairs = {"k_weight": (ours.k_weight, ref.linear_k.W), "q_weight": (ours.q_weight, ref.linear_q.W),
             "v_weight": (ours.v_weight, ref.linear_v.W), "out_weight": (ours.out_weight, ref.linear_a.W),
             "skip": (ours.skip, ref.skip)}
    for i in range(num_heads):  # our [R, H, ...] parameters, one head at a time
        pairs[f"relation_att[:, {i}]"] = (ours.relation_att, ref.relation_att[i].W)
        pairs[f"relation_msg[:, {i}]"] = (ours.relation_msg, ref.relation_msg[i].W)
        pairs[f"relation_pri[:, {i}]"] = (ours.relation_pri, ref.relation_pri[i])
    if ours.residual_w is not None:
        pairs["residual_w"] = (ours.residual_w, ref.residual_w)
    return ours, ref, pairs


def _compare_hgt(ours, ref, pairs, g, g_ours, h, num_heads):
    ntype, etype = g.ndata[dgl.NTYPE], g.edata[dgl.ETYPE]
    per_head = {n: p for n, p in pairs.items() if n.startswith("relation_")}
    shared = {n: p for n, p in pairs.items() if n not in per_head}
    compare(lambda x: ours(g_ours, x), lambda x: ref(g, x, ntype, etype, presorted=False), h, shared)
    # per-head relation parameters: our grad[:, i] against DGL's grad of head i
    h1 = h.detach().clone().requires_grad_(True)
    h2 = h.detach().clone().requires_grad_(True)
    out_ours, out_ref = ours(g_ours, h1), ref(g, h2, ntype, etype, presorted=False)
    upstream = torch.randn(out_ref.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(5))
    ours_params = [ours.relation_att, ours.relation_msg, ours.relation_pri]
    ref_params = [p for i in range(num_heads)
                  for p in (ref.relation_att[i].W, ref.relation_msg[i].W, ref.relation_pri[i])]
    g_ours_p = torch.autograd.grad(out_ours, ours_params, upstream)
    g_ref_p = torch.autograd.grad(out_ref, ref_params, upstream)
    for i in range(num_heads):
        for j, name in enumerate(("relation_att", "relation_msg", "relation_pri")):
            assert_close(g_ours_p[j][:, i], g_ref_p[3 * i + j], f"grad of {name}[:, {i}]")


@pytest.mark.parametrize("kind", ["sorted", "shuffled"])
@pytest.mark.parametrize("in_feats,head_size,num_heads", [(6, 3, 2), (5, 2, 3)], ids=["in_eq_hd", "in_ne_hd"])
def test_hgt_matches_dgl_hgtconv(kind, in_feats, head_size, num_heads):
    g, g_ours, num_ntypes, num_rels = _graphs(kind)
    ours, ref, pairs = _hgt_pair(in_feats, head_size, num_heads, num_ntypes, num_rels)
    assert not ref.training and ref.drop.p == 0.0
    h = torch.randn(g.num_nodes(), in_feats, dtype=DTYPE)
    _compare_hgt(ours, ref, pairs, g, g_ours, h, num_heads)


# --------------------------------------------------------------------------------------
# known gap: a dgl.to_homogeneous graph does not record how many types there were
# --------------------------------------------------------------------------------------


def test_layers_on_to_homogeneous_with_empty_last_edge_type():
    hg = dgl.heterograph({("a", "r0", "b"): ([0, 1, 1], [1, 1, 0]), ("b", "r1", "a"): ([0], [2]),
                          ("b", "r2", "b"): ([], [])}, num_nodes_dict={"a": 3, "b": 2})
    g = dgl.to_homogeneous(hg)
    ours, ref, pairs = _rgcn_pair(3, 2, len(hg.canonical_etypes), "sum")
    h = torch.randn(g.num_nodes(), 3, dtype=DTYPE)
    compare(lambda x: ours(g, x), lambda x: ref(g, x, g.edata[dgl.ETYPE]), h, pairs)


# --------------------------------------------------------------------------------------
# sampled blocks (minibatch training): the same numbers as DGL's layers on the same blocks
# --------------------------------------------------------------------------------------


def _sampled_blocks(g, seeds, fanouts=(4, 3)):
    sampler = dgl.dataloading.NeighborSampler(list(fanouts))
    loader = dgl.dataloading.DataLoader(g, seeds, sampler, batch_size=len(seeds), shuffle=False)
    return next(iter(loader))


def test_rgcn_on_sampled_blocks_matches_relgraphconv():
    hg = random_heterograph()
    g = dgl.to_homogeneous(hg)
    num_rels = len(hg.canonical_etypes)
    _, _, blocks = _sampled_blocks(g, torch.tensor([0, 3, 7, 12, 20]))
    ours, ref, pairs = _rgcn_pair(5, 4, num_rels, "sum")
    for block in blocks:
        h = torch.randn(block.num_src_nodes(), 5, dtype=DTYPE)
        compare(lambda x: ours(block, x), lambda x: ref(block, x, block.edata[dgl.ETYPE]), h, pairs)


def test_hgt_on_a_heterogeneous_block_matches_the_full_graph():
    hg = random_heterograph()
    ours, _, _ = _hgt_pair(6, 3, 2, len(hg.ntypes), len(hg.canonical_etypes))
    seeds = {"paper": torch.tensor([0, 2, 3]), "author": torch.tensor([1, 4])}
    block = dgl.to_block(dgl.in_subgraph(hg, seeds), dst_nodes=seeds)  # every in-edge of the seeds
    feats = {t: torch.randn(hg.num_nodes(t), 6, dtype=DTYPE) for t in hg.ntypes}
    full = ours(hg, feats)
    src_feats = {t: feats[t][block.srcnodes[t].data[dgl.NID]] for t in block.srctypes}
    out = ours(block, src_feats)
    for t in block.dsttypes:
        assert_close(out[t], full[t][block.dstnodes[t].data[dgl.NID]], f"block output of {t}")
