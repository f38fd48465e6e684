"""Link prediction on a knowledge graph: an RGCN encoder (Pigeon kernels, basis decomposition) and
a DistMult decoder, trained with negative sampling; filtered MRR and Hits@1/3/10 on the test
triples, with early stopping on the validation triples.

    python examples/link_prediction.py                              # UMLS
    python examples/link_prediction.py --dataset kinships --compare pykeen --json out.json

``--compare pykeen`` trains PyKEEN's own ``RGCN`` model in the same run, with the same settings
and, epoch by epoch, on the same batches and negatives (the two models alternate epochs, so a
busy machine slows both alike), starts it from the same weights, and evaluates both with the
same filtered ranking (``evaluate`` below, checked against PyKEEN's ``RankBasedEvaluator`` in
tests/test_kg.py).

The model is PyKEEN's RGCN (Schlichtkrull et al., 2018, as its official code has it): a free
embedding per entity; per layer, a self loop (linear with bias, then dropout) plus messages
along the training triples and along their inverses, each direction with its own basis
decomposition W_r = sum_b coeff[r, b] V_b and the symmetric weight 1 / sqrt(out_r(u) in_r(v));
ReLU between layers; 40% of the triples dropped per step (the same ones in both directions and
every layer). Here both directions are one Pigeon call on ``kg.graph`` (2R edge types) with
block-diagonal coefficients, so each direction keeps its own bases. Two orders, chosen by the
graph: where the 2R x N (relation, entity) pairs are more than the edges (UMLS), each W_r is
composed and Pigeon's fused RGCN program runs; where they are fewer (Kinships, Nations), every
entity is transformed by every W_r in one BLAS GEMM and a Pigeon kernel sums those rows along
the edges, weighted.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

import pigeon.datasets
from pigeon import lang
from pigeon.nn.relational import relational_sum


EDGE_DROPOUT, SELF_LOOP_DROPOUT = 0.4, 0.2  # PyKEEN's defaults for RGCN, the paper's edge dropout


class PigeonRGCN(nn.Module):
    """RGCN encoder + DistMult decoder over ``graph`` (R relations, then their R inverses)."""

    def __init__(self, graph: pigeon.Graph, num_relations: int, dim: int, num_layers: int, num_bases: int,
                 edge_dropout: float = EDGE_DROPOUT, self_loop_dropout: float = SELF_LOOP_DROPOUT):
        super().__init__()
        self.graph, self.num_relations, self.edge_dropout = graph, num_relations, edge_dropout
        n_triples = graph.num_edges // 2
        self.head, self.tail, self.rel = graph.src[:n_triples], graph.dst[:n_triples], graph.etype[:n_triples]
        # where every (relation, entity) pair is fewer rows than the edges, transforming every entity by
        # every relation (one BLAS GEMM, PyKEEN's order) and summing rows of that table along the edges
        # beats per-edge work; the cost model of pigeon.nn.relational does not know this order yet
        n, num_types = graph.num_nodes, graph.num_etypes
        self.pair_graph = (pigeon.Graph.from_edges(graph.etype * n + graph.src, graph.dst, None, num_types * n,
                                                   num_dst_nodes=n)
                           if num_types * n <= graph.num_edges else None)
        self.entity = nn.Parameter(nn.init.xavier_uniform_(torch.empty(graph.num_nodes, dim)))
        self.relation = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_relations, dim)))
        self.layers = nn.ModuleList(RGCNLayer(dim, num_relations, num_bases, self_loop_dropout)
                                    for _ in range(num_layers))

    def edge_weight(self) -> torch.Tensor:
        """[2E, 1]: 1 / sqrt(out_r(head) in_r(tail)) over the kept triples, 0 for dropped ones."""
        keep = torch.ones(len(self.head), dtype=torch.bool)
        if self.training and self.edge_dropout > 0:
            keep = torch.rand(len(self.head)) > self.edge_dropout
        n, k = self.graph.num_nodes, keep.to(self.entity.dtype)
        out_deg = torch.bincount(self.rel * n + self.head, weights=k, minlength=self.num_relations * n)
        in_deg = torch.bincount(self.rel * n + self.tail, weights=k, minlength=self.num_relations * n)
        w = k / (out_deg[self.rel * n + self.head] * in_deg[self.rel * n + self.tail]).clamp(min=1).sqrt()
        return torch.cat([w, w]).unsqueeze(1)

    def encode(self) -> torch.Tensor:
        weight, x = self.edge_weight(), self.entity
        for i, layer in enumerate(self.layers):
            x = layer(self.graph, x, weight, self.pair_graph)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(entity [N, d] after the encoder, relation [R, d]) for scoring."""
        return self.encode(), self.relation

    def score(self, triples: torch.Tensor) -> torch.Tensor:
        """DistMult scores <e_h, w_r, e_t> of [n, 3] triples, one encoder pass."""
        e = self.encode()  # index_select: its backward (index_add_) is several times faster than indexing's
        head, rel, tail = triples.t()
        n, num_rels = e.shape[0], self.relation.shape[0]
        if n * num_rels <= len(triples):  # fewer (relation, head) pairs than triples: one row of e_h * w_r each
            head_rel = (self.relation.unsqueeze(1) * e.unsqueeze(0)).reshape(num_rels * n, -1)
            return (head_rel.index_select(0, rel * n + head) * e.index_select(0, tail)).sum(-1)
        return (e.index_select(0, head) * self.relation.index_select(0, rel) * e.index_select(0, tail)).sum(-1)


class RGCNLayer(nn.Module):
    """self_loop(x) + sum over the incoming edges of w_e W_r x_u; edge types [0, R) (head -> tail)
    use the ``forward_*`` bases, [R, 2R) (their inverses) the ``inverse_*`` ones."""

    def __init__(self, dim: int, num_relations: int, num_bases: int, self_loop_dropout: float):
        super().__init__()
        std = math.sqrt(2.0 / (num_bases + dim * dim))  # PyKEEN: xavier_normal_ on [B, d * d]
        self.forward_bases = nn.Parameter(torch.randn(num_bases, dim, dim) * std)
        self.inverse_bases = nn.Parameter(torch.randn(num_bases, dim, dim) * std)
        self.forward_coeff = nn.Parameter(_unit_l1_rows(num_relations, num_bases))
        self.inverse_coeff = nn.Parameter(_unit_l1_rows(num_relations, num_bases))
        self.self_loop = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(self_loop_dropout)

    def forward(self, g: pigeon.Graph, x: torch.Tensor, edge_weight: torch.Tensor,
                pair_graph: pigeon.Graph | None = None) -> torch.Tensor:
        bases = torch.cat([self.forward_bases, self.inverse_bases])  # [2B, d, d]
        coeff = torch.block_diag(self.forward_coeff, self.inverse_coeff)  # [2R, 2B]
        if pair_graph is None:
            # compose each W_r, then the fused RGCN program (the cost model's choice over bases first)
            messages = relational_sum(g, x, bases, coeff, edge_weight=edge_weight, aggr="sum", order="compose")
        else:
            per_basis = torch.einsum("ni,bio->bno", x, bases)  # [2B, N, d]
            table = (coeff @ per_basis.reshape(len(bases), -1)).reshape(pair_graph.num_nodes, -1)  # x_u W_r
            messages = weighted_sum(pair_graph, table, edge_weight)
        return self.dropout(self.self_loop(x)) + messages


@pigeon.compile
def weighted_sum(g, table, edge_weight):
    """out_v = sum over the incoming edges of w_e table[src_e]: one fused pass per destination."""
    for e in g.edges():
        e.msg = table[e.src] * edge_weight[e]
    for n in g.dst_nodes():
        n.out = lang.sum(e.msg for e in n.incoming_edges())
    return n.out


def _unit_l1_rows(rows: int, cols: int) -> torch.Tensor:
    w = torch.rand(rows, cols)  # PyKEEN's uniform_norm_p1_
    return w / w.sum(1, keepdim=True)


def load_pykeen_weights(model: PigeonRGCN, peer: nn.Module) -> None:
    """Copy a PyKEEN RGCN's weights into ``model``. PyKEEN's ``fwd`` decomposition carries the
    messages from tail to head (our inverse edges), its ``bwd`` those from head to tail."""
    encoder = peer.entity_representations[0]
    with torch.no_grad():
        model.entity.copy_(encoder.entity_embeddings(indices=None))
        model.relation.copy_(peer.relation_representations[0](indices=None))
        for ours, theirs in zip(model.layers, encoder.layers):
            ours.forward_bases.copy_(theirs.bwd.bases)
            ours.forward_coeff.copy_(theirs.bwd.base_weights)
            ours.inverse_bases.copy_(theirs.fwd.bases)
            ours.inverse_coeff.copy_(theirs.fwd.base_weights)
            ours.self_loop.load_state_dict(theirs.self_loop.state_dict())


class PyKEENModel(nn.Module):
    """PyKEEN's own RGCN (DistMult decoder) behind the same two calls as ``PigeonRGCN``."""

    def __init__(self, kg: pigeon.datasets.KnowledgeGraph, dim: int, num_layers: int, num_bases: int, seed: int):
        super().__init__()
        from pykeen.models import RGCN
        from pykeen.triples import CoreTriplesFactory
        logging.getLogger("pykeen").setLevel(logging.ERROR)  # its notes on layers without reset_parameters
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        factory = CoreTriplesFactory.create(kg.train, num_entities=kg.num_entities, num_relations=kg.num_relations)
        self.peer = RGCN(triples_factory=factory, embedding_dim=dim, num_layers=num_layers, activation=nn.ReLU,
                         decomposition="bases", decomposition_kwargs={"num_bases": num_bases},
                         edge_weighting="symmetric", edge_dropout=EDGE_DROPOUT, self_loop_dropout=SELF_LOOP_DROPOUT,
                         interaction="distmult", random_seed=seed)

    def score(self, triples: torch.Tensor) -> torch.Tensor:
        self.peer.post_parameter_update()  # PyKEEN caches the encoder's output until told the weights changed
        return self.peer.score_hrt(triples).squeeze(-1)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.peer.post_parameter_update()
        return self.peer.entity_representations[0](indices=None), self.peer.relation_representations[0](indices=None)


# negatives, ranking ---------------------------------------------------------------------------

def corrupt(triples: torch.Tensor, num_negatives: int, num_entities: int, generator: torch.Generator) -> torch.Tensor:
    """``num_negatives`` corruptions of each triple, [n * k, 3]: the head or the tail (even odds)
    replaced by a uniformly drawn other entity (PyKEEN's ``BasicNegativeSampler``)."""
    neg = triples.repeat_interleave(num_negatives, dim=0)
    column = torch.randint(2, (len(neg),), generator=generator) * 2  # 0: head, 2: tail
    rows = torch.arange(len(neg))
    drawn = torch.randint(num_entities - 1, (len(neg),), generator=generator)
    old = neg[rows, column]
    neg[rows, column] = drawn + (drawn >= old).long()  # never the entity it replaces
    return neg


def evaluate(entity: torch.Tensor, relation: torch.Tensor, triples: torch.Tensor, known: torch.Tensor,
             batch_size: int = 256) -> dict[str, float]:
    """Filtered MRR and Hits@1/3/10 of DistMult scores, over head and tail prediction: each true
    triple is ranked among all entities, with the other triples of ``known`` (every split) left out
    and ties counted as half a place (PyKEEN's "realistic" rank, ``both`` sides)."""
    n, r = entity.shape[0], relation.shape[0]
    known_keys = torch.unique((known[:, 0] * r + known[:, 1]) * n + known[:, 2])
    ranks = []
    for part in triples.split(batch_size):
        h, rel, t = part.t()
        for query, side, answer in ((entity[h] * relation[rel], "tail", t), (entity[t] * relation[rel], "head", h)):
            scores = query @ entity.t()  # DistMult is symmetric in head and tail
            candidates = torch.arange(n)
            keys = ((h[:, None] * r + rel[:, None]) * n + candidates if side == "tail"
                    else (candidates * r + rel[:, None]) * n + t[:, None])
            true = scores.gather(1, answer[:, None])
            other_true = torch.isin(keys, known_keys) & (candidates != answer[:, None])
            scores = scores.masked_fill(other_true, float("-inf"))
            greater = (scores > true).sum(1)
            equal = (scores == true).sum(1) - 1
            ranks.append(1.0 + greater + 0.5 * equal)
    rank = torch.cat(ranks).double()
    return {"mrr": (1 / rank).mean().item(), **{f"hits@{k}": (rank <= k).double().mean().item() for k in (1, 3, 10)}}


# training --------------------------------------------------------------------------------------

@dataclass
class Run:
    """One model's training state: its optimiser, epoch times, best validation MRR and weights."""
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch_seconds: list[float] = field(default_factory=list)
    best_mrr: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0
    loss: float = float("nan")
    stopped: bool = False


def train_epoch(run: Run, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    run.model.train()
    start = time.perf_counter()
    total = 0.0
    for positive, negative in batches:
        run.optimizer.zero_grad()
        scores = run.model.score(torch.cat([positive, negative]))
        labels = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))])
        loss = nn.functional.binary_cross_entropy_with_logits(scores, labels)
        loss.backward()
        run.optimizer.step()
        total += loss.item() * len(positive)
    run.epoch_seconds.append(time.perf_counter() - start)
    run.loss = total / sum(len(p) for p, _ in batches)


def validate(run: Run, kg: pigeon.datasets.KnowledgeGraph, known: torch.Tensor, epoch: int, patience: int) -> None:
    run.model.eval()
    with torch.no_grad():
        mrr = evaluate(*run.model.embeddings(), kg.valid, known)["mrr"]
    if mrr > run.best_mrr:
        run.best_mrr, run.best_epoch, run.stale = mrr, epoch, 0
        run.best_state = copy.deepcopy(run.model.state_dict())
    else:
        run.stale += 1
        run.stopped = run.stale >= patience


def test(run: Run, kg: pigeon.datasets.KnowledgeGraph, known: torch.Tensor) -> dict[str, float]:
    run.model.load_state_dict(run.best_state)
    run.model.eval()
    with torch.no_grad():
        metrics = evaluate(*run.model.embeddings(), kg.test, known)
    metrics["seconds_per_epoch"] = statistics.median(run.epoch_seconds)
    metrics["epochs"] = len(run.epoch_seconds)
    metrics["best_epoch"] = run.best_epoch
    return metrics


def progress(iterable: Iterable[int], total: int) -> Iterable[int]:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; still, a missing bar is no reason to fail
        return iterable
    return tqdm(iterable, total=total, desc="epochs", file=sys.stderr, leave=False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="umls", help="umls, kinships or nations")
    parser.add_argument("--dim", type=int, default=64, help="embedding size of entities, relations and layers")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--num-bases", type=int, default=None, help="bases per direction (default: ceil(sqrt(R)))")
    parser.add_argument("--epochs", type=int, default=300, help="at most this many")
    parser.add_argument("--batch-size", type=int, default=2048, help="positive triples per step")
    parser.add_argument("--negatives", type=int, default=4, help="corruptions per positive triple")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--eval-every", type=int, default=10, help="epochs between validation runs")
    parser.add_argument("--patience", type=int, default=5, help="validation runs without gain before stopping")
    parser.add_argument("--compare", choices=["pykeen"], help="also train PyKEEN's RGCN, side by side")
    parser.add_argument("--json", type=Path, help="write the test metrics here")
    parser.add_argument("--threads", type=int, help="threads of torch and of Pigeon's kernels (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        kg = pigeon.datasets.kg(args.dataset)
    except pigeon.datasets.DatasetError as exc:
        parser.error(str(exc))
    num_bases = args.num_bases or math.ceil(math.sqrt(kg.num_relations))
    print(f"{kg}: RGCN ({args.layers} layers, {args.dim} features, {num_bases} bases per direction) + DistMult, "
          f"{args.negatives} negatives per triple, Adam lr {args.lr}")
    pigeon_model = PigeonRGCN(kg.graph, kg.num_relations, args.dim, args.layers, num_bases)
    models = {"pigeon": pigeon_model}
    if args.compare == "pykeen":
        peer = PyKEENModel(kg, args.dim, args.layers, num_bases, args.seed)
        load_pykeen_weights(pigeon_model, peer.peer)  # both start from the same weights
        models["pykeen"] = peer
    runs = [Run(name, m, torch.optim.Adam(m.parameters(), lr=args.lr)) for name, m in models.items()]
    known = torch.cat([kg.train, kg.valid, kg.test])
    sampler = torch.Generator().manual_seed(args.seed)

    bar = progress(range(1, args.epochs + 1), args.epochs)
    for epoch in bar:
        order = torch.randperm(len(kg.train), generator=sampler)
        batches = [(kg.train[i], corrupt(kg.train[i], args.negatives, kg.num_entities, sampler))
                   for i in order.split(args.batch_size)]
        for run in runs:
            if not run.stopped:
                train_epoch(run, batches)
        validating = epoch % args.eval_every == 0 or epoch == args.epochs
        if validating:
            for run in runs:
                if not run.stopped:
                    validate(run, kg, known, epoch, args.patience)
        # one line per epoch: the loss, the best validation MRR so far (validation every
        # --eval-every epochs), the median seconds per epoch
        line = "  ".join(f"{r.name}: loss {r.loss:.4f} val MRR {f'{r.best_mrr:.3f}' if r.best_mrr >= 0 else '-'}"
                         f"{' (stopped)' if r.stopped else ''} "
                         f"{statistics.median(r.epoch_seconds):.3f} s/epoch" for r in runs)
        (bar.write if hasattr(bar, "write") else print)(f"epoch {epoch:4d}  {line}{'  (validated)' if validating else ''}")
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({r.name: f"{r.loss:.3f}" for r in runs})
        if all(r.stopped for r in runs):
            break

    results = {run.name: test(run, kg, known) for run in runs}
    print(f"\ntest ({len(kg.test)} triples, filtered, head and tail):")
    print(f"{'model':<8} {'MRR':>6} {'Hits@1':>7} {'Hits@3':>7} {'Hits@10':>8} {'s/epoch':>8} {'epochs':>7}")
    for name, m in results.items():
        print(f"{name:<8} {m['mrr']:6.3f} {m['hits@1']:7.3f} {m['hits@3']:7.3f} {m['hits@10']:8.3f} "
              f"{m['seconds_per_epoch']:8.3f} {m['epochs']:7d}")
    if "pykeen" in results:
        p, k = results["pigeon"], results["pykeen"]
        print(f"Pigeon - PyKEEN: MRR {p['mrr'] - k['mrr']:+.3f}, Hits@10 {p['hits@10'] - k['hits@10']:+.3f}; "
              f"PyKEEN s/epoch / Pigeon s/epoch = {k['seconds_per_epoch'] / p['seconds_per_epoch']:.2f}x")
    if args.json:
        results["settings"] = {**{k: v for k, v in vars(args).items() if k != "json"}, "dataset": kg.name,
                               "num_bases": num_bases, "threads": torch.get_num_threads()}
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
