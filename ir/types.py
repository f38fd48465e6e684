"""Value types of the level-1 IR: a domain (what one row is), a feature shape and a dtype."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Domain(enum.Enum):
    """What one row of a value stands for.

    Row domains hold one row per graph element; parameter domains one row per type, or a
    single unrowed value (GLOBAL). A value's tensor has shape ``(rows, *shape)``, except in
    GLOBAL where it is ``shape`` alone.
    """

    NODE = "node"  # every node (the source side of a bipartite block)
    DST = "dst"  # destination nodes: a prefix of the nodes (all of them in a full graph)
    EDGE = "edge"
    COMPACT = "compact"  # one row per unique (source node, edge type) pair
    COMPACT_DST = "compact_dst"  # one row per unique (destination node, edge type) pair
    ETYPE = "etype"  # one row per edge type
    NTYPE = "ntype"  # one row per node type
    GRAPH = "graph"  # one row per graph of a batch of graphs
    GLOBAL = "global"  # no row axis

    @property
    def is_row(self) -> bool:
        return self in ROW_DOMAINS

    @property
    def is_param(self) -> bool:
        return self in (Domain.ETYPE, Domain.NTYPE, Domain.GRAPH, Domain.GLOBAL)


ROW_DOMAINS = (Domain.NODE, Domain.DST, Domain.EDGE, Domain.COMPACT, Domain.COMPACT_DST)

DTYPES = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
DTYPE_BY_SHORT = {short: name for name, short in DTYPES.items()}


@dataclass(frozen=True)
class ValueType:
    """The type of one IR value; ``shape`` excludes the row axis."""

    domain: Domain
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        if any((not isinstance(s, int)) or s < 0 for s in self.shape):
            raise ValueError(f"shape must hold non-negative ints, got {self.shape}")

    def with_domain(self, domain: Domain) -> ValueType:
        return ValueType(domain, self.shape, self.dtype)

    def with_shape(self, shape: tuple[int, ...]) -> ValueType:
        return ValueType(self.domain, tuple(shape), self.dtype)

    @property
    def numel(self) -> int:
        """Elements per row."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __str__(self) -> str:
        dims = ",".join(str(s) for s in self.shape)
        return f"{self.domain.value}[{dims}] {DTYPES[self.dtype]}"
