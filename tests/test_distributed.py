"""Pigeon layers under torch.distributed and DGL's distributed engine (the DGL environment,
``pytest -m dgl``): one DDP step on two processes gives the parameters of one step on one process
over the union of their two batches (float64), each process traces a layer's program once, never
per batch, and compiles each C++ library at most once through the shared disk cache; and
``examples/dist_dgl.py`` partitions a graph, starts two DGL servers and two trainers on 127.0.0.1,
trains one epoch and stops by itself."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("dgl")

import dgl  # noqa: E402
import torch.distributed as dist  # noqa: E402
from dgl.dataloading import DataLoader, MultiLayerFullNeighborSampler  # noqa: E402

from pigeon.examples import distributed as example  # noqa: E402

pytestmark = pytest.mark.dgl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORLD, BATCH, LR = 2, 24, 0.5
GRAPH = dict(dataset="aifb", scale=0.05, feat_dim=8, num_classes=4, dtype=torch.float64)


def _model(name: str, g: dgl.DGLGraph) -> torch.nn.Module:
    return example.make_model(argparse.Namespace(model=name, seed=0, hidden=8, heads=2), g, "pigeon")


def _train_nids(g: dgl.DGLGraph) -> torch.Tensor:
    return torch.nonzero(g.ndata["train_mask"], as_tuple=True)[0]


def _step(model: torch.nn.Module, g: dgl.DGLGraph, batch: tuple, optimizer: torch.optim.Optimizer) -> None:
    input_nodes, seeds, blocks = batch
    loss = example.batch_loss(model, g, input_nodes, seeds, blocks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _ddp_rank(rank: int, name: str, init_file: str, out: str) -> None:
    """One DDP rank: a step on its first batch (parameters saved), then two epochs, counting the
    traces and the C++ compiler runs of this process."""
    import pigeon.compiler
    from pigeon.runtime import cpp_compiler

    traces, compiles = [], []
    trace, run = pigeon.compiler.trace, subprocess.run

    def counted_trace(*args, **kwargs):
        traces.append(args[1])
        return trace(*args, **kwargs)

    def counted_run(command, *args, **kwargs):
        if any(str(a).endswith(".cpp") and Path(a).parent.name == "cpp" for a in command):
            compiles.append(command)
        return run(command, *args, **kwargs)

    pigeon.compiler.trace, cpp_compiler.subprocess.run = counted_trace, counted_run
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = example.build_graph(**GRAPH)
        model = _model(name, g)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=LR)
        loader = DataLoader(g, _train_nids(g), MultiLayerFullNeighborSampler(2), batch_size=BATCH, shuffle=True,
                            use_ddp=True, ddp_seed=0)
        batches = iter(loader)
        first = next(batches)
        _step(ddp, g, first, optimizer)
        after_step = {n: p.detach().clone() for n, p in model.named_parameters()}
        counts = [(len(traces), len(compiles))]
        for batch in batches:
            _step(ddp, g, batch, optimizer)
        counts.append((len(traces), len(compiles)))
        for batch in loader:
            _step(ddp, g, batch, optimizer)
        counts.append((len(traces), len(compiles)))
    torch.save({"params": after_step, "seeds": first[1], "counts": counts, "batches": len(loader),
                "warnings": [str(w.message) for w in caught if w.category.__module__.startswith("pigeon")]},
               f"{out}/rank{rank}.pt")
    example.close_process_group()  # a failed rank exits instead: the test stops the other


@pytest.mark.parametrize("name", ["rgat", "hgt"])
def test_two_process_ddp_step_equals_one_process_on_the_union(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path / "cache"))  # cold: the ranks compile, then share
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=_ddp_rank, args=(r, name, str(tmp_path / "init"), str(tmp_path))) for r in range(WORLD)]
    for p in ranks:
        p.start()
    deadline = time.monotonic() + 240  # about 25 s here; a failed rank stops the other at once
    while any(p.is_alive() for p in ranks) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in ranks):
            break
        time.sleep(0.2)
    for p in ranks:
        if p.is_alive():
            p.kill()
        p.join()
    assert [p.exitcode for p in ranks] == [0] * WORLD
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    g = example.build_graph(**GRAPH)
    seeds = [r["seeds"] for r in results]
    assert all(len(s) == BATCH for s in seeds)  # equal batches: DDP's mean of means is the union's mean
    union = torch.cat(seeds)
    assert len(union.unique()) == WORLD * BATCH
    model, alone = _model(name, g), _model(name, g)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for m, batch_seeds in ((model, union), (alone, seeds[0])):
        _step(m, g, MultiLayerFullNeighborSampler(2).sample_blocks(g, batch_seeds), torch.optim.SGD(m.parameters(), lr=LR))
    alone = dict(alone.named_parameters())
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), f"{n} did not move: its check would prove nothing"
        for r in results:
            torch.testing.assert_close(r["params"][n], p.detach(), rtol=0, atol=1e-10, msg=f"{name} {n}")
    # rank 0's batch alone gives another step: the union's gradient is what made them equal
    assert max((alone[n] - p).abs().max().item() for n, p in model.named_parameters()) > 1e-6

    library_count = len(list((tmp_path / "cache" / "cpp").glob("*.manifest")))
    for r in results:
        # both layers map 8 features to 8: one signature, one trace
        (traces_1, _), _, (traces_end, compiles_end) = r["counts"]
        assert r["batches"] >= 2
        assert traces_1 == 1 and traces_end == traces_1, r["counts"]  # never retraced per batch
        assert compiles_end <= library_count, r["counts"]  # each library compiled at most once per process
        assert r["warnings"] == []
    assert sum(r["counts"][-1][1] for r in results) >= library_count > 0  # the ranks filled the cache between them
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_every_option_of_both_scripts_has_its_help():
    from pigeon.examples import dist_dgl

    for parser in (example.build_parser(), dist_dgl.build_parser()):
        assert [a.dest for a in parser._actions if not a.help] == []
        shown = parser.format_help()
        public = [a.option_strings[-1] for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
        assert len(public) > 10 and [o for o in public if o not in shown] == []


def test_dist_dgl_two_partitions_two_trainers_on_localhost(tmp_path):
    env = dict(os.environ, PIGEON_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, str(EXAMPLES / "dist_dgl.py"), "--num-parts", "2", "--num-trainers", "2", "--epochs", "1",
               "--scale", "0.1", "--check-features", "--workdir", str(tmp_path / "work"), "--timeout", "240"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = re.findall(r"^trainer (\d) \| epoch 0 \| loss ([0-9.]+)", result.stdout, re.M)
    assert sorted(r for r, _ in losses) == ["0", "1"], result.stdout[-3000:]
    assert all(0 < float(loss) < 10 for _, loss in losses)
    assert result.stdout.count("features match") == 2  # each server's KV store holds its own partition's rows
    assert "servers stopped" in result.stdout
