"""The benchmark harness on a tiny case (the full comparison runs in the DGL environment)."""
import json

import pytest

from pigeon.benchmarks import harness
from pigeon.benchmarks.case import run
from pigeon.benchmarks.systems import SYSTEMS


def test_every_model_has_pigeon_and_plain_pytorch():
    for model in ("rgcn", "rgat", "hgt"):
        names = {s.name for s in SYSTEMS if s.model == model}
        assert {"Pigeon", "PyTorch", "PyTorch + torch.compile"} <= names
        assert any(s.requires == ("dgl",) for s in SYSTEMS if s.model == model)
        assert any(s.requires == ("torch_geometric",) for s in SYSTEMS if s.model == model)


@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_a_case_checks_the_output_and_times_both_modes(model, tmp_path):
    case = dict(model=model, dataset="aifb", scale=0.02, feats=16, system="PyTorch", device="cpu",
                modes=["infer", "train"], repeat=2, warmup=1)
    case["reference"] = harness._reference(case, tmp_path)
    results = run(case)
    assert [r["mode"] for r in results] == ["infer", "train"]
    for r in results:
        assert r["status"] == "ok" and r["check"] == "same output" and r["median_ms"] > 0


def test_a_wrong_reference_is_a_mismatch(tmp_path):
    import torch
    case = dict(model="rgcn", dataset="aifb", scale=0.02, feats=16, system="PyTorch", device="cpu",
                modes=["infer"], repeat=1, warmup=0)
    reference = torch.load(harness._reference(case, tmp_path))
    torch.save(reference + 1.0, tmp_path / "wrong.pt")
    (result,) = run({**case, "reference": str(tmp_path / "wrong.pt")})
    assert result["check"].startswith("MISMATCH")


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
