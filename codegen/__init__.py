"""Lowering of level-2 kernel plans to CUDA source."""
