"""The data layer's imports form no circle, counting the package ``__init__`` a submodule import runs.

Importing ``diffgym.data.team.d4rl`` first runs ``diffgym/data/team/__init__.py``, which imports every
team module; so an edge to a submodule is also an edge to each package around it (except the packages
around the importing module itself, already running). Function-level imports count too.
"""

import ast
from pathlib import Path

import diffgym.data

DATA = Path(diffgym.data.__file__).parent
PREFIX = "diffgym.data"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(DATA).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PREFIX, *parts])


MODULES = {module_of(path): path for path in sorted(DATA.rglob("*.py"))}


def packages_around(module: str) -> list[str]:
    """The packages of ``diffgym.data`` enclosing ``module`` (itself too, if it is a package), outermost first."""
    parts = module.split(".")
    return [
        ".".join(parts[:depth]) for depth in range(3, len(parts) + 1) if ".".join(parts[:depth]) in MODULES
    ]


def imported(module: str) -> set[str]:
    """The modules of ``diffgym.data`` that ``module`` imports (a ``from package import submodule`` names it)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES and name != PREFIX}


def graph() -> dict[str, set[str]]:
    """module -> what importing it runs first (the facade ``diffgym.data`` itself left out: it runs first)."""
    edges = {}
    for module in MODULES:
        if module == PREFIX:
            continue
        own = set(packages_around(module))
        edges[module] = {
            target
            for name in imported(module)
            for target in (*packages_around(name), name)
            if target not in own or target == name
        }
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_data_layer_imports_in_one_direction():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_no_module_imports_a_facade_around_it():
    """A module importing from a package ``__init__`` that is still running would get half its names."""
    wrong = {
        module: sorted(imported(module) & {PREFIX, *packages_around(module)})
        for module in MODULES
        if module != PREFIX
    }
    assert not {module: names for module, names in wrong.items() if names}


def test_the_check_sees_a_circle_through_a_package():
    edges = {"a": {"pkg.x"}, "pkg.x": {"pkg"}, "pkg": {"pkg.y"}, "pkg.y": {"a"}}
    assert find_cycle(edges) == ["a", "pkg.x", "pkg", "pkg.y", "a"]
