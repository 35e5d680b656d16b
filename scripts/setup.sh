#!/usr/bin/env bash
# setup.sh: install everything ccq needs from Debian packages and prepare the
# default data file. Idempotent: a second run installs nothing and rewrites
# nothing that is already in place. Must run as root (or with sudo available)
# on Debian 12 with only the base toolchain.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
  build-essential cmake pkg-config
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools
  # MPICH and its HDF5 beside Open MPI, for scripts/test_mpich.sh (build-mpich/); Open MPI keeps the
  # mpicc/mpirun alternatives (priority 50 against MPICH's 40), so build/ stays on Open MPI
  mpich libmpich-dev libhdf5-mpich-dev
  libinih-dev libcmocka-dev
  libopenblas-dev liblapacke-dev
  dataset-fashion-mnist
  python3 python3-torch python3-onnx python3-h5py python3-numpy python3-matplotlib python3-pil
  libopenblas0-pthread
  # the C export's tests: clang, and 32-bit ARM (cross compiler, its libc for static links, qemu-arm)
  clang gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user
  # the ONNX export's tests run ONNX Runtime's npm package under Node.js
  nodejs
  # Slurm (slurmctld, slurmd, sbatch...) and munge for scripts/slurm/local_cluster.sh and tests/test_slurm.py
  slurm-wlm munge
  # ip netns/veth/bridge for tests/test_hosts.py's three hosts (unshare/nsenter: util-linux, essential)
  iproute2
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# npm: Debian's package, unless a Node.js install already brings its own npm
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The default data file, made once from the Debian package's IDX files.
data="$here/build/data/fashion-mnist.h5"
if [ ! -s "$data" ]; then
  mkdir -p "$(dirname "$data")"
  /usr/bin/python3 "$here/scripts/data2ccq.py" --fashion-mnist "$data"
fi

# ONNX Runtime for the ONNX export's tests (tests/test_onnxexport.py, scripts/ort_eval.js): the npm
# package, pinned, into build/ort. Its CPU library for linux x64 ships inside the package;
# --ignore-scripts keeps its install script from fetching optional GPU binaries from elsewhere.
ORT_VERSION=1.30.0
ort="$here/build/ort"
have=$(node -p "require('$ort/node_modules/onnxruntime-node/package.json').version" 2>/dev/null || true)
if [ "$have" != "$ORT_VERSION" ]; then
  mkdir -p "$ort"
  [ -f "$ort/package.json" ] || echo '{"name": "ccq-ort", "private": true}' > "$ort/package.json"
  (cd "$ort" && npm install --ignore-scripts --no-audit --no-fund "onnxruntime-node@$ORT_VERSION")
fi
