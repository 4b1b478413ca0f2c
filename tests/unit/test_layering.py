"""The import rules of DESIGN.md §3, checked on the source: cli/agent/server → engines → sources
+ repo → storage → core (exec, the subprocess wrapper, sits on core for everyone).

Every import counts, including those inside functions or under TYPE_CHECKING: a deferred import
up the layers is still a dependency up the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import e3backup

ROOT = Path(e3backup.__file__).parent
ENTRY = {"cli", "agent", "server"}
BELOW = {
    "core": {"core"},
    "exec": {"exec", "core"},
    "storage": {"storage", "exec", "core"},
    "repo": {"repo", "storage", "exec", "core"},
    "sources": {"sources", "exec", "core"},
    "engines": {"engines", "sources", "repo", "storage", "exec", "core"},
}
# Module cycles still to untangle (none). The test fails when a listed one disappears, so an
# entry is removed with its fix.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: set[str]) -> Iterator[str]:
    """Every e3backup module `name` imports, relative to the package (`repo.session`).

    `from pkg import mod` depends on `pkg.mod`, not on the package around it.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = ["e3backup", *package.split(".")]
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [
                f"{module}.{alias.name}"
                if f"{module}.{alias.name}".removeprefix("e3backup.") in modules
                else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.startswith("e3backup."):
                yield target.removeprefix("e3backup.")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {
        name: {target for target in _imports(name, path, names) if target in names} - {name}
        for name, path in modules.items()
    }


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_no_module_imports_up_the_layers() -> None:
    wrong = []
    for name, targets in _graph().items():
        layer = name.split(".")[0]
        if layer in ENTRY or layer not in BELOW:
            continue
        for target in sorted(targets):
            if target.split(".")[0] not in BELOW[layer]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_every_package_has_a_layer() -> None:
    layers = {name.split(".")[0] for name in _modules() if "." in name}
    assert layers <= ENTRY | set(BELOW), layers - ENTRY - set(BELOW)


def test_no_new_import_cycles() -> None:
    graph = _graph()
    reach = {name: _reachable(graph, name) for name in graph}
    cycles = {
        frozenset({name} | {other for other in reach[name] if name in reach[other]})
        for name in graph
        if name in reach[name]
    }
    assert cycles == KNOWN_CYCLES


def test_hypervisor_providers_never_probe_a_disk_format() -> None:
    """A VM's disks come with the format the hypervisor opened them in (issue 8 item 1)."""
    probing = {"sources.detect", "sources.qemu_image", "sources.image_refs"}
    for name, targets in _graph().items():
        if name.startswith("sources.hypervisors"):
            assert not targets & probing, f"{name} imports {targets & probing}"
