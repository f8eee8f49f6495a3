#!/usr/bin/env bash
# Wheels that the lent GPU machine's image lacks (it has torch, triton, e3nn, numpy, scipy, pyyaml, pytest,
# hypothesis; not ASE), downloaded here into ./.whl (git-ignored through .git/info/exclude) for
# scripts/tools/device_check.sh, which installs them there with --no-index.  Pure-Python wheels only, so the
# GPU machine's Python (3.12) takes them.  Run from the repository root, then call the device with
# carry [".whl"] and the command "bash scripts/tools/device_check.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "ase>=3.22"
ls -l .whl
