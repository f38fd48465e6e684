"""Runs generated CUDA kernels on the CPU: the module source is compiled with g++ against
cuda_cpu.h and loaded with ctypes; arguments and grids come from pigeon.runtime.launcher, as
on a GPU."""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

from pigeon.codegen import render_module
from pigeon.codegen.kernel import KernelSource
from pigeon.ir.plans import PlanProgram
from pigeon.runtime import launcher
from pigeon.runtime.graph import Graph
from pigeon.runtime.reference import check_inputs

HEADER = Path(__file__).with_name("cuda_cpu.h")
BUILD = Path(os.environ.get("PIGEON_HARNESS_DIR", Path(tempfile.gettempdir()) / "pigeon-cuda-cpu"))


def _wrapper(kernel: KernelSource) -> str:
    """A C entry point that unpacks an array of argument addresses and launches the kernel."""
    casts = []
    for i, a in enumerate(kernel.args):
        if "*" in a.ctype:
            casts.append(f"({a.ctype.replace('__restrict__', '').strip()})(*(void**)args[{i}])")
        else:
            casts.append(f"*(long long*)args[{i}]")
    return (f'extern "C" void launch_{kernel.name}(unsigned gx, unsigned gy, unsigned gz, unsigned block, void** args) {{\n'
            f"    pg_launch(dim3{{gx, gy, gz}}, dim3{{block, 1, 1}}, [&] {{ {kernel.name}({', '.join(casts)}); }});\n}}\n")


SHARED = re.compile(r"__shared__\s+([\w:]+)\s+(\w+)((?:\[[^\]]+\])+);")


def per_block_shared(source: str) -> str:
    """``__shared__ T name[N]...;`` as a reference to the running block's own array, so that
    blocks can run at once."""
    source = re.sub(r"__align__\(\d+\)\s*", "", source)  # pg_shared's arrays are max_align_t-aligned
    rewritten = SHARED.sub(lambda m: f"auto& {m.group(2)} = pg_shared<{m.group(1)}{m.group(3)}>(__COUNTER__);", source)
    if "__shared__" in rewritten:  # would stay static: shared by the teams running blocks at once
        raise RuntimeError("a __shared__ declaration the harness cannot give each block: "
                           + rewritten[rewritten.index("__shared__"):].split(";")[0])
    return rewritten


def compile_module(source: str, kernels: list[KernelSource]) -> ctypes.CDLL:
    """The shared library of a module (cached by the hash of its source)."""
    text = per_block_shared(source) + "\n" + "".join(_wrapper(k) for k in kernels)
    digest = hashlib.sha256((text + HEADER.read_text()).encode()).hexdigest()[:16]
    BUILD.mkdir(parents=True, exist_ok=True)
    library = BUILD / f"module_{digest}.so"
    if not library.exists():
        src = BUILD / f"module_{digest}.cpp"
        src.write_text(text)
        tmp = library.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w",
                                 "-include", str(HEADER), "-x", "c++", str(src), "-o", str(tmp)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"g++ failed on {src}:\n{result.stderr[:4000]}")
        os.replace(tmp, library)
    return ctypes.CDLL(str(library))


class HarnessProgram:
    """A plan program whose kernels run on the CPU through the harness."""

    def __init__(self, plans: PlanProgram, edit=None, fallback: bool = False):
        """``edit``: a change made to the generated source before it compiles (mutation tests);
        ``fallback``: kernels that cannot be rendered run with torch ops, as in the runtimes."""
        self.plans = plans
        source, self.kernels = render_module(plans, fallback=fallback)
        generated = [k for k in self.kernels if isinstance(k, KernelSource)]
        self.library = compile_module(edit(source) if edit else source, generated)

    def __call__(self, g: Graph, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from pigeon.ir.program import Program

        check_inputs(Program(self.plans.name, self.plans.inputs, ()), g, tensors)
        memory = {n.name: launcher.aligned(t) for n, t in zip(self.plans.inputs, tensors)}
        for launch, dead in zip(launcher.bind(self.kernels, g), launcher.dead_after(self.plans)):
            self._launch(launch, memory)
            for name in dead:  # as the CUDA runtime does
                del memory[name]
        return tuple(memory[o] for o in self.plans.outputs)

    def _launch(self, launch: launcher.Launch | launcher.Interpreted, memory: dict[str, torch.Tensor]) -> None:
        if isinstance(launch, launcher.Interpreted):
            launch.run(memory)
            return
        kernel, shape = launch.kernel, launch.grid
        launch.allocate_outputs(memory)
        if shape is None:
            return
        args = launch.arguments(memory)  # the tensors stay alive until the launch returns
        slots = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else ctypes.c_longlong(a)
                 for a in args]
        array = (ctypes.c_void_p * len(slots))(*[ctypes.cast(ctypes.pointer(s), ctypes.c_void_p) for s in slots])
        getattr(self.library, f"launch_{kernel.name}")(*shape, kernel.launch.block, array)
