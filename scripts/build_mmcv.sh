#!/usr/bin/env bash
# Install the `openmmlab` extra into a venv: mmcv 2.1.0 with its compiled ops (built once from the sdist and
# cached outside the repository), then mmengine/mmdet/mmsegmentation from the project's pins.
# Usage: scripts/build_mmcv.sh [PYTHON]   (default .venv/bin/python)
# Cache: ${REPL_WHEEL_CACHE:-$HOME/.cache/repl/wheels}; the wheel is keyed by Python, torch and CPU/CUDA ops.
# Recipe and its traps: docs/openmmlab.md, "Building mmcv" (the registry has only the sdist; torch 2.14 headers
# need C++20; the build needs pkg_resources, so setuptools<82, without build isolation).
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "build_mmcv.sh: error: unknown option $1; usage: scripts/build_mmcv.sh [PYTHON]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
PIP=("$PY" -m pip --disable-pip-version-check)
MMCV_VERSION=2.1.0
FORCE_CUDA="${FORCE_CUDA:-0}"

"${PIP[@]}" install -q -c constraints.txt setuptools wheel psutil ninja
key=$("$PY" -c "import sys, torch; print(f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.split(\"+\")[0]}')")
[ "$FORCE_CUDA" = "1" ] && key="$key-cuda" || key="$key-cpu"
cache="${REPL_WHEEL_CACHE:-$HOME/.cache/repl/wheels}/$key"
wheel=$(ls "$cache"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$wheel" ]; then
  echo "building mmcv $MMCV_VERSION with ops ($key) into $cache; about 15 min on 2 cores" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==$MMCV_VERSION"
  tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
  mkdir -p "$cache"
  MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="${MAX_JOBS:-2}" \
    "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/mmcv-$MMCV_VERSION"
  # Move into the cache only once complete, so an interrupted build is never reused.
  wheel="$cache/$(basename "$work"/dist/mmcv-*.whl)"
  mv "$work"/dist/mmcv-*.whl "$wheel.part" && mv "$wheel.part" "$wheel"
fi

"${PIP[@]}" install -q -c constraints.txt "$wheel" -e ".[openmmlab]"
