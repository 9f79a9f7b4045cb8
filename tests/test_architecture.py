"""The engine's folders show its jobs, and its imports respect them (lowkey_engine/__init__.py).

Read statically from the source (every `import`, module level or inside a function), so a lazy
import that would close a cycle is caught too; then every module is imported for real.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "lowkey_engine"

#: The engine's layers, lowest first: a module may import its own layer and the ones before it.
LAYERS = ("runtime", "images", "faces", "settings", "attack", "protect", "evaluation", "cli")
#: Top-level packages outside the engine that its library must never import (data flows one way:
#: the daemon calls the engine). Only the command line fronts the fetch step (`lowkey weights`).
NOT_FOR_THE_ENGINE = ("lowkey_daemon", "lowkey_weights", "daemon", "weights")
MAY_FRONT_THE_FETCH_STEP = {"lowkey_engine.cli": ("lowkey_weights",)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _engine_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)   # `from . import x`
    return found


def _engine_graph() -> dict[str, set[str]]:
    """module -> the engine modules it imports, including the packages (__init__) on the way."""
    modules = _engine_modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(name, path):
            parts = target.split(".")
            for end in range(2, len(parts) + 1):           # lowkey_engine.attack, lowkey_engine.attack.budget
                prefix = ".".join(parts[:end])
                # a package that holds `name` is imported before `name` itself: not an edge
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None          # None: the package root (lazy re-exports)


def test_every_engine_module_belongs_to_a_layer():
    strays = [m for m in _engine_modules() if _layer(m) is not None and _layer(m) not in LAYERS]
    assert not strays, f"modules outside the engine's layers (add them to a subpackage): {strays}"


def _layering_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        layer = _layer(module)
        if layer is None:
            continue
        wrong += [f"{module} imports {target}" for target in targets
                  if _layer(target) is not None and LAYERS.index(_layer(target)) > LAYERS.index(layer)]
    return sorted(wrong)


def test_engine_imports_only_its_own_layer_and_the_ones_below():
    wrong = _layering_violations(_engine_graph())
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle_in_the_engine():
    graph = _engine_graph()
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_engine_never_imports_the_daemon_or_the_fetch_step():
    offenders = sorted(f"{name} imports {target}" for name, path in _engine_modules().items()
                       for target in _imports(name, path)
                       if target.split(".")[0] in NOT_FOR_THE_ENGINE
                       and target.split(".")[0] not in MAY_FRONT_THE_FETCH_STEP.get(name, ()))
    assert not offenders, offenders


def test_the_checks_see_a_violation(tmp_path):
    # The checkers themselves: a relative import two levels up is resolved, and an `images` module
    # importing `attack` is reported.
    fake = tmp_path / "decode.py"
    fake.write_text("from ..attack.budget import luma\n")
    targets = _imports("lowkey_engine.images.decode", fake)
    assert "lowkey_engine.attack.budget" in targets
    assert _layering_violations({"lowkey_engine.images.decode": {"lowkey_engine.attack.budget"}}) == [
        "lowkey_engine.images.decode imports lowkey_engine.attack.budget"]


@pytest.mark.parametrize("module", sorted(_engine_modules()))
def test_every_engine_module_imports(module):
    importlib.import_module(module)


def test_public_entry_points():
    import lowkey_engine
    from lowkey_engine.faces.recognizers import load_recognizer
    from lowkey_engine.protect import protect
    from lowkey_engine.settings import ProtectSettings

    assert lowkey_engine.ProtectSettings is ProtectSettings
    assert lowkey_engine.load_recognizer is load_recognizer
    assert callable(protect)


def test_the_thread_policy_fills_in_only_what_the_user_left_unset():
    from lowkey_engine.runtime import THREAD_POLICY_ENV, apply_thread_policy

    environ = {}
    assert apply_thread_policy(environ) == THREAD_POLICY_ENV and environ == THREAD_POLICY_ENV
    mine = {name: "ACTIVE" for name in THREAD_POLICY_ENV}
    assert apply_thread_policy(mine) == {} and set(mine.values()) == {"ACTIVE"}


def test_the_daemon_and_the_command_line_apply_the_thread_policy_before_torch_starts():
    import os
    import subprocess
    import sys

    from lowkey_engine.runtime import THREAD_POLICY_ENV

    report = "import os, sys; print(int('torch' in sys.modules), [os.environ.get(k) for k in {names}])"
    names = sorted(THREAD_POLICY_ENV)
    expected = [THREAD_POLICY_ENV[k] for k in names]
    environ = {k: v for k, v in os.environ.items() if k not in THREAD_POLICY_ENV}
    # the daemon: importing its command line sets the policy, and torch comes after
    daemon = subprocess.run([sys.executable, "-c", "import lowkey_daemon.cli; " + report.format(names=names)],
                            capture_output=True, text=True, env=environ, check=True)
    assert daemon.stdout.split(" ", 1) == ["1", f"{expected}\n"]
    # `lowkey`: importing it loads no torch, and main() sets the policy before a command does
    cli = subprocess.run([sys.executable, "-c", "import sys; from lowkey_engine.cli import main\n"
                          "print(int('torch' in sys.modules))\n"
                          "try:\n    main(['protect', '--help'])\nexcept SystemExit:\n    pass\n"
                          + report.format(names=names)],
                         capture_output=True, text=True, env=environ, check=True)
    lines = cli.stdout.splitlines()
    assert lines[0] == "0" and lines[-1].split(" ", 1)[1] == f"{expected}"
