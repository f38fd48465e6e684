"""``load``: one entry point for every data set by name."""
from __future__ import annotations

from typing import Any

from .dataset import Dataset, DatasetError
from .debian import debian
from .shapes import SHAPES
from .synthetic import synthetic

KNOWN: tuple[str, ...] = tuple(SHAPES) + ("debian", "debian-dpkg")


def load(name: str, scale: float = 1.0, seed: int = 0, feat_dim: int = 64, **kw: Any) -> Dataset:
    """A data set by name: ``"debian"`` (apt lists), ``"debian-dpkg"`` (installed packages) or a
    synthetic graph with the shape of ``SHAPES[name]``. ``scale`` applies to synthetic graphs only;
    other keywords go to :func:`synthetic` or :func:`debian`."""
    key = name.lower()
    if key == "debian":
        return debian(seed=seed, feat_dim=feat_dim, **kw)
    if key == "debian-dpkg":
        return debian(source="dpkg", seed=seed, feat_dim=feat_dim, **kw)
    if key in SHAPES:
        return synthetic(key, scale=scale, seed=seed, feat_dim=feat_dim, **kw)
    raise DatasetError(f"unknown data set {name!r}; known: {', '.join(KNOWN)}")
