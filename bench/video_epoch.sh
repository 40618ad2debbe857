#!/usr/bin/env bash
# Time per epoch of each video model at the size of the synthetic video group
# (pipelines/video_sprites.mk): train_teacher for one epoch (training and validation) on a clip
# store, r3d_18, mc3_18 and r2plus1d_18 with the group's recipe, one after the other. Prints a
# Markdown table with the machine, the threads and the load average before and after each run.
#   make -f Makefile.pipeline PIPELINE=video_sprites RUN=runs/video_sprites data
#   bench/video_epoch.sh                       # runs/video_sprites/data/sprites_translate.h5, all cores
#   THREADS=1 WIDTH=0.25 bench/video_epoch.sh runs/video_sprites/data/sprites_turn_zoom.h5
# Run it on an otherwise idle machine: with another CPU-bound process on the cores, a stage with
# as many threads as cores runs many times slower (docs/training.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/build/bin}"
STORE="${1:-$ROOT/runs/video_sprites/data/sprites_translate.h5}"
THREADS="${THREADS:-0}"
WIDTH="${WIDTH:-0.125}"
ARCHS="${ARCHS:-r3d_18 mc3_18 r2plus1d_18}"
for f in "$BIN/train_teacher" "$STORE"; do
  if [[ ! -e "$f" ]]; then
    echo "video_epoch.sh: $f not found (make build; make -f Makefile.pipeline PIPELINE=video_sprites RUN=... data)" >&2
    exit 1
  fi
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); threads per run: $THREADS (0 = all); width $WIDTH"
echo "store: $STORE"
echo
echo "| arch | parameters | epoch (train + validation) | train clips/s | load before -> after |"
echo "|---|---|---|---|---|"
for arch in $ARCHS; do
  before=$(load)
  start=$(date +%s.%N)
  "$BIN/train_teacher" -v 1 --threads "$THREADS" --arch "$arch" --width "$WIDTH" --small-stem --embed-dim 64 \
    --optimizer adam --lr 0.002 --weight-decay 1e-4 --pad 2 --clip-frames 8 --batch-size 16 --epochs 1 --seed 1 \
    --out "$tmp/$arch.h5" "$STORE" > "$tmp/$arch.json" 2> "$tmp/$arch.log"
  end=$(date +%s.%N)
  params=$(grep -o '[0-9]* parameters' "$tmp/$arch.log" | head -1 | cut -d' ' -f1)
  rate=$(grep -o '"train_images_per_second":[0-9.e+-]*' "$tmp/$arch.json" | cut -d: -f2)
  printf '| %s | %s | %.1f s | %.1f | %s -> %s |\n' "$arch" "$params" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$rate" "$before" "$(load)"
done
