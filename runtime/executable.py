"""An optimised program bound to graphs of one size bucket, and the autograd Function that runs
its forward and backward programs."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
from torch.autograd.function import once_differentiable

from pigeon.ir.cost import GraphStats
from pigeon.ir.ops import Op
from pigeon.ir.passes import Gradient, optimize, optimize_gradient
from pigeon.ir.passes.autodiff import NOT_DIFFERENTIABLE
from pigeon.ir.program import Program
from pigeon.ir.shape_inference import ShapeError

from .graph import Graph
from .reference import execute
from .tuning import DEFAULT, Config

BACKENDS = ("cpp", "reference", "cuda")


def runner(backend: str, config: Config = DEFAULT):
    """The function that runs a level-1 program on a graph for this back end."""
    if backend == "reference":
        return execute
    if backend == "cuda":
        from .cuda import run
        return functools.partial(run, config=config)
    if backend == "cpp":
        from .cpp import run
        return functools.partial(run, config=config)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


class Executable:
    """A traced program after the pass pipeline, for graphs with the sizes of ``stats``, with
    the choices of ``config`` (``tuned``: the config came from the tuning cache).

    Gradient programs are derived on demand, one per set of inputs that need a gradient.
    """

    def __init__(self, program: Program, stats: GraphStats, config: Config = DEFAULT,
                 backend: str = "reference", tuned: bool = False):
        self.traced = program
        self.stats = stats
        self.config = config
        self.backend = backend
        self.tuned = tuned
        self.run = runner(backend, config)
        self.forward = optimize(program, stats, config.disabled, config.keep_on_edges)
        self._gradients: dict[tuple[str, ...], Gradient] = {}

    def gradient(self, wrt: tuple[str, ...]) -> Gradient:
        if wrt not in self._gradients:
            self._gradients[wrt] = optimize_gradient(self.forward, wrt, self.stats, self.config.disabled,
                                                     self.config.keep_on_edges)
        return self._gradients[wrt]

    def gradient_for(self, wrt: tuple[str, ...], tensors: Sequence[torch.Tensor]) -> Gradient:
        """``gradient(wrt)``; where it cannot be derived and an argument has zero-width features,
        an error naming that argument."""
        try:
            return self.gradient(wrt)
        except ShapeError as err:
            empty = [(n.name, tuple(t.shape)) for n, t in zip(self.forward.inputs, tensors) if 0 in n.type.shape]
            if not empty:
                raise
            name, shape = empty[0]
            raise ValueError(f"{self.traced.name}: argument {name!r} has zero-width features (shape {list(shape)}); "
                             f"the gradient of this program cannot be built with it ({err})") from err

    def describe(self) -> str:
        return f"{self.backend} backend, {'tuned' if self.tuned else 'default'} configuration ({self.config.describe()})"

    def __call__(self, g: Graph, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Run on ``g``; differentiable in every input tensor that requires a gradient."""
        names = [n.name for n in self.forward.inputs]
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return self.run(self.forward, g, *tensors)
        # a tensor without elements (a 0-column input, say) has an empty gradient, and an input
        # that no output depends on differentiably a zero one: no backward program for them
        wrt = tuple(n for n, t in zip(names, tensors) if t.requires_grad and t.numel() and n in self.reaching)
        return _ProgramFunction.apply(self, g, wrt, *tensors)

    @functools.cached_property
    def reaching(self) -> frozenset[str]:
        """The inputs that some output depends on differentiably (not only through comparisons,
        step functions or a ``where``'s condition)."""
        seen: set[str] = set()
        stack = list(self.forward.outputs)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self.forward.node(name)
            if node.op not in NOT_DIFFERENTIABLE:
                stack += node.args[1:] if node.op == Op.SELECT else node.args
        return frozenset(n.name for n in self.forward.inputs if n.name in seen)


class _ProgramFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, exe: Executable, g: Graph, wrt: tuple[str, ...], *tensors: torch.Tensor) -> Any:
        names = [n.name for n in exe.forward.inputs]
        ctx.zero_grads = [(i, t.shape, t.dtype, t.device) for i, (name, t) in enumerate(zip(names, tensors))
                          if t.requires_grad and name not in wrt]
        ctx.num_inputs = len(tensors)
        if not wrt:
            ctx.grad = None
            outputs = exe.run(exe.forward, g, *tensors)
            return outputs if len(outputs) > 1 else outputs[0]
        grad = exe.gradient_for(wrt, tensors)
        outputs = exe.run(grad.forward, g, *tensors)
        ctx.grad, ctx.g, ctx.run = grad, g, exe.run
        ctx.positions = [[n.name for n in exe.forward.inputs].index(w) for w in grad.wrt]
        ctx.save_for_backward(*outputs[grad.num_outputs:])
        result = outputs[: grad.num_outputs]
        return result if len(result) > 1 else result[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> Any:
        result: list[torch.Tensor | None] = [None] * ctx.num_inputs
        for position, shape, dtype, device in ctx.zero_grads:
            result[position] = torch.zeros(shape, dtype=dtype, device=device)
        grad: Gradient | None = ctx.grad
        if grad is None:
            return (None, None, None, *result)
        residuals = ctx.saved_tensors
        outs = [grad.forward.node(o) for o in grad.forward.outputs[: grad.num_outputs]]
        upstream = [g if g is not None else torch.zeros(_shape_like(ctx.g, o), dtype=residuals[0].dtype
                                                          if residuals else torch.float32, device=ctx.g.device)
                    for g, o in zip(grad_outputs, outs)]
        grads = ctx.run(grad.backward, ctx.g, *residuals, *(u.contiguous() for u in upstream))
        for position, value in zip(ctx.positions, grads):
            result[position] = value
        return (None, None, None, *result)


def _shape_like(g: Graph, node: Any) -> tuple[int, ...]:
    from .reference import expected_shape
    return expected_shape(g, node.type)
