#!/usr/bin/env bash
# Runs one command as a SLURM batch job and behaves like the command: waits for the job
# (sbatch --wait), then writes the job's standard output to its own standard output, the job's
# standard error to its standard error, and exits with the job's exit status. Made to be a launch
# prefix of Makefile.pipeline from a login node (docs/cluster.md), where each stage then is a job:
#
#   make -f Makefile.pipeline PIPELINE=demo -j8 THREADS=4 LAUNCH="scripts/sbatch_wrap.sh -c4 --time=2:00:00"
#
# Usage: scripts/sbatch_wrap.sh [sbatch options] [--] <command> [arguments...]
#   The leading words that start with '-' are sbatch options, one word each (-c4, -n2,
#   --partition=debug, --time=30, --mem=8G); `--` ends them explicitly; the first other word is the
#   command. The job runs the command with srun, so -n2 runs two tasks of it (a data-parallel stage)
#   and -c4 gives each task 4 CPUs. The job is named after the command (an option -J/--job-name
#   given here wins).
#   SBATCH_WRAP_DIR: where the job's script and output files are kept while it runs (default
#   .sbatch_wrap in the current folder; it must be on a file system the nodes share with this one).
#   They are removed when the job's output has been written out.
# Interrupting this script (Ctrl-C, make stopped) cancels the job.
set -uo pipefail

usage() { echo "usage: scripts/sbatch_wrap.sh [sbatch options] [--] <command> [arguments...]" >&2; exit 2; }
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -?*) opts+=("$1"); shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage
command -v sbatch >/dev/null || { echo "sbatch_wrap: sbatch not found" >&2; exit 1; }

base="${SBATCH_WRAP_DIR:-.sbatch_wrap}"
mkdir -p "$base" && tmp=$(mktemp -d "$base/job.XXXXXX") && tmp=$(cd "$tmp" && pwd) ||
  { echo "sbatch_wrap: cannot create a folder in $base" >&2; exit 1; }
{
  echo '#!/bin/bash'
  # srun of SLURM 22.05 no longer reads SLURM_CPUS_PER_TASK: hand the job's -c on to the step.
  echo '[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK'
  printf 'exec srun'
  printf ' %q' "$@"
  echo
} > "$tmp/job.sh"

sbatch --wait --parsable --job-name="$(basename "$1")" "${opts[@]}" --output="$tmp/out" --error="$tmp/err" \
  "$tmp/job.sh" > "$tmp/id" 2> "$tmp/sbatch.err" &
sbatch_pid=$!

job_id() { cut -d';' -f1 "$tmp/id" 2>/dev/null | tr -cd 0-9; }
cancel() {
  local id
  id=$(job_id)
  [ -n "$id" ] && scancel "$id" 2>/dev/null
  wait "$sbatch_pid" 2>/dev/null
  echo "sbatch_wrap: interrupted${id:+, job $id cancelled}" >&2
  rm -rf "$tmp"
  exit 130
}
trap cancel INT TERM HUP

wait "$sbatch_pid"
rc=$?
id=$(job_id)
if [ -z "$id" ]; then
  cat "$tmp/sbatch.err" >&2
  echo "sbatch_wrap: the job was not submitted (sbatch exit status $rc)" >&2
  rm -rf "$tmp"
  exit $(( rc == 0 ? 1 : rc ))
fi
# The node writes the output files; on a network file system they may show here a moment later.
for _ in $(seq 1 50); do
  [ -e "$tmp/out" ] && [ -e "$tmp/err" ] && break
  sleep 0.2
done
[ -e "$tmp/out" ] && cat "$tmp/out"
[ -e "$tmp/err" ] && cat "$tmp/err" >&2
if [ $rc -ne 0 ]; then
  cat "$tmp/sbatch.err" >&2
  echo "sbatch_wrap: job $id ($(basename "$1")) failed: exit status $rc" >&2
fi
rm -rf "$tmp"
exit $rc
