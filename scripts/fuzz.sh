#!/usr/bin/env bash
# Coverage-guided fuzzing of the file readers (docs/fuzzing.md): configures and builds the libFuzzer
# targets of fuzz/ with clang-14 + ASan + UBSan in build-fuzz/, replays each committed seed corpus
# (fuzz/corpus/<target>/, regression inputs included), then fuzzes each target for N seconds.
# Prints a Markdown table; exits non-zero on any finding (crash, sanitizer report, uncaught
# exception, timeout, out-of-memory), leaving the inputs in build-fuzz/findings/<target>/.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [--targets "mat5 sources json h5"] [--no-build]
#   --seconds N  fuzzing time per target after the replay (default 30; 0 = replay only)
#   --jobs J     targets fuzzed at the same time (default 1; one process each)
# Environment: MLFD_FUZZ_BUILD (default build-fuzz), MLFD_BUILD_LOCK (default /tmp/mlfd-build.lock:
# the compile takes it, so it never runs beside another heavy build that takes it too).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
jobs=1
targets="mat5 sources json h5"
build_it=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --no-build) build_it=0; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds must be a whole number" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --jobs must be >= 1" >&2; exit 2; }

BUILD="${MLFD_FUZZ_BUILD:-build-fuzz}"
LOCK="${MLFD_BUILD_LOCK:-/tmp/mlfd-build.lock}"
for tool in clang-14 clang++-14 cmake ninja; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool missing (run scripts/install_deps.sh)" >&2; exit 1; }
done

locked() { if command -v flock >/dev/null; then flock "$LOCK" "$@"; else "$@"; fi; }

t0=$(date +%s)
if [ "$build_it" = 1 ]; then
  if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S . -B "$BUILD" -G Ninja -DMLFD_FUZZ=ON -DMLFD_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >"$BUILD.configure.log" 2>&1 ||
      { cat "$BUILD.configure.log" >&2; echo "fuzz.sh: configure failed" >&2; exit 1; }
    mv "$BUILD.configure.log" "$BUILD/configure.log"
  fi
  echo "fuzz.sh: building the fuzz targets in $BUILD (clang-14, ASan + UBSan)"
  locked cmake --build "$BUILD" --target fuzz_all -j "$(nproc)" >"$BUILD/build.log" 2>&1 ||
    { tail -50 "$BUILD/build.log" >&2; echo "fuzz.sh: build failed (log: $BUILD/build.log)" >&2; exit 1; }
fi
build_s=$(( $(date +%s) - t0 ))

work="$BUILD/fuzz-run"          # corpora grown by this run and the logs
findings="$BUILD/findings"     # crashing / hanging inputs, per target
rm -rf "$work"
mkdir -p "$work" "$findings"
# The harnesses write each input to a file here (tmpfs when there is one); removed at the end.
tmp_base=/dev/shm
[ -w "$tmp_base" ] || tmp_base="${TMPDIR:-/tmp}"
export MLFD_FUZZ_TMP
MLFD_FUZZ_TMP=$(mktemp -d "$tmp_base/mlfd-fuzz.XXXXXX")
trap 'rm -rf "$MLFD_FUZZ_TMP"' EXIT

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if command -v llvm-symbolizer-14 >/dev/null; then
  export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14)}"
fi
common=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

# Runs one target: replay of the committed corpus, then the timed run. Writes $work/<t>.result.
fuzz_one() {
  local t="$1" bin="$BUILD/fuzz/fuzz_$1" seeds="fuzz/corpus/$1"
  local out="$findings/$t/" rc=0 start end replayed
  mkdir -p "$out" "$work/corpus-$t"
  replayed=$(find "$seeds" -type f | wc -l)
  start=$(date +%s)
  "$bin" "${common[@]}" -runs=0 -artifact_prefix="$out" "$seeds" >"$work/$t.replay.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && [ "$seconds" -gt 0 ]; then
    "$bin" "${common[@]}" -max_total_time="$seconds" -artifact_prefix="$out" \
      "$work/corpus-$t" "$seeds" >"$work/$t.fuzz.log" 2>&1 || rc=$?
  fi
  end=$(date +%s)
  local log="$work/$t.fuzz.log"
  [ -f "$log" ] || log="$work/$t.replay.log"
  local execs corp
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | sed 's/corp: //')
  local found
  found=$(find "$out" -type f | wc -l)
  echo "$t|$replayed|${execs:-?}|${corp:-?}|$found|$rc|$((end - start))" >"$work/$t.result"
}

echo "fuzz.sh: replaying fuzz/corpus/*, then ${seconds} s per target, $jobs at a time"
running=0
for t in $targets; do
  [ -x "$BUILD/fuzz/fuzz_$t" ] || { echo "fuzz.sh: no target fuzz_$t in $BUILD/fuzz" >&2; exit 1; }
  [ -d "fuzz/corpus/$t" ] || { echo "fuzz.sh: no seed corpus fuzz/corpus/$t" >&2; exit 1; }
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

bad=0
echo
echo "| target | seeds replayed | executions | corpus | findings | exit | time (s) |"
echo "|---|---|---|---|---|---|---|"
for t in $targets; do
  IFS='|' read -r name replayed execs corp found rc secs <"$work/$t.result"
  echo "| fuzz_$name | $replayed | $execs | $corp | $found | $rc | $secs |"
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then bad=$((bad + 1)); fi
done
echo
total_s=$(( $(date +%s) - t0 ))
if [ "$bad" -gt 0 ]; then
  for t in $targets; do
    IFS='|' read -r name _ _ _ found rc _ <"$work/$t.result"
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
      log="$work/$t.fuzz.log"; [ -f "$log" ] || log="$work/$t.replay.log"
      echo "---- fuzz_$t (exit $rc): last lines of $log"
      grep -E 'ERROR|SUMMARY|runtime error|Test unit written|deadly signal|timeout|out-of-memory|uncaught' "$log" | head -20 || true
      echo "inputs: $findings/$t/ (reproduce: $BUILD/fuzz/fuzz_$t <input>)"
    fi
  done
  echo "fuzz.sh: FAILED: findings in $bad target(s) (build ${build_s} s, total ${total_s} s)"
  exit 1
fi
echo "fuzz.sh: OK: 0 findings in $(echo $targets | wc -w) targets (build ${build_s} s, total ${total_s} s)"
