"""examples/token_kd_gpt.py: its distillation step on a tiny random GPT-2 (transformers' GPT2LMHeadModel, nothing
downloaded) lowers each token-level loss over 3 steps on one batch, leaves the teacher alone and counts real tokens
only. Skipped without `transformers` (an optional extra)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (optional extra); the example needs it")

from kdforge.data.types import PAD_ID  # noqa: E402
from kdforge.losses import forward_kl_loss  # noqa: E402

pytestmark = pytest.mark.slow  # importing transformers and building the models takes several seconds


def _example():
    path = Path(__file__).resolve().parents[2] / "examples" / "token_kd_gpt.py"
    spec = importlib.util.spec_from_file_location("token_kd_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _ids() -> torch.Tensor:
    ids = torch.randint(2, 40, (6, 10), generator=torch.Generator().manual_seed(0))
    ids[0, 6:], ids[3, 4:] = PAD_ID, PAD_ID  # right padding
    return ids


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "gkd"])
def test_three_distillation_steps_lower_the_loss_and_leave_the_teacher_alone(loss: str) -> None:
    ex = _example()
    ids = _ids()
    teacher = ex.tiny_gpt(40, 10, width=32, layers=1, seed=0, init=0.5)  # large weights: a peaked teacher
    before = [p.detach().clone() for p in teacher.parameters()]
    student = ex.tiny_gpt(40, 10, width=16, layers=1, seed=1)
    curve = ex.distill(student, teacher, [ids] * 3, loss, lr=1e-2)
    assert len(curve) == 3 and all(math.isfinite(v) for v in curve)
    assert curve[2] < curve[1] < curve[0]
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_the_caller_shifts_labels_and_the_mask_counts_real_predicted_tokens() -> None:
    ex = _example()
    ids = _ids()
    teacher = ex.tiny_gpt(40, 10, width=32, layers=1, seed=0, init=0.5)
    student = ex.tiny_gpt(40, 10, width=16, layers=1, seed=1)
    with torch.no_grad():
        s_logits, mask = ex.next_token_logits(student, ids)
        t_logits, _ = ex.next_token_logits(teacher, ids)
        assert s_logits.shape == (6, 9, 40) and torch.equal(mask, ids[:, 1:] != PAD_ID)
        assert int(mask.sum()) == 6 * 9 - 4 - 6  # the predicted padding tokens are left out
    first = ex.distill(student, teacher, [ids], "forward_kl", lr=0.0)[0]
    assert math.isclose(first, forward_kl_loss(s_logits[mask], t_logits[mask]).item(), rel_tol=1e-5)
