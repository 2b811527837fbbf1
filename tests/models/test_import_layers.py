"""The package's layers import downwards only: no import loop between srx's packages, and the engine, the networks
and the families never reach the command line interface (nor its libraries, typer and rich)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers.paths import PACKAGE_DIR

LIBRARY_LAYERS = ("engine", "nets", "families")  # usable without the command line interface
CLI_ONLY = ("sr_cli.cli", "typer", "rich")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names of the modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    # ``from .x import name``: the submodule ``x.name`` when there is one, else ``x`` itself.
    return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]


def _statements_run_on_import(body: list[ast.stmt]):
    """The import statements Python runs when the module is imported (not those inside functions, nor under
    ``if TYPE_CHECKING:``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from _statements_run_on_import(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _statements_run_on_import(node.body + node.orelse + node.finalbody
                                                 + [s for h in node.handlers for s in h.body])


def _layer(module: str) -> str | None:
    """``sr_cli.engine.color`` -> ``engine``; a module of the package root is a layer of its own."""
    parts = module.split(".")
    if parts[0] != "sr_cli" or len(parts) == 1:
        return None
    return parts[1]


def _sources():
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        yield path, _module_name(path), path.name == "__init__.py", ast.parse(path.read_text(encoding="utf-8"))


def package_graph() -> dict[str, dict[str, list[str]]]:
    """{layer: {layer it imports on import: [the statements, as "module -> module"]}}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for _, module, is_package, tree in _sources():
        source = _layer(module)
        for node in _statements_run_on_import(tree.body):
            for target in _imported(node, module, is_package):
                layer = _layer(target)
                if source and layer and layer != source:
                    graph.setdefault(source, {}).setdefault(layer, []).append(f"{module} -> {target}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One import loop as the list of layers around it (None: the graph is acyclic)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    return next((c for n in list(graph) if n not in state and (c := visit(n))), None)


def test_the_packages_import_each_other_without_a_loop():
    graph = package_graph()
    cycle = find_cycle(graph)
    why = [line for a, b in zip(cycle, cycle[1:]) for line in graph[a][b]] if cycle else []
    assert cycle is None, f"import loop {' -> '.join(cycle)}: " + "; ".join(why)
    # The store's lowest layer (what a model is) is below the engine and the families that use it.
    assert "models" in graph["engine"] and "models" in graph["families"]
    assert "families" not in graph.get("models", {}) and "engine" not in graph.get("models", {})


def test_the_cycle_finder_reports_a_loop():
    assert find_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}}) is None


def test_engine_nets_and_families_never_import_the_command_line_interface():
    found = []
    for _, module, is_package, tree in _sources():
        if _layer(module) not in LIBRARY_LAYERS:
            continue
        for node in ast.walk(tree):  # anywhere: inside functions too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [f"{module}: {target}" for target in _imported(node, module, is_package)
                          if any(target == name or target.startswith(name + ".") for name in CLI_ONLY)]
    assert found == []


def test_color_fixes_and_samplers_have_one_definition():
    defined = {}
    for _, module, _, tree in _sources():
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for name in ("COLOR_FIXES", "SAMPLERS"):
                    if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                        defined.setdefault(name, []).append(module)
    assert defined == {"COLOR_FIXES": ["sr_cli.models.spec"], "SAMPLERS": ["sr_cli.models.spec"]}
