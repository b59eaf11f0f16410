"""The HTML report of synthetic analyses: self-contained, every plot present, and (when Chromium is installed)
loaded headless with no missing image and no console error."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from kdforge.analysis.html import write_report
from kdforge.analysis.study import Variant, _summarize_variant, _versus_reference, linear_study
from kdforge.config.schema import MethodConfig
from kdforge.engine.metrics import reliability_bins


def _bias_variance_folder(root: Path) -> Path:
    """An analysis.json as `bias_variance_study` writes it, from synthetic members (no training)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=g)
    variants = []
    for i, name in enumerate(["ce", "kd"]):
        logits = torch.randn(3, 200, 5, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, 5)
        curves = [] if name == "ce" else [[0.1, 0.2 + 0.01 * j, 0.3] for j in range(3)]
        variants.append(_summarize_variant(Variant(name, MethodConfig(name=name)), logits, labels,
                                           [{"run_dir": str(root / "none")}] * 3, curves))
    _versus_reference(variants)
    t = torch.randn(200, 5, generator=g) + 4.0 * torch.nn.functional.one_hot(labels, 5)
    report = {"kind": "bias_variance", "name": "synthetic", "data": "synthetic", "student": "mlp", "epochs": 3,
              "parts": 3, "bootstrap": False, "seed": 0, "repeats": 1, "test_samples": 200, "variants": variants,
              "teacher": {"model": "cnn", "top1": 0.9, "nll": 0.3, "ece": 0.05,
                          "reliability": reliability_bins(t, labels)}}
    folder = root / "bv"
    folder.mkdir()
    (folder / "analysis.json").write_text(json.dumps(report))
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    lin = root / "lin"
    linear_study(lin, [0.0, 0.5, 1.0], dim=5, batches=20, steps=(0, 50))
    return write_report([_bias_variance_folder(root), lin], root / "report.html", "test report")


def test_page_is_self_contained_with_every_plot(page: Path) -> None:
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # bias/variance bars, per-sample shifts, regularization samples, reliability diagrams, gradient variance
    # (no learning curves: the synthetic members have no run folders)
    assert len(images) == 5
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "bias ↑ var ↓" in text and "λ* predicted" in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
const _err = console.error; console.error = (...a) => { window.__errors.push(a.join(" ")); _err(...a); };
window.addEventListener("load", () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute("data-probe", JSON.stringify({images: document.images.length, broken: bad,
                                                            errors: window.__errors}));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium) to load the page")
def test_page_loads_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                             "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, f"the page did not finish loading: {result.stderr[-500:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe == {"images": 5, "broken": 0, "errors": []}
