"""DGL's HeteroGraphConv against Pigeon's on a graph with few relations and many edges each (the
case where DGL's per-relation loop costs least): 3 node types, 50K nodes, 6 canonical edge
types of 150K random edges each, 64 features. Pigeon loads DGL's parameters; outputs and the
gradients of the inputs and of every parameter are checked equal in float64 before timing;
then the two run in turn in float32, median of the repeats. Run in the DGL environment:

    .venv-dgl/bin/python benchmarks/hetero_few_relations.py --modules sage gat --repeat 9
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

NODES = {"a": 20000, "b": 20000, "c": 10000}
RELATIONS = [("a", "r0", "b"), ("b", "r1", "a"), ("a", "r2", "a"), ("c", "r3", "a"), ("b", "r4", "c"), ("c", "r5", "b")]
EDGES_PER_RELATION = 150_000
FEATS = 64


def graph_and_features(seed: int = 0):
    import dgl
    gen = torch.Generator().manual_seed(seed)
    data = {c: (torch.randint(0, NODES[c[0]], (EDGES_PER_RELATION,), generator=gen),
                torch.randint(0, NODES[c[2]], (EDGES_PER_RELATION,), generator=gen)) for c in RELATIONS}
    g = dgl.heterograph(data, num_nodes_dict=NODES)
    return g, {t: torch.randn(n, FEATS, generator=gen) for t, n in NODES.items()}


def module(lib, kind: str) -> torch.nn.Module:
    if kind == "sage":
        return lib.SAGEConv(FEATS, FEATS, "mean", activation=torch.relu)
    if kind == "gat":
        return lib.GATConv(FEATS, FEATS // 4, 4, residual=True, activation=torch.relu)
    return lib.GraphConv(FEATS, FEATS)


def step(layer: torch.nn.Module, g, x: dict, train: bool) -> tuple[dict, dict]:
    """Outputs and, in training, the gradients of the inputs and parameters of one step."""
    leaves = {t: v.detach().clone().requires_grad_(train) for t, v in x.items()}
    with torch.set_grad_enabled(train):
        out = layer(g, leaves)
        if not train:
            return out, {}
        layer.zero_grad()
        sum((o * (i + 1)).sum() for i, o in enumerate(out.values())).backward()
    grads = {f"input {t}": v.grad for t, v in leaves.items() if v.grad is not None}
    grads.update({n: p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return out, grads


def check(ours: tuple[dict, dict], theirs: tuple[dict, dict]) -> None:
    for kind, a, b in (("output", ours[0], theirs[0]), ("gradient", ours[1], theirs[1])):
        assert sorted(a) == sorted(b), f"{kind}s of {sorted(a)} against {sorted(b)}"
        for name in a:
            scale = float(b[name].abs().max()) or 1.0
            torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-9 * scale,
                                       msg=lambda m: f"{kind} {name}: {m}")


def main() -> None:
    import dgl.nn as dglnn

    import pigeon.nn.dgl as pnn
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=["sage", "gat", "graphconv"], choices=["sage", "gat", "graphconv"])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g, x = graph_and_features()
    for kind in args.modules:
        torch.manual_seed(0)
        theirs = dglnn.HeteroGraphConv({c: module(dglnn, kind) for c in RELATIONS}, aggregate="sum")
        ours = pnn.HeteroGraphConv({c: module(pnn, kind) for c in RELATIONS}, aggregate="sum")
        ours.load_state_dict(theirs.state_dict())
        # checked in float64: in float32 a ReLU's kink turns summation-order differences into
        # whole gradient contributions at a few elements
        x64 = {t: v.double() for t, v in x.items()}
        check(step(copy.deepcopy(ours).double(), g, x64, True), step(copy.deepcopy(theirs).double(), g, x64, True))
        for mode, train in (("infer", False), ("train", True)):
            times: dict[str, list[float]] = {"DGL": [], "Pigeon": []}
            for _ in range(args.repeat + 1):  # the first round warms up
                for name, layer in (("DGL", theirs), ("Pigeon", ours)):
                    start = time.perf_counter()
                    step(layer, g, x, train)
                    times[name].append(time.perf_counter() - start)
            dgl_ms, ours_ms = (1e3 * statistics.median(times[n][1:]) for n in ("DGL", "Pigeon"))
            print(f"{kind:<9} {mode}: DGL {dgl_ms:7.1f} ms, Pigeon {ours_ms:7.1f} ms, "
                  f"speed-up {dgl_ms / ours_ms:.2f}x (outputs and gradients checked)", flush=True)


if __name__ == "__main__":
    main()
