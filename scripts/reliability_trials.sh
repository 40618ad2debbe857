#!/usr/bin/env bash
# Reliability trials, printed as a Markdown table (the figures in docs/reliability.md):
#  - corruption: N random single-byte flips inside the stored data of a checkpoint, an image store
#    and a feature cache (a random chunk of a random numeric dataset that the consuming stage reads:
#    every tensor of the checkpoint, anything in the store, the cache's train/layer2 maps that a
#    FitNet student reads), each then read by that stage;
#  - bad inputs: truncated files of each kind, with a zeroed 4 KiB block in the middle or a zeroed
#    header, wrong file kinds, missing
#    paths, unknown names, bad values, malformed manifests and configs, out-of-range and duplicate
#    labels, NaN losses: each must give exit 1 or 2, one stderr line and no output;
#  - full disk: every writing stage with its output on a tiny filesystem (a 3 MB tmpfs when mount
#    is allowed, else a 1 KiB file-size limit), checked for exit 1, one line and nothing left;
#  - resources and input once taken silently: batches larger than the data or than the memory (a
#    budget, ulimit -v), thread counts, negative/NaN numbers, a manifest key given twice, hard-linked
#    and symlinked images, a changed class name, a corrupt object header, a failed retrain's
#    history, a file-size limit with SIGXFSZ's default action: each checked against its expected
#    exit status and message.
# Each trial is classed as detected (exit 1 naming the checksum), other clean error (exit 1),
# undetected (exit 0) or crash (any other exit status).
#
# Usage: scripts/reliability_trials.sh [--trials N] [--bin build/bin] [--keep DIR]
set -euo pipefail
TRIALS=40
BIN=build/bin
KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) TRIALS="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "reliability_trials.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BIN=$(cd "$BIN" && pwd)
PY=/usr/bin/python3
W=${KEEP:-$(mktemp -d)}
mkdir -p "$W"
cleanup() { mountpoint -q "$W/full" 2>/dev/null && umount "$W/full"; [ -n "$KEEP" ] || rm -rf "$W"; }
trap cleanup EXIT
cd "$W"

# A tiny learnable store, a teacher and a feature cache.
"$PY" - <<'EOF'
import numpy as np, zlib, struct, os
def png(path, a):
    h, w = a.shape
    raw = b''.join(b'\x00' + a[i].tobytes() for i in range(h))
    ch = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + ch(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
                           + ch(b'IDAT', zlib.compress(raw)) + ch(b'IEND', b''))
rng = np.random.default_rng(0)
for c in range(3):
    os.makedirs(f'imgs/c{c}', exist_ok=True)
    for k in range(30):
        a = rng.integers(0, 60, (12, 12), dtype=np.uint8); a[:, c * 4:(c + 1) * 4] += 150
        png(f'imgs/c{c}/{k}.png', a)
EOF
cat > toy.json <<EOF
{"name": "toy", "classes": "folders", "sources": [{"kind": "folder", "root": "$W/imgs"}],
 "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
 "image": {"size": 12, "channels": 1}}
EOF
MODEL="--device cpu --arch resnet18 --width 0.125 --small-stem --embed-dim 16"
NET="$MODEL --threads 2 --batch-size 16 --workers 1"
"$BIN/prepare_data" -v 0 toy.json toy.h5 > /dev/null
"$BIN/train_teacher" -v 0 $NET --epochs 2 --out t.h5 toy.h5 > /dev/null
"$BIN/extract_features" -v 0 --device cpu --levels layer2,logits --out f.h5 t.h5 toy.h5 > /dev/null

# flip FILE SEED [PREFIX]: one byte inside a random chunk of a random numeric dataset (whose name
# starts with PREFIX: the data the consumer reads); prints the dataset.
flip() {
  "$PY" - "$1" "$2" "${3:-}" <<'EOF'
import h5py, random, sys
path, seed, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
spots = []
with h5py.File(path, 'r') as f:
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in 'uif' and obj.chunks and name.startswith(prefix):
            n = obj.id.get_num_chunks()
            if n: spots.append((name, n))
    f.visititems(visit)
    name, n = rnd.choice(spots)
    info = f[name].id.get_chunk_info(rnd.randrange(n))
off = info.byte_offset + rnd.randrange(info.size)
with open(path, 'r+b') as fp:
    fp.seek(off); b = fp.read(1); fp.seek(off); fp.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))
print(name)
EOF
}

declare -A DET OTHER UNDET CRASH
classify() {  # kind rc err
  local kind=$1 rc=$2 err=$3
  if [ "$rc" = 0 ]; then UNDET[$kind]=$(( ${UNDET[$kind]:-0} + 1 ))
  elif [ "$rc" = 1 ] && grep -q "checksum mismatch" <<<"$err"; then DET[$kind]=$(( ${DET[$kind]:-0} + 1 ))
  elif [ "$rc" = 1 ]; then OTHER[$kind]=$(( ${OTHER[$kind]:-0} + 1 ))
  else CRASH[$kind]=$(( ${CRASH[$kind]:-0} + 1 )); echo "crash ($rc): $kind: $err" >&2; fi
}
for i in $(seq 1 "$TRIALS"); do
  cp t.h5 bad.h5; flip bad.h5 "$i" > /dev/null
  set +e; err=$("$BIN/evaluate" -v 0 --device cpu bad.h5 toy.h5 2>&1 >/dev/null); rc=$?; set -e
  classify checkpoint "$rc" "$err"
  cp toy.h5 bad_store.h5; flip bad_store.h5 "$i" > /dev/null
  set +e; err=$("$BIN/evaluate" -v 0 --device cpu t.h5 bad_store.h5 2>&1 >/dev/null); rc=$?; set -e
  classify "image store" "$rc" "$err"
  cp f.h5 bad_f.h5; flip bad_f.h5 "$i" train/layer2 > /dev/null  # what the FitNet student reads
  rm -f s.h5 s.last.h5 s.best.h5 s.metrics.jsonl s.last.metrics.jsonl
  set +e; err=$("$BIN/distill_student" -v 0 $NET --epochs 1 --method fitnet --like t.h5 --teacher t.h5 \
    --teacher-signals cached --features bad_f.h5 --out s.h5 toy.h5 2>&1 >/dev/null); rc=$?; set -e
  classify "feature cache" "$rc" "$err"
done

echo "## Corruption trials ($TRIALS single-byte flips in stored data per file kind)"
echo
echo "| file kind | read by | trials | detected (checksum) | other clean error | undetected | crash |"
echo "|---|---|---|---|---|---|---|"
for k in checkpoint "image store" "feature cache"; do
  by=evaluate; [ "$k" = "feature cache" ] && by="distill_student --teacher-signals cached"
  echo "| $k | $by | $TRIALS | ${DET[$k]:-0} | ${OTHER[$k]:-0} | ${UNDET[$k]:-0} | ${CRASH[$k]:-0} |"
done

# Bad inputs: each must end with exit 1 or 2, one stderr line, and no output left.
"$PY" - <<'EOF'
def cut(src, dst, n): open(dst, 'wb').write(open(src, 'rb').read()[:n])
def zero_mid(src, dst):  # a zeroed block in the middle, as a failed disk or copy leaves
    b = bytearray(open(src, 'rb').read()); n = len(b); b[n // 3:n // 3 + 4096] = b'\0' * 4096
    open(dst, 'wb').write(bytes(b))
def zero_head(src, dst):
    b = bytearray(open(src, 'rb').read()); b[:512] = b'\0' * 512; open(dst, 'wb').write(bytes(b))
for k in ['t', 'toy', 'f']:
    cut(f'{k}.h5', f'{k}_cut.h5', 5000); zero_mid(f'{k}.h5', f'{k}_hole.h5'); zero_head(f'{k}.h5', f'{k}_zero.h5')
open('notes.txt', 'w').write('hello')
open('labels.csv', 'w').write('imgs/c0/0.png,0\nimgs/c0/1.png,7\nimgs/c1/0.png,1\nimgs/c1/1.png,1\n')
open('dup.csv', 'w').write('imgs/c0/0.png,0\n./imgs/c0/0.png,0\nimgs/c1/0.png,1\nimgs/c1/1.png,1\n')
EOF
cat > bad_labels.json <<EOF
{"name": "bl", "classes": ["a", "b"], "image": {"size": 12, "channels": 1},
 "sources": [{"kind": "list", "file": "$W/labels.csv", "root": "$W"}],
 "split": {"mode": "stratified", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}}}
EOF
sed "s#labels.csv#dup.csv#" bad_labels.json > dup_list.json
echo '{"name": "x", "classes": "folders", "image": {"size": 12, "channels": 5}, "sources": []}' > bad_manifest.json
echo '{"name": ' > broken.json
echo '{"lr": "fast"}' > bad_config.json
BAD_TOTAL=0 BAD_CLEAN=0 BAD_CRASH=0 BAD_LIST=""
bad() {  # description command...
  local what=$1; shift
  rm -rf out; mkdir -p out
  set +e; err=$("$@" 2>&1 >/dev/null); rc=$?; set -e
  local lines left
  lines=$(printf '%s\n' "$err" | grep -c . || true)
  left=$(find out -mindepth 1 ! -name '*.metrics.jsonl' | wc -l)
  BAD_TOTAL=$((BAD_TOTAL + 1))
  if { [ "$rc" = 1 ] || [ "$rc" = 2 ]; } && [ "$lines" = 1 ] && [ "$left" = 0 ]; then BAD_CLEAN=$((BAD_CLEAN + 1))
  else
    if [ "$rc" -ge 128 ]; then BAD_CRASH=$((BAD_CRASH + 1)); fi
    BAD_LIST="$BAD_LIST| $what | $rc | $lines | $left | $(printf '%s' "$err" | head -1 | cut -c1-100) |"$'\n'
  fi
}
for k in cut hole zero; do
  bad "checkpoint ($k)" "$BIN/evaluate" -v 0 --device cpu --out out/e.json "t_$k.h5" toy.h5
  bad "image store ($k)" "$BIN/evaluate" -v 0 --device cpu --out out/e.json t.h5 "toy_$k.h5"
  bad "image store ($k) to train_teacher" "$BIN/train_teacher" -v 0 $NET --epochs 1 --out out/t.h5 "toy_$k.h5"
  bad "feature cache ($k)" "$BIN/distill_student" -v 0 $NET --epochs 1 --method fitnet --like t.h5 --teacher t.h5 \
    --teacher-signals cached --features "f_$k.h5" --out out/s.h5 toy.h5
  bad "teacher ($k) to build_joint" "$BIN/build_joint" -v 0 --out out/j.h5 --teacher "t_$k.h5"
done
bad "text file as checkpoint" "$BIN/evaluate" -v 0 --device cpu notes.txt toy.h5
bad "image store as checkpoint" "$BIN/evaluate" -v 0 --device cpu toy.h5 toy.h5
bad "checkpoint as image store" "$BIN/train_teacher" -v 0 $NET --epochs 1 --out out/t.h5 t.h5
bad "missing store" "$BIN/train_teacher" -v 0 $NET --epochs 1 --out out/t.h5 nothere.h5
bad "missing output folder" "$BIN/train_teacher" -v 0 $NET --epochs 1 --out nodir/t.h5 toy.h5
bad "user's file at --out" "$BIN/train_teacher" -v 0 $NET --epochs 1 --out notes.txt toy.h5
bad "unknown architecture" "$BIN/train_teacher" -v 0 --arch resnet19 --epochs 1 --out out/t.h5 toy.h5
bad "unknown method" "$BIN/distill_student" -v 0 $NET --method kdx --teacher t.h5 --out out/s.h5 toy.h5
bad "unknown level" "$BIN/extract_features" -v 0 --levels layer9 --out out/f.h5 t.h5 toy.h5
bad "negative lr" "$BIN/train_teacher" -v 0 $NET --lr -1 --out out/t.h5 toy.h5
bad "NaN loss" "$BIN/train_teacher" -v 0 $NET --lr 1e30 --epochs 1 --out out/t.h5 toy.h5
bad "test split for validation" "$BIN/train_teacher" -v 0 $NET --val-split test --out out/t.h5 toy.h5
bad "misspelt option" "$BIN/train_teacher" -v 0 --epoch 3 --out out/t.h5 toy.h5
bad "bad config value" "$BIN/train_teacher" -v 0 --config bad_config.json --out out/t.h5 toy.h5
bad "malformed config" "$BIN/train_teacher" -v 0 --config broken.json --out out/t.h5 toy.h5
bad "out-of-range label" "$BIN/prepare_data" -v 0 bad_labels.json out/s.h5
bad "image listed twice (./ spelling)" "$BIN/prepare_data" -v 0 dup_list.json out/s.h5
bad "invalid manifest" "$BIN/prepare_data" -v 0 bad_manifest.json out/s.h5
bad "malformed manifest" "$BIN/prepare_data" -v 0 broken.json out/s.h5
bad "resume with nothing to resume" "$BIN/train_teacher" -v 0 $NET --resume --out out/t.h5 toy.h5
bad "report of a text file" "$BIN/report" -v 0 --md out/r.md notes.txt
echo
echo "## Bad inputs"
echo
echo "$BAD_TOTAL bad inputs; $BAD_CLEAN ended with exit 1 or 2, one stderr line and nothing left; $BAD_CRASH crashed."
if [ -n "$BAD_LIST" ]; then
  echo
  echo "| input | exit | stderr lines | files left | message |"
  echo "|---|---|---|---|---|"
  printf '%s' "$BAD_LIST"
fi

# Full disk: a 3 MB tmpfs where mount works (root, not in every container), else a file-size limit.
mkdir -p full
how="a 3 MB tmpfs"
mount -t tmpfs -o size=3m tmpfs full 2>/dev/null || how="a 1 KiB file-size limit (mount not permitted here)"
run_full() {  # name command...
  local name=$1; shift
  rm -rf full/* full/.[!.]* 2>/dev/null || true
  if [ "$how" = "a 3 MB tmpfs" ]; then
    head -c 4000000 /dev/zero > full/filler 2>/dev/null || true  # fill it to the last byte
  fi
  set +e
  if [ "$how" = "a 3 MB tmpfs" ]; then err=$("$@" 2>&1 >/dev/null); rc=$?
  else err=$(bash -c 'trap "" XFSZ; ulimit -f 2; exec "$@"' _ "$@" 2>&1 >/dev/null); rc=$?; fi
  set -e
  local left lines
  left=$(find full -mindepth 1 ! -name filler ! -name '*.metrics.jsonl' | wc -l)
  lines=$(printf '%s\n' "$err" | grep -c . || true)
  echo "| $name | $rc | $lines | $left | $(printf '%s' "$err" | head -1 | cut -c1-110) |"
}
echo
echo "## Full disk ($how)"
echo
echo "| stage | exit | stderr lines | files left | message |"
echo "|---|---|---|---|---|"
run_full prepare_data "$BIN/prepare_data" -v 0 toy.json full/s.h5
run_full train_teacher "$BIN/train_teacher" -v 0 $NET --epochs 1 --out full/t.h5 toy.h5
run_full extract_features "$BIN/extract_features" -v 0 --device cpu --levels layer2 --out full/f.h5 t.h5 toy.h5
run_full "evaluate --logits-out" "$BIN/evaluate" -v 0 --device cpu --logits-out full/l.h5 t.h5 toy.h5
run_full "evaluate --confusion-png" "$BIN/evaluate" -v 0 --device cpu --confusion-png full/c.png t.h5 toy.h5
run_full build_joint "$BIN/build_joint" -v 0 --embed-teachers --out full/j.h5 --teacher t.h5
"$BIN/build_joint" -v 0 --adaptor-dim 8 --out j.h5 --teacher t.h5 > /dev/null
run_full finetune_joint "$BIN/finetune_joint" -v 0 --threads 2 --device cpu --batch-size 16 --workers 1 --epochs 1 \
  --out full/jf.h5 j.h5 toy.h5
run_full distill_student "$BIN/distill_student" -v 0 $NET --epochs 1 --method kd --like t.h5 --teacher t.h5 --out full/s.h5 toy.h5
"$BIN/evaluate" -v 0 --device cpu --name teacher --out e.json t.h5 toy.h5 > /dev/null
run_full report "$BIN/report" -v 0 --md full/r.md e.json


# Resources and input that used to be taken silently (each trial: what it must do).
echo
echo "## Resources and silently accepted input"
echo
echo "| trial | expected | exit | stderr lines | as expected | first line |"
echo "|---|---|---|---|---|---|"
RES_TOTAL=0 RES_OK=0
trial() {  # description expected-exit pattern command...
  local what=$1 want=$2 pattern=$3; shift 3
  rm -rf out; mkdir -p out
  set +e; err=$("$@" 2>&1 >/dev/null); rc=$?; set -e
  local lines ok=no
  lines=$(printf '%s\n' "$err" | grep -c . || true)
  if [ "$rc" = "$want" ] && grep -qF -- "$pattern" <<<"$err"; then ok=yes; RES_OK=$((RES_OK + 1)); fi
  RES_TOTAL=$((RES_TOTAL + 1))
  echo "| $what | exit $want, \"$pattern\" | $rc | $lines | $ok | $(printf '%s' "$err" | grep . | head -1 | sed 's/^[A-Z] [0-9-]* [0-9:.]*\] //' | cut -c1-110) |"
}
trial "a batch larger than the training split" 0 "would repeat images; using batches of" \
  "$BIN/train_teacher" -v 0 $MODEL --workers 1 --batch-size 100000 --epochs 1 --out out/t.h5 toy.h5
trial "a batch above the memory budget" 1 "use a batch of at most" \
  "$BIN/train_teacher" -v 0 $MODEL --workers 1 --batch-size 48 --memory-budget 0.00001 --epochs 1 --out out/t.h5 toy.h5
trial "a batch above the memory left (ulimit -v)" 1 "this process can still get" \
  bash -c 'ulimit -v 3000000; exec "$@"' _ \
  "$BIN/train_teacher" -v 0 --threads 2 --device cpu --arch resnet18 --small-stem --size 128 --batch-size 48 --workers 1 \
  --epochs 1 --out out/t.h5 toy.h5
trial "--threads 10000" 0 "cores; using" "$BIN/train_teacher" -v 0 $MODEL --workers 1 --batch-size 16 --threads 10000 --epochs 1 --out out/t.h5 toy.h5
trial "--workers 10000" 0 "cores; using" "$BIN/train_teacher" -v 0 $MODEL --threads 2 --batch-size 16 --workers 10000 --epochs 1 --out out/t.h5 toy.h5
trial "--seed -1" 2 "must be a number >= 0" "$BIN/train_teacher" -v 0 $NET --seed -1 --out out/t.h5 toy.h5
trial "--w-kd nan" 2 "nan" "$BIN/distill_student" -v 0 $NET --method kd --w-kd nan --teacher t.h5 --out out/s.h5 toy.h5
trial "--max-train-per-class -1" 2 "max-train-per-class" "$BIN/prepare_data" -v 0 --max-train-per-class -1 toy.json out/s.h5
"$PY" - <<'EOF'
import json
text = json.dumps(json.load(open('toy.json')))
open('twice.json', 'w').write(text[:-1] + ', "image": {"size": 14, "channels": 3}}')
EOF
trial "a manifest key given twice" 1 "is given twice" "$BIN/prepare_data" -v 0 twice.json out/s.h5
rm -rf links; mkdir -p links; cp -r imgs/c0 imgs/c1 imgs/c2 links/
ln links/c0/0.png links/c1/hard.png
sed "s#$W/imgs#$W/links#" toy.json > links.json
trial "a hard-linked copy of an image" 1 "is a hard link to" "$BIN/prepare_data" -v 0 links.json out/s.h5
rm links/c1/hard.png; ln -s "$W/links/c0/gone.png" links/c0/dangling.png
trial "a dangling symbolic link" 1 "(a dangling symbolic link)" "$BIN/prepare_data" -v 0 links.json out/s.h5
rm links/c0/dangling.png; ln -s "$W/links/c1/loop.png" links/c1/loop.png
trial "a symbolic link loop" 1 "(a symbolic link loop)" "$BIN/prepare_data" -v 0 links.json out/s.h5
rm links/c1/loop.png
# A class name changed in the file ("c1" -> "c7": its bytes after their 8-byte length), and a
# flipped byte in the root group's object header (the name of the "format" attribute).
"$PY" - <<'EOF'
data = bytearray(open('toy.h5', 'rb').read())
key = (2).to_bytes(8, 'little') + b'c1'
assert data.count(key) == 1
i = data.index(key) + 8
names = bytearray(data); names[i + 1] = ord('7'); open('toy_name.h5', 'wb').write(bytes(names))
head = bytearray(data); j = data.index(b'format\x00'); head[j] ^= 1; open('toy_head.h5', 'wb').write(bytes(head))
EOF
trial "a class name changed in the store" 1 "class_names: checksum mismatch" \
  "$BIN/train_teacher" -v 0 $NET --epochs 1 --out out/t.h5 toy_name.h5
trial "a corrupt object header in the store" 1 "checksum mismatch: the file's metadata is corrupt" \
  "$BIN/evaluate" -v 0 --device cpu t.h5 toy_head.h5
# A retrain that fails keeps the previous run's history (and checkpoint).
rm -rf hist; mkdir -p hist
"$BIN/train_teacher" -v 0 $NET --epochs 2 --out hist/t.h5 toy.h5 > /dev/null
before=$(cat hist/t.h5 hist/t.metrics.jsonl | sha256sum)
trial "a retrain that diverges" 1 "non-finite loss" "$BIN/train_teacher" -v 0 $NET --epochs 2 --lr 1e30 --out hist/t.h5 toy.h5
after=$(cat hist/t.h5 hist/t.metrics.jsonl | sha256sum)
RES_TOTAL=$((RES_TOTAL + 1)); same=no; [ "$before" = "$after" ] && { same=yes; RES_OK=$((RES_OK + 1)); }
echo "| the previous checkpoint and history after that retrain | unchanged | | | $same | |"
trial "a file-size limit (SIGXFSZ not ignored by the shell)" 1 "File too large" \
  bash -c 'ulimit -f 2; exec "$@"' _ "$BIN/train_teacher" -v 0 $NET --epochs 1 --out out/t.h5 toy.h5
echo
echo "$RES_OK of $RES_TOTAL trials as expected."
