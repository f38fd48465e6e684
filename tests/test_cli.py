"""The `pigeon` command line and the training example."""
import subprocess
import sys
from pathlib import Path

import pytest

import pigeon
from pigeon.cli import main
from pigeon.ir.passes import PASS_NAMES

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


def test_show_all_prints_the_pass_names_disable_passes_takes(capsys):
    assert main(["show", "hgt", "--all"]) == 0
    out = capsys.readouterr().out
    stages = [line.removeprefix("# after ") for line in out.splitlines() if line.startswith("# after ")]
    assert stages == ["traced", *PASS_NAMES]
    pigeon.disable_passes(*stages[1:]).close()  # each accepted
    assert main(["show", "hgt", "--after", "compaction"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pigeon: error: --after compaction: no such stage")
    assert ", ".join(("traced", *PASS_NAMES)) in err and len(err.splitlines()) == 1


def test_every_error_is_one_line_with_status_2(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('bad module')\n")
    for argv, start in ((["show", "nosuch"], "pigeon: error: 'nosuch' is neither an example model"),
                        (["show", "rgcn", "--dataset", "aifbb"], "pigeon: error: DatasetError: unknown data set 'aifbb'"),
                        (["show", str(broken)], "pigeon: error: ValueError: bad module"),
                        (["tune", "rgcn"], "pigeon: error: pigeon tune MODEL needs --dataset")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match="bad module"):
        main(["show", str(broken), "--debug"])


def test_help_imports_nothing_heavy():
    import subprocess
    import sys
    code = "import sys, pigeon.cli; pigeon.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def nvrtc_compile(source, name):
    pytest.importorskip("cupy", reason="NVRTC comes with the cuda13 extra (pip install -e '.[dev]')")
    from pigeon.runtime import kernel_cache
    return kernel_cache.compile_ptx(source, "compute_80", name)


@pytest.mark.parametrize("options", [[], ["--backward", "--cost"]], ids=["forward", "backward"])
@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
def test_show_cuda_prints_a_file_that_nvrtc_compiles(model, options, capsys):
    assert main(["show", model, "--cuda", *options]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"// {model} after {PASS_NAMES[-1]}") and 'extern "C" __global__ void pigeon_' in out
    if "--cost" in options:
        assert "//   value " in out  # the cost table, as comments
    assert ".entry pigeon_" in nvrtc_compile(out, model)


LAYERS_WITH_REPEATS = (
    "import torch, pigeon\n"
    "from pigeon.lang import exp, linear, sum, tanh\n"
    "def inputs(g):\n"
    "    return torch.randn(g.num_nodes, 4), torch.randn(g.num_etypes, 4, 2)\n"
    "@pigeon.compile(example_inputs=inputs)\n"
    "def first(g, h, w):\n"
    "    for e in g.edges():\n"
    "        e.unused = exp(h[e.dst])\n"
    "        e.m = tanh(linear(h[e.src], w[e.etype])) + tanh(linear(h[e.src], w[e.etype]))\n"
    "    for n in g.dst_nodes():\n"
    "        n.out = sum(e.m for e in n.incoming_edges())\n"
    "    return n.out\n"
    "@pigeon.compile(example_inputs=inputs)\n"
    "def second(g, h, w):\n"
    "    for e in g.edges():\n"
    "        e.m = linear(h[e.src], w[e.etype])\n"
    "    for n in g.dst_nodes():\n"
    "        n.out = sum(e.m for e in n.incoming_edges())\n"
    "    return n.out\n")


def test_show_a_traced_program_with_repeats_and_unused_values(tmp_path, capsys):
    layer = tmp_path / "repeats.py"
    layer.write_text(LAYERS_WITH_REPEATS)
    assert main(["show", f"{layer}:first"]) == 0
    out = capsys.readouterr().out
    assert out.count("= tanh(") == 2 and "%unused" in out
    assert main(["show", f"{layer}:first", "--after", "traced", "--plans"]) == 0
    assert "%unused" in capsys.readouterr().out
    assert main(["show", f"{layer}:first", "--after", "cse"]) == 0
    out = capsys.readouterr().out
    assert out.count("= tanh(") == 1 and "%unused" in out
    assert main(["show", f"{layer}:first", "--after", "dce"]) == 0
    assert "%unused" not in capsys.readouterr().out


def test_show_cuda_of_two_functions_and_of_a_traced_program_compiles(tmp_path, capsys):
    layer = tmp_path / "repeats.py"
    layer.write_text(LAYERS_WITH_REPEATS)
    assert main(["show", str(layer), "--cuda", "--after", "traced"]) == 0
    out = capsys.readouterr().out
    assert "// first after traced" in out and "// second after traced" in out
    assert out.count("struct pg_half {") == 1  # the helpers once, before the kernels of both
    nvrtc_compile(out, "repeats")


def test_show_cuda_or_cpp_with_all_stages_is_refused(capsys):
    for source in ("--cuda", "--cpp"):
        assert main(["show", "rgcn", source, "--all"]) == 2
        assert f"{source} prints one translation unit" in capsys.readouterr().err


def test_training_example_lowers_the_loss():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train.py"), "--scale", "0.1",
                             "--epochs", "10"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) >= 3 and losses[-1] < 0.5 * losses[0]
