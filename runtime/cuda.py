"""Running kernel plans as generated CUDA kernels on torch CUDA tensors (no copies), on torch's
current stream."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pigeon.codegen import render_module
from pigeon.ir.lower import lower
from pigeon.ir.plans import PlanProgram
from pigeon.ir.program import Program

from . import launcher
from .graph import Graph
from .kernel_cache import KERNELS
from .reference import check_inputs
from .tuning import DEFAULT, Config


def device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"compute_{major}{minor}"


class CudaProgram:
    """The kernels of one level-1 program, compiled for one device."""

    def __init__(self, program: Program, device: torch.device, config: Config = DEFAULT):
        self.program = program
        plans = lower(program, config.dst_reductions, config.horizontal)
        overrides = config.schedules_for(program.name, {k.name: k.schedule for k in plans.kernels})
        self.plans: PlanProgram = lower(program, config.dst_reductions, config.horizontal, overrides) if overrides else plans
        source, self.kernels = render_module(self.plans)
        self.module = KERNELS.module(source, device_arch(device), program.name, self.plans.format())
        self.functions = [self.module.get_function(k.name) for k in self.kernels]

    def __call__(self, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import cupy

        check_inputs(Program(self.plans.name, self.plans.inputs, ()), g, tensors)
        memory = {n.name: t.contiguous() for n, t in zip(self.plans.inputs, tensors)}
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(g.device).cuda_stream)
        with cupy.cuda.Device(g.device.index or 0):
            for kernel, function in zip(self.kernels, self.functions):
                launcher.allocate_outputs(kernel, g, memory)
                shape = launcher.grid(kernel, g)
                if shape is None:
                    continue
                args = [np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else np.int64(a)
                        for a in launcher.arguments(kernel, g, memory)]
                function(shape, (kernel.launch.block, 1, 1), args, stream=stream)
        return tuple(memory[o] for o in self.plans.outputs)


_PROGRAMS: dict[tuple[int, str, Config], tuple[Program, CudaProgram]] = {}


def cuda_program(program: Program, device: torch.device, config: Config = DEFAULT) -> CudaProgram:
    """The compiled kernels of ``program`` for ``device`` (compiled once per program and config)."""
    key = (id(program), str(device), config)
    hit = _PROGRAMS.get(key)
    if hit is None or hit[0] is not program:
        hit = _PROGRAMS[key] = (program, CudaProgram(program, device, config))
    return hit[1]


def run(program: Program, g: Graph, *tensors: Any, config: Config = DEFAULT) -> tuple[torch.Tensor, ...]:
    return cuda_program(program, g.device, config)(g, *tensors)
