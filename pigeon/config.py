"""Switches that change how compiled functions run, scoped with ``with`` blocks."""
from __future__ import annotations

import contextvars
import functools
import os
import warnings

import torch

from pigeon.ir.passes import PASS_NAMES, check_pass_names
from pigeon.runtime.cpp_compiler import find_compiler
from pigeon.runtime.executable import BACKENDS

_DISABLED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("pigeon_disabled_passes",
                                                                           default=frozenset())


class _Switch:
    """A setting that holds from the call on: to the end of a ``with`` block when used as one,
    else for the rest of the current context (the program, or the thread)."""

    def __init__(self, var: contextvars.ContextVar, value: object):
        self._var = var
        self._token = var.set(value)

    def __enter__(self) -> _Switch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Undo the setting (what leaving the ``with`` block does)."""
        if self._token is not None:
            self._var.reset(self._token)
            self._token = None


def disable_passes(*names: str) -> _Switch:
    """Run compiled functions without these passes (for comparison), inside a ``with`` block or,
    called alone, from here on (until ``.close()`` on what it returns):

        with pigeon.disable_passes("compact", "linear_reorder"):
            out = layer(g, h)
    """
    return _Switch(_DISABLED, _DISABLED.get() | check_pass_names(names))


def disabled_passes() -> frozenset[str]:
    """The passes switched off where this is called."""
    return _DISABLED.get()


_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar("pigeon_backend", default=None)


def _check_backend(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}; expected one of {list(BACKENDS)}")
    return name


def use_backend(name: str | None) -> _Switch:
    """Run compiled functions on this back end, inside a ``with`` block or, called alone, from
    here on: "cpp" (generated C++ kernels, CPU tensors), "cuda" (generated CUDA kernels, CUDA
    tensors), "reference" (torch ops, any device), or None (chosen by device again)."""
    return _Switch(_BACKEND, None if name is None else _check_backend(name, "use_backend"))


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
