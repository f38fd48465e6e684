"""Switches that change how compiled functions run, scoped with ``with`` blocks."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from pigeon.ir.passes import PASS_NAMES, check_pass_names

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


__all__ = ["PASS_NAMES", "disable_passes", "disabled_passes"]
