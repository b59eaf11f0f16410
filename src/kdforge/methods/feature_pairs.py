"""Feature methods whose own term is a loss of tapped (student, teacher) feature pairs and that train nothing
besides the student: AT, SP and NST compare several layer pairs (summed, as RepDistiller sums its loss groups),
PKT and RKD one pair of embeddings (RepDistiller's feat[-1], the input of the final linear layer).

A method here is its Params (layer paths, its weight `<term>_weight`, its loss's own options) and `pair_loss`;
the taps, the shape check at build time and the terms {"ce", <term>} (+ {"kd"}) are written once below.
"""
from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.errors import ConfigError
from kdforge.methods.base import LogitTermParams, Method, Setup
from kdforge.teachers.base import TeacherSource


class LayerPairParams(LogitTermParams):
    """Several layer pairs: `student_layers[i]` is compared with `teacher_layers[i]`."""

    student_key: ClassVar[str] = "method.params.student_layers"
    teacher_key: ClassVar[str] = "method.params.teacher_layers"

    student_layers: list[str] = Field(min_length=1, description="module paths of the student's layers, e.g. "
                                                                "[layer1, layer2, layer3]")
    teacher_layers: list[str] = Field(min_length=1, description="module paths of the paired teacher layers")

    @model_validator(mode="after")
    def _paired(self) -> "LayerPairParams":
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(f"student_layers ({len(self.student_layers)}) and teacher_layers "
                             f"({len(self.teacher_layers)}) must pair up one to one")
        return self

    def layer_paths(self) -> tuple[list[str], list[str]]:
        return list(self.student_layers), list(self.teacher_layers)


class EmbeddingPairParams(LogitTermParams):
    """One pair of embeddings, typically the inputs of both models' final linear layers."""

    student_key: ClassVar[str] = "method.params.student_layer"
    teacher_key: ClassVar[str] = "method.params.teacher_layer"

    student_layer: str = Field(description="module path of the student's embedding, e.g. fc:input (the input of "
                                           "the final linear layer)")
    teacher_layer: str = Field(description="module path of the teacher's embedding, e.g. fc:input")

    def layer_paths(self) -> tuple[list[str], list[str]]:
        return [self.student_layer], [self.teacher_layer]


PairParams = TypeVar("PairParams", bound=LayerPairParams | EmbeddingPairParams)


class FeaturePairMethod(Method[PairParams]):
    """{"ce": ce_weight * CE, term: <term>_weight * sum of pair_loss over the layer pairs} plus {"kd"} when
    kd_weight > 0. Subclasses give their params as the type argument (a LayerPairParams or EmbeddingPairParams
    with a `<term>_weight`: `class AT(FeaturePairMethod[ATParams])`), and set `term` and `pair_loss`."""

    term: ClassVar[str]

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: PairParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        self.student_paths, self.teacher_paths = params.layer_paths()
        self.taps, s_shapes, t_shapes = self.tap_layers(self.student_paths, self.teacher_paths,
                                                        params.student_key, params.teacher_key)
        for s_path, t_path, s_shape, t_shape in zip(self.student_paths, self.teacher_paths, s_shapes, t_shapes):
            try:  # shapes the loss cannot compare fail now, naming the layers, not at the first step
                self.pair_loss(torch.zeros(2, *s_shape), torch.zeros(2, *t_shape))
            except ValueError as e:
                raise ConfigError(f"method.params: student layer {s_path!r} {s_shape} and teacher layer {t_path!r} "
                                  f"{t_shape} cannot be compared by {self.term}: {e}") from None

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        """The unweighted loss of one (student, teacher) feature pair."""
        raise NotImplementedError

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        logits, features = self.student_with_features(batch, self.taps)
        teacher = self.teacher_outputs(batch)
        own = sum(self.pair_loss(features[s], teacher.features[t])
                  for s, t in zip(self.student_paths, self.teacher_paths))
        terms = self.logit_terms(logits, batch, self.params, teacher.logits)
        terms[self.term] = getattr(self.params, f"{self.term}_weight") * own
        return logits, terms
