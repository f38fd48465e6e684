"""Switches that change how compiled functions run, scoped with ``with`` blocks."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from typing import Iterator

import torch

from pigeon.ir.passes import PASS_NAMES, check_pass_names
from pigeon.runtime.cpp_compiler import find_compiler
from pigeon.runtime.executable import BACKENDS

_DISABLED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("pigeon_disabled_passes",
                                                                           default=frozenset())


@contextlib.contextmanager
def disable_passes(*names: str) -> Iterator[None]:
    """Run compiled functions without these passes inside the block (for comparison):

        with pigeon.disable_passes("compact", "linear_reorder"):
            out = layer(g, h)
    """
    token = _DISABLED.set(_DISABLED.get() | check_pass_names(names))
    try:
        yield
    finally:
        _DISABLED.reset(token)


def disabled_passes() -> frozenset[str]:
    """The passes switched off where this is called."""
    return _DISABLED.get()


_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar("pigeon_backend", default=None)


def _check_backend(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}; expected one of {list(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run compiled functions on this back end inside the block: "cpp" (generated C++ kernels,
    CPU tensors), "cuda" (generated CUDA kernels, CUDA tensors) or "reference" (torch ops, any
    device)."""
    token = _BACKEND.set(_check_backend(name, "use_backend"))
    try:
        yield
    finally:
        _BACKEND.reset(token)


def choose_backend(device: torch.device, preferred: str | None = None) -> str:
    """The back end for tensors on ``device``: ``use_backend``, then the function's own choice,
    then ``PIGEON_BACKEND``, then generated kernels: CUDA on CUDA devices, C++ on the CPU where a
    C++ compiler with OpenMP is found (else the torch reference, with one warning)."""
    name = _BACKEND.get() or preferred or os.environ.get("PIGEON_BACKEND") or None
    if name is None:
        if device.type == "cuda":
            return "cuda"
        return "cpp" if _cpp_available() else "reference"
    name = _check_backend(name, "PIGEON_BACKEND" if name == os.environ.get("PIGEON_BACKEND") else "backend")
    if name == "cuda" and device.type != "cuda":
        raise ValueError(f"the cuda backend runs generated kernels on CUDA tensors; the graph is on {device}")
    if name == "cpp" and device.type != "cpu":
        raise ValueError(f"the cpp backend runs generated kernels on CPU tensors; the graph is on {device}")
    return name


@functools.lru_cache(maxsize=None)
def _cpp_available() -> bool:
    if find_compiler() is not None:
        return True
    warnings.warn("Pigeon found no C++ compiler with OpenMP, so compiled layers run on the slower torch "
                  "reference executor; install g++ (apt-get install g++) or set CXX for generated kernels",
                  RuntimeWarning, stacklevel=3)
    return False


__all__ = ["PASS_NAMES", "choose_backend", "disable_passes", "disabled_passes", "use_backend"]
