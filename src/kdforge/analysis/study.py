"""Heavy analyses that train: ensembles of students per method on disjoint (or bootstrap) parts of the training
split, and the gradient variance of trained students. Every training goes through `api.run` (run folders,
resume, seeds, the teacher trained once); each study prints an estimate of its time before it starts."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import kdforge.models as models
from kdforge.analysis.bias_variance import ce_decomposition, jackknife_se, leave_one_out, mse_decomposition
from kdforge.analysis.grad_variance import (
    LinearProblem, batch_gradients, linear_measured_curve, linear_regression_variance, sgd_checkpoints, variance_curve,
)
from kdforge.api import build_data, build_model, prepare_teacher, run
from kdforge.compare import Variant, parse_methods as parse_variants  # noqa: F401  (the studies' API)
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.data import DataBundle
from kdforge.data.splits import take
from kdforge.engine import resolve_device, seed_everything
from kdforge.data.loader import predict
from kdforge.engine.metrics import classification_metrics, reliability_bins
from kdforge.errors import ConfigError
from kdforge.fileio import atomic_write_text
from kdforge.losses import hard_cross_entropy, kd_loss
from kdforge.methods import METHODS
from kdforge.report import mean_std

PART_SEED = 1234  # the ensemble's partition of the training split: fixed, so every method sees the same parts


def ensemble_parts(n: int, parts: int, bootstrap: bool, seed: int = PART_SEED) -> list[Tensor]:
    """Indices of each member's training data: `parts` disjoint equal parts of a fixed permutation (Yang et al.'s
    `np.split(permutation, trial)`), or `parts` bootstrap resamples of all n samples."""
    if parts < 2 or (not bootstrap and parts > n):
        raise ConfigError(f"--parts must be between 2 and the training size {n}, got {parts}")
    g = torch.Generator().manual_seed(seed)
    if bootstrap:
        return [torch.randint(0, n, (n,), generator=g).sort().values for _ in range(parts)]
    perm, size = torch.randperm(n, generator=g), n // parts
    return [perm[i * size:(i + 1) * size].sort().values for i in range(parts)]


def _member_name(part_seed: int, repeat: int, part: int) -> str:
    """r{repeat}p{part} for the default partition (the folders earlier studies wrote), s{seed}r..p.. for others."""
    return f"r{repeat}p{part}" if part_seed == PART_SEED else f"s{part_seed}r{repeat}p{part}"


def _seconds_per_step(cfg: ExperimentConfig, bundle: DataBundle, teacher: torch.nn.Module | None) -> float:
    """Wall time of one training step of the student (plus a teacher forward when given), from 5 timed steps."""
    student = build_model(cfg.student, bundle.spec, "student")
    opt = torch.optim.SGD(student.parameters(), lr=1e-3)
    batch = bundle.train.batch(torch.arange(min(cfg.data.batch_size, len(bundle.train))))
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        if teacher is not None:
            with torch.no_grad():
                batch.forward(teacher.eval())
        loss = torch.nn.functional.cross_entropy(batch.forward(student), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[2]  # median, the first (warm-up) step dropped


def estimate_seconds(cfg: ExperimentConfig, bundle: DataBundle, teacher: torch.nn.Module | None,
                     runs: list[tuple[bool, int]]) -> float:
    """Rough total seconds of `runs` = [(distills?, training samples)]: timed steps times steps, plus 20% for
    evaluation and checkpoints."""
    alone, distill = _seconds_per_step(cfg, bundle, None), _seconds_per_step(cfg, bundle, teacher)
    return 1.2 * sum(cfg.train.epochs * math.ceil(n / cfg.data.batch_size) * (distill if kd else alone)
                     for kd, n in runs)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _member_logits(run_dir: Path, bundle: DataBundle, cfg: ExperimentConfig) -> Tensor:
    student = models.load_model(run_dir / "student")
    return predict(student, bundle.test, cfg.data.eval_batch_size, resolve_device(cfg.train.device))


def _member_fit(run_dir: Path, bundle: DataBundle, index: Tensor, cfg: ExperimentConfig) -> dict[str, float]:
    """The member's final error and CE on its own training part (eval mode, no augmentation): whether it
    interpolates, which places the variance peak against the interpolation threshold (issue 26 spec §1)."""
    part = take(bundle.train, index)
    student = models.load_model(run_dir / "student")
    fit = classification_metrics(predict(student, part, cfg.data.eval_batch_size, resolve_device(cfg.train.device)),
                                 part.y)
    return {"train_error": 1.0 - fit["top1"], "train_ce": fit["nll"]}


def _reg_curve(run_dir: Path) -> list[float]:
    """The per-epoch regularization-sample share that KD / WSL logged (empty for methods that do not count)."""
    path = run_dir / "metrics.jsonl"
    by_epoch: dict[int, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec.get("event") == "method" and "reg_fraction" in rec:
            by_epoch[int(rec["epoch"])] = float(rec["reg_fraction"])  # a resumed epoch's line replaces the first
    return [by_epoch[e] for e in sorted(by_epoch)]


def _train_member(cfg: ExperimentConfig, variant: Variant, bundle: DataBundle, index: Tensor, part: int,
                  seed: int, run_dir: Path, resume: bool, overwrite: bool, spec: dict[str, Any]) -> dict[str, Any]:
    if resume and (run_dir / "summary.json").exists() and (run_dir / "student" / "model.json").exists():
        return json.loads((run_dir / "summary.json").read_text())  # finished earlier: reused, not retrained
    member = replace(bundle, train=take(bundle.train, index),
                     splits={**bundle.splits, "ensemble": {**spec, "part": part}})
    method = variant.method
    if getattr(METHODS[method.name], "counts_regularization", False):  # the study reports them: ask for the counts
        method = method.model_copy(update={"params": {**method.params, "count_regularization": True}})
    run_cfg = cfg.model_copy(update={"method": method, "seed": seed, "output_dir": str(run_dir)})
    return run(run_cfg, resume=resume, overwrite=overwrite, bundle=member)


def _summarize_variant(variant: Variant, logits: Tensor, labels: Tensor, members: list[dict[str, Any]],
                       reg_curves: list[list[float]]) -> dict[str, Any]:
    logp = logits.log_softmax(-1)
    ce, mse = ce_decomposition(logp, labels), mse_decomposition(logp.exp(), labels)
    per_member = [classification_metrics(lg, labels) for lg in logits]
    curves = [c for c in reg_curves if c]
    reg_mean = [sum(v) / len(v) for v in zip(*curves)] if curves else []
    return {
        "label": variant.label, "method": variant.method.model_dump(mode="json"), "members": members,
        **ce.means(), "mse_bias": float(mse.bias.mean()), "mse_variance": float(mse.variance.mean()),
        **{k: mean_std([m[k] for m in per_member]) for k in ("top1", "nll", "ece")},
        "ensemble_top1": float(logp.mean(0).argmax(-1).eq(labels).float().mean()),
        "reliability": reliability_bins(logits.reshape(-1, logits.shape[-1]), labels.repeat(len(logits))),
        "reg_fraction_per_epoch": reg_mean, "reg_fraction_final": reg_mean[-1] if reg_mean else None,
        "per_sample": {"bias": ce.bias.tolist(), "variance": ce.variance.tolist()},
        **_jackknife(logp, labels),
    }


def _jackknife(logp: Tensor, labels: Tensor) -> dict[str, Any]:
    """Leave-one-member-out estimates (members in `members` order, so two studies over the same parts pair by
    index) and the jackknife SE of every test-mean quantity; nothing below 3 members."""
    if len(logp) < 3:
        return {}
    loo = leave_one_out(logp, labels)
    return {"leave_one_out": loo, "jackknife_se": {k: jackknife_se(v) for k, v in loo.items()}}


def _versus_reference(variants: list[dict[str, Any]]) -> None:
    """Zhou et al.'s sample-wise view: against the first variant (the student alone), the share of test samples
    whose bias rises while their variance falls, and the other three quadrants."""
    ref = variants[0]["per_sample"]
    rb, rv = torch.tensor(ref["bias"]), torch.tensor(ref["variance"])
    for v in variants[1:]:
        b, var = torch.tensor(v["per_sample"]["bias"]), torch.tensor(v["per_sample"]["variance"])
        up, down = b > rb, var < rv
        v["vs_reference"] = {"bias_up_var_down": float((up & down).float().mean()),
                             "bias_up_var_up": float((up & ~down).float().mean()),
                             "bias_down_var_down": float((~up & down).float().mean()),
                             "bias_down_var_up": float((~up & ~down).float().mean())}


def bias_variance_study(cfg: ExperimentConfig, variants: list[Variant], parts: int, out: Path,
                        repeats: int = 1, bootstrap: bool = False, resume: bool = False,
                        overwrite: bool = False, part_seeds: Sequence[int] = (PART_SEED,)) -> dict[str, Any]:
    """Train `parts` x `repeats` students per variant and partition (member seeds differ) and decompose their test
    loss. Several `part_seeds` pool independent partitions of the training split, as Yang et al.'s CE protocol
    pools two runs of `np.split(permutation)` (their README: "5 * 2 = 10" models); `repeats` reuses one partition
    with other seeds, which measures initialization/SGD variance on fixed data, not data variance."""
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    if not part_seeds or len(set(part_seeds)) != len(part_seeds):
        raise ConfigError(f"--part-seed values must be given once each, got {list(part_seeds)}")
    bundle = build_data(cfg.data)
    if bundle.test is None or bundle.test.y is None:
        raise ConfigError(f"data {cfg.data.name!r} has no labelled test split to decompose the loss on")
    members_at = [(ps, r, p) for ps in part_seeds for r in range(repeats) for p in range(parts)]
    index = {ps: ensemble_parts(len(bundle.train), parts, bootstrap, ps) for ps in part_seeds}
    teacher = prepare_teacher(cfg, bundle) if cfg.teacher is not None else None  # on the whole training split
    jobs = [(v, ps, r, p) for v in variants for ps, r, p in members_at]
    todo = [(METHODS[v.method.name].needs_teacher, len(index[ps][p])) for v, ps, r, p in jobs
            if not (resume and (out / v.folder / _member_name(ps, r, p) / "summary.json").exists())]
    est = estimate_seconds(cfg, bundle, teacher, todo)
    print(f"bias-variance: {len(jobs)} trainings ({len(todo)} to run), about {_duration(est)} on this machine",
          flush=True)
    spec: dict[str, Any] = {"parts": parts, "bootstrap": bootstrap, "seed": part_seeds[0]}
    if len(part_seeds) > 1:
        spec["part_seeds"] = list(part_seeds)
    results, labels = [], bundle.test.y
    for v in variants:
        members, logits, curves = [], [], []
        for k, (ps, r, p) in enumerate(members_at):
            run_dir = out / v.folder / _member_name(ps, r, p)
            # a single partition keeps the member seeds it always had; pooled ones continue the count
            summary = _train_member(cfg, v, bundle, index[ps][p], p, cfg.seed + k, run_dir, resume, overwrite,
                                    {"parts": parts, "bootstrap": bootstrap, "seed": ps})
            members.append({"part": p, "repeat": r, "part_seed": ps, "seed": summary["seed"], "run_dir": str(run_dir),
                            **_member_fit(run_dir, bundle, index[ps][p], cfg)})
            logits.append(_member_logits(run_dir, bundle, cfg))
            curves.append(_reg_curve(run_dir))
        results.append(_summarize_variant(v, torch.stack(logits), labels, members, curves))
    _versus_reference(results)
    report: dict[str, Any] = {"kind": "bias_variance", "name": cfg.name, "data": cfg.data.name,
                              "student": cfg.student.name, "epochs": cfg.train.epochs, **spec, "repeats": repeats,
                              "test_samples": len(labels), "variants": results}
    if teacher is not None:
        t_logits = predict(teacher, bundle.test, cfg.data.eval_batch_size, resolve_device(cfg.train.device))
        report["teacher"] = {"model": cfg.teacher.model.name, **classification_metrics(t_logits, labels),  # type: ignore[union-attr]
                             "reliability": reliability_bins(t_logits, labels)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.json", json.dumps(report))
    return report


def _network_gradients(student: torch.nn.Module, teacher: torch.nn.Module, bundle: DataBundle, batches: int,
                       batch_size: int, temperature: float, seed: int) -> tuple[Tensor, Tensor]:
    """(a, d) over `batches` random mini-batches of the training split, both models in eval mode so that the only
    noise is which samples a batch holds (no dropout, BatchNorm on its running statistics)."""
    student.eval()
    teacher.eval()
    g = torch.Generator().manual_seed(seed)
    n = len(bundle.train)
    chosen = [bundle.train.batch(torch.randperm(n, generator=g)[:batch_size]) for _ in range(batches)]

    def terms(batch: Any) -> tuple[Tensor, Tensor]:
        logits = batch.forward(student)
        with torch.no_grad():
            t_logits = batch.forward(teacher)
        return hard_cross_entropy(logits, batch.y), kd_loss(logits, t_logits, temperature)

    return batch_gradients(student, chosen, terms)


def _load_student(path: Path, bundle: DataBundle) -> torch.nn.Module:
    """A saved model folder, or a run folder's `student/`, checked against the data it is measured on."""
    folder = path / "student" if (path / "student" / "model.json").exists() else path
    if not (folder / "model.json").exists():
        raise ConfigError(f"--student {path}: no model.json there or in its student/ folder; give a saved model or "
                          "a finished run folder")
    model, _, spec, _ = models.load_model_with_info(folder)
    if spec != bundle.spec:
        raise ConfigError(f"--student {path} was trained on {spec}, but the config's data is {bundle.spec}")
    return model


def grad_variance_study(cfg: ExperimentConfig, lambdas: list[float], batches: int, temperature: float, out: Path,
                        resume: bool = False, overwrite: bool = False,
                        students: Sequence[Path] = ()) -> dict[str, Any]:
    """Gradient variance of (1 - lam) CE + lam KD over mini-batches, for the student at initialization, after
    training alone (method ce, through `api.run`) and at any saved `students` (model or run folders: checkpoints
    of other runs), with the control-variate optimum of each curve."""
    if cfg.teacher is None:
        raise ConfigError("grad-variance needs a teacher section in the config")
    if batches < 2 or not lambdas:
        raise ConfigError("grad-variance needs --batches >= 2 and at least one --lambdas value")
    bundle = build_data(cfg.data)
    saved = {p.name if p.name != "student" else p.parent.name: _load_student(p, bundle) for p in students}
    teacher = prepare_teacher(cfg, bundle)
    run_dir = out / "student_ce"
    done = resume and (run_dir / "summary.json").exists()
    est = 0.0 if done else estimate_seconds(cfg, bundle, None, [(False, len(bundle.train))])
    print(f"grad-variance: {0 if done else 1} training (about {_duration(est)}), then {len(saved) + 2} x {batches} "
          "x 2 gradients", flush=True)
    seed_everything(cfg.seed)
    checkpoints = {"initialization": build_model(cfg.student, bundle.spec, "student")}
    if not done:
        run(cfg.model_copy(update={"method": MethodConfig(name="ce"), "output_dir": str(run_dir)}), resume=resume,
            overwrite=overwrite, bundle=bundle)
    checkpoints[f"trained alone ({cfg.train.epochs} epochs)"] = models.load_model(run_dir / "student")
    checkpoints.update(saved)  # loaded and checked before anything trained
    curves = {}
    for name, student in checkpoints.items():
        a, d = _network_gradients(student, teacher, bundle, batches, cfg.data.batch_size, temperature, cfg.seed)
        curves[name] = variance_curve(a, d, lambdas).as_dict()
    report = {"kind": "grad_variance", "name": cfg.name, "data": cfg.data.name, "student": cfg.student.name,
              "teacher": cfg.teacher.model.name, "temperature": temperature, "batches": batches,
              "batch_size": cfg.data.batch_size, "curves": curves}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.json", json.dumps(report))
    return report


def linear_study(out: Path, lambdas: list[float], dim: int = 20, teacher_samples: int = 60, noise_var: float = 1.0,
                 batch_size: int = 10, batches: int = 2000, steps: tuple[int, ...] = (0, 100, 2000),
                 seed: int = 0) -> dict[str, Any]:
    """The linear experiment: at SGD checkpoints of a linear student, the measured variance curve next to the
    closed-form prediction (`linear_regression_variance`) with its optimum and floor."""
    problem = LinearProblem.make(dim, teacher_samples, noise_var, seed)
    curves = {}
    for step, w in sgd_checkpoints(problem, list(steps), batch_size=batch_size, seed=seed).items():
        predicted = linear_regression_variance(w - problem.w_star, problem.w_teacher - problem.w_star, noise_var,
                                               batch_size, lambdas)
        measured = linear_measured_curve(problem, w, batch_size, batches, lambdas, seed=seed + 2)
        curves[f"SGD step {step}"] = {**measured.as_dict(), "predicted": predicted.variance,
                                      "predicted_lam_star": predicted.lam_star, "predicted_floor": predicted.floor}
    report = {"kind": "grad_variance", "name": "linear", "data": f"synthetic Gaussian regression, d={dim}",
              "student": "linear", "teacher": f"least squares on {teacher_samples} samples",
              "teacher_error": float((problem.w_teacher - problem.w_star).norm()), "noise_var": noise_var,
              "batches": batches, "batch_size": batch_size, "curves": curves}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.json", json.dumps(report))
    return report
