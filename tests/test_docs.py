"""The worked example of docs/architecture.md ("add a method = one file + one test") runs as written."""
import re
from pathlib import Path

import torch

import kdforge
from kdforge.registry import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _example() -> str:
    section = DOC.read_text().split("## Adding a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_worked_example_registers_and_trains(tmp_path):
    try:
        exec(compile(_example(), str(DOC), "exec"), {"__name__": "docs_example"})
        assert "logit_mse" in METHODS
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(256, 12, generator=g), torch.randint(0, 3, (256,), generator=g)
        teacher = torch.nn.Linear(12, 3)
        result = kdforge.distill(torch.nn.Linear(12, 3), teacher, (x, y), val=(x, y), method="logit_mse",
                                 params={"weight": 0.5}, epochs=2, run_dir=tmp_path, tensorboard=False)
        assert {"ce", "mse"} <= set(result.history[-1]) and result.history[-1]["mse"] < result.history[0]["mse"]
    finally:
        METHODS.pop("logit_mse", None)
