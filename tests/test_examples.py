"""The drop-in examples are the peers' own scripts with one import changed: each runs for a tiny
budget as shipped (Pigeon's layer) and with the peer's import put back, and both give the same
loss on the first epoch (both scripts seed every generator they draw from; one thread keeps
DGL's neighbour sampler repeatable). Runs in the DGL environment (``pytest -m dgl``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dgl")
pytest.importorskip("torch_geometric")

pytestmark = pytest.mark.dgl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# script: (Pigeon's import line, the peer's, the pattern of an epoch's loss)
CASES = {
    "pyg_rgcn.py": ("from pigeon.nn.pyg import FastRGCNConv, RGCNConv",
                    "from torch_geometric.nn import FastRGCNConv, RGCNConv", r"^Epoch: \d+, Loss: ([0-9.]+)"),
    "dgl_minibatch.py": ("from pigeon.nn.dgl import RelGraphConv", "from dgl.nn.pytorch import RelGraphConv",
                         r"^Epoch \d+ \| Loss ([0-9.]+)"),
}


def run(script: Path) -> list[float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script), "--scale", "0.05", "--epochs", "2"], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    pattern = CASES[script.name][2]
    return [float(m.group(1)) for line in result.stdout.splitlines() if (m := re.match(pattern, line))]


@pytest.mark.parametrize("name", CASES)
def test_example_equals_the_peers_own_script(name, tmp_path):
    ours_import, peer_import, _ = CASES[name]
    source = (EXAMPLES / name).read_text()
    lines = [line for line in source.splitlines() if line.startswith(ours_import)]
    assert len(lines) == 1, f"{name} should import the layers in one line starting {ours_import!r}"
    # the only import that differs from the peer's script: nothing else in it names Pigeon's layers
    assert source.count("pigeon.nn") == 1 + source.split('"""', 2)[1].count("pigeon.nn")
    peer = tmp_path / name
    peer.write_text(source.replace(lines[0], peer_import))
    ours, theirs = run(EXAMPLES / name), run(peer)
    assert len(ours) == len(theirs) == 2
    assert ours[0] == pytest.approx(theirs[0], abs=2e-4)
    assert all(loss > 0 for loss in ours)
