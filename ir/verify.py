"""The level-1 verifier: every invariant a program must keep after every pass."""
from __future__ import annotations

from .ops import Op
from .printer import format_node
from .program import Program
from .shape_inference import ShapeError, infer


class VerifyError(ValueError):
    """A program broke an invariant of the IR."""


def verify(program: Program) -> Program:
    """Check ``program`` and return it; raise VerifyError listing every problem found."""
    problems: list[str] = []
    seen: dict[str, object] = {}
    positions = []
    for node in program.nodes:
        where = f"%{node.name}"
        if node.name in seen:
            problems.append(f"{where}: defined twice")
        missing = [a for a in node.args if a not in seen]
        if missing:
            problems.append(f"{where}: uses {', '.join('%' + m for m in missing)} before it is defined")
        elif node.op == Op.INPUT:
            if node.args:
                problems.append(f"{where}: an input takes no arguments")
            positions.append(node.attrs.get("position"))
        else:
            try:
                expected = infer(node.op, tuple(seen[a] for a in node.args), node.attrs)
            except (ShapeError, KeyError) as err:
                problems.append(f"{where}: {err}  [{format_node(node)}]")
            else:
                if expected != node.type:
                    problems.append(f"{where}: has type {node.type} but its op gives {expected}")
        seen[node.name] = node.type
    if sorted(positions) != list(range(len(positions))):
        problems.append(f"input positions {positions} are not 0..{len(positions) - 1}")
    if not program.outputs:
        problems.append("the program has no outputs")
    for out in program.outputs:
        if out not in seen:
            problems.append(f"output %{out} is not defined")
    if problems:
        raise VerifyError(f"program {program.name} is invalid:\n  " + "\n  ".join(problems))
    return program
