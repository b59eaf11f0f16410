"""Safe loading as a rule, checked on the source itself: torch.load only with weights_only=True, unpickling only
after a checksum and through a restricted Unpickler, and no eval/exec/dynamic import reachable from a config."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kdforge"
FILES = sorted(SRC.rglob("*.py"))


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_torch_load_always_has_weights_only_true():
    seen = 0
    for path in FILES:
        for node, name in _calls(path):
            if name == "torch.load":
                seen += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{path}:{node.lineno} torch.load without weights_only=True"
    assert seen >= 1


def test_pickles_are_read_only_after_a_checksum_through_a_restricted_unpickler():
    for path in FILES:
        source = path.read_text()
        for node, name in _calls(path):
            assert name not in ("pickle.load", "pickle.loads", "np.load", "numpy.load"), \
                f"{path}:{node.lineno} {name}: use a restricted Unpickler after read_verified"
            if name.endswith("Unpickler") or name.endswith("Unpickler(io.BytesIO(data)).load"):
                assert "read_verified" in source or "find_class" in source, f"{path}:{node.lineno}"
        tree = ast.parse(source)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if any(ast.unparse(b).endswith("Unpickler") for b in cls.bases):
                assert any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in cls.body), \
                    f"{path}: {cls.name} must restrict find_class"


def test_no_eval_exec_or_dynamic_import_from_config_values():
    for path in FILES:
        for node, name in _calls(path):
            assert name not in ("eval", "exec", "__import__", "compile"), f"{path}:{node.lineno} {name}"
            if name in ("import_module", "importlib.import_module"):
                # only a package's lazy loader (kdforge, kdforge.data) and errors.require_extra (optional imports),
                # with module names they spell out themselves
                assert path in (SRC / "__init__.py", SRC / "data" / "__init__.py", SRC / "errors.py"), \
                    f"{path}:{node.lineno} dynamic import"


def test_yaml_is_only_safe_loaded():
    for path in FILES:
        for node, name in _calls(path):
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), f"{path}:{node.lineno}"
