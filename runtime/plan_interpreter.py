"""Runs level-2 kernel plans with torch ops, one kernel at a time, each seeing only the values
it reads: the check that fusion and materialisation are sound, and how the generated back ends
run a kernel that no template can express."""
from __future__ import annotations

import torch

from pigeon.ir.plans import KernelPlan, PlanProgram

from .graph import Graph
from .reference import check_inputs, execute


class PlanError(RuntimeError):
    """A kernel reads a value that no earlier kernel stored."""


def run_plans(plans: PlanProgram, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    from pigeon.ir.program import Program

    check_inputs(Program(plans.name, plans.inputs, ()), g, tensors)
    memory = {n.name: t for n, t in zip(plans.inputs, tensors)}
    for kernel in plans.kernels:
        run_kernel(kernel, g, memory)
    missing = [o for o in plans.outputs if o not in memory]
    if missing:
        raise PlanError(f"outputs {missing} are never stored")
    return tuple(memory[o] for o in plans.outputs)


def run_kernel(kernel: KernelPlan, g: Graph, memory: dict[str, torch.Tensor]) -> None:
    """Run one kernel plan with torch ops on the values in ``memory``; its writes join it."""
    missing = [r.name for r in kernel.reads if r.name not in memory]
    if missing:
        raise PlanError(f"{kernel.name} reads {missing}, which no earlier kernel stored")
    outs = execute(kernel.program(), g, *(memory[r.name] for r in kernel.reads))
    memory.update((name, out.contiguous()) for name, out in zip(kernel.writes, outs))
