#!/usr/bin/env bash
# Every performance ratio (training step against PyTorch, under load, frozen forward, feature cache)
# measured side by side in one run and printed as one Markdown table (bench/run.py).
#   bench/run.sh                                  # the demo's Fashion-MNIST store, 2 threads
#   bench/run.sh --store runs/x/data/fashion_mnist.h5 --threads 2 --images 4096 --epochs 3
# Needs make build, and the store (make data + the demo's prepare_data step, or --store).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON:-/usr/bin/python3}" "$ROOT/bench/run.py" "$@"
