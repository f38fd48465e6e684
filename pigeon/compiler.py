"""``@pigeon.compile``: trace a DSL function once per input signature and run its program."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from typing import Any, Callable, Iterator

import torch

from pigeon.ir.program import Program
from pigeon.ir.types import Domain
from pigeon.runtime.executable import Executable
from pigeon.runtime.graph import Graph
from pigeon.runtime.layouts import graph_stats
from pigeon.runtime.tuning import CACHE, DEFAULT, Config, tuning_key

from .config import choose_backend, disabled_passes

from .tracer import flat_tensors, tensor_items, trace

ExampleInputs = Callable[[Graph], tuple]
_RECORDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("pigeon_recording", default=None)


@contextlib.contextmanager
def recording_calls() -> Iterator[list[tuple[CompiledFunction, Graph, tuple, dict]]]:
    """Collect the (function, graph, args, kwargs) of every compiled call inside the block."""
    calls: list = []
    token = _RECORDING.set(calls)
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


def _freeze(value: Any, name: str) -> Any:
    """A hashable stand-in for non-tensor argument ``name`` (part of the signature)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_freeze(v, name) for v in value)
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((k, _freeze(v, name)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        shape = getattr(value, "shape", None)
        what = type(value).__name__ + (f" of shape {list(shape)}" if shape is not None else "")
        hint = "; pass torch tensors (torch.from_numpy(x))" if type(value).__module__ == "numpy" else ""
        raise TypeError(f"argument {name} is a {what}: neither a tensor nor a hashable constant{hint}") from None
    return (type(value).__name__, value)


class CompiledFunction:
    """A DSL function compiled by ``@pigeon.compile``; call it as ``fn(g, *args)``.

    Tensor arguments are the program's inputs; other arguments (ints, strings, None, ...) are
    constants of the trace. One program is kept per signature: the feature shapes and dtypes of
    the tensors and the values of the constants. Graph sizes are not part of it, unless a trace
    read one (``h.shape[0]``, ``len(h)``): then that tensor's whole shape is.
    """

    def __init__(self, fn: Callable[..., Any], example_inputs: ExampleInputs | None = None,
                 backend: str | None = None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = fn.__name__
        self.example_inputs = example_inputs
        self.backend = backend
        self._signature = inspect.signature(fn)
        if not self._signature.parameters:
            raise TypeError(f"{self.name} must take the graph as its first argument")
        self._programs: dict[tuple, Program] = {}
        self._executables: dict[tuple, Executable] = {}
        self._domains: dict[str, Domain] = {}
        self._sizes_read: set[str] = set()  # tensor arguments whose first size a trace read
        self._extras: dict[int, list] = {}  # id(program) -> its inputs made at every call (dropout masks, row lookups)
        self.last_executable: Executable | None = None  # what the latest call ran

    def _bind(self, g: Any, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
        if not isinstance(g, Graph):
            raise TypeError(f"{self.name}: the first argument must be a pigeon.Graph, got {type(g).__name__}")
        bound = self._signature.bind(g, *args, **kwargs)
        bound.apply_defaults()
        return list(bound.arguments.items())[1:]

    def _tensor_key(self, name: str, value: torch.Tensor) -> tuple:
        if not value.is_floating_point() and value.dtype != torch.bool:  # ids: one per element, any count
            return ("ids", tuple(value.shape[1:]), value.dtype)
        has_rows = self._domains.get(name, Domain.GLOBAL) != Domain.GLOBAL
        whole = not has_rows or name in self._sizes_read
        return ("tensor", tuple(value.shape) if whole else tuple(value.shape[1:]), value.dtype)

    def _key(self, params: list[tuple[str, Any]]) -> tuple:
        key = []
        for name, value in params:
            items = None if isinstance(value, torch.Tensor) else tensor_items(value)
            if isinstance(value, torch.Tensor):
                key.append(self._tensor_key(name, value))
            elif items is not None:
                key.append(("tensors", type(value).__name__) + tuple(
                    (k, self._tensor_key(f"{name}_{suffix}", t)) for suffix, k, t in items))
            else:
                key.append(_freeze(value, name))
        return tuple(key)

    def program(self, g: Graph, *args: Any, **kwargs: Any) -> Program:
        """The level-1 program for these arguments (traced on first use of a signature)."""
        params = self._bind(g, args, kwargs)
        key = self._key(params)
        program = self._programs.get(key)
        if program is None:
            extras: list = []
            program = trace(self.fn, self.name, params, self._sizes_read, extras)
            self._extras[id(program)] = extras
            domains = {n.name: n.type.domain for n in program.inputs}
            if any(self._domains.get(k, d) != d for k, d in domains.items()):
                self._programs.clear()  # the inputs' domains changed: older keys mean other things
                self._executables.clear()
            self._domains.update(domains)
            self._programs[self._key(params)] = program
        return program

    def executable(self, g: Graph, *args: Any, config: Config | None = None, **kwargs: Any) -> Executable:
        """The optimised program for these arguments on graphs with the sizes of ``g``: with the
        tuned configuration from ``pigeon tune`` if there is one, else the defaults (``config``
        forces one)."""
        program = self.program(g, *args, **kwargs)
        stats = graph_stats(g)
        backend = choose_backend(g.device, self.backend)
        tuned = False
        if config is None:
            params = flat_tensors(self._bind(g, args, kwargs))
            wrt = tuple(n.name for n in program.inputs if isinstance(params.get(n.name), torch.Tensor)
                        and params[n.name].requires_grad) if torch.is_grad_enabled() else ()
            found = CACHE.lookup(tuning_key(program, g, program.inputs[0].type.dtype if program.inputs else "",
                                            "train" if wrt else "infer", backend, wrt))
            config, tuned = (found, True) if found is not None else (DEFAULT, False)
        config = config.merged(disabled_passes())
        key = (id(program), stats.bucket(), config, backend, tuned)
        exe = self._executables.get(key)
        if exe is None or exe.traced is not program:
            exe = self._executables[key] = Executable(program, stats, config, backend, tuned)
        return exe

    def __call__(self, g: Graph, *args: Any, **kwargs: Any) -> Any:
        calls = _RECORDING.get()
        if calls is not None:
            calls.append((self, g, args, kwargs))
        params = flat_tensors(self._bind(g, args, kwargs))
        exe = self.executable(g, *args, **kwargs)
        for extra in self._extras.get(id(exe.traced), ()):
            params[extra.name] = extra.make(g, params)
        self.last_executable = exe
        outputs = exe(g, [params[n.name] for n in exe.forward.inputs])
        return outputs[0] if isinstance(outputs, tuple) and len(outputs) == 1 else outputs

    def __repr__(self) -> str:
        return f"<pigeon.compile {self.name}: {len(self._programs)} traced signature(s)>"


def compile(fn: Callable[..., Any] | None = None, *, example_inputs: ExampleInputs | None = None,
            backend: str | None = None) -> Any:
    """Compile a loop-DSL function: ``@pigeon.compile`` or ``@pigeon.compile(example_inputs=f)``.

    ``example_inputs(g)`` returns arguments for graph ``g``; ``pigeon show`` uses it to trace.
    ``backend`` ("cuda" or "reference") overrides the choice by device (see ``pigeon.use_backend``).
    """
    if fn is None:
        return lambda f: CompiledFunction(f, example_inputs, backend)
    return CompiledFunction(fn, example_inputs, backend)
