"""Every fenced block of the README runs as written, or says where it runs instead.

Each block has a tag, and the test knows every tag:

- ```python: runs in a fresh Python process, in an empty temporary folder.
- ```bash: commands. The block runs as one bash script (``set -euo pipefail``) in a fresh copy of
  the repository's files (tracked and untracked-but-not-ignored, as a fresh clone would have
  them), with this environment's ``bin`` folder first on PATH and the test run's own kernel and
  tuning cache (``PIGEON_CACHE_DIR``, set by ``conftest.py``).
- ```text: program output, listings and usage synopses; never run.

A bash block's first lines may be marker comments:

- ``# slow: about N minutes``: it takes longer than a minute, so a plain ``pytest`` leaves it out;
  ``pytest -m slow_readme`` (CI's slow step) runs it.
- ``# needs: dgl``: it runs in the DGL environment (marked ``dgl``; skipped where DGL is missing).
  CI's slow step runs ``-m "slow_readme and not dgl"`` in the main environment and
  ``-m "slow_readme and dgl"`` in the DGL one.
- ``# ci: .ci/run runs this``: not run here, because ``.ci/run`` runs these very commands; the test
  checks that each of the block's commands, without a leading ``.venv.../bin/`` (CI activates its
  own environment instead), begins a line of ``.ci/run``.
- ``# not run by CI: <why>``: never run; the reason is required. Its syntax is still checked.

Every bash block, run or not, must parse (``bash -n``).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"
FENCE = re.compile(r"^( *)```(\S*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"#\s*(slow|needs|ci|not run by CI):\s*(.*)")
FAST_TIMEOUT_S, SLOW_TIMEOUT_S = 600, 1800


def _blocks() -> list[tuple[str, str]]:
    """(tag, dedented body) of every fenced block, in order."""
    return [(tag, textwrap.dedent(body)) for _, tag, body in FENCE.findall(README.read_text())]


def _markers(body: str) -> dict[str, str]:
    """The marker comments at the top of a bash block: {"slow": "about 2 minutes", ...}."""
    markers = {}
    for line in body.splitlines():
        found = MARKER.fullmatch(line.strip())
        if not found:
            break
        markers[found.group(1)] = found.group(2).strip()
    return markers


def _commands(body: str) -> list[str]:
    """The block's command lines, without comments and with continuation lines joined."""
    joined = body.replace("\\\n", " ")
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in joined.splitlines())
    return [" ".join(line.split()) for line in lines if line]


BLOCKS = _blocks()
PYTHON_BLOCKS = [body for tag, body in BLOCKS if tag == "python"]
BASH_BLOCKS = [(f"bash{i}", body, _markers(body)) for i, (_, body) in enumerate(b for b in BLOCKS if b[0] == "bash")]


def _params(slow: bool):
    chosen = []
    for name, body, markers in BASH_BLOCKS:
        if "ci" in markers or "not run by CI" in markers or ("slow" in markers) != slow:
            continue
        marks = [pytest.mark.dgl] if markers.get("needs") == "dgl" else []
        chosen.append(pytest.param(body, markers, id=name, marks=marks))
    return chosen


def _fresh_checkout(folder: Path) -> Path:
    """A copy of the repository's files as a fresh clone would have them (plus untracked ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True)
    checkout = folder / "repo"
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): copy all but environments
        shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info"))
        return checkout
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    return checkout


def _run_bash(body: str, markers: dict[str, str], folder: Path, timeout: int):
    if markers.get("needs") == "dgl" and importlib.util.find_spec("dgl") is None:
        pytest.skip("needs DGL (the DGL environment)")
    checkout = _fresh_checkout(folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)  # a block that makes and activates its own environment sets it itself
    script = "set -euo pipefail\n" + body
    try:
        result = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True,
                                timeout=timeout)
    finally:  # install blocks leave gigabytes of environments behind
        shutil.rmtree(checkout, ignore_errors=True)
    assert result.returncode == 0, (f"exit status {result.returncode} of\n{body}\n--- stdout (tail)\n"
                                    f"{result.stdout[-2000:]}\n--- stderr (tail)\n{result.stderr[-3000:]}")


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_block_runs(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("body,markers", _params(slow=False))
def test_readme_shell_block_runs(body, markers, tmp_path):
    _run_bash(body, markers, tmp_path, FAST_TIMEOUT_S)


@pytest.mark.slow_readme
@pytest.mark.parametrize("body,markers", _params(slow=True))
def test_readme_slow_shell_block_runs(body, markers, tmp_path, request):
    # `pytest -m dgl` replaces the default `-m "not slow_readme"`, so this guard keeps those runs fast too
    if not re.search(r"(?<!not )\bslow_readme\b", request.config.getoption("markexpr") or ""):
        pytest.skip("a slow README block: runs with pytest -m slow_readme")
    _run_bash(body, markers, tmp_path, SLOW_TIMEOUT_S)


def test_every_block_is_tagged_and_every_shell_block_says_where_it_runs():
    assert {tag for tag, _ in BLOCKS} <= {"python", "bash", "text"}, "untagged or unknown fenced block"
    for name, body, markers in BASH_BLOCKS:
        assert len({"slow", "ci", "not run by CI"} & set(markers)) <= 1, f"{name}: conflicting markers"
        assert markers.get("needs", "dgl") == "dgl", f"{name}: unknown need {markers['needs']!r}"
        assert "slow" not in markers or re.match(r"about \d+ minutes?\b", markers["slow"]), name
        assert markers.get("not run by CI", "why") != "", f"{name}: say why it is not run"
        assert _commands(body), f"{name}: no command"
        parsed = subprocess.run(["bash", "-n", "-c", body], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{name} does not parse: {parsed.stderr}"


def test_blocks_left_to_ci_are_what_ci_runs():
    ci_commands = _commands(CI_SCRIPT.read_text())
    left_to_ci = [(name, body) for name, body, markers in BASH_BLOCKS if "ci" in markers]
    assert left_to_ci, "the README's `pytest -q` is left to .ci/run"
    for name, body in left_to_ci:
        for command in _commands(body):
            bare = re.sub(r"^\.venv[\w.-]*/bin/", "", command)
            assert any(line == bare or line.startswith(bare + " ") for line in ci_commands), \
                f"{name}: .ci/run does not run {command!r}"


def test_the_readme_has_python_and_shell_blocks():
    assert len(PYTHON_BLOCKS) >= 5
    assert len(_params(slow=False)) >= 2 and len(_params(slow=True)) >= 3
