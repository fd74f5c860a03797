"""The tree reads as the data flows: no import circles between the project's modules, no oversized rooms."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("generator", "thermvision_db")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every project module `path` imports, at the top or inside functions (lazy imports close circles too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    modules = _modules()
    known = set(modules)
    graph = {name: {t for t in _imports(path, name, known) if not name.startswith(t + ".")}
             for name, path in modules.items()}
    assert _cycle(graph) is None


def test_modules_stay_small():
    big = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"


MAX_MODULES_PER_FOLDER = 12  # not counting __init__.py
DOOR = "thermvision_db.hf.door"
# what the generator may use of the loader: its schema, file and video I/O, errors, tools on loaded data, and the
# public `load_dataset` (hf.api, hf.builder's config names) to read corpora as any user would
GENERATOR_MAY_USE = ("thermvision_db.errors", "thermvision_db.schema", "thermvision_db.io", "thermvision_db.tools",
                     "thermvision_db.hf.api", "thermvision_db.hf.builder")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_loader_reaches_the_generator_only_through_the_door():
    crossings = {name: sorted(t for t in targets if _within(t, ["generator"]))
                 for name, targets in _graph().items() if _within(name, ["thermvision_db"])}
    assert {name: t for name, t in crossings.items() if t and name != DOOR} == {}
    assert all(_within(t, ["generator.corpus", "generator.ray", "generator.vision_check"]) for t in crossings[DOOR])  # rest: COMMANDS


def test_the_door_commands_resolve_to_generator_functions():
    import importlib

    from thermvision_db.hf.door import COMMANDS

    for name, targets in COMMANDS.items():
        for target in filter(None, targets):
            module, _, attribute = target.partition(":")
            assert module.startswith("generator."), name
            assert callable(getattr(importlib.import_module(module), attribute)), target


def test_the_generator_uses_only_the_loaders_shared_parts():
    wrong = {name: sorted(t for t in targets if _within(t, ["thermvision_db"]) and not _within(t, GENERATOR_MAY_USE))
             for name, targets in _graph().items() if _within(name, ["generator"])}
    assert {name: t for name, t in wrong.items() if t} == {}


def test_the_product_never_imports_test_code():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests":
                raise AssertionError(f"{name} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests" for a in node.names):
                raise AssertionError(f"{name} imports test code")


def test_folders_stay_small():
    crowded = {}
    for pkg in PACKAGES:
        for folder in [REPO / pkg, *[p for p in (REPO / pkg).rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
            count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
            if count > MAX_MODULES_PER_FOLDER:
                crowded[str(folder.relative_to(REPO))] = count
    assert not crowded, f"group these folders (over {MAX_MODULES_PER_FOLDER} modules): {crowded}"


def test_the_rule_checks_see_a_planted_crossing(tmp_path):
    """The import reader finds a lazy import of the generator inside a function (what the door rule relies on)."""
    path = tmp_path / "planted.py"
    path.write_text("def f():\n    from generator.corpus.settings import GenerationSettings\n")
    assert _imports(path, "thermvision_db.tools.planted", {"generator.corpus.settings"}) == {"generator.corpus.settings"}
