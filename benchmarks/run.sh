#!/usr/bin/env bash
# The whole comparison from one command on a fresh machine: makes the environments, then runs
# `pigeon bench` where every system is installed (the DGL environment). Arguments go to
# `pigeon bench`, e.g.  bash benchmarks/run.sh --quick   or   bash benchmarks/run.sh --datasets aifb mutag
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/make_envs.sh
.venv-dgl/bin/pigeon bench "$@"
