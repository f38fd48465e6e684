"""The benchmark harness on a tiny case (the full comparison runs in the DGL environment), and
the plain-PyTorch peers against the float64 formulas of tests/formulas.py."""
import dataclasses
import json

import pytest
import torch

import formulas
from pigeon.benchmarks import case as case_module
from pigeon.benchmarks import formulas as peer_formulas
from pigeon.benchmarks import harness
from pigeon.benchmarks.case import run
from pigeon.benchmarks.systems import DENSE, SYSTEMS
from random_graphs import random_graph


def test_every_model_has_pigeon_and_plain_pytorch():
    for model in ("rgcn", "rgat", "hgt"):
        names = {s.name for s in SYSTEMS if s.model == model}
        assert {"Pigeon", "PyTorch", "PyTorch + torch.compile", DENSE} <= names
        assert any(s.requires == ("dgl",) for s in SYSTEMS if s.model == model)
        assert any(s.requires == ("torch_geometric",) for s in SYSTEMS if s.model == model)


@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_a_case_checks_the_output_and_times_both_modes(model, tmp_path):
    case = dict(model=model, dataset="aifb", scale=0.02, feats=16, system="PyTorch", device="cpu",
                modes=["infer", "train"], repeat=2, warmup=1)
    case["reference"] = harness._reference(case, tmp_path)
    results = run(case)
    assert [r["mode"] for r in results] == ["infer", "train"]
    assert [r["check"] for r in results] == ["same output", "same output and gradients"]
    for r in results:
        assert r["status"] == "ok" and r["median_ms"] > 0


def test_a_wrong_reference_is_a_mismatch(tmp_path):
    import torch
    case = dict(model="rgcn", dataset="aifb", scale=0.02, feats=16, system="PyTorch", device="cpu",
                modes=["infer"], repeat=1, warmup=0)
    reference = torch.load(harness._reference(case, tmp_path))
    reference["output"] = reference["output"] + 1.0
    torch.save(reference, tmp_path / "wrong.pt")
    (result,) = run({**case, "reference": str(tmp_path / "wrong.pt")})
    assert result["check"].startswith("MISMATCH (output")


@pytest.mark.parametrize("target", ["input", "weight", "bias"])
def test_a_wrong_gradient_is_a_mismatch(target, tmp_path, monkeypatch):
    """A peer whose forward is right but one gradient entry is off by 1% of the largest one."""
    right = next(s for s in SYSTEMS if s.model == "rgcn" and s.name == "PyTorch")

    def build(bench, layer):
        peer = right.build(bench, layer)

        def perturb(grad):
            grad = grad.clone()
            grad.view(-1)[grad.numel() // 2] += 0.01 * grad.abs().max()
            return grad
        (bench.features if target == "input" else getattr(layer, target)).register_hook(perturb)
        return peer
    monkeypatch.setattr(case_module, "SYSTEMS", (*SYSTEMS, dataclasses.replace(right, name="Wrong", build=build)))
    case = dict(model="rgcn", dataset="aifb", scale=0.02, feats=16, system="Wrong", device="cpu",
                modes=["infer", "train"], repeat=1, warmup=0)
    case["reference"] = harness._reference(case, tmp_path)
    infer, train = run(case)
    assert infer["check"] == "same output"
    assert train["check"].startswith(f"MISMATCH (gradient of {target}: max error")
    assert train["check"].count("gradient of") == 1


def test_a_gradient_mismatch_fails_the_run(tmp_path, monkeypatch):
    def measured(case, timeout):
        check = "MISMATCH (gradient of weight: max error 1 of max 2)" if case["system"] == "PyTorch" else \
            "same output and gradients"
        return [{**case, "mode": "train", "status": "ok", "median_ms": 1.0, "spread_ms": 0.0, "peak_mb": 1.0,
                 "check": check}]
    monkeypatch.setattr(harness, "_reference", lambda case, folder: None)
    monkeypatch.setattr(harness, "run_case", measured)
    args = ["--models", "rgcn", "--datasets", "aifb", "--modes", "train", "--repeat", "1", "--out", str(tmp_path)]
    assert harness.main(args + ["--systems", "PyTorch"]) == 1
    assert harness.main(args + ["--systems", DENSE]) == 0


def test_the_check_tolerance_follows_the_dtype():
    ours = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    assert case_module.difference(ours, ours + 4e-12) is None
    assert case_module.difference(ours, ours + 4e-10) is not None
    assert case_module.difference(ours.float(), ours.float() + 4e-3) is None
    assert case_module.difference(ours.float(), ours.float() + 6e-3) is not None
    assert case_module.difference(ours, ours[:2]).startswith("shape")
    assert case_module.difference(ours, ours * float("nan")) is not None


def test_the_check_compares_every_chunk(monkeypatch):
    """The check works a chunk at a time (no float64 copy of a whole result): an error or a NaN
    in any chunk, the scale from every chunk."""
    monkeypatch.setattr(case_module, "CHECK_CHUNK", 4)
    ours = torch.linspace(-1.0, 1.0, 22, dtype=torch.float64).reshape(2, 11)
    ours[1, 9] = 100.0  # the scale lives in the last chunk but one
    assert case_module.difference(ours, ours + 1e-10) is None  # within 1e4 ulps of 100, not of 1
    for i in range(22):
        wrong = ours.clone()
        wrong.view(-1)[i] += 1e-6
        assert case_module.difference(ours, wrong) is not None, i
        wrong.view(-1)[i] = float("nan")
        assert case_module.difference(ours, wrong) is not None, i
    assert case_module.difference(ours[:, :0], ours[:, :0]) is None  # nothing to compare


def test_failures_are_results():
    (result,) = run(dict(model="rgcn", dataset="nonexistent", scale=1.0, feats=16, system="PyTorch",
                         device="cpu", modes=["infer"], repeat=1, warmup=0))
    assert result["status"].startswith("error: DatasetError")


def test_bench_command_end_to_end(tmp_path, capsys):
    code = harness.main(["--models", "rgcn", "--datasets", "aifb", "--scale", "0.02", "--feats", "16",
                         "--systems", "PyTorch", "--repeat", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Geometric mean speed-up" in out and "PyTorch" in out and "same output" in out
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert {r["system"] for r in rows} == {"Pigeon", "Pigeon (torch ops)", "PyTorch"}
    assert "fastest same-formula peer" in out
    assert (tmp_path / "bench.csv").read_text().startswith("model,mode,dataset")


def test_resume_measures_only_the_missing_cases(tmp_path, monkeypatch):
    common = ["--models", "rgcn", "--datasets", "aifb", "--scale", "0.02", "--feats", "16", "--repeat", "1",
              "--out", str(tmp_path)]
    assert harness.main(common + ["--systems", "PyTorch"]) == 0
    first = json.loads((tmp_path / "bench.json").read_text())
    measured = []
    real_run_case = harness.run_case
    monkeypatch.setattr(harness, "run_case", lambda case, timeout: measured.append(case["system"])
                        or real_run_case(case, timeout))
    assert harness.main(common + ["--systems", "PyTorch", "PyTorch + torch.compile", "--resume"]) == 0
    assert measured == ["PyTorch + torch.compile"]  # Pigeon's own cases were measured already
    rows = json.loads((tmp_path / "bench.json").read_text())
    kept = [r for r in rows if r["system"] in ("Pigeon", "PyTorch")]
    assert [r["median_ms"] for r in kept] == [r["median_ms"] for r in first if r["system"] in ("Pigeon", "PyTorch")]


def test_geomeans_count_failures_and_flag_different_formulas():
    rows = [dict(model="rgat", mode="infer", dataset=d, feats=64, system=s, status=st, median_ms=ms, check=c)
            for d, s, st, ms, c in [
                ("aifb", "Pigeon", "ok", 2.0, ""), ("mutag", "Pigeon", "ok", 4.0, ""),
                ("aifb", "Peer", "ok", 8.0, "same output"), ("mutag", "Peer", "ok", 4.0, "same output"),
                ("aifb", "Other", "ok", 3.0, "different formula: x"), ("mutag", "Other", "OOM", None, "")]]
    harness.speedups(rows)
    lines = {ln.split()[2]: ln for ln in harness.geomeans(rows).splitlines()[1:]}
    assert "2.00x over 2 case(s)" in lines["Peer"] and "different" not in lines["Peer"]
    assert "1.50x over 1 case(s), 1 failed" in lines["Other"] and "different formula" in lines["Other"]


def test_best_peer_table_takes_the_fastest_same_formula_peer():
    rows = [dict(model="rgcn", mode="train", dataset="aifb", feats=64, system=s, status="ok", median_ms=ms,
                 peak_mb=mb, check=c)
            for s, ms, mb, c in [("Pigeon", 2.0, 10.0, ""), ("Pigeon (torch ops)", 6.0, 30.0, "same output"),
                                 ("Fast but different", 1.0, 5.0, "different formula: x"),
                                 ("Peer A", 5.0, 50.0, "same output"), ("Peer B", 3.0, 80.0, "same output")]]
    text = harness.best_peers(rows)
    row = next(ln for ln in text.splitlines() if "aifb" in ln)
    assert "Peer B" in row and "1.50" in row and "3.00x" in row and row.rstrip().endswith("50.0")
    assert "best peer 1.50x (1)" in text and "torch ops 3.00x (1)" in text


def _peer_and_formula(model: str, g, dense: bool):
    """The plain-PyTorch peer (per relation, or dense) and the float64 formula of ``model`` on ``g``,
    as functions of (features, *parameters), and seeded float64 arguments."""
    gen = torch.Generator().manual_seed(7)
    heads, size = 2, 3
    feats = heads * size

    def rand(*shape, low=-1.0, high=1.0):
        return (low + (high - low) * torch.rand(*shape, generator=gen, dtype=torch.float64)).requires_grad_()
    h = rand(g.num_nodes, feats)
    R, T, nd = g.num_etypes, g.num_ntypes, g.num_dst_nodes
    edges = peer_formulas.group(g.src, g.dst, g.etype, g.ntype, nd)
    if model == "rgcn":
        params = [rand(R, feats, 5), rand(feats, 5), rand(5, low=0.5, high=1.5)]
        _, pair, count = torch.unique(g.dst * R + g.etype, return_inverse=True, return_counts=True)
        norm = 1.0 / count[pair].to(torch.float64).unsqueeze(-1)
        if dense:
            return (lambda h, *p: peer_formulas.dense_rgcn(h, g.src, g.dst, g.etype, norm, *p, num_dst=nd),
                    lambda h, *p: formulas.rgcn(g, h, *p), [h, *params])
        return (lambda h, *p: peer_formulas.rgcn(h, edges, norm[edges.relations.order], *p),
                lambda h, *p: formulas.rgcn(g, h, *p), [h, *params])
    if model == "rgat":
        params = [rand(R, feats, feats), rand(R, heads, size), rand(R, heads, size), rand(feats, low=0.5, high=1.5)]
        if dense:
            return (lambda h, *p: peer_formulas.dense_rgat(h, g.src, g.dst, g.etype, *p, num_dst=nd, negative_slope=0.1),
                    lambda h, *p: formulas.rgat(g, h, *p, negative_slope=0.1), [h, *params])
        return (lambda h, *p: peer_formulas.rgat(h, edges, *p, negative_slope=0.1),
                lambda h, *p: formulas.rgat(g, h, *p, negative_slope=0.1), [h, *params])
    params = [rand(T, feats, feats), rand(T, feats, feats), rand(T, feats, feats), rand(R, heads, size, size),
              rand(R, heads, size, size), rand(R, heads, low=0.5, high=1.5), rand(T, feats, feats),
              rand(T, low=0.5, high=1.5)]
    if dense:
        return (lambda h, *p: peer_formulas.dense_hgt(h, g.src, g.dst, g.etype, g.ntype, *p, num_dst=nd),
                lambda h, *p: formulas.hgt(g, h, *p), [h, *params])
    return (lambda h, *p: peer_formulas.hgt(h, edges, *p), lambda h, *p: formulas.hgt(g, h, *p), [h, *params])


GRAPHS = {
    "many empty relations": dict(num_nodes=40, num_edges=240, num_etypes=300, num_ntypes=3, seed=1),
    "block": dict(num_nodes=40, num_edges=200, num_etypes=12, num_ntypes=4, seed=2, num_dst_nodes=15),
    "one type each": dict(num_nodes=30, num_edges=150, num_etypes=1, num_ntypes=1, seed=3),
}


@pytest.mark.parametrize("dense", [False, True], ids=["per relation", "dense"])
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_plain_pytorch_peer_is_the_formula_forward_and_backward(model, graph, dense):
    g = random_graph(**GRAPHS[graph])
    peer, formula, args = _peer_and_formula(model, g, dense)
    ours, expected = peer(*args), formula(*args)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    grads = torch.autograd.grad((ours * upstream).sum(), args)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), args)
    for got, want in zip(grads, expected_grads):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_group_rejects_a_graph_without_edges():
    empty = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ValueError, match="src is empty"):
        peer_formulas.group(empty, empty, empty, torch.zeros(3, dtype=torch.int64), 3)


@pytest.mark.parametrize("dense", [False, True], ids=["per relation", "dense"])
def test_the_per_relation_peer_multiplies_each_edge_once(dense):
    """Its matmuls cost one product per edge (and the self loop per node); the dense einsum's one
    per node and relation, most of them for relations without edges."""
    from torch.utils.flop_counter import FlopCounterMode
    g = random_graph(num_nodes=200, num_edges=400, num_etypes=300, seed=4)
    peer, _, args = _peer_and_formula("rgcn", g, dense)
    with FlopCounterMode(display=False) as counter:
        peer(*args)
    products = g.num_nodes * g.num_etypes if dense else g.num_edges
    assert counter.get_total_flops() == 2 * (products + g.num_dst_nodes) * 6 * 5


LIBRARY_PEERS = [s for s in SYSTEMS if s.requires in (("dgl",), ("torch_geometric",))]


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("references")


@pytest.mark.dgl
@pytest.mark.parametrize("system", LIBRARY_PEERS, ids=[f"{s.model}-{s.name}" for s in LIBRARY_PEERS])
def test_library_peers_get_pigeons_weights_and_give_back_its_gradients(system, reference_folder):
    """DGL's and PyG's layers with Pigeon's weights copied in: the same output and, mapped back to
    Pigeon's parameters, the same gradients (run in the DGL environment: ``pytest -m dgl``)."""
    pytest.importorskip(system.requires[0])
    case = dict(model=system.model, dataset="aifb", scale=0.02, feats=16, system=system.name, device="cpu",
                modes=["train"], repeat=1, warmup=0)
    case["reference"] = harness._reference(case, reference_folder)
    (result,) = run(case)
    assert result["status"] == "ok", result.get("trace")
    expected = "same output and gradients" if system.formula is None else "different formula: " + system.formula
    assert result["check"] == expected
