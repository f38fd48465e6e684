"""The comparison harness: Pigeon beside DGL, PyG and plain PyTorch on the same layers, graphs
and weights (``pigeon bench``), and the CPU benchmark of the passes (``benchmarks/passes.py``)."""
