"""The layers of kdforge, checked on every import of every module (top-level, inside functions and under
TYPE_CHECKING alike, read from the source's syntax tree):

    cli -> applications (compare, search, analysis, demo, plans, report, evaluate) -> api (the assembly point)
        -> methods -> teachers -> engine | models -> data -> registry -> losses

A module imports its own layer and the layers below it; errors, fileio and options (the params validator) are
utilities every layer may use. Besides the order: engine and models (one floor) import nothing of each other;
teachers import nothing of the engine; the YAML schema (`config/`) stands beside the api, imports only the
utilities, and is imported only by the api, the applications and the CLI; the CLI imports only the api, the
applications and kdforge.errors. And `import kdforge.engine` loads neither pydantic nor PyYAML.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kdforge"
LAYERS = ["losses", "registry", "data", "engine|models", "teachers", "methods", "api", "applications", "cli"]
APPLICATIONS = {"compare", "search", "analysis", "demo", "plans", "report", "evaluate"}
UTILITIES = {"errors", "fileio", "options", "presets", ""}  # "" is the package root (its lazy map)


def _room(module: str) -> str:
    """The top-level room of a kdforge module: kdforge.engine.trainer -> engine."""
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else ""
    return {"__main__": "cli", "__version__": ""}.get(room, room)


def _layer(room: str) -> str:
    if room in APPLICATIONS:
        return "applications"
    if room == "cli":
        return "cli"
    if room in ("engine", "models", "meta"):  # meta: functional unrolls of a model's steps, beside the engine
        return "engine|models"
    return room


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every kdforge module `module` imports, wherever the import statement stands."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kdforge")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "kdforge":  # `from kdforge import api, data`: the named rooms
                found |= {f"kdforge.{a.name}" for a in node.names}
            elif base.startswith("kdforge"):
                found.add(base)
    return found




def _violation(module: str, imported: str) -> str | None:
    a, b = _room(module), _room(imported)
    if a == b or b in UTILITIES:
        return None
    if b == "config":
        return None if _layer(a) in ("api", "applications", "cli") else "only the api, applications and CLI read the schema"
    if a == "config":
        return "the schema imports only the utilities"
    la, lb = _layer(a), _layer(b)
    if la == "cli" and lb not in ("api", "applications"):
        return "the CLI imports only the api and the applications"
    if a == "teachers" and b == "engine":
        return "teachers import nothing of the engine"
    if la == lb and la == "engine|models" and {a, b} & {"engine"} and {a, b} & {"models", "meta"}:
        return "engine and models stand on one floor: neither imports the other"
    if LAYERS.index(lb) > LAYERS.index(la):
        return f"{a} ({la}) imports {b} ({lb}), a layer above it"
    return None


def test_every_module_is_on_a_known_layer():
    rooms = {_room(m) for m in _modules()}
    unknown = {r for r in rooms if r not in UTILITIES and r != "config" and _layer(r) not in LAYERS}
    assert not unknown, f"put these on a layer in tests/test_layers.py: {sorted(unknown)}"


def test_no_import_runs_against_the_layers():
    edges = sorted((m, imp) for m, p in _modules().items() for imp in _imports(m, p))
    assert len(edges) > 300  # the walk found the imports (a broken parse would pass vacuously)
    wrong = [f"{m} imports {i}: {why}" for m, i in edges if (why := _violation(m, i)) is not None]
    assert not wrong, "\n".join(wrong)


def test_the_engine_loads_no_pydantic_and_no_yaml():
    code = "import sys, kdforge.engine; print(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
