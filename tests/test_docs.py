"""Every example of docs/dsl.md runs after its prelude; the ones marked refused raise TraceError."""
import re
from pathlib import Path

import pytest

import pigeon

DOC = Path(__file__).resolve().parent.parent / "docs" / "dsl.md"
BLOCKS = re.findall(r"```python( refused)?\n(.*?)```", DOC.read_text(), re.S)
PRELUDE = BLOCKS[0][1]


@pytest.mark.parametrize("refused, code", BLOCKS[1:], ids=lambda v: v.split("def ")[1].split("(")[0] if "def " in v else None)
def test_example_runs(refused, code, tmp_path):
    path = tmp_path / "example.py"  # a real file: TraceError points at its lines
    path.write_text(PRELUDE + code)
    namespace = {"__name__": "example"}
    if refused:
        with pytest.raises(pigeon.TraceError):
            exec(compile(path.read_text(), str(path), "exec"), namespace)
    else:
        exec(compile(path.read_text(), str(path), "exec"), namespace)


def test_the_document_has_examples():
    assert len(BLOCKS) > 10 and sum(1 for refused, _ in BLOCKS if refused) >= 2
