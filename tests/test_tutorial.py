"""Every command of docs/tutorial.md runs, in order, in one fresh folder: ```python file=NAME
blocks are saved as NAME, other Python blocks run in a fresh process (``needs=MODULE`` ones only
where MODULE is installed), and every line of a ```sh block runs in bash."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
BLOCKS = re.findall(r"```(python|sh)([^\n]*)\n(.*?)```", DOC.read_text(), re.S)


def _run(args, folder, **kw):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_every_command_of_the_tutorial_runs(tmp_path):
    outputs = []
    for kind, info, code in BLOCKS:
        options = dict(re.findall(r"(\w+)=(\S+)", info))
        if "file" in options:
            (tmp_path / options["file"]).write_text(code)
        elif kind == "python":
            if "needs" in options and importlib.util.find_spec(options["needs"]) is None:
                continue
            outputs.append(_run([sys.executable, "-c", code], tmp_path))
        else:
            for line in filter(None, (s.split("  #")[0].strip() for s in code.splitlines())):
                outputs.append(_run(["bash", "-c", line], tmp_path))
    text = "\n".join(outputs)
    assert "forward and every gradient match the formula" in text
    assert "my_rgcn" in text and "ms per call" in text
    assert (tmp_path / "bench-tutorial").is_dir()


def test_the_tutorial_has_its_five_steps_and_commands():
    headings = re.findall(r"^## (\d)\. ", DOC.read_text(), re.M)
    assert headings == ["1", "2", "3", "4", "5"]
    kinds = [(kind, info.strip()) for kind, info, _ in BLOCKS]
    assert kinds[0] == ("python", "file=my_rgcn.py") and sum(k == "sh" for k, _ in kinds) >= 3
    assert not re.findall(r"```(?!python|sh|\n)\w", DOC.read_text())  # no block the test would not run
