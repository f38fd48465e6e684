"""``pigeon.nn.dgl.HeteroGraphConv`` over ``GraphConv``, ``SAGEConv`` and ``GATConv`` against DGL 2.1's
(run in the DGL environment: ``pytest -m dgl tests/test_dgl_hetero.py``).

DGL's modules are built, their parameters drawn at random (no zero biases: they would make the
relations' no-edge values tie), and copied into pigeon's with ``load_state_dict``; then forward
outputs and the gradients w.r.t. every input feature and parameter are compared in float64 on
a heterograph with three node types of different feature sizes (one only a source), five edge
types (one without edges), isolated nodes, self loops and multi-edges, on a sampled block, and
with the (src, dst) pair form of the inputs, for every aggregate.
"""
from __future__ import annotations

import functools

import pytest
import torch

dgl = pytest.importorskip("dgl")
import dgl.nn as dglnn  # noqa: E402

import pigeon  # noqa: E402
import pigeon.nn.dgl as pnn  # noqa: E402

pytestmark = pytest.mark.dgl

DTYPE = torch.float64
FEATS = {"user": 5, "item": 3, "shop": 4}
NUM_NODES = {"user": 7, "item": 6, "shop": 4}
# (src type, relation, dst type) -> number of random edges; "empty" has none, "shop" is only a source
RELATIONS = {
    ("user", "follows", "user"): 10,
    ("user", "buys", "item"): 9,
    ("shop", "sells", "item"): 5,
    ("item", "rated_by", "user"): 6,
    ("shop", "empty", "user"): 0,
}
OUT = {"user": 8, "item": 4}   # GraphConv / SAGEConv output size per destination type
HEADS, HEAD_SIZE = 2, 3        # every GATConv: [N, 2, 3]
AGGREGATES = ["sum", "mean", "max", "min", "stack"]


def heterograph(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for (s, rel, d), count in RELATIONS.items():
        # the last node of every type is never drawn: isolated
        src = torch.randint(0, NUM_NODES[s] - 1, (count,), generator=gen)
        dst = torch.randint(0, NUM_NODES[d] - 1, (count,), generator=gen)
        if count:
            src, dst = torch.cat([src, src[:2]]), torch.cat([dst, dst[:2]])  # multi-edges
        if s == d:
            src, dst = torch.cat([src, torch.tensor([0, 1, 1])]), torch.cat([dst, torch.tensor([0, 1, 1])])
        data[(s, rel, d)] = (src, dst)
    g = dgl.heterograph(data, num_nodes_dict=NUM_NODES)
    assert g.num_edges("empty") == 0
    return g


def features(seed: int = 1, num_nodes: dict | None = None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_nodes = num_nodes or NUM_NODES
    return {t: torch.randn(num_nodes[t], FEATS[t], dtype=DTYPE, generator=gen) for t in num_nodes}


# each config: relation -> (module kind, keyword arguments)
CONFIGS = {
    "graphconv": {
        "follows": ("GraphConv", {"norm": "both"}),
        "buys": ("GraphConv", {"norm": "left"}),
        "sells": ("GraphConv", {"norm": "right", "bias": False}),
        "rated_by": ("GraphConv", {"norm": "none"}),
        "empty": ("GraphConv", {"norm": "both"}),
    },
    "graphconv_activation": {
        "follows": ("GraphConv", {"activation": torch.relu}),
        "buys": ("GraphConv", {"activation": torch.nn.LeakyReLU(0.1)}),
        "sells": ("GraphConv", {"norm": "left"}),
        "rated_by": ("GraphConv", {"activation": torch.tanh}),
        "empty": ("GraphConv", {"activation": torch.relu}),
    },
    "sage": {
        "follows": ("SAGEConv", {"aggregator_type": "gcn"}),
        "buys": ("SAGEConv", {"aggregator_type": "mean"}),
        "sells": ("SAGEConv", {"aggregator_type": "mean", "bias": False}),
        "rated_by": ("SAGEConv", {"aggregator_type": "mean"}),
        "empty": ("SAGEConv", {"aggregator_type": "mean"}),
    },
    "sage_activation": {
        "follows": ("SAGEConv", {"aggregator_type": "gcn", "activation": torch.relu}),
        "buys": ("SAGEConv", {"aggregator_type": "mean", "activation": torch.tanh}),
        "sells": ("SAGEConv", {"aggregator_type": "mean"}),
        "rated_by": ("SAGEConv", {"aggregator_type": "mean", "activation": torch.relu}),
        "empty": ("SAGEConv", {"aggregator_type": "mean", "activation": torch.nn.ELU()}),
    },
    "sage_pool": {  # pool beside mean and gcn into one type, with activations
        "follows": ("SAGEConv", {"aggregator_type": "pool"}),
        "buys": ("SAGEConv", {"aggregator_type": "pool", "activation": torch.relu}),
        "sells": ("SAGEConv", {"aggregator_type": "mean"}),
        "rated_by": ("SAGEConv", {"aggregator_type": "pool", "bias": False}),
        "empty": ("SAGEConv", {"aggregator_type": "mean"}),  # pool without edges: see below
    },
    "gat": {
        "follows": ("GATConv", {"residual": True}),
        "buys": ("GATConv", {"negative_slope": 0.1, "activation": torch.nn.functional.elu}),
        "sells": ("GATConv", {"bias": False}),
        "rated_by": ("GATConv", {"residual": True, "activation": torch.relu}),
        "empty": ("GATConv", {}),
    },
    "mixed": {  # into "user": GraphConv, SAGEConv mean and gcn; into "item": GATConv
        "follows": ("SAGEConv", {"aggregator_type": "gcn"}),
        "buys": ("GATConv", {"residual": True}),
        "sells": ("GATConv", {"negative_slope": 0.3}),
        "rated_by": ("GraphConv", {"activation": torch.relu}),
        "empty": ("SAGEConv", {"aggregator_type": "mean"}),
    },
}


def module(lib, kind: str, src: str, dst: str, **kwargs):
    """One relation's module of ``lib`` (dgl.nn or pigeon.nn.dgl) for src -> dst."""
    a, b = FEATS[src], FEATS[dst]
    if kind == "GraphConv":
        return lib.GraphConv(a, OUT[dst], **kwargs)
    if kind == "SAGEConv":
        return lib.SAGEConv((a, b), OUT[dst], **kwargs)
    return lib.GATConv(a if a == b else (a, b), HEAD_SIZE, HEADS, **kwargs)


def pair(config: str, aggregate: str, seed: int = 2):
    """(DGL's HeteroGraphConv, pigeon's with the same parameters), random parameters, float64."""
    relations = {rel: (s, d) for s, rel, d in RELATIONS}
    spec = CONFIGS[config]
    theirs = dglnn.HeteroGraphConv({rel: module(dglnn, kind, *relations[rel], **kw) for rel, (kind, kw) in spec.items()},
                                   aggregate=aggregate).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, dtype=DTYPE, generator=gen) * 0.7)
    ours = pnn.HeteroGraphConv({rel: module(pnn, kind, *relations[rel], **kw) for rel, (kind, kw) in spec.items()},
                               aggregate=aggregate).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    return theirs.eval(), ours.eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * scale, msg=lambda m: f"{what}: {m}")


def compare(theirs, ours, run, inputs: dict[str, torch.Tensor], seed: int = 3) -> dict[str, torch.Tensor]:
    """Outputs of ``run(module, inputs)`` and the gradients of one random upstream gradient
    w.r.t. every input and parameter, DGL's against ours; returns DGL's outputs."""
    leaves = {}
    results = []
    for mod in (theirs, ours):
        x = {t: v.detach().clone().requires_grad_(True) for t, v in inputs.items()}
        out = run(mod, x)
        leaves[mod] = x
        results.append(out)
    expected, actual = results
    assert sorted(actual) == sorted(expected)
    gen = torch.Generator().manual_seed(seed)
    upstream = {t: torch.randn(v.shape, dtype=DTYPE, generator=gen) for t, v in sorted(expected.items())}
    grads = []
    for mod, out in ((theirs, expected), (ours, actual)):
        for t in sorted(out):
            assert_close(out[t], expected[t], f"output {t}") if mod is ours else None
        loss = sum((out[t] * upstream[t]).sum() for t in out)
        names = [n for n, _ in mod.named_parameters()]
        wrt = list(leaves[mod].values()) + [p for _, p in mod.named_parameters()]
        grads.append((names, torch.autograd.grad(loss, wrt, allow_unused=True)))
    (names, g_theirs), (names_ours, g_ours) = grads
    assert names == names_ours
    labels = [f"grad of input {t}" for t in inputs] + [f"grad of {n}" for n in names]
    for label, a, b in zip(labels, g_ours, g_theirs):
        if a is None and b is None:
            continue
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        assert_close(a, b, label)
    return expected


def on_graph(mod, x):
    return mod(heterograph(), x)


def on_pairs(mod, x):
    """The (src inputs, dst inputs) form; "shop" is given as a source only."""
    return mod(heterograph(), ({t: x[t] for t in x}, {t: x[t] for t in ("user", "item")}))


@functools.lru_cache(maxsize=None)
def sampled_block():
    """One sampled block, built once: DGL's sampler may order its edges differently per call,
    and dropout masks follow the edge order."""
    g = heterograph()
    seeds = {"user": torch.tensor([0, 2, 6]), "item": torch.tensor([1, 3, 5])}
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    input_nodes, _, blocks = sampler.sample_blocks(g, seeds)
    return blocks[0], input_nodes


def on_block(mod, x):
    block, input_nodes = sampled_block()
    return mod(block, {t: x[t][input_nodes[t]] for t in input_nodes if input_nodes[t].numel()})


RUNS = {"graph": on_graph, "pairs": on_pairs, "block": on_block}


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("form", list(RUNS))
def test_matches_dgl(config, aggregate, form):
    theirs, ours = pair(config, aggregate)
    compare(theirs, ours, RUNS[form], features())


BACKENDS = pytest.mark.parametrize("backend", ["reference", "cpp"], indirect=True)


@BACKENDS
@pytest.mark.parametrize("aggregate", ["sum", "max", "stack"])
def test_matches_dgl_on_each_backend(aggregate, backend):
    theirs, ours = pair("mixed", aggregate)
    with pigeon.use_backend(backend):
        compare(theirs, ours, on_graph, features())
    assert ours.last_executable.backend == backend


@BACKENDS
def test_block_on_each_backend(backend):
    theirs, ours = pair("sage_activation", "mean")
    with pigeon.use_backend(backend):
        compare(theirs, ours, on_block, features())
    assert ours.last_executable.backend == backend


@pytest.mark.parametrize("backend", ["cuda_harness"], indirect=True)
@pytest.mark.parametrize("config, aggregate", [("mixed", "max"), ("sage_pool", "mean")])
def test_generated_cuda_on_the_cpu_harness(backend, config, aggregate):
    theirs, ours = pair(config, aggregate)
    compare(theirs, ours, on_graph, features())


def test_edge_weight_of_graphconv():
    theirs, ours = pair("graphconv_activation", "sum")
    g = heterograph()
    gen = torch.Generator().manual_seed(4)
    weights = {"follows": torch.rand(g.num_edges("follows"), dtype=DTYPE, generator=gen) + 0.5,
               "buys": torch.rand(g.num_edges("buys"), dtype=DTYPE, generator=gen) + 0.5}
    compare(theirs, ours, lambda mod, x: mod(g, x, mod_kwargs={k: {"edge_weight": w} for k, w in weights.items()}),
            features())


def test_standalone_graphconv_runs_as_one_relation():
    src, dst = torch.tensor([0, 1, 2, 2, 3, 3]), torch.tensor([1, 2, 0, 2, 1, 1])
    g = dgl.graph((src, dst), num_nodes=5)  # node 4 isolated, 3 has no incoming edges
    theirs = dglnn.GraphConv(4, 3, allow_zero_in_degree=True).double()
    with torch.no_grad():
        theirs.bias.copy_(torch.randn(3, dtype=DTYPE))
    ours = pnn.GraphConv(4, 3, allow_zero_in_degree=True).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 4, dtype=DTYPE)
    assert_close(ours(g, x), theirs(g, x), "standalone GraphConv")
    with pytest.raises(pigeon.GraphError, match="0-in-degree"):
        pnn.GraphConv(4, 3).double()(g, x)


def test_refused_clearly():
    with pytest.raises(NotImplementedError, match="callable"):
        pnn.HeteroGraphConv({"follows": pnn.GraphConv(5, 8)}, aggregate=lambda xs, t: xs[0])
    with pytest.raises(NotImplementedError, match="not 'lstm'"):
        pnn.SAGEConv(5, 8, "lstm")
    with pytest.raises(TypeError, match="pigeon.nn.dgl.GraphConv"):
        pnn.HeteroGraphConv({"follows": dglnn.GraphConv(5, 8)})


# dropout in training: every module its own p, DGL's masks drawn from the same seed
DROPOUT_CONFIGS = {
    "sage": {
        "follows": ("SAGEConv", {"aggregator_type": "gcn", "feat_drop": 0.3, "activation": torch.relu}),
        "buys": ("SAGEConv", {"aggregator_type": "pool", "feat_drop": 0.5}),
        "sells": ("SAGEConv", {"aggregator_type": "mean"}),
        "rated_by": ("SAGEConv", {"aggregator_type": "mean", "feat_drop": 0.2}),
        "empty": ("SAGEConv", {"aggregator_type": "mean", "feat_drop": 0.4, "activation": torch.tanh}),
    },
    "gat": {
        "follows": ("GATConv", {"residual": True, "feat_drop": 0.3, "attn_drop": 0.4}),
        "buys": ("GATConv", {"attn_drop": 0.5, "activation": torch.nn.functional.elu}),
        "sells": ("GATConv", {"feat_drop": 0.2}),
        "rated_by": ("GATConv", {"residual": True, "feat_drop": 0.5, "attn_drop": 0.2, "activation": torch.relu}),
        "empty": ("GATConv", {"feat_drop": 0.1, "attn_drop": 0.1}),
    },
    "mixed": {
        "follows": ("SAGEConv", {"aggregator_type": "mean", "feat_drop": 0.5}),
        "buys": ("GATConv", {"residual": True, "feat_drop": 0.3, "attn_drop": 0.3}),
        "sells": ("GATConv", {"negative_slope": 0.3}),
        "rated_by": ("GraphConv", {"activation": torch.relu}),
        "empty": ("SAGEConv", {"aggregator_type": "mean", "feat_drop": 0.2}),
    },
}
DROPOUT_CASES = ([("sage", a, "graph") for a in AGGREGATES] + [("gat", a, "graph") for a in AGGREGATES]
                 + [(c, "sum", f) for c in DROPOUT_CONFIGS for f in ("pairs", "block")] + [("mixed", "mean", "graph")])


def seeded(run, seed: int = 11):
    """``run`` with torch's generator seeded first: the same dropout masks for DGL and pigeon."""
    def call(mod, x):
        torch.manual_seed(seed)
        return run(mod, x)
    return call


@pytest.mark.parametrize("config, aggregate, form", DROPOUT_CASES)
def test_dropout_in_training_matches_dgl(config, aggregate, form):
    CONFIGS["dropout_" + config] = DROPOUT_CONFIGS[config]
    try:
        theirs, ours = pair("dropout_" + config, aggregate)
    finally:
        del CONFIGS["dropout_" + config]
    theirs.train(), ours.train()
    out = compare(theirs, ours, seeded(RUNS[form]), features())
    torch.manual_seed(12)  # another seed, other masks: the dropout is not the identity
    other = RUNS[form](ours, features())
    assert any(not torch.allclose(other[t], out[t]) for t in out)
    ours.eval(), theirs.eval()
    compare(theirs, ours, RUNS[form], features())  # and in eval mode the masks are gone


def test_sage_pool_on_a_relation_without_edges():
    """DGL 2.1's maximum over a relation without edges is 0 but its backward sends a gradient to
    source node 0 (one per destination), as if each destination had an edge from it. Pigeon's
    output is DGL's, and its gradient of the sources is the formula's: that relation does not
    read them, so they get only what the others give (DGL's with a mean there, which is right)."""
    CONFIGS["sage_pool_empty"] = {**CONFIGS["sage_pool"], "empty": ("SAGEConv", {"aggregator_type": "pool"})}
    try:
        theirs, ours = pair("sage_pool_empty", "sum")
    finally:
        del CONFIGS["sage_pool_empty"]
    reference, _ = pair("sage_pool", "sum")  # the same, but a mean over the relation without edges
    with torch.no_grad():
        mine = dict(theirs.named_parameters())
        for name, p in reference.named_parameters():
            p.copy_(mine[name])
    g, x = heterograph(), features()

    def shop_gradient(mod):
        leaves = {t: v.detach().clone().requires_grad_(True) for t, v in x.items()}
        out = mod(g, leaves)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=DTYPE).reshape(o.shape)).sum() for o in out.values()).backward()
        return out, leaves["shop"].grad
    (ours_out, ours_grad), (their_out, their_grad) = shop_gradient(ours), shop_gradient(theirs)
    for t in their_out:
        assert_close(ours_out[t], their_out[t], f"output {t}")
    expected = shop_gradient(reference)[1]
    assert not torch.allclose(their_grad, expected)  # DGL's stray gradient into shop 0
    assert_close(ours_grad, expected, "grad of input shop")
