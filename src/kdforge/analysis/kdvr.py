"""Safaryan, Peste & Alistarh (NeurIPS 2023), "KD performs partial variance reduction", in its MNIST linear setting
(issue 26 spec §3): teachers of graded quality, each a checkpoint of one plain-SGD run of the linear model; per
teacher, the gradient variance of (1 - lam) CE + lam KD at T = 1 against lam (`grad_variance_study`: the
control-variate optimum lam*, centred and not) and KD trainings over a lam grid in [0, 1] x seeds (`api.run`),
whose final full-train CE gives the measured optimum. Written to `kdvr.json`; resumable run by run.

The driver file (configs/sweeps/kdvr_*.yaml) names the base config, the lam grid, the seeds and the teachers by
their number of SGD steps. A predicted optimum is compared with the measured one only when both lie inside the
measured range [min lam, max lam]; otherwise it is reported as outside, with no comparison.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

import kdforge.models as models
from kdforge.analysis.study import grad_variance_study
from kdforge.api import build_data, build_model, run, settings
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.data import DataBundle
from kdforge.data.loader import predict
from kdforge.engine import resolve_device, seed_everything
from kdforge.engine.metrics import classification_metrics
from kdforge.errors import ConfigError
from kdforge.fileio import atomic_write_text
from kdforge.options import load_yaml_model
from kdforge.plans.plan import config_path, slug
from kdforge.plans.stats import paired, summarize


class KdvrTeacher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str = Field(min_length=1)
    steps: int = Field(gt=0, description="plain-SGD steps of the teacher run at which this checkpoint is taken")


class KdvrSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str
    about: str = ""
    config: str
    overrides: list[str] = Field(default_factory=list)
    sliver: list[str] = Field(default_factory=list)
    lambdas: list[float] = Field(min_length=3, description="KD weights in [0, 1], increasing")
    seeds: list[int] = Field(min_length=1)
    batches: int = Field(2000, ge=2, description="mini-batches the gradient variance is measured over")
    teacher_lr: float = Field(0.05, gt=0, description="the teachers' plain SGD (no momentum, no weight decay)")
    teacher_seed: int = 42
    teachers: list[KdvrTeacher] = Field(min_length=1)
    sliver_steps: int = Field(20, gt=0, description="in a sliver, teacher k stops after sliver_steps * (k + 1)")


def load_spec(path: Path) -> KdvrSpec:
    spec = load_yaml_model(path, KdvrSpec, "driver file", "they live in configs/sweeps/<key>.yaml",
                           "config, lambdas, seeds and teachers")
    if sorted(spec.lambdas) != spec.lambdas or not 0 <= spec.lambdas[0] <= spec.lambdas[-1] <= 1:
        raise ConfigError(f"driver file {path}: lambdas must increase within [0, 1], got {spec.lambdas}")
    return spec


def teacher_checkpoint(cfg: ExperimentConfig, bundle: DataBundle, steps: int, lr: float, seed: int,
                       folder: Path) -> Path:
    """The linear teacher after `steps` steps of plain SGD (batch = the config's, shuffled epochs), saved once: the
    KDVR release's recipe (SGD without momentum or regularization, fixed lr); the paper's teacher construction is
    not known, so graded checkpoints of one run are our reading."""
    if (folder / "model.json").exists():
        return folder
    assert cfg.teacher is not None
    seed_everything(seed)
    model = build_model(cfg.teacher.model, bundle.spec, "teacher")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g, n, b, done = torch.Generator().manual_seed(seed), len(bundle.train), cfg.data.batch_size, 0
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - b + 1, b):
            batch = bundle.train.batch(perm[start:start + b])
            loss = torch.nn.functional.cross_entropy(batch.forward(model), batch.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return models.save_model(folder, model, settings.model(cfg.teacher.model), bundle.spec, {"sgd_steps": steps})


def _fit(model: torch.nn.Module, split: Any, cfg: ExperimentConfig) -> dict[str, float]:
    out = classification_metrics(predict(model, split, cfg.data.eval_batch_size, resolve_device(cfg.train.device)),
                                 split.y)
    return {"top1": out["top1"], "ce": out["nll"]}


def _optimum(spec: KdvrSpec, final_ce: dict[float, dict[int, float]], predicted: float) -> dict[str, Any]:
    """The measured optimum (argmin of the seed-mean final train CE over the grid) with paired 95 % intervals of
    every lam against it, and the predicted lam* only where it lies inside the measured range."""
    means = {lam: summarize(list(v.values())).mean for lam, v in final_ce.items()}
    best = min(means, key=means.__getitem__)
    lo, hi = spec.lambdas[0], spec.lambdas[-1]
    versus = {}
    for lam, v in final_ce.items():
        p = paired(final_ce[best], v)
        versus[str(lam)] = None if p is None or lam == best else {"diff": p.mean, "low": p.low, "high": p.high}
    inside = lo <= predicted <= hi
    return {"measured": best, "measured_interior": lo < best < hi, "mean_final_train_ce": means,
            "versus_measured": versus, "predicted": predicted if inside else None,
            "predicted_note": "inside the measured range" if inside else
            f"lam* = {predicted:.3f} lies outside [{lo:g}, {hi:g}]: not compared",
            "difference": (predicted - best) if inside and lo < best < hi else None}


def _run_once(cfg: ExperimentConfig, bundle: DataBundle) -> dict[str, Any]:
    """A finished run's summary, read back; an unfinished one continued from its checkpoint."""
    done = Path(cfg.run_dir) / "summary.json"
    if done.exists() and (Path(cfg.run_dir) / "student" / "model.json").exists():
        return json.loads(done.read_text())
    return run(cfg, resume=True, bundle=bundle)


def kdvr_study(path: Path, out: Path, sliver: bool = False, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    from kdforge.api import load_config

    spec = load_spec(path)
    cfg = load_config(config_path(path, spec.config), [*spec.overrides, *extra, *(spec.sliver if sliver else [])])
    if cfg.teacher is None:
        raise ConfigError(f"driver {path}: the config needs a teacher section (its model is the teacher's form)")
    bundle = build_data(cfg.data)
    report: dict[str, Any] = {"kind": "kdvr", "key": spec.key, "title": spec.title, "lambdas": spec.lambdas,
                              "seeds": spec.seeds, "sliver": sliver, "teachers": {}}
    for k, t in enumerate(spec.teachers):
        steps = spec.sliver_steps * (k + 1) if sliver else t.steps
        folder = teacher_checkpoint(cfg, bundle, steps, spec.teacher_lr, spec.teacher_seed,
                                    out / "teachers" / f"sgd{steps}")
        cfg_t = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"checkpoint": str(folder.resolve())})})
        teacher_fit = {s: _fit(models.load_model(folder), getattr(bundle, s), cfg) for s in ("train", "test")}
        gv = grad_variance_study(cfg_t, spec.lambdas, min(spec.batches, 50) if sliver else spec.batches, 1.0, out / slug(t.label) / "grad_variance",
                                 resume=True)
        final_ce: dict[float, dict[int, float]] = {lam: {} for lam in spec.lambdas}
        runs = []
        for lam in spec.lambdas:
            method = MethodConfig(name="kd", params={"temperature": 1.0, "ce_weight": 1.0 - lam, "kd_weight": lam})
            for seed in spec.seeds[:1] if sliver else spec.seeds:
                run_dir = out / slug(t.label) / f"lam{lam:g}" / f"seed{seed}"
                summary = _run_once(cfg_t.model_copy(update={"method": method, "seed": seed,
                                                             "output_dir": str(run_dir)}), bundle)
                fit = _fit(models.load_model(run_dir / "student"), bundle.train, cfg)
                final_ce[lam][seed] = fit["ce"]
                runs.append({"lam": lam, "seed": seed, "final_train_ce": fit["ce"], "train_top1": fit["top1"],
                             "test_top1": summary["test"].get("top1"), "test_nll": summary["test"].get("nll")})
        trained = [c for name, c in gv["curves"].items() if name.startswith("trained alone")][0]
        report["teachers"][t.label] = {
            "sgd_steps": steps, "teacher": teacher_fit, "grad_variance": gv["curves"], "runs": runs,
            "optimum": _optimum(spec, final_ce, trained["lam_star"]),
            "optimum_uncentered": _optimum(spec, final_ce, trained["lam_star_uncentered"])}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "kdvr.json", json.dumps(report, indent=1))  # a report after every teacher
    return report
