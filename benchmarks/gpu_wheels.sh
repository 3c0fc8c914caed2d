#!/usr/bin/env bash
# Download the wheels a bare GPU image lacks (open_clip_torch and its text cleaner ftfy) for
# Python 3.12 on x86-64 Linux into .whl/, which benchmarks/gpu_check.sh installs from.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]     (default 3.12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYVER=${1:-3.12}
OPEN_CLIP=$(grep -E '^open_clip_torch==' constraints.txt | cut -d= -f3)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "open_clip_torch==$OPEN_CLIP" "ftfy==6.3.1" "wcwidth==0.2.13"
ls -1 .whl
