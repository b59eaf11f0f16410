"""Token-level distillation of language models: forward KL, reverse KL and the generalized Jensen-Shannon divergence
between the teacher's and the student's next-token distributions, per token, averaged over the tokens kept.

Layout (losses.common's rule): logits [B, L, V] (any [*, V]; `dim=` for another class dim), one position per token;
`mask` (bool [B, L], True = counted) leaves out padding and prompt tokens, and the mean is over the kept tokens
(an all-False mask gives 0); `reduction` "mean" | "sum" | "none" ([B, L] per-token values, 0 where masked).
Teacher and student must share the tokenizer (same V; a different V is a ValueError).

The label shift of causal LMs is the caller's job: these losses compare the two distributions at each position as
given. The logits of a causal LM at position i predict token i + 1, and both models see the same ids, so the
positions of student and teacher agree already; what must be shifted is the mask (and any labels): with inputs
`ids`, `attention_mask` and no extra tokens, pass `logits[:, :-1]` of both models and `mask=attention_mask[:, 1:]
.bool()` (or `labels[:, 1:] != -100` with Hugging Face labels), so that a position counts when the token it predicts
is real. Compute the teacher's logits under `torch.no_grad()`: gradients reach both arguments otherwise.
No T^2 factor (as TRL and MiniLLM): `forward_kl_loss(s, t, T) * T**2 == kd_loss(s, t, T)`.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import Reduction, kl_rows, positional


def forward_kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, *,
                    mask: Tensor | None = None, reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """KL(p_T || p_S) per token, p = softmax(logits / T): word-level KD of Kim & Rush, "Sequence-Level Knowledge
    Distillation", EMNLP 2016, Sec. 3.1 (there the cross-entropy -sum_k q_k log p_k, larger by the teacher's entropy,
    same gradient in the student), the divergence Hinton et al.'s KD takes per token.

    Mean-seeking: the student is pushed to put mass wherever the teacher does. Layout, mask, reduction and the
    caller's label shift: this module's docstring."""
    return positional(partial(kl_rows, temperature=temperature), student_logits, teacher_logits, reduction, mask, dim,
                      "forward_kl_loss")


def reverse_kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, *,
                    mask: Tensor | None = None, reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """KL(p_S || p_T) per token, the divergence MiniLLM minimises (Gu, Dong, Wei & Huang, "MiniLLM: Knowledge
    Distillation of Large Language Models", ICLR 2024): mode-seeking, the student is not pushed to cover
    the teacher's low-probability tokens.

    This is the per-token, full-vocabulary reverse KL on whatever tokens the caller provides; on sequences the
    student sampled it is the single-step term of MiniLLM's gradient, which the official code adds as
    `Loss._reg_loss` = mean over response tokens of CE(p_S, p_T) - H(p_S) (microsoft/LMOps@7b14bef
    minillm/minillm/losses.py, with get_x_entropy / get_entropy of minillm/minillm/utils.py @2553a9d). MiniLLM's
    sequence-level policy-gradient part (sampling, rewards, clipping) is a training loop, not this loss.
    Layout, mask, reduction and the caller's label shift: this module's docstring."""
    # kl_rows(a, b) = KL(softmax(b/T) || softmax(a/T)): the teacher first gives KL(p_S || p_T).
    return positional(lambda s, t: kl_rows(t, s, temperature), student_logits, teacher_logits, reduction, mask, dim,
                      "reverse_kl_loss")


def _jsd_rows(student: Tensor, teacher: Tensor, beta: float, temperature: float) -> Tensor:
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    # log m = log(beta p_T + (1 - beta) p_S), mixed in probability space (TRL fixed a log-space mix, PR #2204).
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log1p(-beta))
    kl_teacher = F.kl_div(log_m, log_t, reduction="none", log_target=True).sum(dim=1)  # KL(p_T || m)
    kl_student = F.kl_div(log_m, log_s, reduction="none", log_target=True).sum(dim=1)  # KL(p_S || m)
    return beta * kl_teacher + (1 - beta) * kl_student


def generalized_jsd_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5,
                         temperature: float = 1.0, *, mask: Tensor | None = None, reduction: Reduction = "mean",
                         dim: int | None = None) -> Tensor:
    """The generalized JSD of GKD (Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes", ICLR 2024, Eq. 1 as TRL's docstring cites it, after Huszár 2015; the paper's text could
    not be read here) per token, with P = p_T and Q = p_S:

        JSD(β) = β KL(p_T || m) + (1 - β) KL(p_S || m),   m = β p_T + (1 - β) p_S,   0 < β < 1.

    What holds at the ends: JSD(β) -> 0 as β -> 0 or 1 (m tends to p_S or p_T); JSD(β) / β -> KL(p_T || p_S) as
    β -> 0 and JSD(β) / (1 - β) -> KL(p_S || p_T) as β -> 1, so near the ends the gradient points as the forward
    (β small) or reverse (β near 1) KL's does, scaled by β or 1 - β. JSD(0.5) is the symmetric Jensen-Shannon
    divergence; swapping student and teacher maps β to 1 - β. As TRL's GKDTrainer, β = 0 returns `forward_kl_loss`
    and β = 1 `reverse_kl_loss` (the limits above, not the formula, which is 0 there): the value jumps at the ends.
    Temperature: both logits / T, no T^2 factor.
    As huggingface/trl@f2cd577 trl/experimental/gkd/gkd_trainer.py `GKDTrainer.generalized_jsd_loss` (L239-323),
    whose "batchmean" with `labels` (mask = labels != -100) is our "mean". Deviation: without labels TRL divides the
    sum by the batch size B (a per-sequence sum) where we average over the B * L tokens as with a
    mask; the mixture is taken with logaddexp instead of logsumexp over a stack (same values).
    Layout, mask, reduction and the caller's label shift: this module's docstring.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd_loss: beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl_loss(student_logits, teacher_logits, temperature, mask=mask, reduction=reduction, dim=dim)
    if beta == 1.0:
        return reverse_kl_loss(student_logits, teacher_logits, temperature, mask=mask, reduction=reduction, dim=dim)
    return positional(lambda s, t: _jsd_rows(s, t, beta, temperature), student_logits, teacher_logits, reduction,
                      mask, dim, "generalized_jsd_loss")
