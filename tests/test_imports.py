"""Import hygiene: losses stand alone, the config package pulls in no registry contents, the package is lazy."""
import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m for m in sys.modules if m.startswith('kdforge'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_losses_load_nothing_else_of_kdforge():
    mods = _loaded_after("import kdforge.losses")
    assert [m for m in mods if m != "kdforge" and not m.startswith("kdforge.losses")] == []


@pytest.mark.parametrize("statement", ["import kdforge.config", "import kdforge"])
def test_no_data_model_or_method_module_at_import_time(statement):
    mods = _loaded_after(statement)
    assert not [m for m in mods if m.startswith(("kdforge.data", "kdforge.models", "kdforge.methods", "kdforge.api"))]


def test_the_public_api_is_there_on_first_use():
    import kdforge

    assert callable(kdforge.distill) and callable(kdforge.run) and callable(kdforge.load_config)
    assert kdforge.OptimConfig(name="adamw", lr=1e-3).lr == 1e-3 and kdforge.ScheduleConfig().name == "cosine"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kdforge.nope  # noqa: B018
