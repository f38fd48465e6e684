"""RGCN, RGAT and HGT written in Pigeon's loop DSL (``pigeon.examples.rgcn`` etc.), and scripts.

The ``pigeon.nn`` layers are built on these programs; ``pigeon show rgat`` prints one.
"""
MODELS = ("rgcn", "rgat", "hgt")
