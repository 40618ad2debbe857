#!/usr/bin/env bash
# CTest: cmake/ccache.cmake. With ccache installed the configuration compiles through it (the
# launcher is in the build rules), a second copy of the sources in another folder hits the cache for
# everything the first compiled (the precompiled header included), and -DMLFD_CCACHE=OFF configures
# without the launcher and still builds. Uses a private cache (CCACHE_DIR in a temporary folder), so
# the user's cache is neither read nor filled. Builds one precompiled header and one object per copy.
set -euo pipefail
repo="$1"
command -v ccache >/dev/null || { echo "ccache: not installed (scripts/install_deps.sh installs it)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CCACHE_DIR="$tmp/cache"
unset CCACHE_DISABLE CCACHE_RECACHE CCACHE_READONLY CCACHE_BASEDIR CCACHE_SLOPPINESS

object=CMakeFiles/mlfd_util.dir/lib/util/sha256.cc.o
configure() {  # <copy folder> [cmake options...]
  local dir="$1"; shift
  mkdir -p "$dir"
  cp -r "$repo/CMakeLists.txt" "$repo/cmake" "$repo/lib" "$repo/apps" "$repo/bench" "$dir/"
  cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLFD_BUILD_TESTS=OFF "$@" \
    > "$dir/configure.log" 2>&1 || { cat "$dir/configure.log" >&2; echo "configure failed in $dir" >&2; exit 1; }
}
build_object() {  # <copy folder>
  ninja -C "$1/build" "$object" > "$1/build.log" 2>&1 || { cat "$1/build.log" >&2; echo "build failed in $1" >&2; exit 1; }
  [ -s "$1/build/$object" ] || { echo "no object built in $1" >&2; exit 1; }
}
stat_of() {  # <counter name>: ccache's counter since the last zeroing
  ccache --print-stats | awk -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }'
}
hits() { echo $(( $(stat_of direct_cache_hit) + $(stat_of preprocessed_cache_hit) )); }

# 1. ccache present: the launcher is used, with the base folder of this copy.
configure "$tmp/clone-a"
grep -q "ccache: /.*ccache (base_dir $tmp/clone-a;" "$tmp/clone-a/configure.log" ||
  { cat "$tmp/clone-a/configure.log" >&2; echo "configure did not report ccache" >&2; exit 1; }
grep -q "CCACHE_BASEDIR=$tmp/clone-a .*ccache" "$tmp/clone-a/build/CMakeFiles/rules.ninja" ||
  { echo "the compile rules do not go through ccache" >&2; exit 1; }
ccache -z > /dev/null
build_object "$tmp/clone-a"
misses=$(stat_of cache_miss)
[ "$misses" -ge 2 ] && [ "$(hits)" -eq 0 ] ||
  { ccache -s >&2; echo "first build: expected >= 2 misses (header, object) and no hit" >&2; exit 1; }

# 2. Another copy in another folder: every compile is a hit.
configure "$tmp/clone-b"
ccache -z > /dev/null
build_object "$tmp/clone-b"
[ "$(hits)" -eq "$misses" ] && [ "$(stat_of cache_miss)" -eq 0 ] ||
  { ccache -s >&2; echo "second copy: expected $misses hits and no miss" >&2; exit 1; }

# 3. -DMLFD_CCACHE=OFF: no launcher, and the build works without ccache.
configure "$tmp/clone-c" -DMLFD_CCACHE=OFF
grep -q "ccache: off" "$tmp/clone-c/configure.log" || { echo "MLFD_CCACHE=OFF not reported" >&2; exit 1; }
if grep -q ccache "$tmp/clone-c/build/CMakeFiles/rules.ninja"; then
  echo "MLFD_CCACHE=OFF still compiles through ccache" >&2; exit 1
fi
ccache -z > /dev/null
build_object "$tmp/clone-c"
[ "$(hits)" -eq 0 ] && [ "$(stat_of cache_miss)" -eq 0 ] || { echo "MLFD_CCACHE=OFF used the cache" >&2; exit 1; }
echo "ccache: launcher used, $misses compiles hit from another folder, builds without it"
