"""SLaM (Kontonis et al., NeurIPS 2023): the teacher's pseudo-labels on unlabeled data, fitted through the mixing
of the student's own prediction, mix(f; α, k) (losses/slam.py has the equations, what the paper says and what is
our reading).

Defaults and why (analysis/slam_minimizer.py: the per-example minimiser of each variant's loss; numbers for the
synthetic 10-class teachers of that module and for the Fashion-MNIST 1 % teacher of configs/fashion_mnist_slam.yaml):
- `target: hard` (the teacher's top-1). With the full softmax (`soft`, the old default) the classes outside the
  top k are an unbounded log reward: the minimiser moves mass out of the top k and is right far less often than
  the teacher (29 % for a 52 % teacher, 68 % for an 81 % one, 50 % for the 67 % Fashion-MNIST teacher), with or
  without a floor. `hard` and `soft_topk` both have the teacher's top-1 as minimiser wherever α is above the floor;
  `hard` is the target α(x) is calibrated for (α = P(the teacher's top-1 is right)) and reduces to the
  `pseudo_hard` baseline at α = 1.
- `alpha_floor: auto` (α raised to 1/2 un-normalised, 1/k normalised). Below it the mixing reverses: the loss
  rewards moving mass away from the teacher's top-1 (the hard un-normalised minimiser is right 34 % of the time for
  the 52 % teacher), and the isotonic α is exactly 0 in low-margin blocks. At the floor such an example's loss is
  exactly flat in f: it is switched off, left to the student's other data.
- `normalize: false`, the paper's experimental form (Remark B.1), is kept. With the floor it switches off every
  example with α < 1/2 (58 % of the 52 % teacher's examples, 42 % of the Fashion-MNIST 1 % teacher's); the
  normalised form only those with α < 1/k (2 %, 13 %), and its minimiser is right more often (51 % vs 36 % for
  the 52 % teacher, 64 % vs 52 % on Fashion-MNIST 1 %): results/plans/slam_*.yaml measure both.
The behaviour before these parameters existed is `target: soft, alpha_floor: none` (then `hard_target: false`);
`hard_target: true` is now `target: hard, alpha_floor: none`.

Every run logs (`ctx.log`, each epoch, over all the unlabeled rows drawn so far): `slam_k`, `slam_alpha_floor`
(0 = none), `slam_alpha_mean`, the shares of rows with α = 0, α < 1/2 and α < 1/k (`slam_alpha_zero_share`,
`slam_alpha_below_half_share`, `slam_alpha_below_1_over_k_share`, of the fitted α before the floor) and the
teacher's mean probability mass outside its top k (`slam_teacher_mass_outside_topk`), besides the teacher's
pseudo-label accuracy every unlabeled method logs; the running sums are in `extra_state`, so a resumed run logs the
same numbers.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from kdforge.engine.contract import StepContext
from kdforge.losses import (
    SlamTarget, alpha_summary, alpha_sums, calibrate_slam, isotonic_predict, resolve_alpha_floor,
    slam_loss, teacher_confidence,
)
from kdforge.methods.unlabeled import CalibratedParams, UnlabeledMethod
from kdforge.registry import METHODS


class SLaMParams(CalibratedParams):
    confidence: Literal["margin", "max_prob"] = Field("margin", description="teacher score α(x) is monotone in: "
                                                      "top-1 minus top-2 probability, or top-1 probability")
    topk_target: float = Field(0.9, gt=0, le=1, description="k = smallest k >= 2 whose validation top-k accuracy "
                                                            "reaches this")
    normalize: bool = Field(False, description="divide the wrong-label term by k - 1 (the theory's form); the "
                                               "paper's experiments do not (Remark B.1)")
    target: SlamTarget = Field("hard", description="what the mixed student is fitted to: the teacher's top-1 "
                               "('hard'), its softmax on its top k renormalised ('soft_topk'), or its whole "
                               "softmax ('soft', the old default, which rewards mass outside the top k)")
    alpha_floor: Literal["auto", "none"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "auto", description="raise α to this before mixing: 'auto' = where the mix stops depending on the student "
        "(1/2 un-normalised, 1/k normalised; below it the mix reverses), 'none' = the fitted α as is (the old "
        "behaviour), or a number in [0, 1]")


@METHODS.register("slam")
class SLaM(UnlabeledMethod[SLaMParams]):
    """Labeled CE plus slam_loss on unlabeled batches, with α(x) isotonic in the teacher's confidence and k fitted
    on validation data at the first step."""

    calibrates: ClassVar[bool] = True
    calibration_target: ClassVar[str] = "α(x) and k"
    _sums: Tensor | None = None  # losses.ALPHA_SUMS over the unlabeled rows drawn so far

    def calibrate(self, val_logits: Tensor, val_labels: Tensor) -> dict[str, float]:
        p = self.params
        self.knots, self.k = calibrate_slam(val_logits, val_labels, p.confidence, p.topk_target)
        self.floor = resolve_alpha_floor(p.alpha_floor, self.k, p.normalize)
        return {"slam_k": float(self.k), "slam_alpha_min": float(self.knots[1][0]),
                "slam_alpha_max": float(self.knots[1][-1])}

    def alpha(self, teacher_logits: Tensor) -> Tensor:
        """α(x): the fitted probability that the teacher's top-1 class is right, per sample [B] (before the floor)."""
        return isotonic_predict(*self.knots, teacher_confidence(teacher_logits, self.params.confidence))

    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        alpha = self.alpha(teacher_logits)
        sums = alpha_sums(alpha, teacher_logits, self.k)  # stays on the device: no host sync per step
        self._sums = sums if self._sums is None else self._sums + sums.to(self._sums.device)
        loss = slam_loss(student_logits, teacher_logits, alpha, self.k, p.normalize, p.target, self.floor)
        return loss, {"alpha": alpha.mean()}

    def on_epoch_end(self, ctx: StepContext) -> None:
        if self._sums is not None:
            summary = alpha_summary(ctx.runtime.all_reduce(self._sums.to(ctx.runtime.device)))
            ctx.log(slam_k=float(self.k), slam_alpha_floor=self.floor or 0.0,
                    **{f"slam_{name}": value for name, value in summary.items()})

    def extra_state(self) -> dict[str, Any]:
        return {} if self._sums is None else {"slam_sums": self._sums.detach().cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        sums = state.get("slam_sums")
        self._sums = None if sums is None else torch.as_tensor(sums, dtype=torch.float64)
