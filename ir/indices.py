"""Graph index arrays that move rows between domains.

``gather(x, index)`` reads, for each row of the target domain, the row ``index[row]`` of ``x``;
``reduce(x, index)`` is its transpose: it folds each row of ``x`` into row ``index[row]`` of the
target. Typed linears select their weight row through the same names (``by``).
"""
from __future__ import annotations

from .types import Domain

D = Domain

# index name -> the (source domain, target domain) pairs a gather along it may take
GATHER_INDICES: dict[str, tuple[tuple[Domain, Domain], ...]] = {
    "src": ((D.NODE, D.EDGE),),
    "dst": ((D.NODE, D.EDGE), (D.DST, D.EDGE)),
    "compact": ((D.COMPACT, D.EDGE),),
    "compact_dst": ((D.COMPACT_DST, D.EDGE),),
    "compact_src": ((D.NODE, D.COMPACT),),
    "compact_dst_node": ((D.NODE, D.COMPACT_DST), (D.DST, D.COMPACT_DST)),
    "to_dst": ((D.NODE, D.DST),),
    # type selectors; on a parameter domain itself they are the identity (one row per type)
    "etype": ((D.ETYPE, D.EDGE), (D.ETYPE, D.COMPACT), (D.ETYPE, D.COMPACT_DST), (D.ETYPE, D.ETYPE)),
    "src_ntype": ((D.NTYPE, D.EDGE), (D.NTYPE, D.COMPACT)),
    "dst_ntype": ((D.NTYPE, D.EDGE), (D.NTYPE, D.COMPACT_DST)),
    "ntype": ((D.NTYPE, D.NODE), (D.NTYPE, D.DST), (D.NTYPE, D.NTYPE)),
    "graph": ((D.GRAPH, D.NODE), (D.GRAPH, D.DST), (D.GRAPH, D.GRAPH)),
    "all": tuple((D.GLOBAL, d) for d in D if d != D.GLOBAL),
}

# edge -> unique (node, edge type) pair: every pair is made by at least one edge, so a reduction
# along these indices reaches every row of its target (an atomic maximum needs no empty-row fix)
PAIR_INDICES = ("compact", "compact_dst")

# type selectors: the index that picks, for each row of a domain, a row of a parameter
SELECTORS = ("etype", "src_ntype", "dst_ntype", "ntype", "graph", "all")


def param_domain_of(selector: str) -> Domain:
    """The parameter domain a selector reads from."""
    if selector == "etype":
        return D.ETYPE
    if selector in ("src_ntype", "dst_ntype", "ntype"):
        return D.NTYPE
    if selector == "graph":
        return D.GRAPH
    if selector == "all":
        return D.GLOBAL
    raise ValueError(f"unknown type selector {selector!r}; expected one of {SELECTORS}")


# softmax index -> (the domain of its rows, the domain of the groups it normalises over): over the
# incoming edges of each destination, of each (destination, edge type) pair, or over the
# (destination, edge type) pairs of each destination
SOFTMAX_GROUPS: dict[str, tuple[Domain, Domain]] = {
    "dst": (D.EDGE, D.DST),
    "compact_dst": (D.EDGE, D.COMPACT_DST),
    "compact_dst_node": (D.COMPACT_DST, D.DST),
}


def check_gather(index: str, source: Domain, target: Domain) -> None:
    """Raise ValueError unless a gather along ``index`` may move ``source`` rows to ``target``."""
    pairs = GATHER_INDICES.get(index)
    if pairs is None:
        raise ValueError(f"unknown index {index!r}; expected one of {sorted(GATHER_INDICES)}")
    if (source, target) not in pairs:
        allowed = ", ".join(f"{a.value}->{b.value}" for a, b in pairs)
        raise ValueError(
            f"index {index!r} cannot move {source.value} rows to {target.value} (allowed: {allowed})"
        )


def check_reduce(index: str, source: Domain, target: Domain) -> None:
    """Raise ValueError unless a reduce along ``index`` may fold ``source`` rows into ``target``."""
    check_gather(index, target, source)
