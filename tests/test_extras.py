"""A light install (issue 25): optional dependencies come with extras, and a missing one is one line naming the
extra to install, from the Python API and through the real `kdforge` entry point (exit code 2, no traceback)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdforge.errors import KdforgeError, MissingExtra, require_extra

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kdforge"
CONFIGS = ROOT / "configs"

# An optional package -> the module whose require_extra guards it (sqlalchemy comes with optuna).
OPTIONAL = {"torch_geometric": "torch_geometric", "optuna": "optuna", "sqlalchemy": "optuna", "psycopg2": "psycopg2",
            "matplotlib": "matplotlib", "sklearn": "sklearn", "scipy": "scipy", "transformers": "transformers",
            "kornia": "kornia", "torchmetrics": "torchmetrics"}


def _message(extra: str, what: str) -> str:
    return f"{what} needs the [{extra}] extra: pip install 'kdforge[{extra}]'"


def test_require_extra_names_the_extra_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an absent package looks like to `import`
    with pytest.raises(MissingExtra) as info:
        require_extra("optuna", "search", "the distiller search")
    assert str(info.value) == _message("search", "the distiller search")
    assert isinstance(info.value, KdforgeError) and isinstance(info.value, ImportError)  # importorskip still skips


def test_require_extra_returns_the_module_when_installed():
    assert require_extra("json.decoder", "none", "json").__name__ == "json.decoder"


def test_a_missing_dependency_of_the_extra_is_named_too(monkeypatch):
    """A broken install of the extra (one of its own dependencies gone) still says which extra, and what is gone."""
    def fail(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")

    monkeypatch.setattr("importlib.import_module", fail)
    with pytest.raises(MissingExtra, match=r"graph models needs the \[graph\] extra: .*\(No module named 'aiohttp'\)"):
        require_extra("torch_geometric.nn", "graph", "graph models")


def test_graph_models_need_the_graph_extra(monkeypatch):
    from kdforge.models.gnn import GCN

    monkeypatch.setitem(sys.modules, "torch_geometric.nn", None)
    with pytest.raises(MissingExtra, match=r"^graph models needs the \[graph\] extra"):
        GCN(8, 4, 2, dropout=0.5)


def test_planetoid_needs_the_graph_extra(monkeypatch):
    from kdforge.data.sources.planetoid import _allowed

    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    with pytest.raises(MissingExtra, match=r"^Planetoid data needs the \[graph\] extra"):
        _allowed()


def test_digits_need_the_digits_extra(monkeypatch):
    from kdforge.data.sources.base import SourceParams
    from kdforge.data.sources.digits import load

    for name in ("sklearn", "sklearn.datasets"):  # as if not installed (find_spec then finds nothing)
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtra, match=r"^the digits data set needs the \[digits\] extra"):
        load(None, SourceParams())


def test_a_postgres_storage_needs_the_postgres_extra(monkeypatch):
    pytest.importorskip("optuna")
    from kdforge.search.runner import storage

    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(MissingExtra, match=r"needs the \[postgres\] extra: pip install 'kdforge\[postgres\]'$"):
        storage(None, "postgresql+psycopg2://user@host/db")  # refused before the config is read


def _cli(hide: list[str], *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m kdforge ARGV` in a fresh interpreter where the modules in `hide` are not installed."""
    code = (f"import runpy, sys\nfor name in {hide!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = ['kdforge', *{list(argv)!r}]\nrunpy.run_module('kdforge', run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("hide,argv,extra,what", [
    (["sklearn"], ["demo"], "demo", "kdforge demo"),
    (["matplotlib"], ["demo"], "demo", "kdforge demo"),
    (["matplotlib"], ["compare", str(CONFIGS / "digits_kd.yaml"), "--methods", "ce,kd"], "report",
     "a comparison (its comparison.png)"),
    (["optuna"], ["search", str(CONFIGS / "search" / "digits_kdzero.yaml")], "search", "the distiller search"),
])
def test_the_cli_says_which_extra_in_one_line_and_exits_2(tmp_path, hide, argv, extra, what):
    done = _cli(hide, *argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {_message(extra, what)}\n"
    assert not list(tmp_path.iterdir()), "nothing is trained or written before the check"


def _guarded(path: Path) -> set[str]:
    """The packages whose require_extra(...) call stands in this module."""
    tree = ast.parse(path.read_text())
    return {node.args[0].value.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "require_extra" and isinstance(node.args[0], ast.Constant)}


def test_every_optional_import_in_the_package_is_guarded():
    """An optional package is imported only in a module that checks for it with require_extra (so that a missing
    extra is an error naming it, not a traceback), and the core dependencies list none of them."""
    unguarded = []
    for path in sorted(SRC.rglob("*.py")):
        guarded = _guarded(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in OPTIONAL and OPTIONAL[top] not in guarded:
                    unguarded.append(f"{path.relative_to(SRC)}:{node.lineno} imports {name}")
    assert not unguarded, "import these through kdforge.errors.require_extra:\n" + "\n".join(unguarded)


def test_pyproject_core_is_light_and_the_package_ships_license_and_types():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for dep in project["dependencies"]}
    heavy = {"torch-geometric", "optuna", "psycopg2-binary", "scikit-learn", "scipy", "matplotlib", "kornia",
             "torchmetrics", "transformers"}
    assert not core & heavy
    extras = project["optional-dependencies"]
    assert {"graph", "search", "postgres", "report", "hf", "dev", "all"} <= set(extras)
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert (SRC / "py.typed").is_file()
    assert not (SRC / "search" / "pgserver.py").exists()  # the throwaway test server lives in tests/
