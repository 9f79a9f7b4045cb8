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
LAYERS = ("runtime", "images", "faces", "settings", "attack", "protect", "batching", "evaluation", "cli")
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


def test_threads_follow_the_idle_cores_at_least_one_at_most_every_core(monkeypatch, tmp_path):
    from lowkey_engine import runtime

    assert runtime.threads_for_next_photo(idle=0.2, cores=2) == 1
    assert runtime.threads_for_next_photo(idle=1.7, cores=2) == 2
    assert runtime.threads_for_next_photo(idle=5.0, cores=4) == 4
    # /proc/stat's counters: between two reads 450 ticks passed, 350 of them idle or waiting on I/O
    stat = tmp_path / "stat"
    reads = iter(["cpu  100 0 100 700 100 0 0 0 0 0\n", "cpu  150 0 150 1000 150 0 0 0 0 0\n"])
    monkeypatch.setattr(runtime, "PROC_STAT", stat)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(runtime.time, "sleep", lambda seconds: stat.write_text(next(reads)))
    stat.write_text(next(reads))
    assert runtime.idle_cores() == pytest.approx(4 * 350 / 450)
