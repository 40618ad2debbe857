#!/usr/bin/env bash
# CTest: cmake/check_floors.cmake passes on the repository and fails, naming the file and the
# include, on a tree with an arrow up the floors or a heavy include in util.
set -euo pipefail
repo="$1"
floors="util;io;dist;data;models;eval;train;distill;app"
cmake -DSRC="$repo" -DFLOORS="$floors" -P "$repo/cmake/check_floors.cmake"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib/util" "$tmp/lib/io" "$tmp/lib/train"
printf '#include "util/error.h"\n#include <vector>\n' > "$tmp/lib/io/ok.cc"
printf '#include "io/h5.h"\n' > "$tmp/lib/util/up.cc"
printf '#include "train/trainer.h"\n' > "$tmp/lib/io/up.h"
printf '#include <torch/torch.h>\n' > "$tmp/lib/util/heavy.cc"
if cmake -DSRC="$tmp" -DFLOORS="$floors" -P "$repo/cmake/check_floors.cmake" 2> "$tmp/err"; then
  echo "check_floors.cmake accepted arrows up the floors" >&2; exit 1
fi
for want in "lib/util/up.cc: includes io/h5.h, but util is below io" \
            "lib/io/up.h: includes train/trainer.h, but io is below train (lib/io may use: util, io)" \
            "lib/util/heavy.cc: includes torch/torch.h, but util depends on nothing heavy"; do
  grep -qF "$want" "$tmp/err" || { echo "missing: $want"; cat "$tmp/err"; exit 1; }
done
if grep -q "ok.cc" "$tmp/err"; then echo "a correct include was reported"; exit 1; fi
echo "floors: checks pass"
