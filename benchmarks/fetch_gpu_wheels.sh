#!/usr/bin/env bash
# Downloads the Python 3.12 wheels a bare GPU machine (CUDA, JAX, torch,
# flax, optax, orbax preinstalled; no PyPI) lacks for ear-jax, into .whl/:
#   bash benchmarks/fetch_gpu_wheels.sh      # on a machine with PyPI access
# then carry .whl/ to the GPU machine; benchmarks/gpu_suite.sh installs them
# with pip --no-index --no-deps --target. Versions are the tested ones.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
py="${PYTHON:-python3}"
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
  plat+=(--platform "$p")
done
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl \
  ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
ls -la .whl
