#!/usr/bin/env bash
# What the CUDA backend's tests need without a GPU: Debian's clang-16, so
# that TestPTXCurrent rebuilds the PTX from kernels/*.cu and fails when the
# committed PTX is stale (it skips without clang-16). Idempotent.
set -euo pipefail
if ! command -v clang-16 >/dev/null 2>&1; then
  echo "cuda: apt-get install clang-16"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends clang-16 >/dev/null
fi
