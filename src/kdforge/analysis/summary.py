"""The summary table `kdforge analyze` prints (as `compare` prints its own): one Markdown row per method of a
bias-variance study, one per student (checkpoint) of a gradient-variance study, from its analysis.json report."""
from __future__ import annotations

from typing import Any


def summary_table(report: dict[str, Any]) -> str:
    if "variants" in report:
        return _bias_variance(report)
    return _grad_variance(report)


def _bias_variance(report: dict[str, Any]) -> str:
    lines = ["| method | top-1 % (members) | ensemble top-1 % | bias | variance | risk | reg. fraction |",
             "|---|---|---|---|---|---|---|"]
    for v in report["variants"]:
        mean, std = v["top1"]
        reg = v.get("reg_fraction_final")
        lines.append(f"| {v['label']} | {100 * mean:.2f} ± {100 * std:.2f} | {100 * v['ensemble_top1']:.2f} | "
                     f"{v['bias']:.4f} | {v['variance']:.4f} | {v['risk']:.4f} | "
                     f"{'–' if reg is None else f'{reg:.3f}'} |")
    if "teacher" in report:
        lines.append(f"| teacher ({report['teacher']['model']}) | {100 * report['teacher']['top1']:.2f} | – | – | – "
                     "| – | – |")
    return "\n".join(lines) + "\n"


def _grad_variance(report: dict[str, Any]) -> str:
    lines = ["| student | λ* (least gradient variance) | variance at λ* | at the first λ |", "|---|---|---|---|"]
    for name, curve in report["curves"].items():
        lines.append(f"| {name} | {curve['lam_star']:.3f} | {curve['floor']:.4g} | "
                     f"{curve['variance'][0]:.4g} (λ={curve['lambdas'][0]:g}) |")
    return "\n".join(lines) + "\n"
