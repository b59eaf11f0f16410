"""ReviewKD (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021): each teacher stage is matched
by a fusion of the student's same stage with all its deeper stages (the review path), through ABF modules."""
from __future__ import annotations


from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.errors import ConfigError
from kdforge.losses import hcl_loss
from kdforge.methods.base import Method, Setup
from kdforge.methods.connectors import ABF
from kdforge.methods.feature_pairs import LayerPairParams
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class ReviewKDParams(LayerPairParams):
    # Defaults are mdistiller's CIFAR ReviewKD (CFG.REVIEWKD: CE 1, REVIEWKD_WEIGHT 1, WARMUP_EPOCHS 20, mid
    # channels min(512, deepest student channels)); the layers go shallow to deep, the last usually the
    # embedding (fc:input), treated as a 1x1 map as the official code treats its pooled feature.
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label CE")
    reviewkd_weight: float = Field(1.0, ge=0, description="weight of the hierarchical context loss")
    warmup_epochs: int = Field(20, ge=0, description="the HCL weight rises linearly over these first epochs")
    max_mid_channels: int = Field(512, gt=0, description="ABF width: min(this, the deepest student layer's channels)")


def _as_map(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """[C, H, W] of a tapped feature; a vector [C] is a 1x1 map."""
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise ValueError(f"ReviewKD needs [C, H, W] maps or [C] vectors, not {shape}")


@METHODS.register("reviewkd")
class ReviewKD(Method[ReviewKDParams]):
    """{"ce": ce_weight * CE, "reviewkd": reviewkd_weight * min((epoch + 1) / warmup_epochs, 1) * HCL} (+ {"kd"}).

    The deepest student layer goes through an ABF alone; each shallower one is fused with the residual coming
    down from the deeper ones, and every fused map is compared with the teacher layer at the same position.
    The official code compares the student's post-activation stage outputs with the teacher's pre-activation
    ones; here both are whatever the tapped paths give: a CIFAR resnet's `layerN` is post-ReLU and its last
    block's `layerN.<i>.preact` the sum before the ReLU (configs/cifar10_reviewkd.yaml does as the official).
    Deviation: its warm-up counts epochs from 1, which is (epoch + 1) here.
    """


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: ReviewKDParams,
                 setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        self.student_paths, self.teacher_paths = params.layer_paths()
        self.taps, s_shapes, t_shapes = self.tap_layers(self.student_paths, self.teacher_paths,
                                                        params.student_key, params.teacher_key)
        try:
            s_maps, t_maps = [_as_map(s) for s in s_shapes], [_as_map(t) for t in t_shapes]
        except ValueError as e:
            raise ConfigError(f"method.params: {e}") from None
        self.out_sizes = [t[1:] for t in t_maps]
        mid = min(params.max_mid_channels, s_maps[-1][0])
        # Deepest first, as the review path runs: abfs[0] takes the deepest layer and does not fuse.
        self.abfs = nn.ModuleList(ABF(s[0], mid, t[0], fuse=i < len(s_maps) - 1)
                                  for i, (s, t) in enumerate(zip(s_maps, t_maps)))[::-1]

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, features = self.student_with_features(batch, self.taps)
        teacher = self.teacher_outputs(batch)
        student_maps = [_as_4d(features[path]) for path in self.student_paths]
        teacher_maps = [_as_4d(teacher.features[path]) for path in self.teacher_paths]
        fused = self.review(student_maps)
        ramp = min((ctx.epoch + 1) / p.warmup_epochs, 1.0) if p.warmup_epochs else 1.0
        terms = self.logit_terms(logits, batch, p, teacher.logits)
        terms["reviewkd"] = p.reviewkd_weight * ramp * hcl_loss(fused, teacher_maps)
        return logits, terms

    def review(self, student_maps: list[Tensor]) -> list[Tensor]:
        """The fused student maps, shallow to deep (the order of the teacher layers)."""
        out, residual = [], None
        for abf, x, size in zip(self.abfs, reversed(student_maps), reversed(self.out_sizes)):
            y, residual = abf(x, residual, size)
            out.insert(0, y)
        return out


def _as_4d(t: Tensor) -> Tensor:
    return t.view(*t.shape, 1, 1) if t.ndim == 2 else t
