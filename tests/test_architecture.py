"""The layout's rules, read off the source (DESIGN.md, "Layout and dependency direction").

Dependencies point one way: ``cli → zoo → agents → wrappers → core``. The core imports none of the
others, not even by a string handed to ``import_module``; no agent imports another agent; and no
module imports another module's private (underscored) names.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> installed package, in dependency order (each may import only those after it)
ROOMS = {
    "cli": "diffgym.cli",
    "zoo": "diffgym.zoo",
    "agents": "diffgym.agents",
    "wrappers": "diffgym.wrappers",
}
LAYERS = ["cli", "zoo", "agents", "wrappers", "core"]


def room_of(module: str) -> str | None:
    """The room a dotted module name belongs to (``core`` for the rest of ``diffgym``), or None."""
    for room, package in ROOMS.items():
        if module == package or module.startswith(package + "."):
            return room
    return "core" if module == "diffgym" or module.startswith("diffgym.") else None


def imported_modules(tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import, including ``import_module("...")`` calls."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Call) and _calls_import_module(node) and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.append((argument.value.partition(":")[0], [], node.lineno))
    return sorted(found, key=lambda entry: entry[2])


def _calls_import_module(node: ast.Call) -> bool:
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    return name in {"import_module", "__import__"}


def source_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    folder = parts[0]
    prefix = ROOMS.get(folder, "diffgym").split(".")
    return ".".join(prefix + parts[1:]) if folder in ROOMS else ".".join(parts)


ALL_FILES = [p for folder in ["diffgym", *ROOMS] for p in source_files(folder)]


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    room = room_of(module_name(path))
    allowed = LAYERS[LAYERS.index(room) :]
    tree = ast.parse(path.read_text(), str(path))
    wrong = [
        f"line {line}: {module} ({room_of(module)})"
        for module, _, line in imported_modules(tree)
        if room_of(module) not in (None, *allowed)
    ]
    assert not wrong, f"{path.relative_to(ROOT)} ({room}) imports upward: {wrong}"


@pytest.mark.parametrize("path", source_files("agents"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_agent_imports_another_agent(path):
    own = module_name(path).split(".")[:3]  # diffgym.agents.<agent>
    if len(own) < 3 or own[2] == "registry":
        return
    tree = ast.parse(path.read_text(), str(path))
    others = [
        f"line {line}: {module}"
        for module, _, line in imported_modules(tree)
        if module.startswith("diffgym.agents.") and module.split(".")[:3] != own
    ]
    assert not others, f"{path.relative_to(ROOT)} imports another agent (share through the core): {others}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_cross_modules(path):
    tree = ast.parse(path.read_text(), str(path))
    private = [
        f"line {line}: {name} from {module}"
        for module, names, line in imported_modules(tree)
        if room_of(module) is not None
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, f"{path.relative_to(ROOT)} imports private names: {private}"


def test_the_rules_catch_a_violation(tmp_path):
    """The scanner sees plain, aliased and string imports (so a passing run means something)."""
    source = (
        "import importlib\n"
        "from diffgym.agents.dql import DiffusionQL\n"
        "import diffgym.zoo as z\n"
        "importlib.import_module('diffgym.wrappers.synther')\n"
        "from diffgym.data.making import _create\n"
    )
    modules = imported_modules(ast.parse(source))
    rooms = [room_of(module) for module, _, _ in modules]
    assert rooms == [None, "agents", "zoo", "wrappers", "core"]
    assert modules[-1][1] == ["_create"]
