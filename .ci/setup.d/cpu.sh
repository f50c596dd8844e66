#!/usr/bin/env bash
# What the CPU backend's build needs: a C compiler and libc headers for
# `make native` (backends/cpu/native/native.mk). Idempotent.
set -euo pipefail
if ! command -v cc >/dev/null 2>&1 || ! echo '#include <stdio.h>' | cc -x c -c - -o /dev/null 2>/dev/null; then
  echo "cpu: apt-get install gcc libc6-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi
