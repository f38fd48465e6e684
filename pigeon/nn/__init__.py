"""Ready RGNN layers as torch modules: RGCNConv, RGATConv, HGTConv."""
from .layers import HGTConv, RGATConv, RGCNConv

__all__ = ["HGTConv", "RGATConv", "RGCNConv"]
