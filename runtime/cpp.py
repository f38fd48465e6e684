"""Running kernel plans as generated C++/OpenMP kernels on torch CPU tensors (no copies): the
plans of ``lower(..., target="cpp")`` are rendered, compiled once (``cpp_compiler``) and called
through ctypes with the tensors' addresses, on ``torch.get_num_threads()`` threads."""
from __future__ import annotations

import ctypes
from typing import Any

import torch

from pigeon.codegen import InterpretedKernel, render_module
from pigeon.ir.lower import lower
from pigeon.ir.plans import PlanProgram
from pigeon.ir.program import Program

from . import launcher
from .cpp_compiler import load_library
from .graph import Graph
from .reference import check_inputs
from .tuning import DEFAULT, Config


def _ctype(declaration: str) -> Any:
    if "*" in declaration:
        return ctypes.c_void_p
    return ctypes.c_longlong if "long long" in declaration else ctypes.c_int


def plan_program(program: Program, config: Config = DEFAULT) -> PlanProgram:
    """The C++ kernel plans of ``program`` with the schedules of ``config``."""
    plans = lower(program, config.dst_reductions, config.horizontal, target="cpp")
    overrides = config.schedules_for(program.name, {k.name: k.schedule for k in plans.kernels})
    return lower(program, config.dst_reductions, config.horizontal, overrides, target="cpp") if overrides else plans


class CppProgram:
    """The kernels of one level-1 program, compiled for this CPU."""

    def __init__(self, program: Program, config: Config = DEFAULT):
        self._load(plan_program(program, config))

    @classmethod
    def from_plans(cls, plans: PlanProgram) -> CppProgram:
        """The kernels of ``plans`` as they are (C++ schedules chosen by the caller)."""
        compiled = cls.__new__(cls)
        compiled._load(plans)
        return compiled

    def _load(self, plans: PlanProgram) -> None:
        self.plans = plans
        self.source, self.kernels = render_module(plans, fallback=True)
        self.dead_after = launcher.dead_after(plans)
        # a program with no generated kernel (it returns its inputs, say) compiles nothing
        compiled = any(not isinstance(k, InterpretedKernel) for k in self.kernels)
        library = load_library(self.source, plans.name, plans.format()) if compiled else None
        self.functions = []
        for kernel in self.kernels:
            if isinstance(kernel, InterpretedKernel):
                self.functions.append(None)  # runs with torch ops
                continue
            function = getattr(library, kernel.name)
            function.argtypes = [_ctype(a.ctype) for a in kernel.args] + [ctypes.c_int]
            function.restype = None
            self.functions.append(function)

    def __call__(self, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_inputs(Program(self.plans.name, self.plans.inputs, ()), g, tensors)
        if g.device.type != "cpu":
            raise ValueError(f"the cpp backend runs generated kernels on CPU tensors; the graph is on {g.device}")
        memory = {n.name: t.contiguous() for n, t in zip(self.plans.inputs, tensors)}
        threads = torch.get_num_threads()
        launches = g.cached(("launches", self), lambda: launcher.bind(self.kernels, g))
        for launch, function, dead in zip(launches, self.functions, self.dead_after):
            if isinstance(launch, launcher.Interpreted):
                launch.run(memory)
            else:
                launch.allocate_outputs(memory)
                if launch.grid is not None:  # else no rows: outputs stay as allocated (zeros where it accumulates)
                    args = launch.arguments(memory)  # the tensors stay alive until the call returns
                    function(*[a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args], threads)
            for name in dead:
                del memory[name]
        return tuple(memory[o] for o in self.plans.outputs)


_PROGRAMS: dict[tuple[int, Config], tuple[Program, CppProgram]] = {}


def cpp_program(program: Program, config: Config = DEFAULT) -> CppProgram:
    """The compiled kernels of ``program`` (compiled once per program and config)."""
    key = (id(program), config)
    hit = _PROGRAMS.get(key)
    if hit is None or hit[0] is not program:
        hit = _PROGRAMS[key] = (program, CppProgram(program, config))
    return hit[1]


def run(program: Program, g: Graph, *tensors: Any, config: Config = DEFAULT) -> tuple[torch.Tensor, ...]:
    return cpp_program(program, config)(g, *tensors)
