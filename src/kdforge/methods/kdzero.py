"""KD-Zero (Li et al., NeurIPS 2023): a distiller found by search, given as data. Its params are the program:

    method:
      name: kdzero
      params:
        ce_weight: 1.0
        branches:                       # the distiller: sum over branches of weight * D(T(K_s), T(K_t))
          - {knowledge: logits, transforms: ["softmax:4"], distance: kl, weight: 16.0}
          - {knowledge: features, student: features.7, teacher: features.7,
             transforms: [attention, l2norm], distance: l2, weight: 500.0}

`kdforge search` writes the best programs it found in this form (`kdforge.search`); the operations are those of
`kdforge.methods.kdzero_ops` (TRANSFORMS, DISTANCES). The default program is Hinton KD (T=4, 0.1 CE + 0.9 T^2 KL).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.errors import ConfigError
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.registry import METHODS
from kdforge.methods.kdzero_ops import DISTANCES, distiller_loss, parse_op
from kdforge.teachers.base import TeacherSource

MAX_TRANSFORMS = 6


class Branch(MethodParams):
    """One term of a distiller: knowledge, a chain of transforms, a distance and a weight."""

    knowledge: Literal["logits", "features"] = Field("logits", description="what is compared: the logits, or "
                                                     "the features at the module paths `student` / `teacher`")
    student: str | None = Field(None, description="features: module path of the student's feature map")
    teacher: str | None = Field(None, description="features: module path of the teacher's feature map")
    transforms: list[str] = Field(default_factory=list, max_length=MAX_TRANSFORMS,
                                  description="registered transforms, applied left to right to both sides; "
                                              "'name:arg' for those with an argument, e.g. softmax:4")
    distance: str = Field(description="a registered distance (kl, l1, l2, smooth_l1, cosine, pearson)")
    weight: float = Field(ge=0, description="weight of this term")

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                parse_op(text)
            except ConfigError as e:  # an unknown name: the registry's message lists the allowed ones
                raise ValueError(str(e)) from None
        return value

    @field_validator("distance")
    @classmethod
    def _known_distance(cls, value: str) -> str:
        try:
            DISTANCES.lookup(value)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _paths(self) -> "Branch":
        has_paths = self.student is not None and self.teacher is not None
        if self.knowledge == "features" and not has_paths:
            raise ValueError("knowledge 'features' needs the module paths `student` and `teacher`")
        if self.knowledge == "logits" and (self.student is not None or self.teacher is not None):
            raise ValueError("knowledge 'logits' takes no `student` / `teacher` paths; use knowledge: features")
        return self


KD_PROGRAM = (Branch(knowledge="logits", transforms=["softmax:4"], distance="kl", weight=0.9 * 4.0**2),)


class KDZeroParams(MethodParams):
    ce_weight: float = Field(0.1, ge=0, description="weight of the hard-label CE (kept in every distiller)")
    branches: list[Branch] = Field(default_factory=lambda: list(KD_PROGRAM), min_length=1,
                                   description="the distiller's terms, summed")


@METHODS.register("kdzero")
class KDZero(Method[KDZeroParams]):
    """{"ce": ce_weight * CE, "kdzero<i>": weight_i * D_i(T_i(K_s), T_i(K_t)) for each branch i}."""


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: KDZeroParams,
                 setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        feats = [b for b in params.branches if b.knowledge == "features"]
        self.student_paths = sorted({b.student for b in feats})  # type: ignore[type-var]
        teacher_paths = sorted({b.teacher for b in feats})  # type: ignore[type-var]
        self.taps = None
        s_shapes: dict[str, tuple[int, ...]] = {}
        t_shapes: dict[str, tuple[int, ...]] = {}
        if feats:
            self.taps, s_list, t_list = self.tap_layers(self.student_paths, teacher_paths,  # type: ignore[arg-type]
                                                        "method.params.branches.student",
                                                        "method.params.branches.teacher")
            s_shapes, t_shapes = dict(zip(self.student_paths, s_list)), dict(zip(teacher_paths, t_list))
        self._check_shapes(s_shapes, t_shapes)

    def _check_shapes(self, s_shapes: dict[str, tuple[int, ...]], t_shapes: dict[str, tuple[int, ...]]) -> None:
        """Run every branch once on random knowledge of the right shapes: a program whose transforms and distance
        do not fit the knowledge (a Gram of 16 vs 64 channels) is a ConfigError now, not at the first step."""
        labels = self.setup.example.labels
        n, classes = len(labels), self.setup.spec.num_classes
        gen = torch.Generator().manual_seed(0)
        for i, b in enumerate(self.params.branches):
            s_shape = (classes,) if b.knowledge == "logits" else s_shapes[b.student]  # type: ignore[index]
            t_shape = (classes,) if b.knowledge == "logits" else t_shapes[b.teacher]  # type: ignore[index]
            try:
                distiller_loss(torch.randn(n, *s_shape, generator=gen), torch.randn(n, *t_shape, generator=gen),
                               labels, b.transforms, b.distance)
            except (ValueError, RuntimeError) as e:
                raise ConfigError(f"method.params.branches.{i}: {' -> '.join(b.transforms) or 'no transform'} "
                                  f"then {b.distance} does not fit the knowledge: {e}") from None

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        if self.taps is not None:
            logits, s_feats = self.student_with_features(batch, self.taps)
        else:
            logits, s_feats = batch.forward(self.student), {}
        teacher = self.teacher_outputs(batch)
        terms = {"ce": self.params.ce_weight * self.hard_loss(logits, batch)}
        for i, b in enumerate(self.params.branches):
            if b.knowledge == "logits":
                s, t = logits, teacher.logits
            else:
                s, t = s_feats[b.student], teacher.features[b.teacher]  # type: ignore[index]
            terms[f"kdzero{i}"] = b.weight * distiller_loss(s, t, batch.labels, b.transforms, b.distance)
        return logits, terms
