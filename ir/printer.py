"""The text form of level-1 programs: one line per value, ``%name : type = op[attrs](args)``."""
from __future__ import annotations

import enum
from typing import Any

from .program import Node, Program


def format_attr(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_attr(v) for v in value) + "]"
    return str(value)


def format_node(node: Node, with_loc: bool = False) -> str:
    attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in node.attr_items)
    op = f"{node.op.value}[{attrs}]" if attrs else node.op.value
    args = ", ".join(f"%{a}" for a in node.args)
    line = f"%{node.name} : {node.type} = {op}({args})"
    if with_loc and node.loc:
        line += f"  # {node.loc}"
    return line


def format_program(program: Program, with_loc: bool = False) -> str:
    """The whole program; stable across runs, so it can be diffed and golden-tested."""
    lines = [f"program {program.name}"]
    lines += ["  " + format_node(n, with_loc) for n in program.nodes]
    lines.append("  return " + ", ".join(f"%{o}" for o in program.outputs))
    return "\n".join(lines) + "\n"
