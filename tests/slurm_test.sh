#!/usr/bin/env bash
# CTest: the pipeline DAG through SLURM (docs/cluster.md), on a single-node SLURM started on
# localhost for the test (scripts/slurm_local.sh, in a temporary folder; stopped by pid on any exit).
# A tiny two-dataset pipeline (the settings of the test "Makefile.pipeline: the whole DAG on tiny
# data ...", one seed) runs in two steps:
#   1. the stores (`make ... data`) from "a login node": each prepare_data a batch job of its own,
#      LAUNCH_prepare_data="scripts/sbatch_wrap.sh -c1 -- <step log>";
#   2. the rest inside one allocation of 2 tasks: `sbatch --wait -n2 -c1 scripts/slurm_pipeline.sh`,
#      make -j2 starting every stage as a job step, LAUNCH="srun -n1 -c1 --exact <step log>", and
#      every train_teacher as a data-parallel step of 2 tasks (LAUNCH_train_teacher="srun -n2 ...").
# <step log> runs inside each job step and writes the step's SLURM_JOB_ID.SLURM_STEP_ID and the
# stage to a log before running the stage. Checked: both makes succeed, the report has every row,
# h5ls reads the checkpoints, prepare_data's summary came back through the batch job's output,
# every stage command make started ran in a step of its own (prepare_data: in its own job; the
# rest: in the allocation's job), every computing stage binary ran so, the controller logged the
# allocation of each of these jobs, train_teacher ran as ranks 0 and 1 of 2 and its checkpoints
# record the 2-process training in their provenance, and the finished run settles (make -q).
# Usage: tests/slurm_test.sh <source dir> <bin dir>
set -euo pipefail
src=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
export PATH="$PATH:/usr/sbin:/sbin"
for c in slurmctld slurmd srun sbatch sinfo h5ls python3; do
  command -v "$c" >/dev/null || { echo "slurm_test: $c not found (scripts/install_deps.sh installs it)" >&2; exit 1; }
done

tmp=$(mktemp -d)
mkdir "$tmp/slurm"
cleanup() {
  "$src/scripts/slurm_local.sh" stop "$tmp/slurm" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "slurm_test: $*" >&2
  for f in "$tmp"/*.log "$tmp/slurm/slurmctld.log" "$tmp/slurm/slurmd.log"; do
    [ -f "$f" ] && { echo "--- end of $f" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
}

"$src/scripts/slurm_local.sh" start "$tmp/slurm" > "$tmp/slurm.env" || fail "the local SLURM did not start"
. "$tmp/slurm.env"
export SLURM_CONF

# Tiny stores: PGM images of a bright band per class on noise, like the C++ tests' MakeStore.
python3 - "$tmp" <<'EOF'
import json, os, random, sys
tmp = sys.argv[1]
for name, classes, seed in (("pa", 3, 31), ("pb", 2, 32)):
    rng, size, root = random.Random(seed), 12, os.path.join(tmp, name + "_imgs")
    for c in range(classes):
        os.makedirs(f"{root}/c{c}")
        band = size // classes
        for k in range(12):
            px = bytes(rng.randrange(60) + (150 if c * band <= x < (c + 1) * band else 0)
                       for y in range(size) for x in range(size))
            with open(f"{root}/c{c}/{k}.pgm", "wb") as f:
                f.write(b"P5 %d %d 255\n" % (size, size) + px)
    with open(os.path.join(tmp, name + ".json"), "w") as f:
        json.dump({"name": name, "classes": "folders", "sources": [{"kind": "folder", "root": root}],
                   "split": {"mode": "stratified", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
                   "image": {"size": size, "channels": 1}}, f)
EOF
tiny="--small-stem --width 0.125 --embed-dim 16 --batch-size 16 --workers 1 --lr 0.05 --epochs 2"
cat > "$tmp/tiny.mk" <<EOF
DATASETS = pa pb
TEACHER_OPTS = $tiny --arch resnet18
TEACHER_OPTS_pb = --label-smoothing 0.05
BASELINE_OPTS = $tiny --arch resnet18
JOINT_BUILD_OPTS = --adaptor-dim 8
JOINT_OPTS = --batch-size 16 --workers 1 --optimizer adam --lr 0.003 --epochs 1
STUDENT_OPTS = --batch-size 16 --workers 1 --lr 0.05 --epochs 1
JOINT_MAPS = cached
STUDENT_SIGNALS = cached
JOINT_CACHE_LEVELS = fused,pool
TEACHER_CACHE_LEVELS = layer2
EOF

# Runs inside every job step: records where the stage ran, then runs it.
cat > "$tmp/step.sh" <<EOF
#!/bin/bash
echo "\${SLURM_JOB_ID:-none}.\${SLURM_STEP_ID:-none} \${SLURM_PROCID:-none}/\${SLURM_NTASKS:-none} \$(basename "\$1")" >> "$tmp/steps.log"
exec "\$@"
EOF
chmod +x "$tmp/step.sh"
run="$tmp/run"
vars=(PIPELINE=tiny "PIPELINE_FILE=$tmp/tiny.mk" "MANIFESTS=$tmp" "RUN=$run" "BIN=$bin" VERBOSE=0 SEEDS=1)

# ---- The data-parallel stage (docs/distributed.md): every train_teacher (the teachers and the
# joint-training baseline) runs as one job step of 2 tasks, which join one c10d group through srun's
# variables and train data-parallel; the others run as one task each.
DATA_PARALLEL_LAUNCH="srun -n2 -c1 --exact $tmp/step.sh"
check_data_parallel() {
  local steps
  steps=$(grep " train_teacher\$" "$tmp/steps.log" | cut -d' ' -f1 | sort -u | wc -l)
  [ "$steps" -eq 3 ] || fail "expected 3 train_teacher steps (2 teachers, the baseline), found $steps"
  [ "$(grep " train_teacher\$" "$tmp/steps.log" | cut -d' ' -f2 | sort | uniq -c | awk '{print $1 " " $2}' | tr '\n' ' ')" = "3 0/2 3 1/2 " ] ||
    fail "train_teacher did not run as ranks 0 and 1 of 2 tasks: $(grep train_teacher "$tmp/steps.log")"
  grep -v " train_teacher\$" "$tmp/steps.log" | grep -qv " 0/1 " && fail "a stage other than train_teacher ran as several tasks"
  for ckpt in seed1/teachers/pa.h5 seed1/teachers/pb.h5 seed1/baseline/joint.h5; do
    /usr/bin/python3 - "$run/$ckpt" <<'PY' || fail "$ckpt does not record a data-parallel training of 2 processes launched by srun"
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
p = json.loads(f.attrs["provenance"])
assert p["data_parallel"] == {"world_size": 2, "launcher": "slurm", "sync_bn": False}, p.get("data_parallel")
PY
  done
}
# ----

# 1. The stores, each prepare_data a batch job (scripts/sbatch_wrap.sh), make outside any job.
t0=$SECONDS
export SBATCH_WRAP_DIR="$tmp/sbatch_wrap"
(cd "$src" && timeout 600 make -f Makefile.pipeline "${vars[@]}" -j2 data \
   LAUNCH_prepare_data="$src/scripts/sbatch_wrap.sh -c1 -- $tmp/step.sh") > "$tmp/data.log" 2>&1 ||
  fail "make data through sbatch_wrap.sh failed"
for ds in pa pb; do
  h5ls "$run/data/$ds.h5" > /dev/null || fail "h5ls cannot read the store $ds.h5"
  python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$run/data/$ds.json" ||
    fail "prepare_data's summary $ds.json (its standard output, through the batch job) is not JSON"
done
[ -z "$(ls -A "$SBATCH_WRAP_DIR" 2>/dev/null)" ] || fail "sbatch_wrap.sh left files in $SBATCH_WRAP_DIR"
echo "slurm_test: stores made by batch jobs in $((SECONDS - t0)) s"

# 2. Everything else inside one allocation of 2 tasks x 1 CPU (scripts/slurm_pipeline.sh).
t0=$SECONDS
(cd "$src" && timeout 900 sbatch --wait --ntasks=2 --cpus-per-task=1 --time=15 --output="$tmp/job.log" scripts/slurm_pipeline.sh \
   "${vars[@]}" LAUNCH="srun -n1 -c1 --exact $tmp/step.sh" \
   ${DATA_PARALLEL_LAUNCH:+LAUNCH_train_teacher="$DATA_PARALLEL_LAUNCH"}) > "$tmp/sbatch.log" 2>&1 ||
  fail "the pipeline job failed"
echo "slurm_test: the rest of the DAG in one allocation in $((SECONDS - t0)) s"

# The outputs.
report="$run/report.md"
[ -s "$report" ] || fail "no report"
for row in "## pa" "## pb" "| individual (stage-1 teacher, this dataset only) | resnet18 | 1 |" "| joint teacher T* |" \
           "| KD student" "| FitNet student" "| MLFD student | resnet18 | 1 |"; do
  grep -qF -- "$row" "$report" || fail "the report has no row '$row'"
done
for ckpt in seed1/teachers/pa.h5 seed1/joint/final.h5 seed1/students/mlfd_pb.h5; do
  h5ls "$run/$ckpt" > /dev/null || fail "h5ls cannot read $ckpt"
done

# Every stage command make started ran in a job step of its own: as many steps as commands, each
# with one record per task; prepare_data in a batch job of its own each, the others in the
# allocation's job.
log="$tmp/steps.log"
[ -s "$log" ] || fail "no stage ran in a job step"
grep -q " none" "$log" && fail "a stage ran outside a job step: $(grep " none" "$log")"
commands=$(cat "$tmp/data.log" "$tmp/job.log" | grep -cF "$tmp/step.sh $bin/" || true)
steps=$(cut -d' ' -f1 "$log" | sort -u | wc -l)
[ "$steps" -eq "$commands" ] || fail "make started $commands stage commands, $steps job steps ran one"
awk '{ split($2, t, "/"); n[$1]++; want[$1] = t[2]; if (seen[$1 " " t[1]]++ || (($1 in stage) && $3 != stage[$1])) bad = 1; stage[$1] = $3 }
     END { for (s in n) if (n[s] != want[s]) bad = 1; exit bad }' "$log" ||
  fail "a job step ran two stages, or not one record per task: $(sort "$log")"
for stage in prepare_data train_teacher build_joint finetune_joint extract_features distill_student evaluate; do
  grep -q " $stage\$" "$log" || fail "$stage never ran in a job step"
done
[ "$(grep " prepare_data\$" "$log" | cut -d. -f1 | sort -u | wc -l)" -eq 2 ] ||
  fail "the two prepare_data did not run as two batch jobs: $(grep prepare_data "$log")"
alloc_job=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$tmp/sbatch.log")
[ -n "$alloc_job" ] || fail "no job id from sbatch: $(cat "$tmp/sbatch.log")"
others=$(grep -v " prepare_data\$" "$log" | cut -d. -f1 | sort -u)
[ "$others" = "$alloc_job" ] || fail "the stages after the stores ran in jobs '$others', not the allocation $alloc_job"
for job in $(cut -d. -f1 "$log" | sort -u); do
  grep -q "sched: Allocate JobId=$job " "$tmp/slurm/slurmctld.log" || fail "slurmctld did not log the allocation of job $job"
done
check_data_parallel

# The finished run settles: nothing left to do.
(cd "$src" && make -f Makefile.pipeline "${vars[@]}" -q) || fail "make -q: the finished run is not up to date"
echo "slurm_test: $steps stage commands ran as job steps ($(grep -c " prepare_data\$" "$log") in batch jobs of their own," \
  "$((steps - $(grep -c " prepare_data\$" "$log"))) in job $alloc_job); report and checkpoints read back"
