"""Fitness of one candidate distiller (KD-Zero Sec. 3.3's efficiency devices):

1. Loss rejection: the program is built (a program whose operations do not fit the knowledge is invalid), then
   trained for `warmup_batches` batches; a NaN/inf loss or gradient, or a loss that grows past `explode_factor`
   times the first, rejects it before the proxy is paid for.
2. Short-training proxy: the student is trained with the program for `proxy.epochs` epochs on `train_subset`
   training samples, and the fitness is its validation top-1 (%) on `val_subset` samples.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.api import assemble, load_config, run
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.data import DataBundle
from kdforge.engine.optim import build_optimizer
from kdforge.errors import ConfigError, TrainingDiverged
from kdforge.search.space import ProxyConfig


@dataclass
class Outcome:
    fitness: float | None  # validation top-1 in %, None when rejected
    rejected: str | None = None  # why, when rejected
    curve: list[float] = field(default_factory=list)  # validation top-1 (%) after each proxy epoch
    warmup_losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None  # the proxy continued a killed worker's checkpoint from this epoch


def proxy_bundle(bundle: DataBundle, proxy: ProxyConfig, seed: int) -> DataBundle:
    """A seeded subset of the training split and the first `val_subset` validation samples; no test split (the
    search never looks at it)."""
    if bundle.val is None:
        raise ConfigError("the search needs a validation split for its fitness: set data.val_fraction above 0")
    perm = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(seed))
    train = bundle.train.take(perm[: proxy.train_subset])
    val = bundle.val.take(torch.arange(min(proxy.val_subset, len(bundle.val))))
    return DataBundle(bundle.spec, train, val, None)


@dataclass
class Evaluator:
    experiment: Path
    overrides: list[str]
    cfg: ExperimentConfig  # the experiment as given (its method is replaced by each candidate)
    bundle: DataBundle  # the proxy's data
    teacher: nn.Module
    proxy: ProxyConfig

    def __call__(self, params: dict[str, Any], run_dir: Path) -> Outcome:
        try:
            losses = self.warmup(params)
        except ConfigError as e:
            return Outcome(None, rejected=f"invalid: {e}")
        bad = rejection(losses, self.proxy.explode_factor)
        if bad:
            return Outcome(None, rejected=bad, warmup_losses=losses)
        try:
            summary = run(self.proxy_config(params, run_dir), resume=True, bundle=self.bundle, teacher=self.teacher)
        except TrainingDiverged as e:
            return Outcome(None, rejected=f"diverged in the proxy: {e}", warmup_losses=losses)
        return Outcome(100 * summary["val"]["top1"], curve=val_curve(run_dir), warmup_losses=losses,
                       resumed_from=summary.get("resumed_from_epoch"))

    def proxy_config(self, params: dict[str, Any], run_dir: Path) -> ExperimentConfig:
        return load_config(self.experiment, [
            *self.overrides, "method.name=kdzero", f"method.params={json.dumps(params)}",
            f"train.epochs={self.proxy.epochs}", "train.eval_every=1", "train.progress=false",
            "train.tensorboard=false", f"output_dir={run_dir}"])

    def warmup(self, params: dict[str, Any]) -> list[float]:
        """The total loss of each of the first `warmup_batches` training steps (nan when a gradient is not
        finite); a ConfigError when the program does not fit the knowledge."""
        cfg = self.cfg.model_copy(update={  # the candidate, against the live teacher (no cache for a warm-up)
            "method": MethodConfig(name="kdzero", params=params),
            "teacher": None if self.cfg.teacher is None else self.cfg.teacher.model_copy(update={"source": "live"})})
        with assemble(cfg, bundle=self.bundle, teacher=self.teacher) as a:
            method = a.method
            optimizer = build_optimizer(method.trainable().parameters(), a.recipe.optim)
            method.train()
            order = torch.randperm(len(self.bundle.train), generator=torch.Generator().manual_seed(cfg.seed))
            batch_size = cfg.data.batch_size
            losses = []
            for k in range(min(self.proxy.warmup_batches, math.ceil(len(order) / batch_size))):
                batch = self.bundle.train.batch(order[k * batch_size:(k + 1) * batch_size])
                _, terms = method.loss_terms(batch, None)  # type: ignore[arg-type]  # kdzero needs no context
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[union-attr]
                finite = all(torch.isfinite(p.grad).all() for p in method.trainable().parameters()
                             if p.grad is not None)
                losses.append(float(loss.detach()) if finite else float("nan"))  # type: ignore[union-attr]
                if not math.isfinite(losses[-1]):
                    break
                optimizer.step()
            return losses


def rejection(losses: list[float], explode_factor: float) -> str | None:
    """Why warm-up losses reject a program (None: they do not): non-finite, or growing past the factor."""
    for k, value in enumerate(losses):
        if not math.isfinite(value):
            return f"non-finite loss or gradient at warm-up batch {k}"
        if value > explode_factor * max(losses[0], 1e-12):
            return f"loss exploded at warm-up batch {k}: {value:.3g} > {explode_factor:g} x {losses[0]:.3g}"
    return None


def val_curve(run_dir: Path) -> list[float]:
    """Validation top-1 (%) of each epoch, from the run's metrics.jsonl."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "epoch" and "val_top1" in record:
            out.append(100 * record["val_top1"])
    return out
