#!/usr/bin/env bash
# Makes the benchmark environments from nothing (Python 3.10+ and network access):
#   .venv      torch 2.13 + Pigeon (with CuPy/NVRTC) + PyG        : Pigeon, PyG and PyTorch
#   .venv-dgl  torch 2.2.1 + DGL 2.1 + PyG + Pigeon                : every system (DGL 2.1 needs torch 2.2)
# Usage: bash benchmarks/make_envs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pigeon ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q torch==2.13.0
    .venv/bin/pip install -q -e ".[dev,bench]"
fi
if [ ! -x .venv-dgl/bin/pigeon ]; then
    python3 -m venv .venv-dgl
    .venv-dgl/bin/pip install -q torch==2.2.1
    .venv-dgl/bin/pip install -q -e ".[dgl,bench]"
fi
echo "ready: .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')), .venv-dgl (torch $(.venv-dgl/bin/python -c 'import torch; print(torch.__version__)'))"
