#!/usr/bin/env bash
# Create .venv (Python 3.10+) and install nerfdiff-ns with its test and data extras.
# Idempotent: a second run only re-installs the package itself (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# open3d (a nerfstudio dependency, used by ns-export) needs libusb at import time
if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null 2>&1 || echo "[setup] could not install libusb-1.0-0: ns-export will not work"
  else
    echo "[setup] libusb-1.0 is missing: install it (e.g. apt-get install libusb-1.0-0) for ns-export"
  fi
fi
# Debian's Chromium for the viewer's browser test (tests/test_viewer_browser.py skips, saying why, without it)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "[setup] could not install chromium: the browser test will be skipped"
  else
    echo "[setup] chromium is missing (not root or no apt): the browser test will be skipped; install Debian's chromium to run it"
  fi
fi
if [ ! -x .venv/bin/python ]; then
  # The venv takes ~9 GB (torch's CUDA build alone is 5.5 GB); on a full disk pip fails mid-download
  # ("incomplete-download") instead of saying why, so say it here.
  free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "${free_gb:-0}" -lt 9 ]; then
    echo "[setup] only ${free_gb} GB free on $(df -P . | awk 'NR == 2 {print $6}'): the venv needs about 9 GB. Free disk space (old clones, runs/) and run again." >&2
    exit 1
  fi
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# A registry download can break off mid-file:
# pip resumes a broken download this many times, and a failed install is tried again from scratch.
export PIP_RESUME_RETRIES=${PIP_RESUME_RETRIES:-20} PIP_RETRIES=${PIP_RETRIES:-10} PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-60}
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    python -m pip install -q "$@" && return 0
    echo "[setup] pip install $* failed (attempt $attempt of 3); trying again in 10 s" >&2
    sleep 10
  done
  return 1
}
if ! python -c "import nerfstudio, diffusers, pybullet, pytest, playwright" 2>/dev/null; then
  pip_install -U pip setuptools wheel
  # torch/torchvision first and explicitly, so the resolver keeps the machine's pinned builds
  pip_install "torch==2.14.1" "torchvision==0.29.1" || pip_install torch torchvision
  pip_install -e ".[dev,data]"
else
  python -m pip install -q --no-deps -e .
fi
