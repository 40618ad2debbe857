#!/usr/bin/env bash
# The stage-2 search on validation: fine-tunes one initial T* (build_joint output) once per variant
# of finetune_joint options and prints a Markdown table of each variant's best validation top-1 per
# dataset and its gain over the dataset's own teacher (finetune_joint logs both every epoch), so the
# choice of T*'s recipe can be audited. The test split is never read.
#
#   scripts/joint_search.sh --init runs/x/seed1/joint/init.h5 --out-dir /tmp/search \
#     --base "--optimizer adamw --lr 1e-3 --weight-decay 0.05 --batch-size 128 --pad 2 --epochs 10 --seed 1" \
#     --variant "base=" --variant "lr1e-4=--lr 1e-4" ... runs/x/data/a.h5 runs/x/data/b.h5
#
# --base: options every variant shares; --variant NAME=OPTIONS (repeat): options added to the base
# (a variant must not repeat a base option: the stage refuses an option given twice). Finished
# variants (their checkpoint exists in --out-dir) are not rerun, so the search continues where it
# stopped. BIN (default build/bin) is where finetune_joint is.
set -euo pipefail
BIN="${BIN:-build/bin}"
init="" out_dir="" base=""
variants=()
stores=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --init) init="$2"; shift 2 ;;
    --out-dir) out_dir="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --variant) variants+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "joint_search.sh: unknown option $1" >&2; exit 2 ;;
    *) stores+=("$1"); shift ;;
  esac
done
[[ -n "$init" && -n "$out_dir" && ${#variants[@]} -gt 0 && ${#stores[@]} -gt 0 ]] || {
  echo "joint_search.sh: needs --init, --out-dir, at least one --variant and the stores (see --help)" >&2; exit 2; }
[[ -x "$BIN/finetune_joint" ]] || { echo "joint_search.sh: $BIN/finetune_joint not found (make build, or set BIN)" >&2; exit 1; }
mkdir -p "$out_dir"
for v in "${variants[@]}"; do
  name="${v%%=*}" opts="${v#*=}"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "joint_search.sh: variant name '$name': letters, digits, _ . - only" >&2; exit 2; }
  ckpt="$out_dir/$name.h5"
  if [[ -f "$ckpt" ]]; then echo "joint_search.sh: $name done already ($ckpt)" >&2; continue; fi
  echo "joint_search.sh: $name: finetune_joint $base $opts" >&2
  start=$(date +%s)
  # shellcheck disable=SC2086  # the option strings are word lists on purpose
  "$BIN/finetune_joint" -v 0 $base $opts --out "$ckpt" "$init" "${stores[@]}" > "$out_dir/$name.json"
  echo "$opts" > "$out_dir/$name.opts"
  echo $(( $(date +%s) - start )) > "$out_dir/$name.seconds"
done
# The table: per variant, the best epoch (by finetune_joint's selection metric, the mean validation
# top-1 over datasets) and each dataset's validation top-1 and gain over its teacher at that epoch.
/usr/bin/python3 - "$out_dir" "${variants[@]}" <<'PY'
import json, sys
out_dir, variants = sys.argv[1], sys.argv[2:]
rows, datasets = [], None
for v in variants:
    name = v.split("=", 1)[0]
    opts = v.split("=", 1)[1] if "=" in v else ""
    epochs = [json.loads(l) for l in open(f"{out_dir}/{name}.metrics.jsonl") if l.strip()]
    epochs = [e for e in epochs if "val_metric" in e]  # validated epochs (--val-every)
    best = max(epochs, key=lambda e: e["val_metric"])
    last = epochs[-1]
    ds = sorted(k[len("val_"):-len("_gain_over_teacher")] for k in best if k.endswith("_gain_over_teacher"))
    datasets = datasets or ds
    secs = open(f"{out_dir}/{name}.seconds").read().strip()
    rows.append((name, opts, best, last, secs))
head = "| variant | options | best epoch | " + " | ".join(
    f"{d} val (gain over teacher)" for d in datasets) + " | train acc at best | last epoch: val gains | seconds |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for name, opts, best, last, secs in rows:
    cells = [f"{100 * best[f'val_{d}_top1']:.2f} ({100 * best[f'val_{d}_gain_over_teacher']:+.2f})" for d in datasets]
    lastg = ", ".join(f"{100 * last[f'val_{d}_gain_over_teacher']:+.2f}" for d in datasets)
    print(f"| {name} | {opts or '-'} | {best['epoch']} | " + " | ".join(cells) +
          f" | {100 * best['train_acc']:.1f} | {lastg} | {secs} |")
PY
