"""Variational Information Distillation (Ahn et al., CVPR 2019): for each (student, teacher) layer pair, a
regressor predicts the mean of a Gaussian over the teacher's feature with a learned per-channel variance."""
from __future__ import annotations


import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.errors import at_key
from kdforge.losses import pool_to_common_size, vid_log_scale_init, vid_nll, vid_variance
from kdforge.methods.base import Method, Setup
from kdforge.methods.feature_pairs import LayerPairParams
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class VIDParams(LayerPairParams):
    # Defaults are RepDistiller's VID run (scripts/run_cifar_distill.sh L15 @b84f547: -r 1 -a 0 -b 1) and VIDLoss's
    # init_pred_var=5.0, eps=1e-5 (distiller_zoo/VID.py L16-17), as mdistiller's cfg.py L125-131 @a08d46f.
    vid_weight: float = Field(1.0, ge=0, description="weight of the summed VID losses (RepDistiller's beta)")
    init_pred_var: float = Field(5.0, gt=0, description="initial variance of every channel")
    eps: float = Field(1e-5, gt=0, description="added to the softplus variance")

    @model_validator(mode="after")
    def _variance_above_eps(self) -> "VIDParams":
        if self.init_pred_var <= self.eps:
            raise ValueError(f"init_pred_var ({self.init_pred_var}) must exceed eps ({self.eps})")
        return self


def _as_maps(x: Tensor) -> Tensor:
    """[B, C] -> [B, C, 1, 1], [B, C, L] -> [B, C, L, 1], [B, C, H, W] unchanged: every feature as 2-D maps."""
    return x.reshape(*x.shape, *([1] * (4 - x.dim())))


class VIDRegressor(nn.Module):
    """RepDistiller's VIDLoss module (distiller_zoo/VID.py L9-49 @b84f547) for one layer pair: the mean regressor
    conv1x1(s, t) - ReLU - conv1x1(t, t) - ReLU - conv1x1(t, t) (no biases; mid channels = teacher channels, as
    train_student.py L219-224 builds `VIDLoss(s, t, t)`) and the per-channel variance parameter `log_scale`.

    Features of rank 1 or 2 ([C], [C, L]) are treated as maps with trailing size-1 dims (1x1 convs are then
    linear maps). The larger map is average-pooled to the smaller's size first (official L40-46).
    Deviation: the official compares heights only and pools to a square (H, H); here each side is pooled to the
    smaller of the two sizes, the same for the square maps the official handles.
    """

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], init_pred_var: float = 5.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        if not 1 <= len(s_shape) <= 3 or not 1 <= len(t_shape) <= 3:
            raise ValueError(f"VID needs features [C], [C, L] or [C, H, W]; got {s_shape} and {t_shape}")
        s_c, t_c = s_shape[0], t_shape[0]
        conv = lambda i, o: nn.Conv2d(i, o, kernel_size=1, padding=0, bias=False)  # noqa: E731
        self.regressor = nn.Sequential(conv(s_c, t_c), nn.ReLU(), conv(t_c, t_c), nn.ReLU(), conv(t_c, t_c))
        self.log_scale = nn.Parameter(torch.full((t_c,), vid_log_scale_init(init_pred_var, eps)))
        self.eps = eps

    def forward(self, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(predicted mean, per-channel variance, target) for `vid_nll`, on maps of one spatial size."""
        s, t = pool_to_common_size(_as_maps(student), _as_maps(teacher), "VID")
        return self.regressor(s), vid_variance(self.log_scale, self.eps), t


@METHODS.register("vid")
class VID(Method[VIDParams]):
    """{"ce": ce_weight * CE, "vid": vid_weight * sum over layer pairs of vid_nll} (+ {"kd"} when kd_weight > 0).

    As RepDistiller trains VID (helper/loops.py L166-170 @b84f547): one regressor and variance per pair, trained
    jointly with the student (train_student.py L222-226 adds them to the trainable list).
    """


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: VIDParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        self.taps, s_shapes, t_shapes = self.tap_layers(params.student_layers, params.teacher_layers,
                                                        "method.params.student_layers", "method.params.teacher_layers")
        with at_key("method.params"):
            self.regressors = nn.ModuleList(VIDRegressor(s, t, params.init_pred_var, params.eps)
                                            for s, t in zip(s_shapes, t_shapes))

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, features = self.student_with_features(batch, self.taps)
        teacher = self.teacher_outputs(batch)
        vid = sum(vid_nll(*reg(features[s], teacher.features[t]))
                  for reg, s, t in zip(self.regressors, p.student_layers, p.teacher_layers))
        terms = self.logit_terms(logits, batch, p, teacher.logits)
        terms["vid"] = p.vid_weight * vid  # type: ignore[operator]
        return logits, terms
