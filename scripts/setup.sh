#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, a virtual environment with
# the CPU build of torch, calm with every extra (including the offline Whisper wheels), and the
# headless browser that tests `calm app` (Debian's chromium + chromium-driver, driven by selenium).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in espeak-ng sox libsndfile1 chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ ! -f .venv/.calm-installed ] || [ pyproject.toml -nt .venv/.calm-installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU wheel first: a looser torch requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[all,test]"
  touch .venv/.calm-installed
fi
