"""Contrastive Representation Distillation (Tian et al., ICLR 2020): student and teacher embeddings contrasted
against a momentum memory bank over the training set, with NCE on K negatives per sample."""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.data.seeds import hash_seed
from kdforge.engine.contract import StepContext
from kdforge.errors import ConfigError, at_key
from kdforge.losses import crd_nce_loss, crd_scores
from kdforge.methods.base import LogitTermParams, Method, Setup
from kdforge.methods.connectors import Embed
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource

Negatives = Literal["other_class", "uniform"]


class CRDParams(LogitTermParams):
    # Defaults are RepDistiller's CRD run (scripts/run_cifar_distill.sh L29 @b84f547: -r 1 -a 0 -b 0.8) and its
    # NCE flags (train_student.py L81-85: feat_dim 128, mode exact, nce_k 16384, nce_t 0.07, nce_m 0.5); mdistiller
    # uses the same (engine/cfg.py L134-147 @a08d46f).
    student_layer: str = Field(description="module path of the student's penultimate feature, e.g. head.3:input")
    teacher_layer: str = Field(description="module path of the teacher's penultimate feature, e.g. fc:input")
    crd_weight: float = Field(0.8, ge=0, description="weight of the CRD loss (RepDistiller's beta)")
    feat_dim: int = Field(128, ge=1, description="dimension of the embeddings and of the memory bank")
    nce_k: int = Field(16384, ge=1, description="negatives per sample")
    nce_t: float = Field(0.07, gt=0, description="temperature of the scores exp(<v, m> / T)")
    nce_m: float = Field(0.5, ge=0, lt=1, description="momentum of the memory-bank update")
    negatives: Negatives = Field("other_class", description="other_class: uniform over training samples of other "
                                 "classes (RepDistiller's sampling dataset); uniform: over all training samples "
                                 "(its ContrastMemory's AliasMethod fallback)")


class ContrastMemory(nn.Module):
    """RepDistiller's `ContrastMemory` (crd/memory.py L6-79 @b84f547) with its state in buffers and its negatives
    drawn from a generator of its own.

    Buffers (checkpointed with `trainable()`): `memory_s` / `memory_t` [n_data, dim], one row per training sample
    (the official memory_v1 / memory_v2), initialized uniform in +-1/sqrt(dim/3) (L19-21); `z` [2], the NCE
    normalization constants of the student and teacher scores, -1 until the first batch sets them to
    mean(exp(scores/T)) * n_data (L49-57). `labels` (not persistent) holds the training labels for the negatives.
    `generator` draws the negatives (and the initial memory); its state goes in the method's `extra_state`.

    Negatives, `other_class` (default): as RepDistiller's training data (dataset/cifar100.py L159-168,
    CIFAR100InstanceSample with mode 'exact', which train_student.py L153-157 uses for CRD): the positive is the
    sample itself and the K negatives are drawn uniformly from the training samples of other classes, without
    replacement unless fewer than K exist. `uniform`: K indices uniform over the whole training set, the
    ContrastMemory fallback (L35-37, AliasMethod on uniform weights), which may draw the positive itself.
    Deviation: mode 'relax' (a random same-class positive) is not implemented; the generator replaces numpy's
    global RNG (so resume is bit-exact); with several processes each one updates its own copy of the memory.
    """

    def __init__(self, dim: int, n_data: int, k: int, temperature: float, momentum: float, seed: int,
                 labels: Tensor | None, negatives: Negatives = "other_class") -> None:
        super().__init__()
        self.n_data, self.k, self.temperature, self.momentum, self.negatives = n_data, k, temperature, momentum, negatives
        self.generator = torch.Generator().manual_seed(seed)
        stdv = 1.0 / math.sqrt(dim / 3)
        for name in ("memory_s", "memory_t"):
            self.register_buffer(name, torch.rand(n_data, dim, generator=self.generator).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))
        self._labels = None if labels is None else labels.detach().to("cpu", torch.long)
        if negatives == "other_class" and self._labels is None:
            raise ValueError("negatives 'other_class' needs a labeled training split; use negatives: uniform")

    def sample(self, index: Tensor) -> Tensor:
        """[B, 1 + K] training-set indices: each sample's own index, then its K negatives."""
        index = index.detach().to("cpu", torch.long)
        if self.negatives == "uniform":
            neg = torch.randint(self.n_data, (len(index), self.k), generator=self.generator)
        else:
            assert self._labels is not None
            weights = (self._labels[None, :] != self._labels[index][:, None]).float()
            counts = weights.sum(1)
            if bool((counts == 0).any()):
                raise ValueError("CRD: a sample has no training sample of another class to contrast with")
            neg = torch.empty(len(index), self.k, dtype=torch.long)
            few = counts < self.k  # the official draws with replacement only then (cifar100.py L166)
            if bool(few.any()):
                neg[few] = torch.multinomial(weights[few], self.k, replacement=True, generator=self.generator)
            if bool((~few).any()):
                # K distinct, uniformly among the other classes' samples (numpy's choice(replace=False) in the
                # official code): the K largest of i.i.d. uniform keys over the eligible samples. Same law as
                # multinomial without replacement on equal weights, which is ~20x slower for K = 4096 of 54k.
                keys = torch.rand(weights[~few].shape, generator=self.generator).masked_fill_(weights[~few] == 0, -1.0)
                neg[~few] = keys.topk(self.k, dim=1).indices
        return torch.cat([index[:, None], neg], dim=1).to(self.memory_s.device)

    def forward(self, v_s: Tensor, v_t: Tensor, index: Tensor,
                contrast_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scores (out_s, out_t) [B, 1 + K], each divided by its Z, then the memory rows of `index` updated.
        `contrast_idx` [B, 1 + K] (positive first) replaces the sampled indices, as the official argument does."""
        idx = self.sample(index) if contrast_idx is None else contrast_idx
        rows_s = self.memory_s[idx].detach()  # official L39-47: the teacher embedding against the student memory
        rows_t = self.memory_t[idx].detach()  # and the student embedding against the teacher memory
        out_t = crd_scores(v_t, rows_s, self.temperature)
        out_s = crd_scores(v_s, rows_t, self.temperature)
        with torch.no_grad():
            for i, out in enumerate((out_s, out_t)):
                if self.z[i] < 0:  # official L49-57: set once, on the first batch
                    self.z[i] = out.mean() * self.n_data
        out_s, out_t = out_s / self.z[0], out_t / self.z[1]
        with torch.no_grad():  # official L63-77
            position = index.to(self.memory_s.device)
            for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                pos = memory[position] * self.momentum + v.detach() * (1 - self.momentum)
                memory.index_copy_(0, position, pos / pos.pow(2).sum(1, keepdim=True).pow(0.5))
        return out_s, out_t


@METHODS.register("crd")
class CRD(Method[CRDParams]):
    """{"ce": ce_weight * CE, "crd": crd_weight * (NCE_s + NCE_t)} (+ {"kd"} when kd_weight > 0).

    As RepDistiller's `CRDLoss` (crd/criterion.py L8-48 @b84f547): `Embed` (Linear + L2 norm) of both penultimate
    features, both trained (train_student.py L190-198), the memory's two score sets each through `crd_nce_loss`.
    The memory spans the training split (`Setup.train_size`), addressed by `batch.index`.
    """


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: CRDParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        if setup.train_size <= 0:
            raise ValueError("CRD needs the training-set size: build the Setup with Setup.for_data")
        self.taps, (s_shape,), (t_shape,) = self.tap_layers(
            [params.student_layer], [params.teacher_layer], "method.params.student_layer", "method.params.teacher_layer")
        self.embed_s = Embed(math.prod(s_shape), params.feat_dim)
        self.embed_t = Embed(math.prod(t_shape), params.feat_dim)
        # a seed of its own, derived from the run's (seed_everything sets torch's initial seed): building CRD
        # draws nothing from the global RNG
        seed = hash_seed(torch.initial_seed(), "crd.memory")
        with at_key("method.params.negatives"):
            try:
                self.memory = ContrastMemory(params.feat_dim, setup.train_size, params.nce_k, params.nce_t,
                                             params.nce_m, seed, setup.train_labels, params.negatives)
            except ValueError as err:
                raise ConfigError(str(err)) from None

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        if batch.split != "train":
            raise ValueError(f"CRD trains on the 'train' split only (its memory is indexed by it), not {batch.split!r}")
        logits, features = self.student_with_features(batch, self.taps)
        teacher = self.teacher_outputs(batch)
        out_s, out_t = self.memory(self.embed_s(features[p.student_layer]),
                                   self.embed_t(teacher.features[p.teacher_layer]), batch.index)
        terms = self.logit_terms(logits, batch, p, teacher.logits)
        terms["crd"] = p.crd_weight * (crd_nce_loss(out_s, self.memory.n_data) + crd_nce_loss(out_t, self.memory.n_data))
        return logits, terms

    def extra_state(self) -> dict[str, Any]:
        return {"negatives_rng": self.memory.generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.generator.set_state(state["negatives_rng"])
