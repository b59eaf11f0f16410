"""Classic knowledge distillation on softened logits."""
from __future__ import annotations

from torch import Tensor

from kdforge.losses.common import kl_div_with_temperature


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", Sec. 2: T^2 * KL(p_t^T || p_s^T).

    Batch mean of KL(softmax(t/T) || softmax(s/T)) times T^2, the factor that keeps the soft-label gradient,
    T * (softmax(s/T) - softmax(t/T)) / B, on the scale of the hard-label one as T changes.
    """
    return temperature**2 * kl_div_with_temperature(
        student_logits, teacher_logits, temperature, reduction="batchmean"
    )
