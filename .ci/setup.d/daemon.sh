#!/usr/bin/env bash
# What the daemon's tests need: curl; systemd's systemd-socket-activate and
# systemd-analyze; and the official openai npm package, installed into the
# gitignored .cache/node (the tests find it through NODE_PATH).
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
{ command -v systemd-socket-activate && command -v systemd-analyze; } >/dev/null 2>&1 || need+=(systemd)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "daemon: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -f .cache/node/node_modules/openai/package.json ]; then
  echo "daemon: npm install openai@6 into .cache/node"
  mkdir -p .cache/node
  (cd .cache/node && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error openai@6 >/dev/null)
fi
