"""Running kernel plans as generated CUDA kernels on torch CUDA tensors (no copies), on torch's
current stream."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from pigeon.codegen import InterpretedKernel, render_module
from pigeon.codegen.gemm import tf32_allowed
from pigeon.ir.lower import lower
from pigeon.ir.plans import PlanProgram
from pigeon.ir.program import Program

from . import launcher
from .graph import Graph
from .kernel_cache import KERNELS
from .reference import check_inputs
from .tuning import DEFAULT, Config


@dataclass
class KernelTiming:
    """One launch of a generated kernel, timed with CUDA events (``ms`` once synchronised)."""

    kernel: Any  # the KernelSource (its plan: .plan)
    start: Any
    end: Any

    @property
    def ms(self) -> float:
        self.end.synchronize()
        return self.start.elapsed_time(self.end)


_TIMINGS: list[list[KernelTiming]] = []


@contextlib.contextmanager
def kernel_timer() -> Iterator[list[KernelTiming]]:
    """Every generated kernel launched inside the block, timed one by one with CUDA events."""
    timings: list[KernelTiming] = []
    _TIMINGS.append(timings)
    try:
        yield timings
    finally:
        _TIMINGS.remove(timings)


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
        source, self.kernels = render_module(self.plans, fallback=True)
        self.module = KERNELS.module(source, device_arch(device), program.name, self.plans.format())
        self.functions = [None if isinstance(k, InterpretedKernel) else self.module.get_function(k.name)
                          for k in self.kernels]  # None: runs with torch ops
        self.dead_after = launcher.dead_after(self.plans)
        import cupy
        self.device = cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device())

    def __call__(self, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_inputs(Program(self.plans.name, self.plans.inputs, ()), g, tensors)
        memory = {n.name: launcher.aligned(t) for n, t in zip(self.plans.inputs, tensors)}
        stream = _stream(torch.cuda.current_stream(g.device))
        launches = g.cached(("launches", self), lambda: launcher.bind(self.kernels, g))
        with self.device:
            for launch, function, dead in zip(launches, self.functions, self.dead_after):
                self._launch(launch, function, memory, stream)
                for name in dead:  # freed to torch's caching allocator for the next kernels
                    del memory[name]
        return tuple(memory[o] for o in self.plans.outputs)

    def _launch(self, launch: launcher.Launch | launcher.Interpreted, function: Any,
                memory: dict[str, torch.Tensor], stream: Any) -> None:
        if isinstance(launch, launcher.Interpreted):
            launch.run(memory)
            return
        launch.allocate_outputs(memory)
        if launch.grid is None:
            return
        tensors_and_ints = launch.arguments(memory)  # kept alive (scratch buffers too) until launched
        args = [np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else np.int64(a) for a in tensors_and_ints]
        if _TIMINGS:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        function(launch.grid, (launch.kernel.launch.block, 1, 1), args, stream=stream)
        if _TIMINGS:
            end.record()
            for timings in _TIMINGS:
                timings.append(KernelTiming(launch.kernel, start, end))


_STREAMS: dict[int, Any] = {}


def _stream(stream: torch.cuda.Stream) -> Any:
    """torch's stream as a CuPy stream (made once per stream)."""
    import cupy

    handle = stream.cuda_stream
    if handle not in _STREAMS:
        try:
            _STREAMS[handle] = cupy.cuda.Stream.from_external(stream)
        except (AttributeError, TypeError, ValueError):  # CuPy before 14, or torch without the stream protocol
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                _STREAMS[handle] = cupy.cuda.ExternalStream(handle)
    return _STREAMS[handle]


_PROGRAMS: dict[tuple[int, str, Config, bool], tuple[Program, CudaProgram]] = {}


def cuda_program(program: Program, device: torch.device, config: Config = DEFAULT) -> CudaProgram:
    """The compiled kernels of ``program`` for ``device`` (compiled once per program, config and
    setting of torch.backends.cuda.matmul.allow_tf32, which float32 GEMMs follow)."""
    key = (id(program), str(device), config, tf32_allowed())
    hit = _PROGRAMS.get(key)
    if hit is None or hit[0] is not program:
        hit = _PROGRAMS[key] = (program, CudaProgram(program, device, config))
    return hit[1]


def run(program: Program, g: Graph, *tensors: Any, config: Config = DEFAULT) -> tuple[torch.Tensor, ...]:
    return cuda_program(program, g.device, config)(g, *tensors)
