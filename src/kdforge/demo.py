"""`kdforge demo`: the embedded default experiment, no downloads, well under 90 s on 2 CPU cores."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

from kdforge.compare import Comparison, compare
from kdforge.api import parse_config

METHODS = ["ce", "kd", "wsl"]


def preset(name: str = "digits") -> dict:
    return yaml.safe_load(files("kdforge.presets").joinpath(f"{name}.yaml").read_text())


def demo(seeds: int = 3, out_dir: str | Path = "runs/demo", overrides: list[str] | None = None) -> Comparison:
    from kdforge.errors import require_extra

    for module in ("sklearn", "matplotlib"):  # digits, comparison.png: checked before anything is trained
        require_extra(module, "demo", "kdforge demo")
    cfg = parse_config(preset(), overrides or [])
    result = compare(cfg, METHODS, seeds, out_dir, overwrite=True)  # the demo is meant to be re-run
    print(result.table)
    print(f"written to {result.out_dir}/ (table.md, table.csv, results.json, comparison.png)")
    return result
