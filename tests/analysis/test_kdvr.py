"""KDVR driver (issue 26, Safaryan et al.): the uncentred optimum, the measured-vs-predicted rule (compared only
inside the measured range), the driver file's checks, and the committed driver's config."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kdforge.analysis.grad_variance import variance_curve
from kdforge.analysis.kdvr import KdvrSpec, _optimum, load_spec
from kdforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_uncentered_optimum_hand_value() -> None:
    # a = (2, 3), d = (-1, -2): E<a, d> = -4, E d^2 = 2.5 -> 1.6; centred: cov = -0.25, var d = 0.25 -> 1.0
    c = variance_curve(torch.tensor([[2.0], [3.0]]), torch.tensor([[-1.0], [-2.0]]), [0.0, 1.0])
    assert c.lam_star == pytest.approx(1.0) and c.lam_star_uncentered == pytest.approx(1.6)
    assert c.as_dict()["lam_star_uncentered"] == pytest.approx(1.6)


def _spec() -> KdvrSpec:
    return KdvrSpec(key="k", title="t", config="mnist_kd.yaml", lambdas=[0.0, 0.5, 1.0], seeds=[0, 1, 2],
                    teachers=[{"label": "a", "steps": 5}])


def test_optimum_inside_and_outside_the_range() -> None:
    ce = {0.0: {0: 1.0, 1: 1.1, 2: 1.2}, 0.5: {0: 0.5, 1: 0.6, 2: 0.55}, 1.0: {0: 0.9, 1: 0.8, 2: 1.0}}
    got = _optimum(_spec(), ce, predicted=0.7)
    assert got["measured"] == 0.5 and got["measured_interior"] and got["predicted"] == 0.7
    assert got["difference"] == pytest.approx(0.2)
    assert got["versus_measured"]["0.5"] is None and got["versus_measured"]["0.0"]["low"] > 0
    out = _optimum(_spec(), ce, predicted=1.4)
    assert out["predicted"] is None and out["difference"] is None and "outside [0, 1]" in out["predicted_note"]
    edge = _optimum(_spec(), {k: {s: -k + 0.01 * s for s in range(3)} for k in ce}, predicted=0.3)
    assert edge["measured"] == 1.0 and not edge["measured_interior"] and edge["difference"] is None


def test_driver_file_checks(tmp_path: Path) -> None:
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump({"title": "t", "config": "mnist_kd.yaml", "lambdas": [0.0, 0.5, 1.5],
                                   "seeds": [0], "teachers": [{"label": "a", "steps": 5}]}))
    with pytest.raises(ConfigError, match=r"d\.yaml.*within \[0, 1\]"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"title": "t", "config": "mnist_kd.yaml", "lambdas": [0.0, 0.5, 1.0],
                                   "seeds": [0], "teachers": [{"label": "a", "steps": 0}]}))
    with pytest.raises(ConfigError, match="steps"):
        load_spec(bad)


def test_committed_driver_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdforge.api import load_config
    from kdforge.plans.plan import config_path

    monkeypatch.chdir(REPO)
    path = REPO / "configs" / "sweeps" / "kdvr_mnist_linear.yaml"
    spec = load_spec(path)
    for tail in ([], spec.sliver):
        cfg = load_config(config_path(path, spec.config), [*spec.overrides, *tail])
        assert cfg.data.val_fraction == 0 and cfg.data.batch_size == 10 and cfg.optim.momentum == 0
        assert cfg.student.params == {"hidden": []} and cfg.schedule.name == "constant"


def test_teacher_checkpoint_is_plain_sgd_for_n_steps_and_saved_once(tmp_path: Path) -> None:
    import kdforge.models as models
    from kdforge.analysis.kdvr import teacher_checkpoint
    from kdforge.api import build_data, parse_config
    from kdforge.demo import preset

    cfg = parse_config(preset(), ["data.batch_size=10", "teacher.model.name=mlp", "teacher.model.params={hidden: []}"])
    bundle = build_data(cfg.data)
    few = teacher_checkpoint(cfg, bundle, 3, 0.05, 42, tmp_path / "t3")
    more = teacher_checkpoint(cfg, bundle, 200, 0.05, 42, tmp_path / "t200")
    assert models.load_model_with_info(few)[3] == {"sgd_steps": 3}
    # the same run (seed 42) further on: the longer checkpoint fits the training split better
    loss = {p: torch.nn.functional.cross_entropy(bundle.train.batch(torch.arange(len(bundle.train))).forward(
        models.load_model(p)), bundle.train.y).item() for p in (few, more)}
    assert loss[more] < loss[few]
    stamp = (few / "model.json").stat().st_mtime_ns
    assert teacher_checkpoint(cfg, bundle, 3, 0.05, 42, few) == few and (few / "model.json").stat().st_mtime_ns == stamp
