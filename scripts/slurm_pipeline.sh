#!/usr/bin/env bash
# A batch script that runs the pipeline DAG inside one SLURM allocation (docs/cluster.md): make runs
# on the allocation's first node and starts every computing stage as a job step of its own
# (LAUNCH="srun -n1 -c<cpus per task> --exact"), at most as many at once as the job has tasks, each
# stage with --threads <cpus per task>.
#
#   sbatch --ntasks=8 --cpus-per-task=4 --time=12:00:00 scripts/slurm_pipeline.sh PIPELINE=g1 DATA_ROOT=/datasets
#
# Submit it from the repository root: the job works in the folder it was submitted from. Its
# arguments are make's (goals and variables); a variable given there wins over the script's own,
# e.g. LAUNCH_train_teacher="srun -n2 -c4 --exact" runs every train_teacher as two tasks
# (data-parallel training: docs/distributed.md). The #SBATCH lines are defaults; sbatch's own
# options win over them.
#SBATCH --job-name=mlfd-pipeline
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=2
#SBATCH --output=mlfd-pipeline-%j.out
set -euo pipefail
cpus="${SLURM_CPUS_PER_TASK:-1}"
echo "slurm_pipeline: job ${SLURM_JOB_ID:-?}: make -j ${SLURM_NTASKS:-1}, $cpus CPUs a stage, in $PWD"
exec make -f Makefile.pipeline -j "${SLURM_NTASKS:-1}" THREADS="$cpus" LAUNCH="srun -n1 -c$cpus --exact" "$@"
