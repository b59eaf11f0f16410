"""hcl_loss (ReviewKD, Chen et al. 2021) against the official hcl_loss, a hand value, limits, gradcheck."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import hcl_loss


def reference_hcl_loss(fstudent, fteacher):
    """mdistiller e8c5bb3 mdistiller/distillers/ReviewKD.py L11-28 (`hcl_loss`, as in dvlab-research/ReviewKD)."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        n, c, h, w = fs.shape
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt = 1.0
        tot = 1.0
        for l in [4, 2, 1]:  # noqa: E741
            if l >= h:
                continue
            tmpfs = F.adaptive_avg_pool2d(fs, (l, l))
            tmpft = F.adaptive_avg_pool2d(ft, (l, l))
            cnt /= 2.0
            loss += F.mse_loss(tmpfs, tmpft, reduction="mean") * cnt
            tot += cnt
        loss = loss / tot
        loss_all = loss_all + loss
    return loss_all


def _maps(seed, *sizes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, c, s, s, generator=g, dtype=torch.float64) for c, s in sizes]


def test_matches_the_official_code_in_value_and_gradient():
    sizes = [(4, 8), (6, 4), (5, 2), (7, 1)]  # every pyramid case: 3, 2, 1 and 0 pooled levels
    s = [m.requires_grad_() for m in _maps(0, *sizes)]
    t = _maps(1, *sizes)
    ours, ref = hcl_loss(s, t), reference_hcl_loss(s, t)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(ours, s), torch.autograd.grad(ref, s)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_hand_value_on_a_2x2_map():
    # Student zeros, teacher [[1, 3], [5, 7]] in one channel: MSE = (1 + 9 + 25 + 49) / 4 = 21; only the 1x1
    # level is below the height 2, so weights 1 and 1/2: (21 + 0.5 * 4^2) / 1.5 = 29 / 1.5.
    t = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]], dtype=torch.float64)
    assert hcl_loss([torch.zeros_like(t)], [t]).item() == pytest.approx(29 / 1.5, rel=1e-12)


def test_limits_and_errors():
    s = _maps(2, (4, 8), (3, 1))
    assert hcl_loss(s, [m.clone() for m in s]).item() == 0.0
    shifted = [m + 2.0 for m in s]  # a constant offset survives every pooling: each level's MSE is 4
    assert hcl_loss(s, shifted).item() == pytest.approx(2 * 4.0, rel=1e-12)
    with pytest.raises(ValueError, match="must be equal"):
        hcl_loss([s[0]], [s[0][:, :2]])
    with pytest.raises(ValueError, match="one teacher feature per student feature"):
        hcl_loss(s, s[:1])


def test_gradcheck():
    s = [m.requires_grad_() for m in _maps(3, (2, 4), (2, 1))]
    t = _maps(4, (2, 4), (2, 1))
    assert torch.autograd.gradcheck(lambda a, b: hcl_loss([a, b], t), tuple(s))
