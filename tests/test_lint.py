"""The linters, run by the test command so CI enforces them: ruff on the Python code (pyproject.toml's
[tool.ruff]), ESLint on the extension (extension/eslint.config.js), and web-ext lint (Mozilla's
addons-linter, what addons.mozilla.org runs on an upload) on the extension's store zip, offline.

ruff comes with the `test` extra; ESLint and web-ext live in tools/lint/ (install/setup.sh runs
`npm ci` there). A missing tool is a failure naming that step, never a skip. `ruff format` is not
enforced: the code is laid out by hand, and the formatter would rewrite most files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_BIN = REPO / "tools" / "lint" / "node_modules" / ".bin"
NPM_SETUP = "run ./install/setup.sh (it installs them with `npm ci --prefix tools/lint`)"
TIMEOUT_S = 120

#: web-ext findings the extension accepts, as (code, text in the description) -> why.
WEB_EXT_ACCEPTED = {
    ("BACKGROUND_SERVICE_WORKER_IGNORED", ""):
        "one manifest for both browsers: Chromium runs background.service_worker, Firefox background.scripts",
    ("KEY_FIREFOX_UNSUPPORTED_BY_MIN_VERSION", "data_collection_permissions"):
        "AMO requires the key of new add-ons; Firefox 128-139 ignore it",
    ("KEY_FIREFOX_ANDROID_UNSUPPORTED_BY_MIN_VERSION", "data_collection_permissions"):
        "AMO requires the key of new add-ons; Firefox for Android 128-141 ignore it",
}


def _run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
                          **kwargs)


def _node_tool(name: str) -> Path:
    tool = NODE_BIN / name
    if not tool.exists():
        pytest.fail(f"{name} is not installed in tools/lint/node_modules: {NPM_SETUP}")
    return tool


def _ruff(*args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed in this environment: run ./install/setup.sh "
                    "(or `.venv/bin/pip install -e '.[test]'`)")
    return _run([sys.executable, "-m", "ruff", *args])


def test_ruff_check_is_clean():
    done = _ruff("check", "--output-format", "concise", ".")
    if done.returncode:
        pytest.fail(f"ruff check found problems:\n{done.stdout}{done.stderr}", pytrace=False)


def test_eslint_is_clean():
    # No --config: ESLint finds extension/eslint.config.js beside the files, and reads its patterns
    # from that folder.
    done = _run([_node_tool("eslint"), "--max-warnings", "0", "extension"])
    if done.returncode:
        pytest.fail(f"ESLint found problems:\n{done.stdout}{done.stderr}", pytrace=False)


def test_web_ext_lint_of_the_store_zip_is_clean(tmp_path):
    """The zip addons.mozilla.org gets (extension/build_zip.py), not the folder: it is what ships,
    and the folder also holds this project's own files (build_zip.py, notes)."""
    web_ext = _node_tool("web-ext")
    built = _run([sys.executable, REPO / "extension" / "build_zip.py", "--out", tmp_path])
    if built.returncode:
        pytest.fail(f"extension/build_zip.py failed:\n{built.stderr}", pytrace=False)
    source = tmp_path / "firefox"
    with zipfile.ZipFile(built.stdout.strip()) as archive:
        archive.extractall(source)
    done = _run([web_ext, "lint", "--source-dir", source, "--output", "json", "--no-config-discovery"],
                env={**os.environ, "NO_UPDATE_NOTIFIER": "1"})   # no update check: lint stays offline
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"web-ext lint gave no report (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    found = [m for kind in ("errors", "warnings", "notices") for m in report.get(kind, [])]
    unexpected = [m for m in found
                  if not any(m["code"] == code and text in str(m.get("description", ""))
                             for code, text in WEB_EXT_ACCEPTED)]
    if unexpected:
        pytest.fail("web-ext lint found problems:\n" + "\n".join(
            f"{m['_type']} {m['code']} {m.get('file', '')}:{m.get('line', '')}: {m['message']} "
            f"{m.get('description', '')}" for m in unexpected), pytrace=False)
