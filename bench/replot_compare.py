"""Redraw the `kdforge compare` figures in docs/img from the tables printed in docs/results.md (mean ± std over
seeds, the seed count from the table or its heading), for figures whose run folders are not kept:

    python bench/replot_compare.py            # fashion_mnist.png, mnist1d_cnn.png, mnist1d.png, zoo_cifar10_cpu.png

The figure is `kdforge.report.plot_comparison`'s (the one `kdforge compare` writes): a sorted dot plot with 95 %
t-intervals of the mean, computed from the table's mean, std and n.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdforge.report import plot_comparison

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"top-1 %": ("top1", 0.01), "NLL": ("nll", 1.0), "ECE %": ("ece", 0.01)}
# image, the line the table follows, rows kept (by first cell; None: all), seeds per multi-seed row, title
FIGURES = [
    ("fashion_mnist.png", "kdforge compare configs/fashion_mnist_kd.yaml --seeds 5", None, 5,
     "Fashion-MNIST, cnn student (10 epochs)"),
    ("mnist1d_cnn.png", "kdforge compare configs/mnist1d_cnn_kd.yaml --seeds 10 --methods ce,kd,wsl --out "
     "runs/results/mnist1d_cnn ", None, 10, "MNIST-1D, ConvBase student (cnn1d 25 ch., 5.2k params)"),
    ("mnist1d.png", "kdforge compare configs/mnist1d_kd.yaml --seeds 5", "mlp [64]", 5,
     "MNIST-1D, mlp [64] student (teacher: cnn1d 128 ch., from the ConvBase table)"),
    ("zoo_cifar10_cpu.png", "<!-- zoo:cifar10_cpu -->", None, 3,
     "CIFAR-10 zoo at a CPU schedule (resnet20 teacher; 4k images, 5 epochs)"),
]


def _number(cell: str) -> tuple[float, float] | None:
    m = re.fullmatch(r"\**([-\d.]+)(?: ± ([\d.]+))?\**", cell.strip())
    return None if m is None else (float(m[1]), float(m[2] or 0.0))


def table_after(text: str, anchor: str) -> list[dict[str, str]]:
    """The first Markdown table after the line holding `anchor`, as dicts keyed by its header."""
    lines = text[text.index(anchor):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [dict(zip(rows[0], r)) for r in rows[2:]]


def rows_for(table: list[dict[str, str]], keep: str | None, seeds: int) -> list[dict[str, Any]]:
    out = []
    for cells in table:
        if keep is not None and cells.get("student", keep) != keep:
            continue
        row: dict[str, Any] = {"method": cells["method"].replace("student alone (ce)", "ce")}
        for title, (key, scale) in KEYS.items():
            if title in cells and (v := _number(cells[title])) is not None:
                row[key] = (v[0] * scale, v[1] * scale)
        single = "±" not in cells.get("top-1 %", "")
        row["seeds"] = 1 if single else int(cells.get("seeds", seeds))
        out.append(row)
    return out


def main() -> None:
    text = (ROOT / "docs" / "results.md").read_text()
    for image, anchor, keep, seeds, title in FIGURES:
        rows = rows_for(table_after(text, anchor), keep, seeds)
        if keep is not None:  # the teacher row sits in the ConvBase table (the same teacher)
            teacher = [r for r in rows_for(table_after(text, FIGURES[1][1]), None, 10) if r["seeds"] == 1]
            rows = teacher + rows
        print(plot_comparison(rows, ROOT / "docs" / "img" / image, title))


if __name__ == "__main__":
    main()
