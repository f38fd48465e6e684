"""The `pigeon` command line and the training example."""
import subprocess
import sys
from pathlib import Path

import pytest

from pigeon.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_show_prints_the_program_of_an_example(model, capsys):
    assert main(["show", model]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"program {model}\n") and "return %out" in out
    assert main(["show", model, "--dtype", "float64", "--loc"]) == 0
    out = capsys.readouterr().out
    assert " f64 = " in out and f"# {model}.py:" in out


def test_show_a_users_file(tmp_path, capsys):
    layer = tmp_path / "my_layer.py"
    layer.write_text(
        "import torch, pigeon\n"
        "from pigeon.lang import linear, mean\n"
        "@pigeon.compile(example_inputs=lambda g: (torch.randn(g.num_nodes, 4), torch.randn(g.num_etypes, 4, 2)))\n"
        "def mine(g, h, w):\n"
        "    for e in g.edges():\n"
        "        e.m = linear(h[e.src], w[e.etype])\n"
        "    for n in g.dst_nodes():\n"
        "        n.out = mean(e.m for e in n.incoming_edges())\n"
        "    return n.out\n")
    assert main(["show", f"{layer}:mine"]) == 0
    out = capsys.readouterr().out
    assert "program mine" in out and "reduce[index=dst, kind=mean, to=dst](%m)" in out


def test_show_errors(tmp_path, capsys):
    assert main(["show", "nonsense"]) == 2
    assert "neither an example model" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main(["show", str(empty)]) == 2
    assert "defines no @pigeon.compile function" in capsys.readouterr().err


def test_training_example_lowers_the_loss():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train.py"), "--scale", "0.1",
                             "--epochs", "10"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) >= 3 and losses[-1] < 0.5 * losses[0]
