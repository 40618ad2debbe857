#!/usr/bin/env bash
# The split fit of T* against its control on the benchmark group (docs/results.md, "Search 2"):
# both teachers trained without fold 1 of K (train_teacher --fold 1/K), T* built on them and
# fine-tuned twice, on the held-out fold (--fit-rows held-out) and on every row (--fit-rows all);
# prints, for each fit, T*'s best epoch, training accuracy and per-dataset validation top-1 with its
# gain over the dataset's (fold) teacher. pipelines/bench.mk's recipe; validation numbers only.
# Finished steps are kept, so a rerun continues.
#
# Usage: scripts/split_fit.sh --data DIR --out DIR [--folds K] [--seed S] [--bin build/bin]
#          [--teacher-epochs 40] [--joint-epochs 10]
#   DIR of --data holds fashion_tops.h5 and fashion_shoes_bags.h5 (a bench run's data/ folder).
set -euo pipefail
BIN=build/bin DATA="" OUT="" K=2 SEED=1 TEACHER_EPOCHS=40 JOINT_EPOCHS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --folds) K="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --teacher-epochs) TEACHER_EPOCHS="$2"; shift 2 ;;
    --joint-epochs) JOINT_EPOCHS="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "split_fit.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$DATA" ] && [ -n "$OUT" ] || { echo "split_fit.sh: give --data and --out (see --help)" >&2; exit 2; }
for s in fashion_tops fashion_shoes_bags; do
  [ -f "$DATA/$s.h5" ] || { echo "split_fit.sh: $DATA/$s.h5 does not exist (run the bench pipeline's data stage)" >&2; exit 1; }
done
BIN=$(cd "$BIN" && pwd)
DIR="$OUT/k$K-seed$SEED"
mkdir -p "$DIR"
TRAIN_COMMON="--optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 --schedule cosine --warmup-epochs 2 --pad 2 --val-every 4"
TEACHER="$TRAIN_COMMON --batch-size 64 --small-stem --embed-dim 128 --label-smoothing 0.1 --epochs $TEACHER_EPOCHS"
C="-v 1 --threads 2 --device cpu --seed $SEED"
[ -f "$DIR/tops.h5" ] || "$BIN/train_teacher" $C $TEACHER --arch resnet18 --width 0.25 --fold "1/$K" \
  --out "$DIR/tops.h5" "$DATA/fashion_tops.h5" > "$DIR/tops.json"
[ -f "$DIR/shoes.h5" ] || "$BIN/train_teacher" $C $TEACHER --arch resnet34 --width 0.125 --fold "1/$K" \
  --out "$DIR/shoes.h5" "$DATA/fashion_shoes_bags.h5" > "$DIR/shoes.json"
[ -f "$DIR/init.h5" ] || "$BIN/build_joint" -v 1 --seed "$SEED" --level=layer4 --adaptor-dim 128 --dropout 0.5 \
  --residual-logits --out "$DIR/init.h5" --teacher "$DIR/tops.h5" --teacher "$DIR/shoes.h5" > /dev/null
for fit in held-out all; do
  [ -f "$DIR/joint_$fit.h5" ] || "$BIN/finetune_joint" $C --optimizer adamw --lr 1e-3 --weight-decay 0.05 \
    --schedule cosine --batch-size 128 --sampling proportional --pad 2 --epochs "$JOINT_EPOCHS" --fit-rows "$fit" \
    --out "$DIR/joint_$fit.h5" "$DIR/init.h5" "$DATA/fashion_tops.h5" "$DATA/fashion_shoes_bags.h5" > "$DIR/joint_$fit.json"
done
python3 - "$DIR" "$K" <<'PY'
import json, sys
d, k = sys.argv[1], sys.argv[2]
def best(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return max((r for r in rows if 'val_metric' in r), key=lambda r: r['val_metric'])
t = {ds: best(f'{d}/{f}.metrics.jsonl')['val_metric'] * 100 for ds, f in [('fashion_tops', 'tops'), ('fashion_shoes_bags', 'shoes')]}
print('| K | fit | best epoch | T* train acc | tops val (gain over teacher) | shoes+bags val (gain over teacher) |')
print('|---|---|---|---|---|---|')
for fit in ['held-out', 'all']:
    b = best(f'{d}/joint_{fit}.metrics.jsonl')
    cells = [f"{b[f'val_{ds}_top1']*100:.2f} ({b[f'val_{ds}_gain_over_teacher']*100:+.2f})" for ds in ['fashion_tops', 'fashion_shoes_bags']]
    print(f"| {k} | {fit} | {b['epoch']} | {b['train_acc']*100:.1f} | {cells[0]} | {cells[1]} |")
print(f"fold teachers' validation top-1: tops {t['fashion_tops']:.2f}, shoes+bags {t['fashion_shoes_bags']:.2f}")
PY
