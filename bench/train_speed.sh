#!/usr/bin/env bash
# Training speed: our train_teacher vs the same training in PyTorch (bench/train_speed.py), on
# the demo teacher recipe and the Fashion-MNIST demo store. Prints a Markdown table.
#   bench/train_speed.sh                                  # defaults: 10240 images, 3 epochs, all cores
#   bench/train_speed.sh --threads 2 --workers 2 --images 2560 --epochs 3
#   STORE=runs/x/data/cifar100.h5 bench/train_speed.sh --width 0.5
# Needs build/bin/train_teacher (make build) and the store (make data + the demo's prepare_data,
# or STORE=...). Uses the Debian Python with torch/h5py (PYTHON=... to override).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-/usr/bin/python3}"
STORE="${STORE:-$ROOT/runs/demo/data/fashion_mnist.h5}"
BIN="${BIN:-$ROOT/build/bin}"
if [[ ! -x "$BIN/train_teacher" ]]; then
  echo "train_speed.sh: $BIN/train_teacher not found; build first (make build)" >&2
  exit 1
fi
exec "$PYTHON" "$ROOT/bench/train_speed.py" --store "$STORE" --bin "$BIN" "$@"
