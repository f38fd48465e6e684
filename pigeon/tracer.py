"""Tracing the loop DSL into level-1 IR.

A ``@pigeon.compile`` function runs once with symbolic stand-ins: the graph yields one symbolic
edge from ``g.edges()`` and one symbolic node from ``g.nodes()`` / ``g.dst_nodes()``, so every
loop body runs once and records the ops it performs. Tensor arguments become inputs whose
domain is fixed by their first use (``h[e.src]``: per node; ``W[e.etype]``: per edge type;
``w[e]``: per edge; plain use: global).
"""
from __future__ import annotations

import contextlib
import dataclasses
import linecache
import math
import os
import re
import sys
import traceback
from typing import Any, Iterator

import torch

from pigeon.ir.ops import COMPARISONS, Op
from pigeon.ir.program import Builder, Program
from pigeon.ir.shape_inference import ShapeError
from pigeon.ir.types import Domain, ValueType

_PACKAGE_DIRS: tuple[str, ...] = ()
_ACTIVE: list["Tracer"] = []


def _package_dirs() -> tuple[str, ...]:
    global _PACKAGE_DIRS
    if not _PACKAGE_DIRS:
        import pigeon
        import pigeon.ir
        import pigeon.runtime
        _PACKAGE_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                              for m in (pigeon, pigeon.ir, pigeon.runtime))
    return _PACKAGE_DIRS


def user_location() -> tuple[str, int, str]:
    """(file, line, source) of the innermost frame outside Pigeon itself: the user's line."""
    frame = sys._getframe(1)
    dirs = _package_dirs()
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(dirs) and not path.startswith("<frozen"):
            return path, frame.f_lineno, linecache.getline(path, frame.f_lineno).strip()
        frame = frame.f_back
    return "<unknown>", 0, ""


class TraceError(Exception):
    """A @pigeon.compile function does something that cannot be traced; names the user's line
    (or ``at``: a (path, line) recorded earlier)."""

    def __init__(self, message: str, at: tuple[str, int] | None = None):
        path, line, source = user_location()
        if at is not None:
            path, line = at
            source = linecache.getline(path, line).strip()
        self.location = f"{os.path.basename(path)}:{line}"
        self.path, self.line = path, line
        text = f"{self.location}: {message}"
        if source:
            text += f"\n    {source}"
        super().__init__(text)


def tracing() -> bool:
    """Whether a @pigeon.compile function is being traced here."""
    return bool(_ACTIVE)


def current() -> "Tracer":
    if not _ACTIVE:
        raise TraceError("Pigeon DSL functions can only be called inside a @pigeon.compile function")
    return _ACTIVE[-1]


# ----------------------------------------------------------------------------------------
# symbolic values


class Sym:
    """A traced value: one row of a node, edge or parameter domain."""

    __slots__ = ("tracer", "handle")

    def __init__(self, tracer: "Tracer", handle: int):
        self.tracer = tracer
        self.handle = handle

    @property
    def type(self) -> ValueType:
        return self.tracer.builder.type_of(self.handle)

    @property
    def shape(self) -> tuple[int, ...]:
        """The feature shape of one row."""
        return self.type.shape

    @property
    def domain(self) -> Domain:
        return self.type.domain

    def reshape(self, *shape: Any) -> "Sym":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.tracer.op(Op.RESHAPE, [self], {"shape": tuple(int(s) for s in shape)})

    # arithmetic
    def __add__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.ADD, self, other)

    def __radd__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.ADD, other, self)

    def __sub__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.SUB, self, other)

    def __rsub__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.SUB, other, self)

    def __mul__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.MUL, self, other)

    def __rmul__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.MUL, other, self)

    def __truediv__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.DIV, self, other)

    def __rtruediv__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.DIV, other, self)

    def __neg__(self) -> "Sym":
        return self.tracer.op(Op.NEG, [self])

    def __pos__(self) -> "Sym":
        return self

    def __pow__(self, other: Any) -> "Sym":
        """``x ** c`` for a number c; ``x ** y`` for a traced y is exp(y log x): for positive x
        (as torch.pow there, its gradients too)."""
        if isinstance(other, (Sym, ParamRef, InputProxy, TracedSize)):
            exponent = self.tracer.as_sym(other)
            return self.tracer.op(Op.EXP, [exponent * self.tracer.op(Op.LOG, [self])], hint="pow")
        if not _is_number(other):
            raise TraceError(f"the exponent of a traced value must be a Python number or a traced value, "
                             f"got a {type(other).__name__}")
        return self.tracer.op(Op.POW, [self], {"c": float(other)})

    def __rpow__(self, other: Any) -> "Sym":
        """``c ** x`` for a number c > 0: exp(x log c)."""
        if not _is_number(other) or other <= 0:
            raise TraceError(f"{other!r} ** <traced value>: the base must be a positive Python number")
        return self.tracer.op(Op.EXP, [self.tracer.op(Op.SCALE, [self], {"c": math.log(other)})])

    def __abs__(self) -> "Sym":
        return self.tracer.op(Op.ABS, [self])

    # comparisons give 0/1 values, for pigeon.lang.where
    def __eq__(self, other: Any) -> "Sym":  # type: ignore[override]
        return self.tracer.binary(Op.EQ, self, other)

    def __ne__(self, other: Any) -> "Sym":  # type: ignore[override]
        return self.tracer.binary(Op.NE, self, other)

    def __lt__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.LT, self, other)

    def __le__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.LE, self, other)

    def __gt__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.GT, self, other)

    def __ge__(self, other: Any) -> "Sym":
        return self.tracer.binary(Op.GE, self, other)

    __hash__ = object.__hash__

    # what tracing cannot follow
    def __bool__(self) -> bool:
        raise TraceError(NO_CONTROL_FLOW)

    def __iter__(self) -> Iterator[Any]:
        raise TraceError("a traced value cannot be iterated; loop over g.edges() or g.nodes() instead")

    def __len__(self) -> int:
        raise TraceError("a traced value has no length; use .shape for its feature shape")

    def __float__(self) -> float:
        raise TraceError("a traced value has no Python number while tracing (int(), float(), range() "
                         "and indexing with it need one); use pigeon.lang.where(cond, a, b) to choose")

    __int__ = __index__ = __float__

    def __getitem__(self, key: Any) -> "Sym":
        """``x[..., a:b]`` (or ``x[a:b]`` for one axis): a range of the last feature axis; ``x[e.etype]``
        (``x[n.ntype]``, ...) of a value per type (a readout by type): the row of the element's type."""
        if isinstance(key, Selector):
            from pigeon.ir.indices import param_domain_of
            if self.domain != param_domain_of(key.index):
                raise TraceError(f"{key.text} selects a row of a value per {param_domain_of(key.index).value} "
                                 f"(a readout with by=...), not of a {self.domain.value} value")
            return self.tracer.op(Op.GATHER, [self], {"index": key.index, "to": key.row_domain}, hint=f"by_{key.index}")
        keys = key if isinstance(key, tuple) else (key,)
        last = keys[-1] if keys else None
        rest = keys[:-1]
        if rest and rest[0] is Ellipsis:
            rest = rest[1:]
        full = all(isinstance(k, slice) and k == slice(None) for k in rest)
        if not isinstance(last, slice) or not full or len(keys) > len(self.shape) + 1 or last.step not in (None, 1):
            raise TraceError("a traced value can be sliced along its last feature axis only, with a step of 1: "
                             "x[..., a:b] (for one element, x[..., i:i + 1])")
        start, stop, _ = last.indices(self.shape[-1]) if self.shape else (0, 0, 1)
        if stop <= start:
            raise TraceError(f"x[..., {last.start}:{last.stop}] of a value with {self.shape[-1] if self.shape else 0} "
                             f"columns is empty")
        return self.tracer.op(Op.SLICE, [self], {"start": start, "stop": stop})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        import pigeon.lang
        if name in pigeon.lang.__all__:
            raise TraceError(f"a traced value has no .{name}(...) method; write pigeon.lang.{name}(x, ...)")
        raise TraceError(f"a traced value has no .{name}; inside @pigeon.compile use the functions of "
                         f"pigeon.lang (linear, dot, exp, where, ...) and .reshape / .shape")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TraceError("a traced value cannot become a numpy array")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        raise TraceError(f"torch.{name} cannot run on a traced value; use the functions of "
                         f"pigeon.lang (linear, dot, exp, softmax, ...) inside @pigeon.compile")

    def __repr__(self) -> str:
        return f"<traced {self.type}>"


NO_CONTROL_FLOW = ("a traced value or a type/id selector cannot decide Python control flow (if, while, "
                   "and, or, not, bool()): its data is not known while tracing; write "
                   "pigeon.lang.where(cond, a, b) to choose between two values per element")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Ids:
    """What loop variables compare: ids of one index (``e.etype``, ``e.src``, ``n.ntype``, ...)
    in one row domain. A comparison is a 0/1 traced value (a MATCH op), for pigeon.lang.where."""

    index: str
    row_domain: Domain
    text: str

    def _compare(self, cmp: str, other: Any) -> "Sym":
        tracer = current()
        if isinstance(other, _Ids):
            if other.row_domain != self.row_domain:
                raise TraceError(f"{self.text} and {other.text} belong to different loops")
            rhs, value = other.index, 0
        elif isinstance(other, int) and not isinstance(other, bool):
            rhs, value = None, other
        else:
            raise TraceError(f"{self.text} can be compared with an int or another id of this loop, "
                             f"not with a {type(other).__name__}")
        return tracer.op(Op.MATCH, [], {"lhs": self.index, "rhs": rhs, "value": value, "cmp": cmp,
                                         "to": self.row_domain, "dtype": tracer.dtype}, hint="match")

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare("eq", other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare("ne", other)

    def __lt__(self, other: Any) -> Any:
        return self._compare("lt", other)

    def __le__(self, other: Any) -> Any:
        return self._compare("le", other)

    def __gt__(self, other: Any) -> Any:
        return self._compare("gt", other)

    def __ge__(self, other: Any) -> Any:
        return self._compare("ge", other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TraceError(NO_CONTROL_FLOW)

    def __index__(self) -> int:
        raise TraceError(f"{self.text} has no Python number while tracing (int(), range(), len() and "
                         f"indexing a list with it need one); compare it inside pigeon.lang.where, "
                         f"or index a tensor with it")

    __int__ = __float__ = __len__ = __index__

    def __iter__(self) -> Iterator[Any]:
        raise TraceError(f"{self.text} cannot be iterated")


class Selector(_Ids):
    """A type id of a loop variable (``e.etype``, ``e.src.ntype``, ``n.ntype``)."""

    def __init__(self, index: str, row_domain: Domain, text: str):
        self.index, self.row_domain, self.text = index, row_domain, text

    def __repr__(self) -> str:
        return self.text


class ParamRef:
    """A parameter indexed by a type selector, such as ``W[e.etype]``: one row per type."""

    def __init__(self, param: "InputProxy", selector: Selector):
        self.param, self.selector = param, selector

    @property
    def shape(self) -> tuple[int, ...]:
        return self.param.shape[1:]

    def value(self) -> Sym:
        """The selected row, materialised in the selector's row domain."""
        tracer = self.param.tracer
        return tracer.op(Op.GATHER, [self.param.sym()],
                         {"index": self.selector.index, "to": self.selector.row_domain},
                         hint=f"{self.param.name}_{self.selector.index}")

    def reshape(self, *shape: Any) -> Sym:
        return self.value().reshape(*shape)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.value(), name)


def _forward_to_value(name: str) -> Any:
    def method(self: Any, *args: Any) -> Any:
        return getattr(self.value(), name)(*args)
    method.__name__ = name
    return method


_COMPARISONS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")

for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__neg__", "__pow__", "__rpow__", "__abs__", "__bool__", "__iter__", "__len__",
              "__float__", "__int__", "__index__", "__getitem__") + _COMPARISONS:
    setattr(ParamRef, _name, _forward_to_value(_name))
ParamRef.__hash__ = object.__hash__  # type: ignore[method-assign]


_SIZE_OPS = {"__add__": Op.ADD, "__sub__": Op.SUB, "__mul__": Op.MUL, "__truediv__": Op.DIV,
             "__eq__": Op.EQ, "__ne__": Op.NE, "__lt__": Op.LT, "__le__": Op.LE, "__gt__": Op.GT, "__ge__": Op.GE}


class TracedSize:
    """A size of the graph while tracing: ``g.num_nodes`` and the like, or the first size of a
    tensor argument (``h.shape[0]``, ``h.size(0)``).

    Combined with a traced value, or for the graph's own sizes with any number, it is read from the
    graph at every call, so one compiled program serves graphs of every size. Used as a Python
    number (``int()``, ``range()``, a tensor's size, arithmetic with numbers), a tensor's size
    becomes part of the compiled program's key (``on_read``); the graph's own sizes are refused
    there, as their number is not known until the call."""

    def __init__(self, tracer: "Tracer", text: str, value: int | None, domain: Any, on_read: Any = None):
        self.tracer, self.text, self.value = tracer, text, value
        self._domain = domain  # the domain whose row count this is, or a function giving it (None: unknown)
        self.on_read = on_read

    def sym(self) -> Sym:
        """This size as a global traced number."""
        domain = self._domain() if callable(self._domain) else self._domain
        if domain is None or domain == Domain.GLOBAL:  # a row count the trace cannot name, or a fixed size
            return self.tracer.constant(self.number())
        return self.tracer.op(Op.SIZE, [], {"of": domain, "dtype": self.tracer.dtype}, hint=f"num_{domain.value}")

    def number(self) -> int:
        if self.on_read is None:
            raise TraceError(f"{self.text} is a size of the graph, not a Python number while tracing: use it in "
                             f"arithmetic with traced values (it is read from the graph at every call), or pass "
                             f"the number as an argument of the compiled function")
        self.on_read()
        return self.value

    def _combine(self, method: str, other: Any, reflected: bool) -> Any:
        if isinstance(other, (Sym, ParamRef, InputProxy)):
            return NotImplemented  # the traced operand's own method takes this size
        symbolic = self.on_read is None or (isinstance(other, TracedSize) and other.on_read is None)
        if symbolic and method in _SIZE_OPS and (_is_number(other) or isinstance(other, TracedSize)):
            lhs, rhs = (other, self) if reflected else (self, other)
            lhs, rhs = (x.sym() if isinstance(x, TracedSize) else x for x in (lhs, rhs))
            return self.tracer.binary(_SIZE_OPS[method], lhs, rhs)
        if isinstance(other, TracedSize):
            other = other.number()
        return getattr(int, method.replace("__", "__r", 1) if reflected else method)(self.number(), other)

    def __neg__(self) -> Any:
        return self.tracer.op(Op.NEG, [self.sym()]) if self.on_read is None else -self.number()

    def __int__(self) -> int:
        return self.number()

    __index__ = __int__

    def __float__(self) -> float:
        return float(self.number())

    def __bool__(self) -> bool:
        if self.on_read is None:
            raise TraceError(NO_CONTROL_FLOW)
        return bool(self.number())

    def __hash__(self) -> int:
        return hash(self.number())

    def __repr__(self) -> str:
        return self.text


def _size_method(method: str, reflected: bool) -> Any:
    def combine(self: TracedSize, other: Any) -> Any:
        return self._combine(method, other, reflected)
    combine.__name__ = method.replace("__", "__r", 1) if reflected else method
    return combine


for _method in ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__"):
    setattr(TracedSize, _method, _size_method(_method, False))
    setattr(TracedSize, _method.replace("__", "__r", 1), _size_method(_method, True))
for _method in _COMPARISONS:
    setattr(TracedSize, _method, _size_method(_method, False))


def _reads_first(method: str) -> Any:
    def read(self: "TracedShape", *args: Any) -> Any:
        self.on_read()
        return getattr(tuple, method)(self, *args)
    read.__name__ = method
    return read


class TracedShape(tuple):
    """A tensor argument's shape while tracing. Its first size is the graph's node or edge count
    for a per-node or per-edge tensor, or a parameter's type count: a trace that reads it
    depends on it, and the compiled function keys its programs on it (``on_read`` records that)."""

    def __new__(cls, shape: tuple[int, ...], on_read: Any, size: "TracedSize | None" = None) -> "TracedShape":
        obj = super().__new__(cls, shape)
        obj.on_read = on_read
        obj.size = size  # the first size, read as a TracedSize
        return obj

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            if 0 in range(*key.indices(len(self))):
                self.on_read()
        elif key in (0, -len(self)) and self.size is not None:
            return self.size
        return tuple.__getitem__(self, key)

    __hash__ = tuple.__hash__


for _name in ("__iter__", "__reversed__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
              "__contains__", "__add__", "__radd__", "__mul__", "__rmul__", "__repr__", "__str__",
              "count", "index"):
    if hasattr(tuple, _name):
        setattr(TracedShape, _name, _reads_first(_name))


class InputProxy:
    """A tensor argument while tracing. ``shape`` is the whole tensor's shape."""

    def __init__(self, tracer: "Tracer", name: str, position: int, tensor: torch.Tensor):
        self.tracer, self.name, self.position = tracer, name, position
        on_read = lambda: tracer.sizes_read.add(name)  # noqa: E731
        first = (TracedSize(tracer, f"{name}.shape[0]", tensor.shape[0], lambda: self.domain, on_read)
                 if tensor.dim() else None)
        self.shape = TracedShape(tuple(tensor.shape), on_read, first)
        self.torch_dtype = tensor.dtype
        self.dtype = str(tensor.dtype).replace("torch.", "")
        self.domain: Domain | None = None
        self.first_use = ""
        self._handle: int | None = None

    def declare(self, domain: Domain, use: str) -> int:
        """Fix this input's domain at its first use; a conflicting later use is an error."""
        if self.domain is None:
            if domain != Domain.GLOBAL and not self.shape:
                raise TraceError(f"{use} treats {self.name} as one row per element, but it is a scalar tensor")
            whole = tuple(tuple.__iter__(self.shape))  # as declared, not a read of the sizes
            feature_shape = whole if domain == Domain.GLOBAL else whole[1:]
            try:
                vtype = ValueType(domain, feature_shape, self.dtype)
            except ValueError as err:
                raise TraceError(f"{self.name}: {err}") from None
            self.domain, self.first_use = domain, use
            self._handle = self.tracer.builder.input(self.name, vtype, self.position, self.tracer.loc())
        elif self.domain != domain:
            raise TraceError(f"{use} uses {self.name} as a {domain.value} value, but {self.first_use} "
                             f"already made it a {self.domain.value} value")
        assert self._handle is not None
        return self._handle

    def sym(self, domain: Domain | None = None, use: str = "") -> Sym:
        """This input as a value: of ``domain``, or of its declared domain (global if none yet)."""
        domain = domain or self.domain or Domain.GLOBAL
        return Sym(self.tracer, self.declare(domain, use or f"{self.name} (used as a whole)"))

    def __getitem__(self, key: Any) -> Any:
        tracer = self.tracer
        if isinstance(key, EndProxy):
            node_value = self.sym(Domain.NODE, f"{self.name}[{key.text}]")
            return tracer.op(Op.GATHER, [node_value], {"index": key.index, "to": key.row_domain},
                             hint=f"{self.name}_{key.end}")
        if isinstance(key, NodeProxy):
            node_value = self.sym(Domain.NODE, f"{self.name}[n]")
            if key.domain == Domain.DST:
                return tracer.op(Op.GATHER, [node_value], {"index": "to_dst", "to": Domain.DST},
                                 hint=f"{self.name}_dst")
            return node_value
        if isinstance(key, EdgeProxy):
            return self.sym(Domain.EDGE, f"{self.name}[e]")
        if isinstance(key, (slice, tuple)) or key is Ellipsis:  # a slice of a whole (global) tensor
            return self.sym()[key]
        if isinstance(key, Selector):
            from pigeon.ir.indices import param_domain_of
            self.declare(param_domain_of(key.index), f"{self.name}[{key.text}]")
            return ParamRef(self, key)
        if isinstance(key, IdsRef):
            return key.read_at(tracer.row_lookup(self, key))
        raise TraceError(f"index {self.name} with e.src, e.dst, e, n, e.etype, e.src.ntype, n.ntype or the ids "
                         f"of an integer argument (t[e], t[n]); got {type(key).__name__}")

    def reshape(self, *shape: Any) -> Sym:
        return self.sym().reshape(*shape)

    def size(self, dim: int | None = None) -> Any:
        """``tensor.size()`` while tracing (see ``shape``)."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.sym(), name)

    def __repr__(self) -> str:
        return f"<input {self.name} {list(tuple.__iter__(self.shape))}>"


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__neg__", "__pow__", "__rpow__", "__abs__", "__bool__", "__iter__",
              "__float__", "__int__", "__index__") + _COMPARISONS:
    setattr(InputProxy, _name, (lambda n: lambda self, *a: getattr(self.sym(), n)(*a))(_name))
InputProxy.__hash__ = object.__hash__  # type: ignore[method-assign]


class IdsProxy:
    """An integer tensor argument while tracing: ids per edge or node, read as ``t[e]``,
    ``t[n]``, ``t[e.src]``, ``t[e.dst]`` to pick rows of a table (``emb[t[e]]``)."""

    def __init__(self, name: str, tensor: torch.Tensor):
        self.name, self.shape = name, tuple(tensor.shape)
        self.dtype = str(tensor.dtype).replace("torch.", "")

    def __getitem__(self, key: Any) -> "IdsRef":
        if isinstance(key, EdgeProxy):
            return IdsRef(self, Domain.EDGE, None, f"{self.name}[e]")
        if isinstance(key, NodeProxy):
            return IdsRef(self, Domain.NODE, "to_dst" if key.domain == Domain.DST else None, f"{self.name}[n]")
        if isinstance(key, EndProxy):
            return IdsRef(self, Domain.NODE, key.index, f"{self.name}[{key.text}]", key.row_domain)
        raise TraceError(f"index the integer argument {self.name} with e, n, e.src or e.dst; got {type(key).__name__}")

    def _not_a_value(self, *args: Any) -> Any:
        raise TraceError(f"{self.name} ({self.dtype}) is not floating point: an integer tensor only picks rows "
                         f"of a table, as emb[{self.name}[e]]; pass values to compute with as a floating tensor")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _not_a_value
    __neg__ = __bool__ = __float__ = __index__ = __iter__ = _not_a_value


class IdsRef:
    """``t[e]`` (or ``t[n]``, ``t[e.src]``): the id of each element, for ``table[t[e]]``."""

    def __init__(self, proxy: IdsProxy, domain: Domain, gather: str | None, text: str,
                 to: Domain | None = None):
        self.proxy, self.domain, self.gather, self.text = proxy, domain, gather, text
        self.to = to or (Domain.DST if gather == "to_dst" else domain)

    def read_at(self, rows: Sym) -> Sym:
        """The looked-up rows (one per id's element) moved to the element that reads them."""
        if self.gather is None:
            return rows
        return rows.tracer.op(Op.GATHER, [rows], {"index": self.gather, "to": self.to}, hint=f"{self.proxy.name}_rows")

    def _not_a_value(self, *args: Any) -> Any:
        raise TraceError(f"{self.text} is an id of {self.proxy.name} ({self.proxy.dtype}), not floating point: it "
                         f"only picks a row of a table, as emb[{self.text}]")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _not_a_value
    __neg__ = __bool__ = __float__ = __index__ = __iter__ = _not_a_value


# ----------------------------------------------------------------------------------------
# the graph and its loop variables


class GraphProxy:
    """The graph argument while tracing: ``g.edges()``, ``g.nodes()``, ``g.dst_nodes()``."""

    def __init__(self, tracer: "Tracer"):
        self._tracer = tracer

    def edges(self) -> Iterator["EdgeProxy"]:
        """Every edge (one symbolic edge while tracing)."""
        return self._tracer.graph_loop("g.edges()", lambda: EdgeProxy(self._tracer))

    def nodes(self) -> Iterator["NodeProxy"]:
        """Every node (one symbolic node while tracing)."""
        return self._tracer.graph_loop("g.nodes()", lambda: NodeProxy(self._tracer, Domain.NODE))

    def dst_nodes(self) -> Iterator["NodeProxy"]:
        """The destination nodes: all nodes of a graph, the output nodes of a sampled block."""
        return self._tracer.graph_loop("g.dst_nodes()", lambda: NodeProxy(self._tracer, Domain.DST))

    def dst_relations(self) -> Iterator["RelationProxy"]:
        """Every (destination node, edge type) pair with at least one edge: a relation of a
        destination (one symbolic pair while tracing)."""
        return self._tracer.graph_loop("g.dst_relations()", lambda: RelationProxy(self._tracer))

    def _size(self, name: str, domain: Domain) -> TracedSize:
        return TracedSize(self._tracer, f"g.{name}", None, domain)

    @property
    def num_nodes(self) -> TracedSize:
        """The number of nodes, read from the graph at every call."""
        return self._size("num_nodes", Domain.NODE)

    @property
    def num_dst_nodes(self) -> TracedSize:
        return self._size("num_dst_nodes", Domain.DST)

    @property
    def num_edges(self) -> TracedSize:
        return self._size("num_edges", Domain.EDGE)

    @property
    def num_etypes(self) -> TracedSize:
        return self._size("num_etypes", Domain.ETYPE)

    @property
    def num_ntypes(self) -> TracedSize:
        return self._size("num_ntypes", Domain.NTYPE)

    @property
    def num_graphs(self) -> TracedSize:
        return self._size("num_graphs", Domain.GRAPH)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise TraceError(f"g.{name} is not available while tracing; a compiled function may use "
                         f"g.edges(), g.nodes(), g.dst_nodes() and g.dst_relations()")


class EdgeProxy:
    """The loop variable of ``for e in g.edges()``: ``e.src``, ``e.dst``, ``e.etype``, edge values."""

    _RESERVED = ("src", "dst", "etype", "dst_degree", "dst_etype_degree", "src_degree", "src_etype_degree")

    def __init__(self, tracer: "Tracer"):
        object.__setattr__(self, "_tracer", tracer)

    def __getattr__(self, name: str) -> Any:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        if name in ("src", "dst"):
            return EndProxy(tracer, name)
        if name == "etype":
            return Selector("etype", Domain.EDGE, "e.etype")
        if name in ("dst_degree", "dst_etype_degree", "src_degree", "src_etype_degree"):
            return tracer.degree(name[: -len("_degree")])
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in tracer.edge_values:
            known = ", ".join(sorted(tracer.edge_values)) or "none yet"
            raise TraceError(f"edge value e.{name} was never set (set so far: {known})")
        return tracer.edge_values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        if name in self._RESERVED:
            raise TraceError(f"e.{name} is read-only")
        tracer.edge_values[name] = tracer.store(value, Domain.EDGE, name, f"e.{name}")


class EndProxy(_Ids):
    """``e.src`` or ``e.dst``: node values of an edge's end, gathered onto the edge; compared
    (``e.src == e.dst``), its node id."""

    def __init__(self, tracer: "Tracer", end: str, loop: str = "e", index: str | None = None,
                 row_domain: Domain = Domain.EDGE):
        object.__setattr__(self, "_tracer", tracer)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "text", f"{loop}.{end}")
        object.__setattr__(self, "index", index or end)
        object.__setattr__(self, "row_domain", row_domain)

    def __getattr__(self, name: str) -> Any:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        end, text = object.__getattribute__(self, "end"), object.__getattribute__(self, "text")
        row_domain = object.__getattribute__(self, "row_domain")
        if name == "ntype":
            return Selector(f"{end}_ntype", row_domain, f"{text}.ntype")
        if name.startswith("__"):
            raise AttributeError(name)
        value = tracer.node_value(name, f"{text}.{name}")
        if end == "src" and value.domain == Domain.DST:
            raise TraceError(f"node value {name} is set in a g.dst_nodes() loop, so only "
                             f"destination nodes have it; set it in a g.nodes() loop to read e.src.{name}")
        return tracer.op(Op.GATHER, [value], {"index": object.__getattribute__(self, "index"), "to": row_domain},
                         hint=f"{name}_{end}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise TraceError(f"{object.__getattribute__(self, 'text')}.{name} cannot be set from this loop; "
                         f"set node values as n.{name} in a g.nodes() or g.dst_nodes() loop")


class NodeProxy:
    """The loop variable of ``for n in g.nodes()`` (or ``g.dst_nodes()``): ``n.ntype``, node values."""

    def __init__(self, tracer: "Tracer", domain: Domain):
        object.__setattr__(self, "_tracer", tracer)
        object.__setattr__(self, "domain", domain)

    def incoming_edges(self) -> Iterator[EdgeProxy]:
        """The incoming edges of this node; aggregate their values with sum/mean/max."""
        if object.__getattribute__(self, "domain") != Domain.DST:
            raise TraceError("n.incoming_edges() needs a destination node: loop over g.dst_nodes()")
        return self._edges("incoming")

    def outgoing_edges(self) -> Iterator[EdgeProxy]:
        """The outgoing edges of this node; aggregate their values with sum or mean."""
        if object.__getattribute__(self, "domain") != Domain.NODE:
            raise TraceError("n.outgoing_edges() needs a node of the whole graph: loop over g.nodes()")
        return self._edges("outgoing")

    def relations(self) -> Iterator["RelationProxy"]:
        """This destination's relations (its (node, edge type) pairs with edges, as set in a
        g.dst_relations() loop); aggregate their values with sum/mean/max/min."""
        if object.__getattribute__(self, "domain") != Domain.DST:
            raise TraceError("n.relations() needs a destination node: loop over g.dst_nodes()")
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        return _aggregated(tracer, "relations", "n.relations()", "r", lambda: RelationProxy(tracer))

    def _edges(self, direction: str) -> Iterator[EdgeProxy]:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        return _aggregated(tracer, direction, f"n.{direction}_edges()", "e", lambda: EdgeProxy(tracer))

    def __getattr__(self, name: str) -> Any:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        domain = object.__getattribute__(self, "domain")
        if name in ("ntype", "graph"):
            return Selector(name, domain, f"n.{name}")
        if name.startswith("__"):
            raise AttributeError(name)
        value = tracer.node_value(name, f"n.{name}")
        if value.domain == domain:
            return value
        if value.domain == Domain.NODE:  # every node's value, read at a destination node
            return tracer.op(Op.GATHER, [value], {"index": "to_dst", "to": Domain.DST}, hint=f"{name}_dst")
        raise TraceError(f"node value {name} is set in a g.dst_nodes() loop, so only destination "
                         f"nodes have it; set it in a g.nodes() loop to read it here")

    def __setattr__(self, name: str, value: Any) -> None:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        if name in ("ntype", "graph"):
            raise TraceError(f"n.{name} is read-only")
        domain = object.__getattribute__(self, "domain")
        tracer.node_values[name] = tracer.store(value, domain, name, f"n.{name}")


def _aggregated(tracer: "Tracer", direction: str, what: str, var: str, make: Any) -> Iterator[Any]:
    """The one symbolic element of ``what``, which only an aggregation may loop over."""
    if not tracer.aggregations:
        raise TraceError(f"{what} is traced once, for one symbolic element, so it can only be "
                         f"aggregated: write sum(<value> for {var} in {what}) with sum, mean, max or "
                         f"min from pigeon.lang (not a for loop that accumulates, nor Python's own sum "
                         f"or max, nor a list comprehension)")
    seen = tracer.aggregations[-1]
    seen[0] += 1
    seen[1] = direction
    yield make()


class RelationProxy:
    """The loop variable of ``for r in g.dst_relations()`` (or of an aggregation over
    ``n.relations()``): one (destination node, edge type) pair with edges. ``r.etype``,
    ``r.dst`` (its node: ``r.dst.h``, ``h[r.dst]``, ``r.dst.ntype``), ``r.incoming_edges()`` (the
    pair's edges) and pair values ``r.name``."""

    _RESERVED = ("etype", "dst", "incoming_edges")

    def __init__(self, tracer: "Tracer"):
        object.__setattr__(self, "_tracer", tracer)

    def incoming_edges(self) -> Iterator[EdgeProxy]:
        """The edges of this pair: the destination's incoming edges of this edge type."""
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        return _aggregated(tracer, "relation", "r.incoming_edges()", "e", lambda: EdgeProxy(tracer))

    def __getattr__(self, name: str) -> Any:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        if name == "etype":
            return Selector("etype", Domain.COMPACT_DST, "r.etype")
        if name == "dst":
            return EndProxy(tracer, "dst", "r", "compact_dst_node", Domain.COMPACT_DST)
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in tracer.pair_values:
            known = ", ".join(sorted(tracer.pair_values)) or "none yet"
            raise TraceError(f"relation value r.{name} was never set in a g.dst_relations() loop (set so far: {known})")
        return tracer.pair_values[name]

    def __setattr__(self, name: str, value: Any) -> None:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        if name in self._RESERVED:
            raise TraceError(f"r.{name} is read-only")
        if tracer.open_loop != "g.dst_relations()":
            raise TraceError(f"r.{name} can only be set in a g.dst_relations() loop")
        tracer.pair_values[name] = tracer.store(value, Domain.COMPACT_DST, name, f"r.{name}")

    def __repr__(self) -> str:
        return "r"


# ----------------------------------------------------------------------------------------
# the tracer


class Tracer:
    """Records the ops of one trace into a Builder."""

    def __init__(self, name: str):
        self.builder = Builder(name)
        self.edge_values: dict[str, Sym] = {}
        self.node_values: dict[str, Sym] = {}
        self.pair_values: dict[str, Sym] = {}  # values of (destination, edge type) pairs
        self._extra_handles: dict[str, int] = {}  # row lookups already made, by input name
        self._degrees: dict[str, Sym] = {}
        self._dtype: str | None = None
        self.sizes_read: set[str] = set()  # tensor arguments whose first size the trace read
        self.open_loop: str | None = None  # the graph loop being traced
        self.early_exits: list[tuple[str, int, str]] = []  # graph loops left by break or return
        self.aggregations: list[list[Any]] = []  # open sum/mean/max calls: [loops seen, direction]
        self.extras: list[DropoutMask | RowLookup] = []  # inputs made at every call, after the function's own
        self.num_inputs = 0  # the tensor arguments' inputs (dropout masks are numbered after them)

    def graph_loop(self, what: str, make: Any) -> Iterator[Any]:
        """The one symbolic element of a loop over the graph (``what``: "g.edges()", ...)."""
        if self.aggregations and self.open_loop is not None:
            raise TraceError(f"a sum or mean over {what} inside the loop over {self.open_loop}: a graph-wide "
                             f"reduction (a readout) is taken outside the graph loops, and its result "
                             f"used inside them")
        if self.aggregations:  # a readout: sum or mean over every node or edge
            seen = self.aggregations[-1]
            seen[0] += 1
            loop_domains = {"g.edges()": Domain.EDGE, "g.dst_relations()": Domain.COMPACT_DST}
            seen[1] = ("all", loop_domains.get(what) or make().domain)
        if self.open_loop is not None:
            raise TraceError(f"a loop over {what} inside the loop over {self.open_loop}: nested graph "
                             f"loops are not supported (a loop body is traced once, for one element); "
                             f"loop over the graph in sequence and aggregate with "
                             f"sum(... for e in n.incoming_edges())")
        path, line, _ = user_location()
        self.open_loop = what
        finished = False
        try:
            yield make()
            finished = True
        finally:
            self.open_loop = None
            if not finished:
                self.early_exits.append((path, line, what))

    @contextlib.contextmanager
    def aggregating(self) -> Iterator[list[Any]]:
        """Inside sum/mean/max: counts the loops over a node's edges its items come from, and
        their direction ("incoming" or "outgoing")."""
        seen: list[Any] = [0, None]
        self.aggregations.append(seen)
        try:
            yield seen
        finally:
            self.aggregations.pop()

    @contextlib.contextmanager
    def active(self) -> Iterator["Tracer"]:
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.pop()

    @staticmethod
    def loc() -> str:
        path, line, _ = user_location()
        return f"{os.path.basename(path)}:{line}"

    def op(self, op: Op, args: list[Any], attrs: dict[str, Any] | None = None, hint: str = "") -> Sym:
        """Record ``op`` on symbolic arguments; shape errors point at the user's line."""
        handles = [self.as_sym(a).handle for a in args]
        try:
            handle = self.builder.add(op, handles, attrs, hint=hint, loc=self.loc())
        except ShapeError as err:
            raise TraceError(str(err)) from None
        return Sym(self, handle)

    def as_sym(self, x: Any) -> Sym:
        """A Sym for any traced operand (parameters broadcast where they are combined)."""
        if isinstance(x, Sym):
            if x.tracer is not self:
                raise TraceError("a traced value from another trace was used here")
            return x
        if isinstance(x, ParamRef):
            return x.value()
        if isinstance(x, InputProxy):
            return x.sym()
        if isinstance(x, TracedSize):
            return x.sym()
        if isinstance(x, torch.Tensor):
            raise TraceError("a concrete tensor cannot be mixed into a traced program; "
                             "pass it as an argument of the compiled function")
        if isinstance(x, (IdsRef, IdsProxy)):
            x._not_a_value()
        if isinstance(x, (EdgeProxy, EndProxy, NodeProxy, RelationProxy, Selector)):
            raise TraceError(f"{x!r} is a loop variable, not a value; index a tensor with it")
        raise TraceError(f"cannot use a {type(x).__name__} as a traced value")

    def broadcast(self, x: Sym, domain: Domain) -> Sym:
        """``x`` in ``domain``: global values are broadcast to rows; other domains must match."""
        if x.domain == domain:
            return x
        if x.domain == Domain.GLOBAL:
            return self.op(Op.GATHER, [x], {"index": "all", "to": domain})
        if x.domain == Domain.NODE and domain == Domain.DST:
            return self.op(Op.GATHER, [x], {"index": "to_dst", "to": Domain.DST})
        raise TraceError(f"a {x.domain.value} value cannot be combined with a {domain.value} value"
                         + ("; aggregate edge values with sum/mean/max over n.incoming_edges()"
                            if x.domain == Domain.EDGE else ""))

    def dropout_mask(self, x: Sym, p: float) -> Sym:
        """An input of ``x``'s domain and shape holding dropout's scaled mask (drawn per call)."""
        count = sum(isinstance(extra, DropoutMask) for extra in self.extras)
        return self.extra_input(DropoutMask(f"dropout_mask_{count}", p, x.domain, x.shape), x.shape)

    def row_lookup(self, table: "InputProxy", ids: "IdsRef") -> Sym:
        """``table[ids[...]]`` as an input of the ids' domain: the rows picked at every call."""
        if len(table.shape) < 1:
            raise TraceError(f"{table.name}[{ids.text}] picks rows of {table.name}, a scalar tensor")
        name = f"{table.name}_at_{ids.proxy.name}"
        for extra in self.extras:
            if isinstance(extra, RowLookup) and extra.name == name and extra.domain == ids.domain:
                return Sym(self, self._extra_handles[name])
        if table.torch_dtype.is_floating_point is False:
            raise TraceError(f"{table.name}[{ids.text}]: the table {table.name} must be a floating tensor")
        lookup = RowLookup(name, table.name, ids.proxy.name, ids.domain)
        sym = self.extra_input(lookup, tuple(table.shape[1:]))
        self._extra_handles[name] = sym.handle
        return sym

    def extra_input(self, extra: "DropoutMask | RowLookup", shape: tuple[int, ...]) -> Sym:
        self.extras.append(extra)
        vtype = ValueType(extra.domain, shape, self.dtype)
        position = self.num_inputs + len(self.extras) - 1  # after the function's own inputs
        return Sym(self, self.builder.input(extra.name, vtype, position, self.loc()))

    def constant(self, value: float) -> Sym:
        """A number as a global traced value."""
        return self.op(Op.CONST, [], {"value": float(value), "dtype": self.dtype}, hint="const")

    def binary(self, op: Op, a: Any, b: Any) -> Sym:
        if _is_number(a) and _is_number(b):
            raise TraceError("internal: binary op on two numbers")
        if op in COMPARISONS:
            a, b = (self.constant(v) if _is_number(v) else v for v in (a, b))
        if _is_number(b):
            return self._scalar(op, self.as_sym(a), float(b))
        if _is_number(a):
            x = self.as_sym(b)
            c = float(a)
            if op == Op.ADD:
                return self.op(Op.SHIFT, [x], {"c": c})
            if op == Op.MUL:
                return self.op(Op.SCALE, [x], {"c": c})
            if op == Op.SUB:
                return self.op(Op.SHIFT, [self.op(Op.NEG, [x])], {"c": c})
            recip = self.op(Op.RECIP, [x])
            return recip if c == 1.0 else self.op(Op.SCALE, [recip], {"c": c})
        x, y = self.as_sym(a), self.as_sym(b)
        domain = joint_domain(x.domain, y.domain)
        return self.op(op, [self.broadcast(x, domain), self.broadcast(y, domain)])

    def _scalar(self, op: Op, x: Sym, c: float) -> Sym:
        if op == Op.ADD:
            return self.op(Op.SHIFT, [x], {"c": c})
        if op == Op.SUB:
            return self.op(Op.SHIFT, [x], {"c": -c})
        if op == Op.MUL:
            return self.op(Op.SCALE, [x], {"c": c})
        if c == 0.0:
            raise TraceError("division by the constant 0")
        return self.op(Op.SCALE, [x], {"c": 1.0 / c})

    def degree(self, by: str) -> Sym:
        if by not in self._degrees:
            self._degrees[by] = self.op(Op.DEGREE, [], {"by": by, "dtype": self.dtype}, hint=f"{by}_degree")
        return self._degrees[by]

    @property
    def dtype(self) -> str:
        return self._dtype or "float32"

    def node_value(self, name: str, use: str) -> Sym:
        if name not in self.node_values:
            known = ", ".join(sorted(self.node_values)) or "none yet"
            raise TraceError(f"node value {use} was never set (set so far: {known})")
        return self.node_values[name]

    def store(self, value: Any, domain: Domain, name: str, use: str) -> Sym:
        """``value`` as a ``domain`` value named ``name`` (for e.score = ..., n.out = ...)."""
        if _is_number(value):
            raise TraceError(f"{use} = a number: make it a tensor argument instead")
        sym = self.as_sym(value)
        if sym.domain == Domain.EDGE and domain != Domain.EDGE:
            over = "r.incoming_edges()" if domain == Domain.COMPACT_DST else "n.incoming_edges()"
            raise TraceError(f"{use} is not an edge value but an edge value was given; aggregate it with "
                             f"sum/mean/max(... for e in {over})")
        if sym.domain == Domain.COMPACT_DST and domain != Domain.COMPACT_DST:
            raise TraceError(f"{use} is a node value but a relation value was given; aggregate it with "
                             f"sum/mean/max(... for r in n.relations())")
        sym = self.broadcast(sym, domain)
        self.builder.name_value(sym.handle, name)
        return sym


@dataclasses.dataclass(frozen=True)
class RowLookup:
    """``table[ids[...]]``: the program input ``name`` takes, at every call, the rows of the
    argument ``table`` that the integer argument ``ids`` picks, one per row of ``domain``. Torch
    picks them (index_select), so the table's gradient flows through torch's autograd."""

    name: str
    table: str
    ids: str
    domain: Domain

    def make(self, g: Any, params: dict[str, torch.Tensor]) -> torch.Tensor:
        from pigeon.runtime import layouts
        table, ids = params[self.table], params[self.ids]
        rows = layouts.num_rows(g, self.domain)
        if ids.dim() == 2 and ids.shape[1] == 1:
            ids = ids.reshape(-1)
        if ids.shape != (rows,):
            raise ValueError(f"{self.ids} has shape {list(params[self.ids].shape)}; expected [{rows}], one id per "
                             f"{'edge' if self.domain == Domain.EDGE else 'node'}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
            raise ValueError(f"{self.ids} holds ids from {int(ids.min())} to {int(ids.max())}; {self.table} has "
                             f"{table.shape[0]} rows")
        return table.index_select(0, ids.to(device=table.device, dtype=torch.long))


@dataclasses.dataclass(frozen=True)
class DropoutMask:
    """A dropout of a traced value: the program input ``name`` takes, at every call, a mask of
    the value's rows and shape drawn as torch.nn.functional.dropout draws it."""

    name: str
    p: float
    domain: Domain
    shape: tuple[int, ...]

    def draw(self, rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Bernoulli(1 - p) scaled by 1 / (1 - p), from torch's generator, as F.dropout does."""
        shape = ((rows,) if self.domain != Domain.GLOBAL else ()) + self.shape
        if self.p == 1.0:
            return torch.zeros(shape, dtype=dtype, device=device)
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - self.p).div_(1.0 - self.p)

    def make(self, g: Any, params: dict[str, torch.Tensor]) -> torch.Tensor:
        from pigeon.runtime import layouts
        like = next(iter(params.values()))
        return self.draw(layouts.num_rows(g, self.domain), like.dtype, like.device)


def joint_domain(a: Domain, b: Domain) -> Domain:
    if a == b:
        return a
    if a == Domain.GLOBAL:
        return b
    if b == Domain.GLOBAL:
        return a
    if {a, b} == {Domain.NODE, Domain.DST}:
        return Domain.DST
    raise TraceError(f"a {a.value} value cannot be combined with a {b.value} value"
                     + ("; aggregate edge values with sum/mean/max over n.incoming_edges()"
                        if Domain.EDGE in (a, b) else ""))


def tensor_items(value: Any) -> list[tuple[str, Any, torch.Tensor]] | None:
    """The tensors of a list, tuple or dict of tensors (or a ParameterList / ParameterDict) as
    (name suffix, key, tensor), or None for any other value. Each becomes an input of its own."""
    if isinstance(value, torch.nn.ParameterList):
        value = list(value)
    elif isinstance(value, torch.nn.ParameterDict):
        value = dict(value.items())
    if isinstance(value, (list, tuple)):
        keyed = list(enumerate(value))
    elif isinstance(value, dict):
        keyed = list(value.items())
    else:
        return None
    if not keyed or not all(isinstance(v, torch.Tensor) for _, v in keyed):
        return None
    out, taken = [], set()
    for i, (key, tensor) in enumerate(keyed):
        suffix = re.sub(r"\W", "_", str(key))
        if suffix in taken:
            suffix = f"{suffix}_{i}"
        taken.add(suffix)
        out.append((suffix, key, tensor))
    return out


def flat_tensors(params: list[tuple[str, Any]]) -> dict[str, torch.Tensor]:
    """Every tensor of the arguments by its input name (``W_0``, ``W_user``: items of a list or dict)."""
    flat = {}
    for pname, value in params:
        if isinstance(value, torch.Tensor):
            flat[pname] = value
        else:
            for suffix, _, tensor in tensor_items(value) or ():
                flat[f"{pname}_{suffix}"] = tensor
    return flat


def trace(fn: Any, name: str, params: list[tuple[str, Any]], sizes_read: set[str] | None = None,
          extras: list[DropoutMask | RowLookup] | None = None) -> Program:
    """Trace ``fn(g, *values)``; ``params`` are the (name, value) pairs after the graph.

    ``sizes_read`` collects the tensor arguments whose first size the trace read (the program
    holds that number as a constant); ``extras`` the inputs the program takes that are made at
    every call (dropout masks, rows picked by integer ids)."""
    tracer = Tracer(name)
    proxies: list[Any] = []
    inputs: list[InputProxy] = []
    names = {pname for pname, _ in params}
    for pname, value in params:
        if isinstance(value, torch.Tensor) and not value.is_floating_point() and not value.is_complex() \
                and value.dtype != torch.bool:
            proxies.append(IdsProxy(pname, value))  # ids: rows of tables are picked with them
            continue
        if isinstance(value, torch.Tensor):
            proxy = InputProxy(tracer, pname, len(inputs), value)
            inputs.append(proxy)
            proxies.append(proxy)
            continue
        items = tensor_items(value)
        if items is None:
            proxies.append(value)
            continue
        container: dict[Any, InputProxy] = {}
        for suffix, key, tensor in items:
            if f"{pname}_{suffix}" in names:
                raise TraceError(f"{name}: argument {pname}_{suffix} clashes with item {key!r} of {pname}; rename one")
            proxy = InputProxy(tracer, f"{pname}_{suffix}", len(inputs), tensor)
            inputs.append(proxy)
            container[key] = proxy
        proxies.append(container if isinstance(value, (dict, torch.nn.ParameterDict)) else list(container.values()))
    floats: dict[torch.dtype, list[str]] = {}
    for proxy in inputs:
        if proxy.torch_dtype.is_floating_point:
            floats.setdefault(proxy.torch_dtype, []).append(proxy.name)
    if len(floats) > 1:
        mix = "; ".join(f"{str(d).replace('torch.', '')}: {', '.join(n)}" for d, n in floats.items())
        raise TraceError(f"{name}: tensor arguments mix dtypes ({mix}); use one floating dtype for all of them")
    bad = [f"{p.name} ({p.dtype})" for p in inputs if not p.dtype.startswith(("float", "bfloat"))]
    if bad:
        raise TraceError(f"{name}: tensor arguments {', '.join(bad)} are not floating point")
    if floats:
        tracer._dtype = str(next(iter(floats))).replace("torch.", "")
    tracer.num_inputs = len(inputs)
    with tracer.active():
        try:
            result = fn(GraphProxy(tracer), *proxies)
        except TypeError as err:  # torch wants an int where a graph size was given
            if "TracedSize" not in str(err):
                raise
            frames = traceback.extract_tb(err.__traceback__)
            user = [f for f in frames if f.filename == getattr(getattr(fn, "__code__", None), "co_filename", None)]
            frame = (user or frames)[-1]
            raise TraceError(f"a size of the graph is not a Python number while tracing ({err}): use it in "
                             f"arithmetic with traced values (it is read from the graph at every call), or pass "
                             f"the number as an argument of the compiled function",
                             at=(frame.filename, frame.lineno)) from None
        outputs = list(result) if isinstance(result, (tuple, list)) else [result]
        if not outputs:
            raise TraceError(f"{name} returns nothing; return the values it computes")
        if tracer.early_exits:
            path, line, what = tracer.early_exits[0]
            raise TraceError(f"the loop over {what} was left early (break or return inside it): a loop "
                             f"body is traced once, for one element, and stands for every element; "
                             f"finish the loop and return after it", at=(path, line))
        syms = [tracer.as_sym(o) for o in outputs]
        for proxy in inputs:  # an unused tensor argument still belongs to the signature
            if proxy.domain is None:
                proxy.declare(Domain.GLOBAL, f"{proxy.name} (unused)")
    if sizes_read is not None:
        sizes_read |= tracer.sizes_read
    if extras is not None:
        extras.extend(tracer.extras)
    return tracer.builder.build([s.handle for s in syms])
