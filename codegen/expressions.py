"""C expressions of the elementwise level-1 ops (a table, as a renderer's op map), and index
arithmetic for feature shapes."""
from __future__ import annotations

from math import prod
from typing import Any, Callable

from pigeon.ir.ops import Op


def _c(value: float, acc: str) -> str:
    """A constant of the accumulation type, written so it reads back exactly."""
    text = repr(float(value))
    if text in ("inf", "-inf", "nan"):
        raise ValueError(f"constant {text} has no C literal here")
    return f"({acc}){text}"


def c_number(value: float, acc: str) -> str:
    """Any number as a C expression of the accumulation type (infinities and NaN included)."""
    value = float(value)
    if value != value:
        return f"(({acc})0 / ({acc})0)"
    if value in (float("inf"), float("-inf")):
        return f"({'-' if value < 0 else ''}({acc})1 / ({acc})0)"
    return _c(value, acc)


# op -> (argument expressions, attributes, accumulation type) -> expression
ELEMENTWISE: dict[Op, Callable[[list[str], dict[str, Any], str], str]] = {
    Op.NEG: lambda a, at, t: f"(-{a[0]})",
    Op.EXP: lambda a, at, t: f"exp({a[0]})",
    Op.LOG: lambda a, at, t: f"log({a[0]})",
    Op.RECIP: lambda a, at, t: f"(({t})1 / {a[0]})",
    Op.SQRT: lambda a, at, t: f"sqrt({a[0]})",
    Op.RELU: lambda a, at, t: f"pg_max({a[0]}, ({t})0)",
    Op.LEAKY_RELU: lambda a, at, t: f"({a[0]} > ({t})0 ? {a[0]} : {a[0]} * {_c(at['slope'], t)})",
    Op.SIGMOID: lambda a, at, t: f"pg_sigmoid({a[0]})",
    Op.TANH: lambda a, at, t: f"tanh({a[0]})",
    Op.GELU: lambda a, at, t: f"pg_gelu({a[0]})",
    Op.ABS: lambda a, at, t: f"fabs({a[0]})",
    Op.ELU: lambda a, at, t: f"({a[0]} > ({t})0 ? {a[0]} : {_c(at['alpha'], t)} * (exp({a[0]}) - ({t})1))",
    Op.SOFTPLUS: lambda a, at, t: (f"({a[0]} * {_c(at['beta'], t)} > {_c(at['threshold'], t)} ? {a[0]} : "
                                   f"log1p(exp({a[0]} * {_c(at['beta'], t)})) / {_c(at['beta'], t)})"),
    Op.STEP: lambda a, at, t: f"({a[0]} > ({t})0 ? ({t})1 : ({t})0)",
    Op.GELU_GRAD: lambda a, at, t: f"pg_gelu_grad({a[0]})",
    Op.SCALE: lambda a, at, t: f"({a[0]} * {_c(at['c'], t)})",
    Op.SHIFT: lambda a, at, t: f"({a[0]} + {_c(at['c'], t)})",
    Op.POW: lambda a, at, t: f"pow({a[0]}, {_c(at['c'], t)})",
    Op.ADD: lambda a, at, t: f"({a[0]} + {a[1]})",
    Op.SUB: lambda a, at, t: f"({a[0]} - {a[1]})",
    Op.MUL: lambda a, at, t: f"({a[0]} * {a[1]})",
    Op.DIV: lambda a, at, t: f"({a[0]} / {a[1]})",
    Op.MINIMUM: lambda a, at, t: f"(({a[0]} != {a[0]} || {a[0]} < {a[1]}) ? {a[0]} : {a[1]})",
    Op.MAXIMUM: lambda a, at, t: f"(({a[0]} != {a[0]} || {a[0]} > {a[1]}) ? {a[0]} : {a[1]})",
    Op.EQ: lambda a, at, t: f"({a[0]} == {a[1]} ? ({t})1 : ({t})0)",
    Op.NE: lambda a, at, t: f"({a[0]} != {a[1]} ? ({t})1 : ({t})0)",
    Op.LT: lambda a, at, t: f"({a[0]} < {a[1]} ? ({t})1 : ({t})0)",
    Op.LE: lambda a, at, t: f"({a[0]} <= {a[1]} ? ({t})1 : ({t})0)",
    Op.GT: lambda a, at, t: f"({a[0]} > {a[1]} ? ({t})1 : ({t})0)",
    Op.GE: lambda a, at, t: f"({a[0]} >= {a[1]} ? ({t})1 : ({t})0)",
    Op.SELECT: lambda a, at, t: f"({a[0]} != ({t})0 ? {a[1]} : {a[2]})",
}

# the C operator of each comparison a match may make between two ids
C_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def strides(shape: tuple[int, ...]) -> list[int]:
    out, step = [], 1
    for s in reversed(shape):
        out.append(step)
        step *= s
    return list(reversed(out))


def broadcast_index(flat: str, out_shape: tuple[int, ...], arg_shape: tuple[int, ...]) -> str:
    """The flat index into a value of ``arg_shape`` read at element ``flat`` of ``out_shape``
    under numpy broadcasting (also: the element of a summed-down shape that ``flat`` adds to)."""
    if tuple(arg_shape) == tuple(out_shape):
        return flat
    if prod(arg_shape) == 1:
        return "0"
    terms = []
    lead = len(out_shape) - len(arg_shape)
    out_strides, arg_strides = strides(out_shape), strides(arg_shape)
    for i, size in enumerate(arg_shape):
        if size == 1:
            continue
        axis = lead + i
        coordinate = f"(({flat}) / {out_strides[axis]})" if out_strides[axis] != 1 else f"({flat})"
        if axis > 0:
            coordinate = f"({coordinate} % {out_shape[axis]})"
        terms.append(f"{coordinate} * {arg_strides[i]}" if arg_strides[i] != 1 else coordinate)
    return " + ".join(terms)


def slice_index(flat: str, width: int, start: int, source_width: int) -> str:
    """The flat index into a value read through ``slice[start:start+width]`` of its last axis."""
    return f"((({flat}) / {width}) * {source_width} + {start} + ({flat}) % {width})"
