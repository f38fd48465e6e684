"""pigeon.datasets.kg (PyKEEN's shipped triples, PyKEEN's numbering) and
examples/link_prediction.py (its RGCN is PyKEEN's RGCN, its ranking PyKEEN's filtered ranking)."""
import importlib.util
import json

import pytest
import torch

from pigeon.datasets import DatasetError, kg

SHIPPED = ["umls", "kinships", "nations"]
SIZES = {"umls": (135, 46), "kinships": (104, 25), "nations": (14, 55)}  # entities, relations


def test_without_pykeen_one_error_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pykeen" else real(name, *a))
    with pytest.raises(DatasetError, match=r"pip install pigeon-rgnn\[kg\]"):
        kg("umls")


@pytest.mark.parametrize("name, message", [
    ("umsl", "unknown knowledge graph 'umsl'; known: umls, kinships, nations"),
    ("fb15k237", "not shipped by any installed package"),
])
def test_a_name_not_shipped_lists_the_names(name, message):
    with pytest.raises(DatasetError, match=message):
        kg(name)


@pytest.fixture(scope="module")
def pykeen_datasets():
    pytest.importorskip("pykeen")
    from pykeen.datasets import UMLS, Kinships, Nations
    return {"umls": UMLS(), "kinships": Kinships(), "nations": Nations()}


@pytest.mark.parametrize("name", SHIPPED)
def test_splits_and_numbering_are_pykeens(name, pykeen_datasets):
    data, theirs = kg(name), pykeen_datasets[name]
    assert (data.num_entities, data.num_relations) == SIZES[name]
    for ours, factory in [(data.train, theirs.training), (data.valid, theirs.validation), (data.test, theirs.testing)]:
        assert ours.dtype == torch.int64 and ours.shape == (factory.num_triples, 3)
        assert torch.equal(ours, factory.mapped_triples)
    assert list(data.entity_names) == list(theirs.training.entity_to_id)
    assert list(data.relation_names) == list(theirs.training.relation_to_id)
    assert list(theirs.training.entity_to_id.values()) == list(range(data.num_entities))


@pytest.mark.parametrize("name", SHIPPED)
def test_graph_holds_the_training_triples_and_their_inverses(name, pykeen_datasets):
    data = kg(name)
    g, n, r = data.graph, len(data.train), data.num_relations
    head, rel, tail = data.train.t()
    assert (g.num_nodes, g.num_edges, g.num_etypes) == (data.num_entities, 2 * n, 2 * r)
    assert torch.equal(g.src, torch.cat([head, tail])) and torch.equal(g.dst, torch.cat([tail, head]))
    assert torch.equal(g.etype, torch.cat([rel, rel + r]))
    assert g.etype_names[r:] == tuple(f"{x}_inverse" for x in data.relation_names)


# the example ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lp():
    pytest.importorskip("pykeen")
    from pigeon.examples import link_prediction
    return link_prediction


def _pair(lp, name="nations", dim=8, layers=2, bases=3):
    data = kg(name)
    ours = lp.PigeonRGCN(data.graph, data.num_relations, dim, layers, bases)
    theirs = lp.PyKEENModel(data, dim, layers, bases, seed=0)
    lp.load_pykeen_weights(ours, theirs.peer)
    return data, ours, theirs


@pytest.mark.parametrize("name", ["nations", "umls"])  # both orders of the encoder and of the decoder
def test_the_encoder_is_pykeens_rgcn_forward_and_backward(lp, name):
    data, ours, theirs = _pair(lp, name)
    assert (ours.pair_graph is None) == (name == "umls")
    ours.eval()  # no dropout: the two draw their masks differently
    theirs.eval()
    positive = data.train[:400]
    triples = torch.cat([positive, lp.corrupt(positive, 2, data.num_entities, torch.Generator().manual_seed(1))])
    # nations scores through a (relation, head) table (770 rows < 1200 triples), umls gathers h, r, t
    assert (data.num_entities * data.num_relations <= len(triples)) == (name == "nations")
    labels = torch.rand(len(triples))
    losses = [torch.nn.functional.binary_cross_entropy_with_logits(m.score(triples), labels) for m in (ours, theirs)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for loss in losses:
        loss.backward()
    enc = theirs.peer.entity_representations[0]
    pairs = [(ours.entity, enc.entity_embeddings._embeddings.weight),
             (ours.relation, theirs.peer.relation_representations[0]._embeddings.weight)]
    for mine, layer in zip(ours.layers, enc.layers):
        # PyKEEN's bwd decomposition carries head -> tail messages (ours: forward), fwd the inverses
        for our_bases, our_coeff, decomposition in [(mine.forward_bases, mine.forward_coeff, layer.bwd),
                                                    (mine.inverse_bases, mine.inverse_coeff, layer.fwd)]:
            low_rank = decomposition.relation_representations
            pairs += [(our_bases, low_rank.base._embeddings.weight), (our_coeff, low_rank.weight._embeddings.weight)]
        pairs += [(mine.self_loop.weight, layer.self_loop.weight), (mine.self_loop.bias, layer.self_loop.bias)]
    for mine, peer in pairs:
        assert mine.grad.abs().max() > 0
        torch.testing.assert_close(mine.grad.reshape(peer.grad.shape), peer.grad, rtol=1e-4, atol=1e-6)


def test_edge_dropout_keeps_both_directions_of_a_triple_and_renormalises(lp):
    data = kg("nations")
    model = lp.PigeonRGCN(data.graph, data.num_relations, 8, 1, 2)
    n = len(data.train)
    for mode in (model.eval, model.train):
        mode()
        w = model.edge_weight().squeeze(1)
        assert torch.equal(w[:n], w[n:])
        kept = w[:n] > 0
        head, rel, tail = data.train[kept].t()
        # 1 / sqrt(out_r(h) in_r(t)) over the kept triples of each relation
        pairs = data.num_entities * data.num_relations
        out_deg = torch.bincount(rel * data.num_entities + head, minlength=pairs)[rel * data.num_entities + head]
        in_deg = torch.bincount(rel * data.num_entities + tail, minlength=pairs)[rel * data.num_entities + tail]
        torch.testing.assert_close(w[:n][kept], (out_deg * in_deg).double().rsqrt().float())
    assert 0.3 < 1 - kept.double().mean() < 0.5  # about EDGE_DROPOUT = 0.4 of 1592 triples dropped


def test_negatives_replace_the_head_or_the_tail_by_another_entity(lp):
    data = kg("umls")
    triples = data.train[:500]
    neg = lp.corrupt(triples, 3, data.num_entities, torch.Generator().manual_seed(0))
    pos = triples.repeat_interleave(3, dim=0)
    changed = neg != pos
    assert neg.shape == (1500, 3) and not changed[:, 1].any()
    assert torch.equal(changed[:, 0] ^ changed[:, 2], torch.ones(1500, dtype=torch.bool))
    assert 0.4 < changed[:, 0].double().mean() < 0.6 and neg.min() >= 0 and neg[:, [0, 2]].max() < data.num_entities


def test_filtered_ranking_equals_pykeens_evaluator(lp):
    from pykeen.evaluation import RankBasedEvaluator
    data, ours, theirs = _pair(lp, dim=16)
    theirs.eval()
    with torch.no_grad():
        mine = lp.evaluate(*theirs.embeddings(), data.test, torch.cat([data.train, data.valid, data.test]))
    result = RankBasedEvaluator(filtered=True).evaluate(
        theirs.peer, data.test, additional_filter_triples=[data.train, data.valid], batch_size=64, use_tqdm=False)
    assert mine["mrr"] == pytest.approx(result.get_metric("both.realistic.inverse_harmonic_mean_rank"), abs=1e-6)
    for k in (1, 3, 10):
        assert mine[f"hits@{k}"] == pytest.approx(result.get_metric(f"both.realistic.hits_at_{k}"), abs=1e-6)


def test_ties_count_half_a_place_and_known_triples_are_left_out(lp):
    entity = torch.tensor([[1.0], [1.0], [1.0], [2.0]])
    relation = torch.ones(1, 1)
    test = torch.tensor([[0, 0, 1]])  # tail 1 ties with 0 and 2 and loses to 3; head 0 the same
    assert lp.evaluate(entity, relation, test, test)["mrr"] == pytest.approx(1 / 3)       # rank 1 + 1 + 2 / 2
    known = torch.tensor([[0, 0, 1], [0, 0, 3], [3, 0, 1]])                               # 3 is true both ways
    assert lp.evaluate(entity, relation, test, known)["mrr"] == pytest.approx(1 / 2)      # rank 1 + 0 + 2 / 2


def test_the_example_runs_both_models_and_writes_json(lp, tmp_path, capsys):
    out = tmp_path / "lp.json"
    lp.main(["--dataset", "nations", "--dim", "8", "--epochs", "2", "--eval-every", "1", "--compare", "pykeen",
             "--json", str(out)])
    results = json.loads(out.read_text())
    for name in ("pigeon", "pykeen"):
        assert {"mrr", "hits@1", "hits@3", "hits@10", "seconds_per_epoch"} <= set(results[name])
        assert 0 < results[name]["mrr"] <= 1 and results[name]["epochs"] == 2
    printed = capsys.readouterr().out
    assert "epoch    2" in printed and "PyKEEN s/epoch / Pigeon s/epoch" in printed
