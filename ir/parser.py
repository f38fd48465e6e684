"""Parse the text form of level-1 programs (the printer's output) back into programs.

Used by golden tests of passes: a hand-written input text, a pass, an expected output text.
"""
from __future__ import annotations

import re
from typing import Any

from .ops import Op
from .program import Node, Program, freeze_attrs
from .types import DTYPE_BY_SHORT, Domain, ValueType

_LINE = re.compile(r"%(?P<name>\w+) : (?P<domain>\w+)\[(?P<shape>[\d,]*)\] (?P<dtype>\w+) = "
                   r"(?P<op>\w+)(?:\[(?P<attrs>[^\]]*(?:\[[^\]]*\][^\]]*)*)\])?\((?P<args>[^)]*)\)$")
_ATTR = re.compile(r"(\w+)=(\[[^\]]*\]|[^,]+)")

_BOOL_ATTRS = {"transpose", "batched"}
_INT_ATTRS = {"position", "start", "stop"}
_FLOAT_ATTRS = {"c", "slope"}


class ParseError(ValueError):
    """Text that is not a level-1 program."""


def _attr_value(key: str, text: str) -> Any:
    text = text.strip()
    if key == "to":
        return Domain(text)
    if key == "shape":
        inner = text.strip("[]")
        return tuple(int(s) for s in inner.split(",")) if inner else ()
    if key in _BOOL_ATTRS:
        if text not in ("True", "False"):
            raise ParseError(f"attribute {key} must be True or False, got {text!r}")
        return text == "True"
    if key in _INT_ATTRS:
        return int(text)
    if key in _FLOAT_ATTRS:
        return float(text)
    return text


def parse_node(line: str) -> Node:
    line = line.split("  #", 1)[0].strip()
    m = _LINE.match(line)
    if not m:
        raise ParseError(f"not a node line: {line!r}")
    shape = tuple(int(s) for s in m["shape"].split(",")) if m["shape"] else ()
    if m["dtype"] not in DTYPE_BY_SHORT:
        raise ParseError(f"unknown dtype {m['dtype']!r} in {line!r}")
    vtype = ValueType(Domain(m["domain"]), shape, DTYPE_BY_SHORT[m["dtype"]])
    attrs = {k: _attr_value(k, v) for k, v in _ATTR.findall(m["attrs"] or "")}
    args = tuple(a.strip().lstrip("%") for a in m["args"].split(",") if a.strip())
    return Node(m["name"], Op(m["op"]), args, vtype, freeze_attrs(attrs))


def parse_program(text: str) -> Program:
    """The program written in ``text`` (as printed by ``format_program``)."""
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("program "):
        raise ParseError("a program starts with 'program NAME'")
    if not lines[-1].strip().startswith("return "):
        raise ParseError("a program ends with 'return %value, ...'")
    outputs = tuple(o.strip().lstrip("%") for o in lines[-1].strip()[len("return "):].split(","))
    nodes = tuple(parse_node(ln) for ln in lines[1:-1])
    return Program(lines[0][len("program "):].strip(), nodes, outputs)
