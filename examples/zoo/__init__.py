"""Published relational GNN layers written in the loop DSL, one file each, as their papers
write them. Every module has one ``@pigeon.compile`` function and ``example_inputs(g, feats,
heads, dtype)`` giving random arguments for graph ``g``."""
from . import compgcn, film, gatv2_relations, han, heat, rgcn_basis, rgcn_bdd, rgin, rsage, simple_hgn

LAYERS = {m.__name__.rsplit(".", 1)[-1]: m for m in (rgcn_basis, rgcn_bdd, rgin, rsage, compgcn, film,
                                                     heat, simple_hgn, han, gatv2_relations)}
